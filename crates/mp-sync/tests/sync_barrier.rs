//! `Barrier` across processes under the start method in `MP_START_METHOD`: arrival
//! indices, the action, breaking (abort, timeout, reset), reuse after a reset, many passes,
//! and waiters killed while they wait.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_sync::{Barrier, Error, Value};
use mp_testkit::lines::{Lines, say};
use mp_testkit::{die_now, eventually, method, pass, pipe, release, wait_for_byte};

/// The counter the barrier action bumps, set in each process before it waits (the action is
/// a plain `fn()`, and runs in whichever process arrives last).
static ACTIONS: OnceLock<Value<u32>> = OnceLock::new();

fn count_action() {
    if let Some(counter) = ACTIONS.get() {
        *counter.lock().unwrap() += 1;
    }
}

/// Waits `cycles` times, reporting `cycle index` each time.
fn cycle_worker(barrier: Barrier, actions: Value<u32>, cycles: u32, out: PassFd) {
    let _ = ACTIONS.set(actions);
    for cycle in 0..cycles {
        let index = barrier.wait().unwrap();
        say(&out, &format!("{cycle} {index}"));
    }
}

fn start(processes: &mut [Process]) {
    for p in processes.iter_mut() {
        p.start().unwrap();
    }
}

fn join_ok(processes: &[Process]) {
    for p in processes {
        assert_eq!(p.join().unwrap(), 0, "a child failed under {}", method());
    }
}

/// The action with arguments: counts its runs in the shared value it carries.
fn count_in(counter: &Value<u32>) {
    *counter.lock().unwrap() += 1;
}

/// Waits `cycles` times on a barrier whose action carries its own counter.
fn wait_cycles(barrier: Barrier, cycles: u32) {
    for _ in 0..cycles {
        barrier.wait().unwrap();
    }
}

#[test]
fn an_action_with_arguments_crosses_with_the_barrier_and_runs_once_per_cycle() {
    const CYCLES: u32 = 4;
    let runs = Value::new(0u32).unwrap();
    let barrier = Barrier::new(3).unwrap().with_action_args(count_in, runs.clone());
    let mut children: Vec<Process> =
        (0..3).map(|_| Process::new(wait_cycles, (barrier.clone(), CYCLES))).collect();
    start(&mut children);
    join_ok(&children);
    assert_eq!(runs.get().unwrap(), CYCLES, "under {}", method());
    assert!(!barrier.broken());
}

