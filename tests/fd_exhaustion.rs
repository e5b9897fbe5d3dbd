//! Running out of descriptors (`RLIMIT_NOFILE`), under the start method in `MP_START_METHOD`:
//! processes, queues, pipes, pools and managers (started, and reached remotely) fail with an
//! error that names the cause, leave no
//! descriptor or child behind, and work again once descriptors are free (issue 10: a pool
//! left its zygote running and the program hung at exit; the forkserver's stream lost its
//! framing for good).
//!
//! Each test lowers the limit of its own process (nextest runs a process per test).

use std::os::fd::OwnedFd;

use mp_testkit::{children, open_fds};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors that fill every gap below the highest open one, so that a limit of
/// `highest + 1 + k` leaves exactly `k` free.
fn fill_gaps() -> Vec<OwnedFd> {
    let mut fillers = Vec::new();
    loop {
        let highest = *open_fds().last().unwrap();
        let fd = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stderr(), 0).unwrap();
        let n = std::os::fd::AsRawFd::as_raw_fd(&fd) as u64;
        if n > highest {
            return fillers;
        }
        fillers.push(fd);
    }
}

/// Runs `attempt` with `k` free descriptors for k = 0, 1, ... until it succeeds: every
/// failure must name the cause and leave descriptors and children as they were.
fn until_it_works(what: &str, mut attempt: impl FnMut() -> Result<(), String>) -> usize {
    let _fillers = fill_gaps();
    let fds = open_fds();
    let kids = children();
    let top = fds.last().unwrap() + 1;
    let limit = getrlimit(Resource::Nofile);
    for free in 0..64u64 {
        setrlimit(Resource::Nofile, Rlimit { current: Some(top + free), maximum: limit.maximum })
            .unwrap();
        let result = attempt();
        setrlimit(Resource::Nofile, limit).unwrap();
        match result {
            Ok(()) => {
                assert_eq!(open_fds(), fds, "{what}: descriptors after success");
                return free as usize;
            }
            Err(message) => {
                assert!(
                    message.contains("Too many open files") || message.contains("too many open"),
                    "{what} with {free} free descriptors: {message}"
                );
                assert_eq!(open_fds(), fds, "{what} with {free} free: descriptors left: {message}");
                assert_eq!(children(), kids, "{what} with {free} free: children left: {message}");
            }
        }
    }
    panic!("{what} never worked");
}

fn exit_with(code: i32) {
    std::process::exit(code);
}

fn square(x: u64) -> u64 {
    x * x
}

/// What a first use starts once for good (the resource tracker, the forkserver, the pipes'
/// closed-end socket) is started before the counting begins.
fn warm_up() {
    let mut p = mp::Process::new(exit_with, (0,));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    drop(mp::pipe(true).unwrap());
}

#[test]
fn a_process_start_out_of_descriptors_fails_and_leaves_no_child() {
    warm_up();
    until_it_works("Process", || {
        let mut p = mp::Process::new(exit_with, (3,));
        p.start().map_err(|e| e.to_string())?;
        assert_eq!(p.join().unwrap(), 3);
        Ok(())
    });
}

fn wait_for_go(fd: mp::process::fdpass::PassFd) {
    mp_testkit::wait_for_byte(fd);
}

#[test]
fn a_started_process_is_joined_out_of_descriptors_and_its_sentinel_says_why() {
    warm_up();
    let (r, w) = mp_testkit::pipe();
    let mut p = mp::Process::new(wait_for_go, (mp::process::fdpass::PassFd(r),));
    p.start().unwrap();
    let _fillers = fill_gaps();
    let fds = open_fds();
    let limit = getrlimit(Resource::Nofile);
    let top = fds.last().unwrap() + 1;
    setrlimit(Resource::Nofile, Rlimit { current: Some(top), maximum: limit.maximum }).unwrap();
    let sentinel = p.sentinel().map(|_| ()).map_err(|e| e.to_string());
    let alive = p.is_alive();
    // The child is released and joined before anything is checked, so that a failure leaves
    // no child; neither the release nor the join needs a descriptor.
    let mut go = std::fs::File::from(w);
    let released = std::io::Write::write_all(&mut go, b"!");
    let code = p.join();
    setrlimit(Resource::Nofile, limit).unwrap();
    released.unwrap();
    assert_eq!(code.unwrap(), 0);
    assert!(alive, "the child was running");
    // A child of this process has no pidfd until one is asked for, and none could be opened;
    // a forkserver's child came with the one its server sent.
    if mp_testkit::method() == "forkserver" {
        assert_eq!(sentinel, Ok(()));
    } else {
        let message = sentinel.unwrap_err();
        assert!(message.contains("Too many open files"), "{message}");
    }
    drop(go);
    // Only the write end just closed is gone: the failed sentinel left nothing open.
    assert_eq!(open_fds().len(), fds.len() - 1);
}

