//! A process that does not spin (`set_spin_limit(0)`) talks to its manager over plain socket
//! pairs, not shared-memory lanes: every promise of the manager holds there too. Each test
//! turns spinning off first (nextest runs each in a process of its own), and so does each
//! child it starts, whatever the start method.

mod common;

use mp_manager::{DictProxy, ListProxy, Manager};
use mp_process::Process;

/// Turns spinning off in this process.
fn no_spinning() {
    mp_process::os::spin::set_spin_limit(0);
}

/// How many of this process's mappings are shared-memory segments (memfds).
fn memfd_mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|l| l.contains("/memfd:")).count()
}

#[test]
fn a_connection_without_spinning_maps_no_shared_memory() {
    no_spinning();
    let m = Manager::start().unwrap();
    let before = memfd_mappings();
    // The first call opens this process's first connection to the manager; another thread's
    // call opens a second one.
    let l: ListProxy<u8> = m.list(vec![1]).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| l.append(2).unwrap());
    });
    assert_eq!(l.to_vec().unwrap(), vec![1, 2]);
    assert_eq!(memfd_mappings(), before, "a connection mapped lanes");
}

/// Appends `n` items and adds `n` to a counter, atomically, with spinning off.
fn append_and_count(l: ListProxy<u32>, d: DictProxy<String, u64>, me: u32, n: u32) {
    no_spinning();
    for i in 0..n {
        l.append(me * 1000 + i).unwrap();
        d.update_with(&"total".to_owned(), |v: Option<u64>| v.unwrap_or(0) + 1).unwrap();
    }
}

#[test]
fn children_and_threads_call_the_manager_without_spinning() {
    no_spinning();
    let m = Manager::start().unwrap();
    let l: ListProxy<u32> = m.list(Vec::new()).unwrap();
    let d: DictProxy<String, u64> = m.dict().unwrap();
    let mut children: Vec<Process> =
        (1..=3).map(|me| Process::new(append_and_count, (l.clone(), d.clone(), me, 200))).collect();
    for c in &mut children {
        c.start().unwrap();
    }
    std::thread::scope(|s| {
        for t in 4..=5 {
            let (l, d) = (l.clone(), d.clone());
            s.spawn(move || append_and_count(l, d, t, 200));
        }
    });
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
    assert_eq!(d.get(&"total".to_owned()).unwrap(), Some(1000), "an update was lost");
    let mut all = l.to_vec().unwrap();
    all.sort_unstable();
    let want: Vec<u32> = (1..=5u32).flat_map(|me| (0..200).map(move |i| me * 1000 + i)).collect();
    assert_eq!(all, want);
    // A reply far larger than one read of the socket, and a nested proxy.
    let big: ListProxy<u64> = m.list(0..50_000).unwrap();
    assert_eq!(big.to_vec().unwrap(), (0..50_000).collect::<Vec<u64>>());
    let outer: ListProxy<ListProxy<u64>> = m.list(vec![big.clone()]).unwrap();
    outer.get(0).unwrap().append(7).unwrap();
    assert_eq!(big.len().unwrap(), 50_001);
    // The seed's program prints what Python prints.
    let seed: ListProxy<i32> = m.list(vec![0; 5]).unwrap();
    for i in 0..5 {
        seed.set(i, i as i32 * i as i32).unwrap();
    }
    assert_eq!(seed.to_string(), "[0, 1, 4, 9, 16]");
}

#[test]
fn a_call_blocked_in_a_killed_manager_returns_at_once_without_spinning() {
    no_spinning();
    common::a_call_blocked_in_a_killed_manager_returns_at_once();
}

#[test]
fn a_killed_clients_references_are_given_back_without_spinning() {
    no_spinning();
    common::a_killed_clients_references_are_given_back(0);
}

#[test]
fn a_remote_client_of_this_host_moves_to_a_socket_pair_without_spinning() {
    no_spinning();
    let m = Manager::builder().address("127.0.0.1:0").authkey(b"secret").start().unwrap();
    let address = m.address().unwrap().clone();
    let before = memfd_mappings();
    let remote =
        Manager::connect_builder(address).authkey(b"secret").same_host_shortcut(true).connect();
    let remote = remote.unwrap();
    let d: DictProxy<u32, u32> = remote.dict().unwrap();
    for i in 0..100 {
        d.insert(i, i * 2).unwrap();
    }
    assert!(remote.is_same_host(), "the shortcut was taken");
    assert_eq!(d.get(&21).unwrap(), Some(42));
    assert_eq!(d.len().unwrap(), 100);
    assert_eq!(memfd_mappings(), before, "a connection mapped lanes");
    // A remote client's rights still: no functions of the program run for it.
    let refused = d.update_with(&1, |v: Option<u32>| v.unwrap_or(0) + 1).unwrap_err();
    assert!(refused.is_remote("Refused"), "{refused:?}");
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

#[test]
fn out_of_descriptors_a_new_connection_is_an_error_and_the_open_ones_serve_on() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    no_spinning();
    let m = Manager::start().unwrap();
    let d: DictProxy<u8, u8> = m.dict().unwrap();
    d.insert(1, 1).unwrap();
    let q = m.queue::<u8>().unwrap();
    std::thread::scope(|s| {
        // A call blocked in the manager holds this process's one connection.
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let q_waiter = &q;
        let waiter = s.spawn(move || {
            tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get()).unwrap();
            q_waiter.get()
        });
        let tid = tid_rx.recv().unwrap();
        assert!(mp_testkit::eventually(std::time::Duration::from_secs(10), || {
            mp_testkit::asleep(tid)
        }));
        // No descriptor left: the limit just above the highest open one, the holes below
        // filled.
        let saved = getrlimit(Resource::Nofile);
        let highest = *mp_testkit::open_fds().last().unwrap();
        let mut limit = saved;
        limit.current = Some(highest + 1);
        setrlimit(Resource::Nofile, limit).unwrap();
        let probe = std::fs::File::open("/dev/null");
        let mut fillers = Vec::new();
        while let Ok(fd) = rustix::io::dup(probe.as_ref().unwrap()) {
            fillers.push(fd);
        }
        let socket_pipe = mp_queue::socket_pipe();
        // This call needs a connection of its own, which cannot be made.
        let refused = d.get(&1);
        drop(fillers);
        drop(probe);
        setrlimit(Resource::Nofile, saved).unwrap();
        assert!(
            matches!(socket_pipe, Err(mp_queue::Error::Io { op: "socketpair", .. })),
            "{:?}",
            socket_pipe.map(drop)
        );
        assert!(refused.is_err(), "{refused:?}");
        // With descriptors again, calls connect; the blocked call got through it all.
        assert_eq!(d.get(&1).unwrap(), Some(1));
        q.put(7).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), 7);
    });
    assert_eq!(d.len().unwrap(), 1);
}
