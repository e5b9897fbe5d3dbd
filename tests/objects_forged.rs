//! Forged descriptors in messages, under the start method in `MP_START_METHOD`: a peer that
//! can send descriptors puts a pipe, a socket, a directory, `/dev/null`, a blocking eventfd or
//! an unsealed memfd where a segment, a doorbell, a side channel or a connection should be.
//! Every kind of object refuses it with an error, the receiver goes on, and nothing SIGBUSes
//! or hangs later (issue 10: all seven kinds accepted an unsealed memfd marked "named", and
//! doorbells were never checked, so `try_acquire` and `get_nowait` could block for ever).
//! Objects received as another kind are refused with what was expected and what arrived.

use std::os::fd::{AsFd, OwnedFd};

use mp::process::fdpass::{decode_with_fds, encode_with_fds};
use mp::process::wire::WireError;
use mp::shm::{RawValue, SharedMemory};
use mp::{Event, Lock, Queue, RLock, Semaphore, Value};
use rustix::event::EventfdFlags;
use rustix::fs::{MemfdFlags, Mode, OFlags};
use rustix::net::{AddressFamily, SocketType};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Descriptors of every wrong kind, made afresh.
fn forgeries() -> Vec<(&'static str, OwnedFd)> {
    let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
    let unsealed = rustix::fs::memfd_create("forged", MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&unsealed, 1 << 22).unwrap();
    vec![
        ("a pipe", pipe_r),
        ("/dev/null", rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty()).unwrap()),
        (
            "a directory",
            rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap(),
        ),
        ("an unsealed memfd", unsealed),
        ("a blocking eventfd", rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap()),
        (
            "a UDP socket",
            rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None).unwrap(),
        ),
    ]
}

/// Encodes `make()`'s object, drops it (so that this process holds nothing of it but the
/// message: the receiver must rebuild it, not find it), then for every descriptor of the
/// message and every forgery, decodes the message with that descriptor replaced: each must
/// be refused. The honest message is accepted at the end.
fn forged_descriptors_are_refused<T: Serialize + DeserializeOwned>(
    what: &str,
    make: impl Fn() -> T,
) {
    let (bytes, fds) = encode_with_fds(&make()).unwrap();
    let count = fds.len();
    assert!(count > 0, "{what} carries descriptors");
    for slot in 0..count {
        for (forgery, fd) in forgeries() {
            let (bytes2, mut fds2) = encode_with_fds(&make()).unwrap();
            fds2[slot] = fd;
            match decode_with_fds::<T>(&bytes2, fds2) {
                Err(_) => {}
                Ok(_) => panic!("{what} accepted {forgery} as its descriptor {slot} of {count}"),
            }
        }
    }
    decode_with_fds::<T>(&bytes, fds).unwrap_or_else(|e| panic!("{what}, honest: {e}"));
}

#[test]
fn every_kind_refuses_forged_descriptors() {
    forged_descriptors_are_refused("Lock", || Lock::new().unwrap());
    forged_descriptors_are_refused("Event", || Event::new().unwrap());
    forged_descriptors_are_refused("Semaphore", || Semaphore::new(2).unwrap());
    forged_descriptors_are_refused("Value", || Value::new(7u64).unwrap());
    forged_descriptors_are_refused("RawValue", || RawValue::new(7u64).unwrap());
    forged_descriptors_are_refused("Queue", || Queue::<u64>::new().unwrap());
    forged_descriptors_are_refused("SharedMemory", || SharedMemory::new(4096).unwrap());
    forged_descriptors_are_refused("Connection", || mp::pipe(true).unwrap().0);
    // Managers' proxies: one of a manager of this tree (its doorway), one of a remote manager
    // (its link's identity).
    let local = mp::Manager::start().unwrap();
    forged_descriptors_are_refused("a local manager's proxy", || local.dict::<u8, u8>().unwrap());
    let served = mp::Manager::builder().address("127.0.0.1:0").authkey(b"k").start().unwrap();
    let remote = mp::Manager::connect(served.address().unwrap(), Some(b"k")).unwrap();
    forged_descriptors_are_refused("a remote manager's proxy", || remote.dict::<u8, u8>().unwrap());
}

