//! The manager's promises beyond CPython's: it never outlives its owner, it gives back what a
//! dead client held, its death is an error at once, and forked children never share a
//! connection with their parent.

mod common;

use std::time::Duration;

use mp_manager::{DictProxy, Error, ListProxy, Manager};
use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_testkit::lines::{Lines, say};
use mp_testkit::{eventually, exits_within, pass, pipe, release, wait_for_byte};
use rustix::process::Signal;

/// Starts a manager, says its pid, and waits.
fn owner(out: PassFd, go: PassFd) {
    let m = Manager::start().unwrap();
    say(&out, &m.pid().to_string());
    wait_for_byte(&go);
}

#[test]
fn the_manager_does_not_outlive_its_owner_killed() {
    let (out_r, out_w) = pipe();
    let (go_r, _go_w) = pipe();
    let mut p = Process::new(owner, (pass(&out_w), pass(&go_r)));
    p.start().unwrap();
    let manager: u32 = Lines::new(out_r).next().parse().unwrap();
    let manager_fd = common::pidfd(manager);
    p.kill().unwrap();
    p.join().unwrap();
    assert!(
        exits_within(&manager_fd, Duration::from_secs(10)),
        "the manager {manager} outlived its SIGKILLed owner"
    );
}

#[test]
fn a_killed_clients_references_are_given_back() {
    common::a_killed_clients_references_are_given_back(mp_process::os::spin::DEFAULT_SPIN_LIMIT);
}

/// Uses every proxy, then returns (dropping them).
fn use_and_leave(dicts: Vec<DictProxy<u8, u8>>) {
    for d in &dicts {
        assert_eq!(d.get(&1).unwrap(), Some(1));
    }
}

#[test]
fn a_child_that_exits_gives_back_what_it_took() {
    let m = Manager::start().unwrap();
    let dicts: Vec<DictProxy<u8, u8>> = (0..3).map(|_| m.dict().unwrap()).collect();
    for d in &dicts {
        d.insert(1, 1).unwrap();
    }
    let mut p = Process::new(use_and_leave, (dicts.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    drop(dicts);
    assert!(eventually(Duration::from_secs(10), || m.number_of_objects().unwrap().0 == 0));
}

#[test]
fn a_killed_manager_is_an_error_at_once() {
    let m = Manager::start().unwrap();
    let l = m.list(vec![1u8]).unwrap();
    let manager_fd = common::pidfd(m.pid());
    mp_testkit::kill(m.pid(), Signal::KILL);
    assert!(exits_within(&manager_fd, Duration::from_secs(10)));
    assert!(matches!(l.len(), Err(Error::ManagerGone)), "{:?}", l.len());
    assert!(matches!(l.append(2), Err(Error::ManagerGone)));
    assert!(matches!(m.list(vec![1u8]), Err(Error::ManagerGone)));
    // Dropping proxies and the manager of a dead manager neither hangs nor panics.
    drop(l);
    drop(m);
}

#[test]
fn a_call_blocked_in_a_killed_manager_returns_at_once() {
    common::a_call_blocked_in_a_killed_manager_returns_at_once();
}

/// Writes and reads its own keys `n` times, checking every read, while the parent does too.
fn hammer(d: DictProxy<u32, u32>, base: u32, n: u32, go: PassFd) {
    wait_for_byte(&go);
    for i in 0..n {
        d.insert(base + i, i).unwrap();
        assert_eq!(d.get(&(base + i)).unwrap(), Some(i), "a reply meant for another caller");
    }
}

#[test]
fn a_child_and_its_parent_never_share_a_connection() {
    let m = Manager::start().unwrap();
    let d: DictProxy<u32, u32> = m.dict().unwrap();
    // The parent's connection exists before the fork (gh-101320's setting).
    d.insert(0, 0).unwrap();
    let (go_r, go_w) = pipe();
    let mut children: Vec<Process> = (1..=2)
        .map(|k| Process::new(hammer, (d.clone(), k * 100_000, 2000, pass(&go_r))))
        .collect();
    for c in &mut children {
        c.start().unwrap();
    }
    release(&go_w, 2);
    for i in 0..2000 {
        d.insert(i, i).unwrap();
        assert_eq!(d.get(&i).unwrap(), Some(i));
    }
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
    assert_eq!(d.len().unwrap(), 6000);
}

#[test]
fn threads_use_connections_of_their_own() {
    let m = Manager::start().unwrap();
    let l: ListProxy<u64> = m.list(Vec::new()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let l = l.clone();
            s.spawn(move || {
                for i in 0..500 {
                    l.append(t * 1000 + i).unwrap();
                }
            });
        }
    });
    let mut all = l.to_vec().unwrap();
    all.sort();
    let want: Vec<u64> = (0..4u64).flat_map(|t| (0..500).map(move |i| t * 1000 + i)).collect();
    assert_eq!(all, want);
}