#[test]
fn five_parties_get_each_index_once_and_the_action_runs_once_per_cycle() {
    const CYCLES: u32 = 3;
    let actions = Value::new(0u32).unwrap();
    let barrier = Barrier::new(5).unwrap().with_action(count_action);
    assert_eq!(barrier.parties(), 5);
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut children: Vec<Process> = (0..5)
        .map(|_| Process::new(cycle_worker, (barrier.clone(), actions.clone(), CYCLES, pass(&w))))
        .collect();
    start(&mut children);
    let mut seen = vec![Vec::new(); CYCLES as usize];
    for line in lines.take(5 * CYCLES as usize) {
        let (cycle, index) = line.split_once(' ').unwrap();
        seen[cycle.parse::<usize>().unwrap()].push(index.parse::<usize>().unwrap());
    }
    for indices in &mut seen {
        indices.sort_unstable();
        assert_eq!(indices, &[0, 1, 2, 3, 4]);
    }
    join_ok(&children);
    assert_eq!(actions.get().unwrap(), CYCLES);
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

/// Passes the barrier `passes` times and reports the sum of its indices.
fn many_passes(barrier: Barrier, passes: u32, out: PassFd) {
    let mut sum = 0usize;
    for _ in 0..passes {
        sum += barrier.wait().unwrap();
    }
    say(&out, &sum.to_string());
}

#[test]
fn a_thousand_passes_of_five_processes() {
    const PASSES: u32 = 1000;
    let barrier = Barrier::new(5).unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut children: Vec<Process> =
        (0..5).map(|_| Process::new(many_passes, (barrier.clone(), PASSES, pass(&w)))).collect();
    start(&mut children);
    let total: usize = lines.take(5).iter().map(|l| l.parse::<usize>().unwrap()).sum();
    // Each pass hands out the indices 0 + 1 + 2 + 3 + 4 = 10.
    assert_eq!(total, PASSES as usize * 10);
    join_ok(&children);
}

/// Waits once and reports the outcome; then waits once more and reports again.
fn wait_twice(barrier: Barrier, out: PassFd) {
    for _ in 0..2 {
        let outcome = match barrier.wait() {
            Ok(i) => format!("index {i}"),
            Err(Error::BrokenBarrier) => "broken".to_string(),
            Err(e) => format!("error {e}"),
        };
        say(&out, &outcome);
    }
}

fn wait_until_waiting(barrier: &Barrier, n: usize) {
    assert!(
        eventually(Duration::from_secs(60), || barrier.n_waiting() == n),
        "{n} waiters never arrived"
    );
}

#[test]
fn abort_breaks_the_barrier_until_reset() {
    let barrier = Barrier::new(3).unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut children: Vec<Process> =
        (0..2).map(|_| Process::new(wait_twice, (barrier.clone(), pass(&w)))).collect();
    start(&mut children);
    wait_until_waiting(&barrier, 2);
    barrier.abort().unwrap();
    assert!(barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
    // Both are woken broken, and their second wait fails at once: the barrier stays broken.
    assert!(lines.take(4).iter().all(|l| l == "broken"));
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
    join_ok(&children);
    barrier.reset().unwrap();
    assert!(!barrier.broken());
    let mut children: Vec<Process> =
        (0..2).map(|_| Process::new(wait_twice, (barrier.clone(), pass(&w)))).collect();
    start(&mut children);
    let mine = [barrier.wait().unwrap(), barrier.wait().unwrap()];
    let mut theirs: Vec<String> = lines.take(4);
    theirs.sort();
    assert_eq!(theirs.len(), 4);
    assert!(theirs.iter().all(|l| l.starts_with("index ")), "{theirs:?}");
    assert!(mine.iter().all(|i| *i < 3));
    join_ok(&children);
}

/// Waits with the barrier's default timeout and reports the outcome and how long it took.
fn wait_with_default_timeout(barrier: Barrier, out: PassFd) {
    let start = Instant::now();
    let outcome = barrier.wait();
    let millis = start.elapsed().as_millis();
    say(&out, &format!("{} {millis}", matches!(outcome, Err(Error::BrokenBarrier))));
}

#[test]
fn a_timeout_breaks_the_barrier() {
    let barrier = Barrier::new(3).unwrap().with_timeout(Duration::from_millis(150));
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(wait_with_default_timeout, (barrier.clone(), PassFd(w)));
    p.start().unwrap();
    let line = lines.next();
    let (broken, millis) = line.split_once(' ').unwrap();
    assert_eq!(broken, "true", "the wait timed out with BrokenBarrier");
    assert!(millis.parse::<u64>().unwrap() >= 150, "{millis} ms");
    assert!(barrier.broken());
    assert_eq!(p.join().unwrap(), 0);
    // A timed wait of this process breaks it again after a reset.
    barrier.reset().unwrap();
    let start = Instant::now();
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(50)), Err(Error::BrokenBarrier)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(barrier.broken());
}

#[test]
fn reset_breaks_the_waiters_and_the_barrier_is_usable_again() {
    let barrier = Barrier::new(3).unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut children: Vec<Process> =
        (0..2).map(|_| Process::new(wait_twice, (barrier.clone(), pass(&w)))).collect();
    start(&mut children);
    wait_until_waiting(&barrier, 2);
    barrier.reset().unwrap();
    assert!(!barrier.broken(), "a reset barrier is not broken");
    assert_eq!(lines.take(2), ["broken", "broken"]);
    // Their second wait and this one make a full cycle.
    let mine = barrier.wait().unwrap();
    let mut indices: Vec<usize> =
        lines.take(2).iter().map(|l| l.strip_prefix("index ").unwrap().parse().unwrap()).collect();
    indices.push(mine);
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2]);
    join_ok(&children);
}

/// Waits once, reporting the index.
fn wait_once(barrier: Barrier, out: PassFd) {
    let index = barrier.wait().unwrap();
    say(&out, &index.to_string());
}

#[test]
fn a_killed_waiter_does_not_count() {
    let barrier = Barrier::new(3).unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut doomed = Process::new(wait_once, (barrier.clone(), pass(&w)));
    doomed.start().unwrap();
    wait_until_waiting(&barrier, 1);
    doomed.kill().unwrap();
    assert_eq!(doomed.join().unwrap(), -9);
    assert_eq!(barrier.n_waiting(), 0, "the dead waiter is found and withdrawn");
    let mut children: Vec<Process> =
        (0..2).map(|_| Process::new(wait_once, (barrier.clone(), pass(&w)))).collect();
    start(&mut children);
    wait_until_waiting(&barrier, 2);
    let mine = barrier.wait().unwrap();
    let mut indices: Vec<usize> = lines.take(2).iter().map(|l| l.parse().unwrap()).collect();
    indices.push(mine);
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2], "three living parties make the cycle");
    join_ok(&children);
    assert!(!barrier.broken());
}

#[test]
fn a_waiter_killed_mid_cycle_frees_its_index() {
    let barrier = Barrier::new(3).unwrap();
    let (r, w) = pipe();
    let mut lines = Lines::new(r);
    let mut first = Process::new(wait_once, (barrier.clone(), pass(&w)));
    first.start().unwrap();
    wait_until_waiting(&barrier, 1);
    let mut doomed = Process::new(wait_once, (barrier.clone(), pass(&w)));
    doomed.start().unwrap();
    wait_until_waiting(&barrier, 2);
    doomed.kill().unwrap();
    assert_eq!(doomed.join().unwrap(), -9);
    let mut last = Process::new(wait_once, (barrier.clone(), pass(&w)));
    last.start().unwrap();
    wait_until_waiting(&barrier, 2);
    let mine = barrier.wait().unwrap();
    let mut indices: Vec<usize> = lines.take(2).iter().map(|l| l.parse().unwrap()).collect();
    indices.push(mine);
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2]);
    join_ok(&[first, last]);
}