#[test]
fn a_forged_doorbell_is_refused_with_the_reason() {
    let (bytes, mut fds) = encode_with_fds(&Lock::new().unwrap()).unwrap();
    // A lock's definition: its segment, then its doorbell.
    assert_eq!(fds.len(), 2);
    let (r, _w) = rustix::pipe::pipe().unwrap();
    fds[1] = r;
    match decode_with_fds::<Lock>(&bytes, fds) {
        Err(WireError::Refused(why)) => {
            assert!(why.contains("the descriptor sent as a doorbell is not an eventfd"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

fn expect_refused<T: DeserializeOwned>(value: &impl Serialize, said: &str) {
    let (bytes, fds) = encode_with_fds(value).unwrap();
    match decode_with_fds::<T>(&bytes, fds) {
        Err(WireError::Refused(why)) => assert!(why.contains(said), "{why}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("accepted as {}: {said}", std::any::type_name::<T>()),
    }
}

#[test]
fn objects_received_as_another_kind_say_what_was_expected_and_what_arrived() {
    let lock = Lock::new().unwrap();
    expect_refused::<Event>(&lock, "a mp_sync::Lock/RLock was received where a mp_sync::Event");
    expect_refused::<RLock>(&lock, "a mp_sync::Lock was received where a mp_sync::RLock");
    let q: Queue<u64> = Queue::new().unwrap();
    expect_refused::<Lock>(&q, "a mp_queue::Queue was received where a mp_sync::Lock/RLock");
    expect_refused::<Queue<String>>(
        &q,
        "a mp_queue::Queue<u64> was received where a mp_queue::Queue<alloc::string::String>",
    );
    let v = Value::new(1u32).unwrap();
    expect_refused::<Value<f32>>(&v, "items of type u32 (4 bytes) were sent where f32");
}

/// Receives forged messages on `sock` and reports each outcome back, then one honest lock,
/// which it uses.
fn receive_forgeries(sock: mp::process::fdpass::PassFd) {
    let sock = sock.into_inner();
    loop {
        match mp::process::fdpass::recv_value::<Lock>(sock.as_fd(), 1 << 20) {
            Ok(Some(lock)) => {
                // The honest one works: taking it neither blocks nor fails.
                let ok = lock.try_acquire().map(|g| g.is_some()).unwrap_or(false);
                mp::process::fdpass::send_value(sock.as_fd(), &format!("honest {ok}"), 1024)
                    .unwrap();
                return;
            }
            Ok(None) => return,
            Err(e) => mp::process::fdpass::send_value(sock.as_fd(), &e.to_string(), 1024).unwrap(),
        }
    }
}

#[test]
fn a_child_refuses_forged_objects_and_goes_on() {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let mut child = mp::Process::new(receive_forgeries, (mp::process::fdpass::PassFd(theirs),));
    child.start().unwrap();
    let frame = |fds: Vec<OwnedFd>, bytes: &[u8]| {
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        mp::process::fdpass::send_frame(ours.as_fd(), bytes, &borrowed, 1 << 20).unwrap();
    };
    for (forgery, fd) in forgeries() {
        let (bytes, mut fds) = encode_with_fds(&Lock::new().unwrap()).unwrap();
        fds[1] = fd;
        frame(fds, &bytes);
        let said: String = mp::process::fdpass::recv_value(ours.as_fd(), 1024).unwrap().unwrap();
        assert!(said.contains("refused"), "{forgery}: {said}");
    }
    let lock = Lock::new().unwrap();
    mp::process::fdpass::send_value(ours.as_fd(), &lock, 1 << 20).unwrap();
    let said: String = mp::process::fdpass::recv_value(ours.as_fd(), 1024).unwrap().unwrap();
    assert_eq!(said, "honest true");
    assert_eq!(child.join().unwrap(), 0);
}
