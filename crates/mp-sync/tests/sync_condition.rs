//! `Condition` across processes under the start method in `MP_START_METHOD`: `notify(n)`
//! wakes exactly `n` waiters, `notify_all` the rest, dead waiters are not counted, and the
//! waits' timeouts and predicates.
//!
//! Each waiter reports the *phase* (a value the parent changes under the condition's lock
//! before each notification) in which it woke, so a spurious or extra wake-up shows up as a
//! report from the wrong phase.

use std::time::{Duration, Instant};

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_sync::{Condition, Error, Lock, MAX_WAITERS, Value};
use mp_testkit::lines::{Lines, say};
use mp_testkit::{eventually, pass, pipe};

/// Takes the condition's lock, reports, waits, and reports the phase it woke in.
fn waiter(cond: Condition, phase: Value<u32>, out: PassFd) -> Result<(), Error> {
    let mut guard = cond.acquire()?;
    say(&out, "ready");
    guard.wait()?;
    let phase = phase.get()?;
    say(&out, &format!("woke in phase {phase}"));
    Ok(())
}

/// Starts `n` waiters and returns once all of them wait (they report while holding the
/// lock and release it only inside `wait`, so once the parent holds the lock, they all wait).
fn start_waiters(
    n: usize,
    cond: &Condition,
    phase: &Value<u32>,
    lines: &mut Lines,
    w: &std::os::fd::OwnedFd,
) -> Vec<Process> {
    let mut children: Vec<Process> =
        (0..n).map(|_| Process::new(waiter, (cond.clone(), phase.clone(), pass(w)))).collect();
    for c in &mut children {
        c.start().unwrap();
    }
    assert!(lines.take(n).iter().all(|l| l == "ready"));
    children
}

fn setup() -> (Condition, Value<u32>) {
    let cond = Condition::new().unwrap();
    // The phase shares the condition's lock (an RLock), so the parent sets it while holding it.
    let phase = Value::with_lock(0u32, cond.get_lock().clone()).unwrap();
    (cond, phase)
}

#[test]
fn notify_wakes_exactly_one_of_two_waiters() {
    let (cond, phase) = setup();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let children = start_waiters(2, &cond, &phase, &mut lines, &w);
    {
        let mut guard = cond.acquire().unwrap();
        assert_eq!(guard.n_waiters(), 2);
        phase.set(1).unwrap();
        assert_eq!(guard.notify(1).unwrap(), 1);
        assert_eq!(guard.n_waiters(), 1);
    }
    assert_eq!(lines.next(), "woke in phase 1");
    {
        let mut guard = cond.acquire().unwrap();
        assert_eq!(guard.n_waiters(), 1, "the second waiter still waits");
        phase.set(2).unwrap();
        assert_eq!(guard.notify(1).unwrap(), 1);
    }
    assert_eq!(lines.next(), "woke in phase 2");
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
}

#[test]
fn notify_two_then_notify_all_of_six() {
    let (cond, phase) = setup();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let children = start_waiters(6, &cond, &phase, &mut lines, &w);
    {
        let mut guard = cond.acquire().unwrap();
        assert_eq!(guard.n_waiters(), 6);
        phase.set(1).unwrap();
        assert_eq!(guard.notify(2).unwrap(), 2);
        assert_eq!(guard.n_waiters(), 4);
    }
    assert_eq!(lines.take(2), ["woke in phase 1", "woke in phase 1"]);
    {
        let mut guard = cond.acquire().unwrap();
        assert_eq!(guard.n_waiters(), 4);
        phase.set(2).unwrap();
        assert_eq!(guard.notify_all().unwrap(), 4);
        assert_eq!(guard.n_waiters(), 0);
    }
    assert!(lines.take(4).iter().all(|l| l == "woke in phase 2"));
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
}

