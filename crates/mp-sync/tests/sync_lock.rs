//! `Lock` and `RLock` across processes under the start method in `MP_START_METHOD`: the
//! seeds' counters, owner death at chosen steps (the failpoint SIGKILLs the holder), release
//! errors, timed acquisition, locks inside messages, and the doorbell.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_sync::{AnyLock, Error, Lock, LockError, RLock, Value};
use mp_testkit::lines::{Lines, say};
use mp_testkit::{die_now, method, pipe, release, wait_for_byte};

/// Seed 000: `with lock: counter.value += 1`, the value and the lock separate.
fn increment_separate(counter: Value<i32>, lock: Lock, times: u32) -> Result<(), Error> {
    for _ in 0..times {
        let _guard = lock.acquire()?;
        counter.set(counter.get()? + 1)?;
    }
    Ok(())
}

/// The same with the value guarded by the lock itself.
fn increment_guarded(counter: Value<i32>, times: u32) -> Result<(), Error> {
    for _ in 0..times {
        *counter.lock()? += 1;
    }
    Ok(())
}

fn run_all(mut processes: Vec<Process>) {
    for p in &mut processes {
        p.start().unwrap();
    }
    for p in &processes {
        assert_eq!(p.join().unwrap(), 0, "a child failed under {}", method());
    }
}

#[test]
fn two_processes_count_to_20000() {
    let counter = Value::new(0i32).unwrap();
    let lock = Lock::new().unwrap();
    let processes = (0..2)
        .map(|_| Process::new(increment_separate, (counter.clone(), lock.clone(), 10_000)))
        .collect();
    run_all(processes);
    assert_eq!(counter.get().unwrap(), 20_000);
}

#[test]
fn five_processes_count_to_50000() {
    let counter = Value::with_lock(0i32, Lock::new().unwrap()).unwrap();
    let processes =
        (0..5).map(|_| Process::new(increment_guarded, (counter.clone(), 10_000))).collect();
    run_all(processes);
    assert_eq!(counter.get().unwrap(), 50_000);
}

#[test]
fn rlock_counter_with_nested_holds() {
    fn nested(counter: Value<i32>, times: u32) -> Result<(), Error> {
        for _ in 0..times {
            let _outer = counter.get_lock().acquire()?;
            *counter.lock()? += 1;
        }
        Ok(())
    }
    let counter = Value::new(0i32).unwrap();
    let processes = (0..3).map(|_| Process::new(nested, (counter.clone(), 2_000))).collect();
    run_all(processes);
    assert_eq!(counter.get().unwrap(), 6_000);
}

/// Increments a counter guarded by its lock, and dies (SIGKILL) holding the lock at the
/// increment numbered `step`, after writing it.
fn count_then_die(counter: Value<u32>, step: u32) {
    loop {
        let mut guard = counter.lock().unwrap();
        *guard += 1;
        if *guard == step {
            die_now();
        }
    }
}

fn owner_died_at(counter: Value<u32>, step: u32) {
    let mut p = Process::new(count_then_die, (counter.clone(), step));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), -9, "the failpoint kills the child");
    match counter.lock() {
        Err(LockError::OwnerDied(mut guard)) => {
            assert_eq!(*guard, step, "the dead holder's last write is visible");
            *guard = 0;
        }
        Ok(_) => panic!("the owner's death went unnoticed"),
        Err(LockError::Failed(e)) => panic!("{e}"),
    }
    // Consistent again: the next acquisitions are clean.
    assert_eq!(*counter.lock().unwrap(), 0);
    assert_eq!(counter.get().unwrap(), 0);
}

#[test]
fn lock_owner_died_at_first_step() {
    owner_died_at(Value::with_lock(0u32, Lock::new().unwrap()).unwrap(), 1);
}

#[test]
fn lock_owner_died_at_step_1000() {
    owner_died_at(Value::with_lock(0u32, Lock::new().unwrap()).unwrap(), 1000);
}

#[test]
fn rlock_owner_died_at_step_7() {
    owner_died_at(Value::new(0u32).unwrap(), 7);
}

/// Takes the RLock `depth` times, reports, and dies holding all the levels.
fn hold_levels_then_die(lock: RLock, depth: u32, out: PassFd) {
    let guards: Vec<_> = (0..depth).map(|_| lock.acquire().unwrap()).collect();
    say(&out, &format!("holding {}", guards.len()));
    die_now();
}

