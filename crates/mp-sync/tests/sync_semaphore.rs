//! `Semaphore` and `BoundedSemaphore` across processes under the start method in
//! `MP_START_METHOD`: counting down, timed acquisition, wake-ups across processes, bounds,
//! and the doorbell.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_sync::{BoundedSemaphore, Error, SEM_VALUE_MAX, Semaphore};
use mp_testkit::lines::{Lines, say};
use mp_testkit::{pass, pipe, release, wait_for_byte};

/// Takes a permit, reports, and keeps it until told to give it back.
fn hold_permit(sem: Semaphore, out: PassFd, go: PassFd) {
    let permit = sem.acquire().unwrap();
    say(&out, "took");
    wait_for_byte(&go);
    drop(permit);
}

#[test]
fn semaphore_of_two_counts_down_and_times_out() {
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut first = Process::new(hold_permit, (sem.clone(), pass(&w), pass(&go_r)));
    first.start().unwrap();
    assert_eq!(lines.next(), "took");
    assert_eq!(sem.get_value(), 1);
    let mut second = Process::new(hold_permit, (sem.clone(), pass(&w), pass(&go_r)));
    second.start().unwrap();
    assert_eq!(lines.next(), "took");
    assert_eq!(sem.get_value(), 0);

    let start = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(120)).unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(120), "{:?}", start.elapsed());
    assert!(sem.try_acquire().is_none());

    release(&go_w, 2);
    assert_eq!(first.join().unwrap(), 0);
    assert_eq!(second.join().unwrap(), 0);
    assert_eq!(sem.get_value(), 2);
}

/// Releases the semaphore once, after being told to.
fn release_later(sem: Semaphore, go: PassFd) -> Result<(), Error> {
    wait_for_byte(&go);
    sem.release()
}

#[test]
fn a_release_in_another_process_wakes_a_waiter() {
    let sem = Semaphore::new(0).unwrap();
    let (go_r, go_w) = pipe();
    let mut p = Process::new(release_later, (sem.clone(), PassFd(go_r)));
    p.start().unwrap();
    release(&go_w, 1);
    let permit = sem.acquire_timeout(Duration::from_secs(60)).unwrap();
    assert!(permit.is_some(), "woken by the child's release");
    permit.unwrap().forget();
    assert_eq!(sem.get_value(), 0);
    assert_eq!(p.join().unwrap(), 0);
}

/// Takes `n` permits, one at a time, reporting the count each time.
fn take_n(sem: Semaphore, n: u32, out: PassFd) {
    for _ in 0..n {
        sem.acquire().unwrap().forget();
        say(&out, "took");
    }
}

#[test]
fn many_waiters_each_get_one_release() {
    let sem = Semaphore::new(0).unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut children: Vec<_> =
        (0..4).map(|_| Process::new(take_n, (sem.clone(), 50, pass(&w)))).collect();
    for c in &mut children {
        c.start().unwrap();
    }
    for _ in 0..200 {
        sem.release().unwrap();
    }
    assert_eq!(lines.take(200).len(), 200);
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
    assert_eq!(sem.get_value(), 0);
}

#[test]
fn bounded_semaphore_refuses_to_exceed_its_start() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert!(matches!(sem.release(), Err(Error::TooManyReleases)));
    let a = sem.acquire().unwrap();
    sem.acquire().unwrap().forget();
    assert_eq!(sem.get_value(), 0);
    sem.release().unwrap();
    drop(a);
    assert_eq!(sem.get_value(), 2);
    assert!(matches!(sem.release(), Err(Error::TooManyReleases)));

    let unbounded = Semaphore::new(SEM_VALUE_MAX).unwrap();
    assert!(matches!(unbounded.release(), Err(Error::TooManyReleases)));
    assert!(matches!(Semaphore::new(SEM_VALUE_MAX + 1), Err(Error::InvalidArgument(_))));
}

/// Releases a bounded semaphore its parent drained.
fn release_bounded(sem: BoundedSemaphore, out: PassFd) {
    let first = sem.release().is_ok();
    let second = matches!(sem.release(), Err(Error::TooManyReleases));
    say(&out, &format!("{first} {second}"));
}

#[test]
fn bounded_semaphore_bound_holds_across_processes() {
    let sem = BoundedSemaphore::new(1).unwrap();
    sem.acquire().unwrap().forget();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(release_bounded, (sem.clone(), PassFd(w)));
    p.start().unwrap();
    assert_eq!(lines.next(), "true true");
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(sem.get_value(), 1);
}

#[test]
fn doorbell_stays_readable_while_permits_remain() {
    let sem = Semaphore::new(0).unwrap();
    let bell = sem.as_fd();
    let mut fds = [rustix::event::PollFd::new(&bell, rustix::event::PollFlags::IN)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    assert!(sem.try_acquire().is_none());
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0, "drained, nothing to take");
    let (go_r, go_w) = pipe();
    let mut p = Process::new(release_later, (sem.clone(), PassFd(go_r)));
    p.start().unwrap();
    release(&go_w, 1);
    rustix::event::poll(&mut fds, None).unwrap();
    sem.try_acquire().expect("the released permit").forget();
    assert_eq!(p.join().unwrap(), 0);
    // Two permits: taking one leaves the doorbell readable for the other.
    sem.release().unwrap();
    sem.release().unwrap();
    sem.try_acquire().unwrap().forget();
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 1);
    sem.try_acquire().unwrap().forget();
    assert!(sem.try_acquire().is_none());
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0);
}
