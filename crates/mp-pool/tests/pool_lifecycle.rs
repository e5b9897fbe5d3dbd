//! A pool's life: settings, close/join/terminate, drop, maxtasksperchild, the initializer,
//! use from another process, under the start method in `MP_START_METHOD`.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mp_pool::{Error, Pool};
use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_testkit::bytes::{hear, say};
use mp_testkit::{alive, eventually, kill, pass, pipe, wait_for_byte};

fn sqr(x: i64) -> i64 {
    x * x
}

fn my_pid(_: i64) -> u32 {
    std::process::id()
}

#[test]
fn invalid_settings_are_errors() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(Pool::builder().maxtasksperchild(0).build(), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Pool::builder().task_timeout(Duration::ZERO).build(),
        Err(Error::InvalidArgument(_))
    ));
    let pool = Pool::builder().build().unwrap();
    assert_eq!(pool.processes(), mp_process::cpu_count());
    assert_eq!(pool.start_method(), mp_process::get_start_method().unwrap());
}

#[test]
fn a_closed_pool_refuses_calls_and_finishes_what_it_has() {
    let pool = Pool::new(2).unwrap();
    assert!(matches!(pool.join(), Err(Error::StillRunning)));
    let r = pool.map_async(sqr, 0..100).unwrap();
    pool.close().unwrap();
    assert!(matches!(pool.apply(sqr, (1,)), Err(Error::Closed)));
    assert!(matches!(pool.map(sqr, 0..3), Err(Error::Closed)));
    pool.join().unwrap();
    assert_eq!(r.get().unwrap(), (0..100).map(sqr).collect::<Vec<_>>());
    let pids = pool.pids();
    assert!(pids.is_empty());
}

/// Blocks until a byte arrives.
fn blocks(x: i64, go: PassFd) -> i64 {
    wait_for_byte(&go);
    x
}

#[test]
fn terminate_with_ten_thousand_pending_tasks_returns_and_fails_them() {
    let pool = Pool::new(2).unwrap();
    let (go_r, _go_w) = pipe();
    let pids = pool.pids();
    let args: Vec<(i64, PassFd)> = (0..10_000).map(|i| (i, pass(&go_r))).collect();
    let r = pool.starmap_async_chunked(blocks, args, 1).unwrap();
    let singles: Vec<_> = (0..10).map(|i| pool.apply_async(sqr, (i,)).unwrap()).collect();
    pool.terminate().unwrap();
    assert!(matches!(r.get(), Err(Error::Terminated)));
    for s in singles {
        assert!(matches!(s.get(), Err(Error::Terminated)));
    }
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived terminate");
    }
    assert!(matches!(pool.apply(sqr, (1,)), Err(Error::Closed)));
    pool.join().unwrap();
}

#[test]
fn dropping_a_pool_terminates_it() {
    let (go_r, _go_w) = pipe();
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let r = pool.apply_async(blocks, (1, pass(&go_r))).unwrap();
    drop(pool);
    assert!(matches!(r.get(), Err(Error::Terminated)));
    for pid in pids {
        assert!(!alive(pid));
    }
    // The zygote (fork) or the workers (spawn, forkserver) were joined: no child is left.
    assert!(mp_process::active_children().is_empty(), "{:?}", mp_process::active_children());
}

#[test]
fn maxtasksperchild_replaces_every_worker() {
    let pool = Pool::builder().processes(2).maxtasksperchild(10).build().unwrap();
    let first = pool.pids();
    let rs: Vec<_> = (0..100).map(|i| pool.apply_async(my_pid, (i,)).unwrap()).collect();
    let pids: Vec<u32> = rs.into_iter().map(|r| r.get().unwrap()).collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    // At most 10 tasks per worker, so at least 10 workers took part.
    assert!(distinct.len() >= 10, "{} workers ran 100 tasks", distinct.len());
    for pid in &distinct {
        assert!(pids.iter().filter(|p| *p == pid).count() <= 10);
    }
    assert!(eventually(Duration::from_secs(10), || pool.pids().iter().all(|p| !first.contains(p))));
}

static INITIALIZED: AtomicU64 = AtomicU64::new(0);

fn init(value: u64, out: PassFd) {
    INITIALIZED.fetch_add(value, Ordering::SeqCst);
    say(&out);
}

fn read_init(_: i64) -> (u32, u64) {
    (std::process::id(), INITIALIZED.load(Ordering::SeqCst))
}

