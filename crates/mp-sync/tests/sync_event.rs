//! `Event` across processes under the start method in `MP_START_METHOD`.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_sync::{Error, Event};
use mp_testkit::lines::{Lines, say};
use mp_testkit::{pass, pipe, release, wait_for_byte};

/// Reports, waits for the event, reports again.
fn waiter(event: Event, out: PassFd) -> Result<(), Error> {
    say(&out, "waiting");
    event.wait()?;
    say(&out, &format!("woke {}", event.is_set()));
    Ok(())
}

/// Sets the event when told to.
fn setter(event: Event, go: PassFd) {
    wait_for_byte(&go);
    event.set();
}

#[test]
fn set_in_one_process_wakes_a_waiter_in_another() {
    let event = Event::new().unwrap();
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut a = Process::new(waiter, (event.clone(), pass(&w)));
    let mut b = Process::new(waiter, (event.clone(), pass(&w)));
    let mut s = Process::new(setter, (event.clone(), PassFd(go_r)));
    a.start().unwrap();
    b.start().unwrap();
    s.start().unwrap();
    assert_eq!(lines.take(2), ["waiting", "waiting"]);
    assert!(!event.is_set());
    release(&go_w, 1);
    assert_eq!(lines.take(2), ["woke true", "woke true"]);
    for p in [&a, &b, &s] {
        assert_eq!(p.join().unwrap(), 0);
    }
    assert!(event.is_set());
}

#[test]
fn wait_times_out_after_at_least_its_timeout() {
    let event = Event::new().unwrap();
    let start = Instant::now();
    assert!(!event.wait_timeout(Duration::from_millis(100)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(100));
    event.set();
    event.set();
    assert!(event.wait_timeout(Duration::ZERO).unwrap());
    event.clear();
    assert!(!event.is_set());
    assert!(!event.wait_timeout(Duration::ZERO).unwrap());
}

#[test]
fn doorbell_is_readable_while_set() {
    let event = Event::new().unwrap();
    let bell = event.as_fd();
    let mut fds = [rustix::event::PollFd::new(&bell, rustix::event::PollFlags::IN)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    assert!(!event.is_set(), "drains the registration ring");
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0);
    let (go_r, go_w) = pipe();
    let mut p = Process::new(setter, (event.clone(), PassFd(go_r)));
    p.start().unwrap();
    release(&go_w, 1);
    rustix::event::poll(&mut fds, None).unwrap();
    assert!(event.is_set());
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 1, "stays readable");
    event.clear();
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0);
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn the_blocking_path_works_with_spinning_off() {
    mp_sync::set_spin_limit(0);
    assert_eq!(mp_sync::spin_limit(), 0);
    let (ping, pong) = (mp_sync::Event::new().unwrap(), mp_sync::Event::new().unwrap());
    let mut p = mp_process::Process::new(
        |ping: mp_sync::Event, pong: mp_sync::Event| {
            for _ in 0..100 {
                ping.wait().unwrap();
                ping.clear();
                pong.set();
            }
        },
        (ping.clone(), pong.clone()),
    );
    p.start().unwrap();
    for _ in 0..100 {
        ping.set();
        pong.wait().unwrap();
        pong.clear();
    }
    assert_eq!(p.join().unwrap(), 0);
    mp_sync::set_spin_limit(mp_sync::DEFAULT_SPIN_LIMIT);
}
