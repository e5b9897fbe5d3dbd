//! A process that does not spin (`set_spin_limit(0)`) talks to its manager over plain socket
//! pairs, not shared-memory lanes: every promise of the manager holds there too. Each test
//! turns spinning off first (nextest runs each in a process of its own), and so does each
//! child it starts, whatever the start method.

use std::time::Duration;

use mp_manager::{DictProxy, Error, ListProxy, Manager};
use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_testkit::lines::{Lines, say};
use mp_testkit::{eventually, exits_within, pass, pipe, wait_for_byte};
use rustix::process::{Pid, PidfdFlags, Signal};

/// Turns spinning off in this process.
fn no_spinning() {
    mp_process::os::spin::set_spin_limit(0);
}

/// A pidfd of `pid`.
fn pidfd(pid: u32) -> std::os::fd::OwnedFd {
    rustix::process::pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap()
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
    let m = Manager::start().unwrap();
    let q = m.queue::<u8>().unwrap();
    let l = m.list(vec![1u8]).unwrap();
    let manager = m.pid();
    let manager_fd = pidfd(manager);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get()).unwrap();
        q.get()
    });
    // Wait until the waiter sleeps (state S): its get is in the manager, waiting for a reply.
    let tid = tid_rx.recv().unwrap();
    let sleeping = || {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('S'))
        })
    };
    assert!(eventually(Duration::from_secs(10), sleeping));
    mp_testkit::kill(manager, Signal::KILL);
    let got = waiter.join().unwrap();
    assert!(matches!(got, Err(Error::ManagerGone)), "{got:?}");
    assert!(exits_within(&manager_fd, Duration::from_secs(10)));
    assert!(matches!(l.len(), Err(Error::ManagerGone)), "{:?}", l.len());
    assert!(matches!(m.dict::<u8, u8>(), Err(Error::ManagerGone)));
}

/// Uses every proxy with spinning off (taking a reference of this process to each), says
/// so, and waits.
fn hold(dicts: Vec<DictProxy<u8, u8>>, out: PassFd, go: PassFd) {
    no_spinning();
    for d in &dicts {
        d.insert(1, 1).unwrap();
    }
    say(&out, "holding");
    wait_for_byte(&go);
}

#[test]
fn a_killed_clients_references_are_given_back_without_spinning() {
    no_spinning();
    let m = Manager::start().unwrap();
    let dicts: Vec<DictProxy<u8, u8>> = (0..5).map(|_| m.dict().unwrap()).collect();
    let (out_r, out_w) = pipe();
    let (go_r, _go_w) = pipe();
    let mut p = Process::new(hold, (dicts.clone(), pass(&out_w), pass(&go_r)));
    p.start().unwrap();
    assert_eq!(Lines::new(out_r).next(), "holding");
    drop(dicts);
    // The child's references keep the dicts.
    assert_eq!(m.number_of_objects().unwrap(), (5, 0));
    p.kill().unwrap();
    p.join().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || m.number_of_objects().unwrap().0 == 0),
        "the dead client's dicts were not released: {:?}",
        m.number_of_objects()
    );
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