#[test]
fn rlock_owner_died_holding_three_levels() {
    let lock = RLock::new().unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(hold_levels_then_die, (lock.clone(), 3, PassFd(w)));
    p.start().unwrap();
    assert_eq!(lines.next(), "holding 3");
    assert_eq!(p.join().unwrap(), -9);
    let guard = match lock.acquire() {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    // The new holder holds one level: one release frees it.
    drop(guard);
    assert!(matches!(lock.release(), Err(Error::TooManyReleases)));
    let other = std::thread::scope(|s| {
        s.spawn(|| lock.try_acquire().map(|g| g.is_some()).map_err(Error::from)).join().unwrap()
    });
    assert!(other.unwrap(), "another thread can take the freed lock");
}

fn abort_holding(lock: Lock) {
    let _guard = lock.acquire().unwrap();
    std::process::abort();
}

#[test]
fn lock_owner_died_by_abort() {
    let lock = Lock::new().unwrap();
    let mut p = Process::new(abort_holding, (lock.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), -6);
    assert!(lock.acquire().is_err_and(|e| e.owner_died()));
    assert!(lock.acquire().is_ok());
}

#[test]
fn a_thread_exiting_with_the_lock_is_an_owner_death() {
    let lock = Lock::new().unwrap();
    std::thread::scope(|s| s.spawn(|| lock.acquire().unwrap().forget()).join().unwrap());
    let err = lock.acquire().unwrap_err();
    assert!(err.owner_died());
    assert!(matches!(Error::from(err), Error::OwnerDied));
    let _clean = lock.acquire().unwrap();
}

#[test]
fn release_errors() {
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(Error::NotHeld)), "release of an unheld lock");
    {
        let _guard = lock.acquire().unwrap();
        assert!(matches!(lock.release(), Err(Error::NotHeld)), "a guard releases itself");
        assert!(matches!(lock.acquire(), Err(LockError::Failed(Error::AlreadyHeld))));
        assert!(matches!(lock.try_acquire(), Err(LockError::Failed(Error::AlreadyHeld))));
    }
    lock.acquire().unwrap().forget();
    let from_other = std::thread::scope(|s| s.spawn(|| lock.release()).join().unwrap());
    assert!(matches!(from_other, Err(Error::NotHeld)), "release from another thread");
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(Error::NotHeld)), "released twice");

    let rlock = RLock::new().unwrap();
    rlock.acquire().unwrap().forget();
    rlock.acquire().unwrap().forget();
    let from_other = std::thread::scope(|s| s.spawn(|| rlock.release()).join().unwrap());
    assert!(matches!(from_other, Err(Error::NotHeld)), "RLock released by another thread");
    rlock.release().unwrap();
    rlock.release().unwrap();
    assert!(matches!(rlock.release(), Err(Error::TooManyReleases)));
}

/// Tries to release a lock its parent holds.
fn release_parents_lock(lock: Lock, out: PassFd) {
    let verdict = match lock.release() {
        Err(Error::NotHeld) => "NotHeld",
        Ok(()) => "released",
        Err(_) => "other",
    };
    say(&out, verdict);
}

#[test]
fn another_process_cannot_release() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap().forget();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(release_parents_lock, (lock.clone(), PassFd(w)));
    p.start().unwrap();
    assert_eq!(lines.next(), "NotHeld");
    assert_eq!(p.join().unwrap(), 0);
    lock.release().unwrap();
}

/// Takes the lock, reports, holds it until told to let go.
fn hold_until_told(lock: AnyLock, out: PassFd, go: PassFd) {
    let guard = lock.acquire().unwrap();
    say(&out, "holding");
    wait_for_byte(&go);
    drop(guard);
    say(&out, "released");
}

