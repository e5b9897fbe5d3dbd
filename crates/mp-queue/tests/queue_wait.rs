//! `wait` over connections, process sentinels and `mp_sync` objects, with children started under
//! the suite's start method.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_process::Process;
use mp_queue::{Connection, wait, wait_timeout};

/// The positions in `objects` of the `ready` ones `wait` returned (Python compares them by
/// identity).
fn positions<T>(objects: &[T], ready: &[&T]) -> Vec<usize> {
    let at = |r: &&T| objects.iter().position(|o| std::ptr::eq(o, *r)).expect("one of the objects");
    ready.iter().map(at).collect()
}

/// Receives indices on `conns[0]` and answers "ready" on `conns[index]`, until an index past
/// the end, then returns (closing every end it holds).
fn answer_on(conns: Vec<Connection>) -> Result<(), mp_queue::Error> {
    loop {
        let index: u32 = conns[0].recv()?;
        match conns.get(index as usize) {
            Some(c) => c.send("ready")?,
            None => return Ok(()),
        }
    }
}

#[test]
fn wait_over_connections_and_a_sentinel() {
    let (control, child_control) = mp_queue::pipe(true).unwrap();
    let (a1, b1) = mp_queue::pipe(true).unwrap();
    let (a2, b2) = mp_queue::pipe(true).unwrap();
    let mut p = Process::new(answer_on, (vec![child_control, b1, b2],));
    p.start().unwrap();
    let sentinel = p.sentinel().unwrap();

    let objects: [&dyn AsFd; 4] = [&control, &a1, &a2, &sentinel];
    assert!(wait_timeout(&objects, Duration::ZERO).unwrap().is_empty());
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert!(wait_timeout(&objects, timeout).unwrap().is_empty());
    assert!(start.elapsed() >= timeout, "wait returned after {:?}", start.elapsed());

    control.send(&2u32).unwrap();
    assert_eq!(positions(&objects, &wait(&objects).unwrap()), vec![2]);
    assert_eq!(a2.recv::<String>().unwrap(), "ready");

    control.send(&1u32).unwrap();
    assert_eq!(
        positions(&objects, &wait_timeout(&objects, Duration::from_secs(60)).unwrap()),
        vec![1]
    );
    control.send(&2u32).unwrap();
    // The order of the result is the order of the objects, whatever the order of arrival.
    let just_a2 = [&a2];
    assert!(positions(&just_a2, &wait(&just_a2).unwrap()) == vec![0]);
    assert_eq!(positions(&objects, &wait(&objects).unwrap()), vec![1, 2]);
    assert_eq!(a1.recv::<String>().unwrap(), "ready");
    assert_eq!(a2.recv::<String>().unwrap(), "ready");

    // The child exits: its sentinel becomes ready, and every end it held has hung up.
    control.send(&99u32).unwrap();
    let just_sentinel = [&sentinel];
    assert_eq!(positions(&just_sentinel, &wait(&just_sentinel).unwrap()), vec![0]);
    assert_eq!(
        positions(&objects, &wait_timeout(&objects, Duration::ZERO).unwrap()),
        vec![0, 1, 2, 3]
    );
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn wait_on_nothing_ready_times_out_empty() {
    let (_a, b) = mp_queue::pipe(true).unwrap();
    let start = Instant::now();
    assert!(wait_timeout(&[&b], Duration::from_millis(50)).unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(wait_timeout(&[] as &[&Connection], Duration::from_millis(1)).unwrap().is_empty());
}

#[test]
fn a_closed_connection_is_ready_at_once() {
    let (_a, mut b) = mp_queue::pipe(true).unwrap();
    b.close();
    let just_b = [&b];
    assert_eq!(
        positions(&just_b, &wait_timeout(&just_b, Duration::from_secs(60)).unwrap()),
        vec![0]
    );
}

/// Sets the event.
fn set_event(ev: mp_sync::Event) {
    ev.set();
}

#[test]
fn wait_over_an_event_and_a_connection() {
    let ev = mp_sync::Event::new().unwrap();
    let (a, b) = mp_queue::pipe(true).unwrap();
    // An event's readiness is a hint: registering as a poller rings its doorbell once, and
    // `is_set` drains a stale ring.
    let _ = ev.as_fd();
    assert!(!ev.is_set());
    let objects: [&dyn AsFd; 2] = [&ev, &b];
    assert!(wait_timeout(&objects, Duration::ZERO).unwrap().is_empty());
    let mut p = Process::new(set_event, (ev.clone(),));
    p.start().unwrap();
    assert_eq!(positions(&objects, &wait(&objects).unwrap()), vec![0]);
    assert!(ev.is_set());
    a.send(&()).unwrap();
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(
        positions(&objects, &wait_timeout(&objects, Duration::from_secs(60)).unwrap()),
        vec![0, 1]
    );
}