#[test]
fn parties_out_of_range_are_refused() {
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(Barrier::new(mp_sync::MAX_WAITERS + 1), Err(Error::InvalidArgument(_))));
}

fn panicking_action() {
    panic!("the action fails");
}

#[test]
fn a_panicking_action_breaks_the_barrier() {
    let barrier = Barrier::new(1).unwrap().with_action(panicking_action);
    let caught = std::panic::catch_unwind(|| barrier.wait());
    assert!(caught.is_err(), "the panic continues in the thread that ran the action");
    assert!(barrier.broken());
}

/// Aborts the barrier when told to.
fn abort_later(barrier: Barrier, go: PassFd) -> Result<(), Error> {
    wait_for_byte(&go);
    barrier.abort()
}

#[test]
fn doorbell_is_readable_while_broken() {
    use std::os::fd::AsFd;
    let barrier = Barrier::new(2).unwrap();
    let bell = barrier.as_fd();
    let mut fds = [rustix::event::PollFd::new(&bell, rustix::event::PollFlags::IN)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    assert!(!barrier.broken(), "drains the registration ring");
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0);
    let (go_r, go_w) = pipe();
    let mut p = Process::new(abort_later, (barrier.clone(), PassFd(go_r)));
    p.start().unwrap();
    release(&go_w, 1);
    rustix::event::poll(&mut fds, None).unwrap();
    assert!(barrier.broken());
    assert_eq!(p.join().unwrap(), 0);
    barrier.reset().unwrap();
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0, "reset drains it");
}

/// Set in the process that is to die in the barrier's action: the failpoint.
static DIE_IN_ACTION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The action: kills its process if that process is the chosen one.
fn die_in_action() {
    if DIE_IN_ACTION.load(std::sync::atomic::Ordering::Relaxed) {
        die_now();
    }
}

/// Arrives when told, last, and dies (SIGKILL) running the action.
fn arrive_and_die_in_action(barrier: Barrier, go: PassFd) {
    DIE_IN_ACTION.store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for_byte(&go);
    let _ = barrier.wait();
}

/// Waits once, without a timeout, and reports the outcome.
fn wait_and_report(barrier: Barrier, out: PassFd) {
    let outcome = match barrier.wait() {
        Ok(i) => format!("index {i}"),
        Err(Error::BrokenBarrier) => "broken".to_string(),
        Err(e) => format!("error {e}"),
    };
    say(&out, &outcome);
}

#[test]
fn the_last_party_dying_in_the_action_breaks_the_barrier() {
    let barrier = Barrier::new(3).unwrap().with_action(die_in_action);
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut waiters: Vec<Process> =
        (0..2).map(|_| Process::new(wait_and_report, (barrier.clone(), pass(&w)))).collect();
    start(&mut waiters);
    wait_until_waiting(&barrier, 2);
    let mut victim = Process::new(arrive_and_die_in_action, (barrier.clone(), PassFd(go_r)));
    victim.start().unwrap();
    release(&go_w, 1);
    assert_eq!(victim.join().unwrap(), -9, "the failpoint kills the last party");
    // Nobody else enters the barrier: the waiters find the death on their own.
    assert_eq!(lines.take(2), ["broken", "broken"], "under {}", method());
    join_ok(&waiters);
    assert!(barrier.broken());
    // Reset, the barrier works again (the action does nothing in this process).
    barrier.reset().unwrap();
    let mut children: Vec<Process> =
        (0..2).map(|_| Process::new(wait_and_report, (barrier.clone(), pass(&w)))).collect();
    start(&mut children);
    wait_until_waiting(&barrier, 2);
    let mine = barrier.wait().unwrap();
    let mut outcomes = lines.take(2);
    outcomes.push(format!("index {mine}"));
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["index 0", "index 1", "index 2"]);
    join_ok(&children);
}

/// Waits once with a timeout far longer than the test, reporting the outcome.
fn wait_long_and_report(barrier: Barrier, out: PassFd) {
    let outcome = match barrier.wait_timeout(Duration::from_secs(3600)) {
        Ok(i) => format!("index {i}"),
        Err(Error::BrokenBarrier) => "broken".to_string(),
        Err(e) => format!("error {e}"),
    };
    say(&out, &outcome);
}

#[test]
fn waiters_with_a_timeout_also_find_the_death_in_the_action() {
    let barrier = Barrier::new(2).unwrap().with_action(die_in_action);
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut waiter = Process::new(wait_long_and_report, (barrier.clone(), pass(&w)));
    waiter.start().unwrap();
    wait_until_waiting(&barrier, 1);
    let mut victim = Process::new(arrive_and_die_in_action, (barrier.clone(), PassFd(go_r)));
    victim.start().unwrap();
    release(&go_w, 1);
    assert_eq!(victim.join().unwrap(), -9);
    assert_eq!(lines.next(), "broken");
    join_ok(&[waiter]);
}
