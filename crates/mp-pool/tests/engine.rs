//! The engine front end (`PoolBuilder::engine`) with an engine of threads in this process,
//! each running an `EngineWorker`: every pool call, initializers, panics, refusals, and the
//! end of the pool. (`mp-mpi` runs the same protocol over MPI, in its own tests.)

use std::sync::mpsc;
use std::time::Duration;

use mp_pool::engine::{Engine, EngineWorker, Hub, Next};
use mp_pool::{Error, Pool};

/// Workers as threads: a batch goes down a channel, its results come back up another.
struct Threads {
    n: usize,
}

enum Up {
    Ready(usize, Result<(), String>),
    Results(usize, Vec<u8>),
}

impl Engine for Threads {
    fn workers(&self) -> usize {
        self.n
    }

    fn serve(self: Box<Self>, mut hub: Hub) {
        let (up_tx, up) = mpsc::channel::<Up>();
        let mut downs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..self.n {
            let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
            downs.push(tx);
            let up_tx = up_tx.clone();
            let init = hub.init().map(<[u8]>::to_vec);
            threads.push(std::thread::spawn(move || {
                let mut w = EngineWorker::new().unwrap();
                let ready = init.map_or(Ok(()), |init| w.init(&init));
                let _ = up_tx.send(Up::Ready(i, ready));
                while let Ok(Some(batch)) = rx.recv() {
                    let _ = up_tx.send(Up::Results(i, w.run(batch)));
                }
            }));
        }
        let mut ready = vec![false; self.n];
        'serve: loop {
            if hub.stopping() {
                break;
            }
            let mut idle = true;
            for (i, down) in downs.iter().enumerate() {
                if !ready[i] || hub.outstanding(i) > 0 {
                    continue;
                }
                match hub.next(i) {
                    Next::Batch(b) => {
                        idle = false;
                        let _ = down.send(Some(b));
                    }
                    Next::Idle => {}
                    Next::Finish | Next::Stop => break 'serve,
                }
            }
            while let Ok(msg) = up.try_recv() {
                idle = false;
                match msg {
                    Up::Ready(i, Ok(())) => ready[i] = true,
                    Up::Ready(_, Err(m)) => hub.fail(Error::Initializer(m)),
                    Up::Results(i, r) => hub.deliver(i, &r),
                }
            }
            if idle {
                let t = if hub.busy() || ready.iter().any(|r| !r) {
                    Some(Duration::from_micros(200))
                } else {
                    None
                };
                hub.wait(t);
            }
        }
        for d in &downs {
            let _ = d.send(None);
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

fn pool(n: usize) -> Pool {
    Pool::builder().engine(Threads { n }).build().unwrap()
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[test]
fn every_call_gives_what_a_sequential_map_gives() {
    let p = pool(3);
    assert_eq!(p.processes(), 3);
    let want: Vec<u64> = (0..2000).map(square).collect();
    assert_eq!(p.map(square, 0..2000).unwrap(), want);
    assert_eq!(p.map_chunked(square, 0..2000, 7).unwrap(), want);
    assert_eq!(
        p.starmap(add, (0..500).map(|i| (i, 2 * i))).unwrap(),
        (0..500).map(|i| 3 * i).collect::<Vec<_>>()
    );
    let r: Vec<_> = (0..100).map(|i| p.apply_async(square, (i,)).unwrap()).collect();
    assert_eq!(r.into_iter().map(|r| r.get().unwrap()).collect::<Vec<_>>(), want[..100]);
    assert_eq!(p.apply(add, (2, 3)).unwrap(), 5);
    let got: Vec<u64> = p.imap(square, 0..300).unwrap().map(Result::unwrap).collect();
    assert_eq!(got, want[..300]);
    let mut got: Vec<u64> = p.imap_unordered(square, 0..300).unwrap().map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, want[..300]);
    p.close().unwrap();
    p.join().unwrap();
    assert!(matches!(p.map(square, [1]), Err(Error::Closed)));
}

fn boom(x: u64) -> u64 {
    assert!(x != 3, "three is not allowed");
    x
}

#[test]
fn a_panicking_task_fails_alone() {
    let p = pool(2);
    match p.map(boom, 0..10) {
        Err(Error::Remote { message, .. }) => assert!(message.contains("three is not allowed")),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.map(boom, [4, 5]).unwrap(), [4, 5]);
}

fn set_base(b: u64) {
    BASE.store(b, std::sync::atomic::Ordering::Relaxed);
}
static BASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
fn plus_base(x: u64) -> u64 {
    x + BASE.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn the_initializer_runs_in_the_workers() {
    let p =
        Pool::builder().engine(Threads { n: 2 }).initializer(set_base, (1000,)).build().unwrap();
    assert_eq!(p.map(plus_base, [1, 2]).unwrap(), [1001, 1002]);
}

fn bad_init() {
    panic!("no setup today");
}

#[test]
fn a_failing_initializer_stops_the_pool() {
    let p = Pool::builder().engine(Threads { n: 2 }).initializer(bad_init, ()).build().unwrap();
    match p.map(square, 0..10) {
        Err(Error::Initializer(m)) => assert!(m.contains("no setup today"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn take_segment(s: mp_shm::SharedMemory) -> usize {
    s.size()
}

#[test]
fn objects_do_not_cross_an_engine() {
    let p = pool(1);
    let s = mp_shm::SharedMemory::new(64).unwrap();
    assert!(matches!(p.apply(take_segment, (s,)), Err(Error::Serialization(_))));
    assert_eq!(p.apply(square, (3,)).unwrap(), 9);
}

#[test]
fn local_only_settings_are_refused() {
    let b = || Pool::builder().engine(Threads { n: 1 });
    assert!(matches!(b().maxtasksperchild(2).build(), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        b().task_timeout(Duration::from_secs(1)).build(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Pool::builder().engine(Threads { n: 0 }).build(),
        Err(Error::InvalidArgument(_))
    ));
}

fn slow(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    x
}

#[test]
fn terminate_fails_what_is_outstanding() {
    let p = pool(2);
    let r = p.map_async(slow, 0..200).unwrap();
    p.terminate().unwrap();
    assert!(matches!(r.get(), Err(Error::Terminated)));
    assert!(matches!(p.map(square, [1]), Err(Error::Closed)));
}
