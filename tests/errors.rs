//! `mp::Error`: `?` on the errors of every crate in one function returning `mp::Result`, under
//! the start method in `MP_START_METHOD`; each error keeps its variant, its source chain and
//! its message.

use std::error::Error as _;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Which call of [`every_crate`] fails.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fail {
    Nothing,
    Process,
    Wire,
    Close,
    Shm,
    Sync,
    Lock,
    Queue,
    Put,
    Pool,
    Io,
}

/// The length of a path, in bytes.
fn path_len(path: PathBuf) -> usize {
    path.as_os_str().len()
}

/// Waits for one message, then exits.
fn wait_for_word(conn: mp::Connection) {
    let _ = conn.recv::<u8>();
}

/// Calls into every crate; the call `fail` names fails, and `?` turns its error into an
/// `mp::Error`. `running` is a started process, for `Fail::Close`.
fn every_crate(fail: Fail, running: Option<mp::Process>) -> mp::Result<()> {
    // mp-process
    mp::get_context(if fail == Fail::Process { "nope" } else { "spawn" })?;
    let bytes = mp::process::wire::encode(&7u32)?;
    let short = if fail == Fail::Wire { &bytes[..0] } else { &bytes[..] };
    let _: u32 = mp::process::wire::decode(short)?;
    if let Some(p) = running {
        p.close()?;
    }
    // mp-shm
    let _shm = mp::SharedMemory::new(if fail == Fail::Shm { 0 } else { 64 })?;
    // mp-sync: an error, and a LockError
    let lock = mp::Lock::new()?;
    if fail == Fail::Sync {
        lock.release()?;
    }
    let guard = lock.acquire()?;
    if fail == Fail::Lock {
        let _again = lock.acquire()?;
    }
    drop(guard);
    // mp-queue: an error, and a PutError
    let q = mp::Queue::with_maxsize(1)?;
    q.put(1u32)?;
    if fail == Fail::Put {
        q.put_nowait(2)?;
    }
    assert_eq!(q.get()?, 1);
    if fail == Fail::Queue {
        q.get_nowait()?;
    }
    // mp-pool
    let pool = mp::Pool::new(1)?;
    // A path that is not UTF-8 does not serialise.
    let path = if fail == Fail::Pool { vec![b'/', 0xff] } else { b"/a".to_vec() };
    assert_eq!(pool.apply(path_len, (PathBuf::from(std::ffi::OsString::from_vec(path)),))?, 2);
    // std
    std::fs::read(if fail == Fail::Io { "/nonexistent/mp" } else { "/proc/self/stat" })?;
    Ok(())
}

/// The error `every_crate` returns when `fail` fails, checked to show its source's message.
fn failure(fail: Fail) -> mp::Error {
    let e = every_crate(fail, None).expect_err("a call fails");
    let source = e.source().expect("the crate's error is the source");
    assert!(e.to_string().contains(&source.to_string()), "{e} shows {source}");
    e
}

#[test]
fn question_mark_takes_every_crates_error_into_mp_error() {
    let _guard = mp::init().unwrap();
    every_crate(Fail::Nothing, None).unwrap();

    let e = failure(Fail::Process);
    assert!(
        matches!(&e, mp::Error::Process(mp::ProcessError::UnknownStartMethod(m)) if m == "nope"),
        "{e:?}"
    );
    assert!(e.source().unwrap().downcast_ref::<mp::ProcessError>().is_some());

    let e = failure(Fail::Wire);
    assert!(matches!(&e, mp::Error::Process(mp::ProcessError::Wire(_))), "{e:?}");
    let wire = e.source().unwrap().source().expect("the WireError after the process error");
    assert!(wire.downcast_ref::<mp::WireError>().is_some(), "{wire:?}");

    let e = failure(Fail::Shm);
    assert!(matches!(&e, mp::Error::SharedMemory(mp::ShmError::InvalidSize(0))), "{e:?}");
    assert!(e.source().unwrap().downcast_ref::<mp::ShmError>().is_some());

    let e = failure(Fail::Sync);
    assert!(matches!(&e, mp::Error::Sync(mp::SyncError::NotHeld)), "{e:?}");
    assert!(e.source().unwrap().downcast_ref::<mp::SyncError>().is_some());

    let e = failure(Fail::Lock);
    assert!(matches!(&e, mp::Error::Sync(mp::SyncError::AlreadyHeld)), "{e:?}");

    let e = failure(Fail::Put);
    assert!(matches!(&e, mp::Error::Queue(mp::QueueError::Full)), "{e:?}");
    assert!(e.source().unwrap().downcast_ref::<mp::QueueError>().is_some());

    let e = failure(Fail::Queue);
    assert!(matches!(&e, mp::Error::Queue(mp::QueueError::Empty)), "{e:?}");

    // Three links: mp::Error, the pool's error, the WireError of the argument that failed.
    let e = failure(Fail::Pool);
    assert!(matches!(&e, mp::Error::Pool(mp::PoolError::Serialization(_))), "{e:?}");
    let pool_error = e.source().unwrap();
    assert!(pool_error.downcast_ref::<mp::PoolError>().is_some());
    let wire = pool_error.source().expect("the WireError of the argument");
    assert!(wire.downcast_ref::<mp::WireError>().is_some(), "{wire:?}");
    assert!(e.to_string().contains("UTF-8"), "{e}");

    let e = failure(Fail::Io);
    assert!(matches!(&e, mp::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound), "{e:?}");
    assert!(e.source().unwrap().downcast_ref::<std::io::Error>().is_some());
}

#[test]
fn a_close_error_keeps_its_process() {
    let _guard = mp::init().unwrap();
    let (release, child_end) = mp::pipe(true).unwrap();
    let mut p = mp::Process::new(wait_for_word, (child_end,));
    p.start().unwrap();
    let e = every_crate(Fail::Close, Some(p)).expect_err("closing a running process fails");
    let source = e.source().expect("the CloseError is the source");
    assert!(source.downcast_ref::<mp::CloseError>().is_some(), "{source:?}");
    let mp::Error::Close(mp::CloseError(p)) = e else { panic!("{e:?}") };
    release.send(&1u8).unwrap();
    assert_eq!(p.join().unwrap(), 0);
}
