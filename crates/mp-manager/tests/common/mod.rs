//! Test bodies that `robust.rs` runs as a process that spins and `without_spinning.rs` as one
//! that does not (whose connections to the manager are plain socket pairs).

use std::time::Duration;

use mp_manager::{DictProxy, Error, Manager};
use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_testkit::lines::{Lines, say};
use mp_testkit::{eventually, pass, pipe, wait_for_byte};
use rustix::process::{Pid, PidfdFlags, Signal};

/// A pidfd of `pid`.
pub fn pidfd(pid: u32) -> std::os::fd::OwnedFd {
    rustix::process::pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap()
}

/// Sets this process's spin limit to `spin_limit`, uses every proxy (taking a reference of
/// this process to each), says so, and waits.
fn hold(dicts: Vec<DictProxy<u8, u8>>, spin_limit: u32, out: PassFd, go: PassFd) {
    mp_process::os::spin::set_spin_limit(spin_limit);
    for d in &dicts {
        d.insert(1, 1).unwrap();
    }
    say(&out, "holding");
    wait_for_byte(&go);
}

/// A client with the spin limit `spin_limit` takes references to five dicts and is
/// SIGKILLed: the manager gives them back.
pub fn a_killed_clients_references_are_given_back(spin_limit: u32) {
    let m = Manager::start().unwrap();
    let dicts: Vec<DictProxy<u8, u8>> = (0..5).map(|_| m.dict().unwrap()).collect();
    let (out_r, out_w) = pipe();
    let (go_r, _go_w) = pipe();
    let mut p = Process::new(hold, (dicts.clone(), spin_limit, pass(&out_w), pass(&go_r)));
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

/// A thread blocked in a queue's `get` in the manager, and the manager SIGKILLed: the call
/// returns `ManagerGone` at once, and so does every later call.
pub fn a_call_blocked_in_a_killed_manager_returns_at_once() {
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
    // Wait until the waiter sleeps: its get is in the manager, waiting for a reply.
    let tid = tid_rx.recv().unwrap();
    assert!(eventually(Duration::from_secs(10), || mp_testkit::asleep(tid)));
    mp_testkit::kill(manager, Signal::KILL);
    let got = waiter.join().unwrap();
    assert!(matches!(got, Err(Error::ManagerGone)), "{got:?}");
    assert!(mp_testkit::exits_within(&manager_fd, Duration::from_secs(10)));
    assert!(matches!(l.len(), Err(Error::ManagerGone)), "{:?}", l.len());
    assert!(matches!(m.dict::<u8, u8>(), Err(Error::ManagerGone)));
}