#[test]
fn timed_acquire_waits_at_least_its_timeout() {
    let lock = Lock::new().unwrap();
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(hold_until_told, (lock.clone().into(), PassFd(w), PassFd(go_r)));
    p.start().unwrap();
    assert_eq!(lines.next(), "holding");
    assert!(lock.try_acquire().unwrap().is_none());
    let start = Instant::now();
    assert!(lock.acquire_timeout(Duration::from_millis(150)).unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert!(lock.acquire_timeout(Duration::ZERO).unwrap().is_none());
    release(&go_w, 1);
    assert_eq!(lines.next(), "released");
    assert!(lock.acquire_timeout(Duration::from_secs(30)).unwrap().is_some());
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn doorbell_polls_readable_after_a_release() {
    let lock = RLock::new().unwrap();
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(hold_until_told, (lock.clone().into(), PassFd(w), PassFd(go_r)));
    p.start().unwrap();
    assert_eq!(lines.next(), "holding");
    let bell = lock.as_fd();
    // The registration rings once; a failed attempt drains it.
    assert!(lock.try_acquire().unwrap().is_none());
    let mut fds = [rustix::event::PollFd::new(&bell, rustix::event::PollFlags::IN)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0, "drained");
    release(&go_w, 1);
    let guard = loop {
        rustix::event::poll(&mut fds, None).unwrap();
        if let Some(g) = lock.try_acquire().unwrap() {
            break g;
        }
    };
    drop(guard);
    assert_eq!(lines.next(), "released");
    assert_eq!(p.join().unwrap(), 0);
}

/// Receives a lock inside a message on a socket, takes it, and reports.
fn lock_from_a_message(sock: PassFd, out: PassFd) {
    let lock: Lock = mp_process::fdpass::recv_value(sock.as_fd(), 1 << 20).unwrap().unwrap();
    let got = lock.try_acquire().map(|g| g.is_some());
    say(&out, &format!("{got:?}"));
}

#[test]
fn a_lock_crosses_inside_a_message() {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(lock_from_a_message, (PassFd(theirs), PassFd(w)));
    p.start().unwrap();
    let lock = Lock::new().unwrap();
    let guard = lock.acquire().unwrap();
    mp_process::fdpass::send_value(ours.as_fd(), &lock, 1 << 20).unwrap();
    assert_eq!(lines.next(), "Ok(false)", "the child sees the lock held");
    drop(guard);
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn a_segment_of_another_kind_is_refused() {
    use mp_process::fdpass::{decode_with_fds, encode_with_fds};
    let sem = mp_sync::Semaphore::new(1).unwrap();
    let (bytes, fds) = encode_with_fds(&sem).unwrap();
    assert!(decode_with_fds::<Lock>(&bytes, fds).is_err(), "a semaphore is not a Lock");
    let lock = Lock::new().unwrap();
    let (bytes, fds) = encode_with_fds(&lock).unwrap();
    assert!(decode_with_fds::<RLock>(&bytes, fds).is_err(), "a Lock is not an RLock");
    let (bytes, fds) = encode_with_fds(&lock).unwrap();
    let back: Lock = decode_with_fds(&bytes, fds).unwrap();
    // The received handle maps the same lock at another address.
    let guard = lock.acquire().unwrap();
    assert!(back.try_acquire().is_err_and(|e| matches!(e, LockError::Failed(Error::AlreadyHeld))));
    drop(guard);
    // A hold forgotten through one handle is released through the other.
    back.acquire().unwrap().forget();
    lock.release().unwrap();
    assert!(back.try_acquire().unwrap().is_some());
    // Outside mp's fd-carrying encoder a lock cannot be serialised.
    assert!(mp_process::wire::encode(&lock).is_err());
}

#[test]
fn a_forked_child_does_not_inherit_forgotten_holds() {
    let lock = Lock::new().unwrap();
    let value = Value::with_lock(0u32, lock.clone()).unwrap();
    // The parent holds the lock without a guard when it forks.
    lock.acquire().unwrap().forget();
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let (child_lock, child_value, out, go) = (lock.clone(), value.clone(), PassFd(w), PassFd(go_r));
    let mut p = Process::fork_closure(move || {
        wait_for_byte(&go);
        // The parent has released it; the child takes it through the value's guard.
        let mut guard = child_value.lock().unwrap();
        *guard += 1;
        // The parent's forgotten hold does not make the child's guard releasable.
        let verdict = match child_lock.release() {
            Err(Error::NotHeld) => "NotHeld",
            Ok(()) => "released",
            Err(_) => "other",
        };
        say(&out, verdict);
        drop(guard);
    });
    p.start().unwrap();
    lock.release().unwrap();
    release(&go_w, 1);
    assert_eq!(lines.next(), "NotHeld");
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(value.get().unwrap(), 1);
}

/// Takes three locks and a recursive level through glibc's path, releases them out of
/// order, and dies holding two: the robust list the holds are linked into stays whole.
fn tangle_then_die(a: Lock, b: RLock, c: Lock, d: Lock, out: PassFd) {
    let ga = a.acquire().unwrap();
    let gb = b.acquire().unwrap();
    let gb2 = b.acquire().unwrap(); // a second level: glibc counts it
    let gc = c.acquire().unwrap();
    let gd = d.acquire().unwrap();
    drop(gb2);
    drop(gc); // from the middle of the list
    drop(gb);
    let gc = c.acquire().unwrap(); // back at the front
    drop(gd); // the oldest
    say(&out, "holding a and c");
    let _keep = (ga, gc);
    die_now();
}

#[test]
fn a_holder_of_several_locks_released_out_of_order_dies() {
    let (a, b, c, d) =
        (Lock::new().unwrap(), RLock::new().unwrap(), Lock::new().unwrap(), Lock::new().unwrap());
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let args = (a.clone(), b.clone(), c.clone(), d.clone(), PassFd(w));
    let mut p = Process::new(tangle_then_die, args);
    p.start().unwrap();
    assert_eq!(lines.next(), "holding a and c");
    assert_eq!(p.join().unwrap(), -9);
    assert!(a.acquire().is_err_and(|e| e.owner_died()), "a was held by the dead");
    assert!(c.acquire().is_err_and(|e| e.owner_died()), "c was held by the dead");
    assert!(b.acquire().is_ok(), "b was released");
    assert!(d.acquire().is_ok(), "d was released");
}

#[test]
fn threads_interleave_holds_of_shared_locks() {
    // Several threads of this process take the same locks in different orders of release;
    // a thread that exits holding one leaves it owner-died, the others clean.
    let locks: Vec<Lock> = (0..4).map(|_| Lock::new().unwrap()).collect();
    for round in 0..50 {
        std::thread::scope(|s| {
            for t in 0..4 {
                let locks = &locks;
                s.spawn(move || {
                    for i in 0..200 {
                        let first = &locks[(t + i) % 4];
                        let second = &locks[(t + i + 1) % 4];
                        // Take in index order (no deadlock), release in either order.
                        let (lo, hi) = if (t + i) % 4 < (t + i + 1) % 4 {
                            (first, second)
                        } else {
                            (second, first)
                        };
                        let g1 = lo.acquire().unwrap();
                        let g2 = hi.acquire().unwrap();
                        if i % 2 == 0 {
                            drop(g1);
                            drop(g2);
                        } else {
                            drop(g2);
                            drop(g1);
                        }
                    }
                });
            }
        });
        let dying = &locks[round % 4];
        std::thread::scope(|s| s.spawn(|| dying.acquire().unwrap().forget()).join().unwrap());
        assert!(dying.acquire().is_err_and(|e| e.owner_died()), "round {round}");
        for (i, lock) in locks.iter().enumerate() {
            assert!(lock.try_acquire().unwrap().is_some(), "round {round}, lock {i}");
        }
    }
}

#[test]
fn a_forked_child_dying_with_the_lock_is_an_owner_death() {
    // The parent's thread uses the lock first, so the child starts from that thread's state
    // (its robust list and tid are glibc's, reset and updated by fork).
    let lock = Lock::new().unwrap();
    drop(lock.acquire().unwrap());
    let held = lock.acquire().unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let (child_lock, out) = (lock.clone(), PassFd(w));
    let mut p = Process::fork_closure(move || {
        // The parent's hold is not the child's: releasing it is refused.
        let verdict = match child_lock.release() {
            Err(Error::NotHeld) => "NotHeld",
            Ok(()) => "released",
            Err(_) => "other",
        };
        say(&out, verdict);
        let _guard = child_lock.acquire().unwrap();
        say(&out, "holding");
        die_now();
    });
    p.start().unwrap();
    assert_eq!(lines.next(), "NotHeld");
    drop(held);
    assert_eq!(lines.next(), "holding");
    assert_eq!(p.join().unwrap(), -9);
    assert!(lock.acquire().is_err_and(|e| e.owner_died()), "the child's tid was in the word");
    assert!(lock.acquire().is_ok());
}