#[test]
fn the_initializer_runs_once_per_worker() {
    let (r, w) = pipe();
    let pool = Pool::builder().processes(3).initializer(init, (7u64, pass(&w))).build().unwrap();
    let got = pool.map_chunked(read_init, 0..60, 1).unwrap();
    assert!(got.iter().all(|(_, v)| *v == 7), "{got:?}");
    hear(&r, 3);
    pool.close().unwrap();
    pool.join().unwrap();
    drop(w);
    // Nothing more than the three reports.
    let mut buf = [0u8; 8];
    assert_eq!(rustix::io::read(r.as_fd(), &mut buf).unwrap(), 0);
}

fn bad_init() {
    panic!("cannot initialise");
}

#[test]
fn a_panicking_initializer_stops_the_pool() {
    let pool = Pool::builder().processes(2).initializer(bad_init, ()).build().unwrap();
    match pool.map(sqr, 0..10) {
        Err(Error::Initializer(m)) => assert!(m.contains("cannot initialise")),
        Err(Error::Closed) => {}
        other => panic!("expected Initializer, got {other:?}"),
    }
}

#[test]
fn a_pool_used_from_another_process_is_an_error_and_its_drop_does_nothing() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let inherited = pool.clone();
    let mut child = Process::fork_closure(move || {
        let wrong = matches!(inherited.apply(sqr, (2,)), Err(Error::WrongProcess { .. }))
            && matches!(inherited.map(sqr, 0..3), Err(Error::WrongProcess { .. }))
            && matches!(inherited.close(), Err(Error::WrongProcess { .. }));
        drop(inherited);
        std::process::exit(if wrong { 0 } else { 3 });
    });
    child.start().unwrap();
    assert_eq!(child.join().unwrap(), 0);
    assert_eq!(pool.map(sqr, 0..4).unwrap(), [0, 1, 4, 9]);
}

/// A minimal executor: polls a future on this thread, parking between wake-ups.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

#[test]
fn an_async_result_and_an_imap_stream_are_awaited_without_a_runtime() {
    let pool = Pool::new(2).unwrap();
    let v = block_on(async { pool.apply_async(sqr, (12,)).unwrap().await }).unwrap();
    assert_eq!(v, 144);
    let all = block_on(pool.map_async(sqr, 0..20).unwrap()).unwrap();
    assert_eq!(all, (0..20).map(sqr).collect::<Vec<_>>());
    let mut stream = pool.imap(sqr, 0..10).unwrap();
    let mut got = Vec::new();
    block_on(std::future::poll_fn(|cx| {
        loop {
            use futures_core::Stream;
            match std::pin::Pin::new(&mut stream).poll_next(cx) {
                std::task::Poll::Ready(Some(r)) => got.push(r.unwrap()),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }));
    assert_eq!(got, (0..10).map(sqr).collect::<Vec<_>>());
}

#[test]
fn an_idle_worker_killed_after_its_initializer_fails_no_task() {
    let (r, w) = pipe();
    let pool = Pool::builder().processes(2).initializer(init, (1u64, pass(&w))).build().unwrap();
    hear(&r, 2);
    let victim = pool.pids()[0];
    kill(victim, rustix::process::Signal::KILL);
    assert!(eventually(Duration::from_secs(10), || {
        let p = pool.pids();
        p.len() == 2 && !p.contains(&victim)
    }));
    let got = pool.map_chunked(read_init, 0..40, 3).unwrap();
    assert!(got.iter().all(|(_, v)| *v == 1));
}

#[test]
fn a_callback_may_drop_the_last_handle_of_its_pool() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let inner = pool.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = pool.apply_async(sqr, (3,)).unwrap().with_callbacks(
        move |v| {
            drop(inner);
            tx.send(v).unwrap();
        },
        |_| {},
    );
    drop(pool);
    assert_eq!(rx.recv().unwrap(), 9);
    assert_eq!(r.get().unwrap(), 9);
}

#[test]
fn terminate_while_the_input_is_read_stops_reading_it() {
    let pool = Pool::new(2).unwrap();
    let pulled = std::cell::Cell::new(0);
    let input = (0..10_000i64).inspect(|&x| {
        pulled.set(pulled.get() + 1);
        if x == 500 {
            pool.terminate().unwrap();
        }
    });
    let r = pool.map_async_chunked(sqr, input, 10).and_then(|r| r.get());
    assert!(matches!(r, Err(Error::Terminated)), "{r:?}");
    assert!(pulled.get() <= 510, "{} items pulled after the pool stopped", pulled.get());
    assert!(matches!(pool.map(sqr, 0..3), Err(Error::Closed)));
    pool.join().unwrap();
}