#[test]
fn queues_and_pipes_out_of_descriptors_fail_and_leak_nothing() {
    warm_up();
    until_it_works("Queue", || {
        let q: mp::Queue<u32> = mp::Queue::new().map_err(|e| e.to_string())?;
        q.put(5).unwrap();
        assert_eq!(q.get().unwrap(), 5);
        Ok(())
    });
    until_it_works("Pipe", || {
        let (a, b) = mp::pipe(true).map_err(|e| e.to_string())?;
        a.send(&7u8).unwrap();
        assert_eq!(b.recv::<u8>().unwrap(), 7);
        Ok(())
    });
}

#[test]
fn a_pool_out_of_descriptors_fails_stops_what_it_started_and_works_later() {
    warm_up();
    // A first pool makes what pools make once.
    drop(mp::Pool::new(1).unwrap());
    let needed = until_it_works("Pool", || {
        let pool = mp::Pool::new(2).map_err(|e| e.to_string())?;
        assert_eq!(pool.map(square, 0..20u64).unwrap(), (0..20u64).map(square).collect::<Vec<_>>());
        pool.close().unwrap();
        pool.join().unwrap();
        Ok(())
    });
    assert!(needed > 0, "a pool needs some descriptors");
}

/// Receives a queue and puts into it.
fn put_into(q: mp::Queue<u64>, x: u64) -> u64 {
    q.put(x).unwrap();
    x
}

#[test]
fn objects_sent_to_workers_out_of_descriptors_fail_their_tasks_and_the_pool_goes_on() {
    warm_up();
    let pool = mp::Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
    until_it_works("a map with a fresh queue", || {
        // A new queue each time: its descriptors must be duplicated to define it to the
        // workers.
        let q: mp::Queue<u64> = mp::Queue::new().map_err(|e| e.to_string())?;
        let got = pool
            .starmap(put_into, (0..10u64).map(|i| (q.clone(), i)))
            .map_err(|e| e.to_string())?;
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        let mut seen: Vec<u64> = (0..10).map(|_| q.get().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        Ok(())
    });
    assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
}

#[test]
fn a_manager_out_of_descriptors_fails_leaves_nothing_and_works_later() {
    warm_up();
    // A first manager makes what managers make once.
    drop(mp::Manager::start().unwrap());
    let needed = until_it_works("Manager", || {
        let mut m = mp::Manager::start().map_err(|e| e.to_string())?;
        let d = m.dict::<u8, u8>().map_err(|e| e.to_string())?;
        d.insert(1, 2).map_err(|e| e.to_string())?;
        assert_eq!(d.get(&1).unwrap(), Some(2));
        drop(d);
        m.shutdown().unwrap();
        Ok(())
    });
    assert!(needed > 0, "a manager needs some descriptors");
}

#[test]
fn a_remote_client_out_of_descriptors_fails_and_leaks_nothing() {
    warm_up();
    let m = mp::Manager::builder().address("127.0.0.1:0").authkey(b"k").start().unwrap();
    let address = m.address().unwrap().clone();
    let shared = m.dict::<u8, u8>().unwrap();
    m.publish("d", &shared).unwrap();
    // With the same-host shortcut (a knock short of descriptors stays on TCP) and without.
    for shortcut in [true, false] {
        until_it_works("Manager::connect", || {
            let remote = mp::Manager::connect_builder(&address)
                .authkey(b"k")
                .same_host_shortcut(shortcut)
                .connect()
                .map_err(|e| e.to_string())?;
            let d: mp::DictProxy<u8, u8> = remote.lookup("d").map_err(|e| e.to_string())?;
            d.insert(3, 4).map_err(|e| e.to_string())?;
            Ok(())
        });
        assert_eq!(shared.get(&3).unwrap(), Some(4));
        shared.insert(3, 0).unwrap();
    }
    // Descriptors free again: the shortcut is taken.
    let remote = mp::Manager::connect(&address, Some(b"k")).unwrap();
    assert!(remote.is_same_host());
}