#[test]
fn a_killed_waiter_is_not_counted_and_takes_no_notification() {
    let (cond, phase) = setup();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let children = start_waiters(3, &cond, &phase, &mut lines, &w);
    {
        let mut guard = cond.acquire().unwrap();
        assert_eq!(guard.n_waiters(), 3);
        // Kill the longest-waiting one, which a notify would choose first.
        children[0].kill().unwrap();
        assert_eq!(children[0].join().unwrap(), -9);
        assert_eq!(guard.n_waiters(), 2, "the dead waiter is found and dropped");
        phase.set(1).unwrap();
        assert_eq!(guard.notify(1).unwrap(), 1, "a living waiter gets the notification");
    }
    assert_eq!(lines.next(), "woke in phase 1");
    {
        let mut guard = cond.acquire().unwrap();
        assert_eq!(guard.n_waiters(), 1);
        phase.set(2).unwrap();
        assert_eq!(guard.notify_all().unwrap(), 1);
    }
    assert_eq!(lines.next(), "woke in phase 2");
    for c in &children[1..] {
        assert_eq!(c.join().unwrap(), 0);
    }
}

/// Adds one to the value under the condition `times` times, notifying each time.
fn producer(cond: Condition, value: Value<u32>, times: u32) -> Result<(), Error> {
    for _ in 0..times {
        let mut guard = cond.acquire()?;
        *value.lock()? += 1;
        guard.notify_all()?;
    }
    Ok(())
}

#[test]
fn wait_for_a_predicate_set_by_another_process() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let value = Value::new(0u32).unwrap();
    let mut p = Process::new(producer, (cond.clone(), value.clone(), 5));
    p.start().unwrap();
    {
        let mut guard = cond.acquire().unwrap();
        let reached =
            guard.wait_for_timeout(|| value.get().unwrap() >= 5, Duration::from_secs(60)).unwrap();
        assert!(reached);
    }
    assert_eq!(p.join().unwrap(), 0);
    let mut guard = cond.acquire().unwrap();
    let start = Instant::now();
    assert!(!guard.wait_for_timeout(|| false, Duration::from_millis(80)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(80));
}

#[test]
fn wait_timeout_returns_false_after_its_timeout() {
    let cond = Condition::new().unwrap();
    let mut guard = cond.acquire().unwrap();
    let start = Instant::now();
    assert!(!guard.wait_timeout(Duration::from_millis(100)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(guard.n_waiters(), 0, "a timed-out waiter leaves its slot");
    // The lock is held again after the timeout: another thread cannot take it.
    let other = std::thread::scope(|s| {
        s.spawn(|| cond.try_acquire().map(|g| g.is_some()).map_err(Error::from)).join().unwrap()
    });
    assert!(!other.unwrap());
}

#[test]
fn rlock_levels_are_restored_after_a_wait() {
    let cond = Condition::new().unwrap();
    let outer = cond.acquire().unwrap();
    let mut inner = cond.acquire().unwrap();
    assert!(!inner.wait_timeout(Duration::from_millis(10)).unwrap());
    drop(inner);
    let other = std::thread::scope(|s| {
        s.spawn(|| cond.try_acquire().map(|g| g.is_some()).map_err(Error::from)).join().unwrap()
    });
    assert!(!other.unwrap(), "the outer level is still held");
    drop(outer);
    assert!(cond.try_acquire().unwrap().is_some());
}

#[test]
fn waiting_while_a_value_guard_holds_the_lock_is_refused() {
    let cond = Condition::new().unwrap();
    let value = Value::with_lock(1u8, cond.get_lock().clone()).unwrap();
    let borrowed = value.lock().unwrap();
    let mut guard = cond.acquire().unwrap();
    assert!(matches!(guard.wait_timeout(Duration::from_millis(1)), Err(Error::Borrowed)));
    drop(guard);
    drop(borrowed);
    let mut guard = cond.acquire().unwrap();
    assert!(!guard.wait_timeout(Duration::from_millis(1)).unwrap());
}

#[test]
fn waiters_beyond_the_slots_are_refused() {
    let cond = Condition::new().unwrap();
    std::thread::scope(|s| {
        for _ in 0..MAX_WAITERS {
            s.spawn(|| {
                let mut guard = cond.acquire().unwrap();
                guard.wait().unwrap();
            });
        }
        assert!(eventually(Duration::from_secs(60), || {
            cond.acquire().unwrap().n_waiters() == MAX_WAITERS
        }));
        let mut guard = cond.acquire().unwrap();
        assert!(matches!(
            guard.wait_timeout(Duration::from_millis(1)),
            Err(Error::TooManyWaiters { max: MAX_WAITERS })
        ));
        assert_eq!(guard.notify_all().unwrap(), MAX_WAITERS);
    });
}
