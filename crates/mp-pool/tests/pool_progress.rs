//! Progress of bulk calls: every finished task counted exactly once, with chunks, with an
//! unknown total and across worker deaths; results the same with and without progress.

use std::sync::{Arc, Mutex};

use mp_pool::{Error, FailStep, Pool, Progress, ProgressUpdate};
use mp_process::fdpass::PassFd;
use mp_testkit::{pass, pipe, wait_for_byte};
use rustix::process::Signal;

fn sqr(x: i64) -> i64 {
    x * x
}

/// `x` squared, once `gate` gives a byte or end of file.
fn gated_sqr(x: i64, gate: PassFd) -> i64 {
    wait_for_byte(&gate);
    x * x
}

/// Kills its own worker on 7.
fn dies_on_seven(x: i64) -> i64 {
    if x == 7 {
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    }
    x
}

/// Checks a call's updates: counts never go back, exactly one is the last (`finished`), and
/// it says `done` tasks of `total`, `failed` of them failed.
fn check(updates: &[ProgressUpdate], done: u64, failed: u64, total: Option<u64>) {
    assert!(!updates.is_empty());
    for pair in updates.windows(2) {
        assert!(pair[0].done <= pair[1].done, "{updates:?}");
        assert!(pair[0].failed <= pair[1].failed, "{updates:?}");
        assert!(!pair[0].finished, "an update after the last: {updates:?}");
    }
    let last = updates.last().unwrap();
    assert!(last.finished, "{last:?}");
    assert_eq!((last.done, last.failed, last.total), (done, failed, total), "{updates:?}");
    assert!(updates.iter().all(|u| u.done <= done && u.call == last.call));
}

#[test]
fn map_with_progress_gives_the_same_results_and_counts_every_task_once() {
    let pool = Pool::new(2).unwrap();
    const N: i64 = 1000;
    let want = pool.map(sqr, 0..N).unwrap();
    assert_eq!(want, (0..N).map(sqr).collect::<Vec<_>>());
    for cs in [1usize, 7, 250] {
        let (progress, events) = Progress::events();
        let got = pool.map_async_chunked(sqr, 0..N, cs).unwrap().with_progress(progress).get();
        assert_eq!(got.unwrap(), want, "chunksize {cs}");
        let updates: Vec<ProgressUpdate> = events.collect();
        check(&updates, N as u64, 0, Some(N as u64));
    }
    let (progress, events) = Progress::events();
    let got = pool.starmap_async(|a: i64, b: i64| a * b, (0..N).map(|i| (i, i))).unwrap();
    assert_eq!(got.with_progress(progress).get().unwrap(), want);
    check(&events.collect::<Vec<_>>(), N as u64, 0, Some(N as u64));
}

#[test]
fn imap_progress_learns_an_unknown_total_when_the_input_ends() {
    let pool = Pool::new(2).unwrap();
    for ordered in [true, false] {
        let (progress, events) = Progress::events();
        let input = (0..300i64).filter(|x| x % 3 == 0);
        let it = if ordered { pool.imap(sqr, input) } else { pool.imap_unordered(sqr, input) };
        let mut got: Vec<i64> =
            it.unwrap().with_chunksize(4).with_progress(progress).map(Result::unwrap).collect();
        got.sort();
        assert_eq!(got, (0..300).filter(|x| x % 3 == 0).map(sqr).collect::<Vec<_>>());
        let updates: Vec<ProgressUpdate> = events.collect();
        assert_eq!(updates[0].total, None, "{updates:?}");
        check(&updates, 100, 0, Some(100));
    }
    // An input that tells its length gives the total at once.
    let (progress, events) = Progress::events();
    assert_eq!(pool.imap(sqr, 0..50).unwrap().with_progress(progress).count(), 50);
    let updates: Vec<ProgressUpdate> = events.collect();
    assert!(updates.iter().all(|u| u.total == Some(50)), "{updates:?}");
    check(&updates, 50, 0, Some(50));
}

#[test]
fn a_task_that_killed_its_worker_counts_once_as_done_and_failed() {
    let pool = Pool::new(2).unwrap();
    for cs in [1usize, 5] {
        let (progress, events) = Progress::events();
        let got: Vec<Result<i64, Error>> = pool
            .imap(dies_on_seven, 0..20)
            .unwrap()
            .with_chunksize(cs)
            .with_progress(progress)
            .collect();
        assert!(matches!(got[7], Err(Error::WorkerDied { .. })), "{:?}", got[7]);
        check(&events.collect::<Vec<_>>(), 20, 1, Some(20));
    }
    let (progress, events) = Progress::events();
    let r = pool.map_async_chunked(dies_on_seven, 0..40, 10).unwrap().with_progress(progress);
    assert!(matches!(r.get(), Err(Error::WorkerDied { .. })));
    check(&events.collect::<Vec<_>>(), 40, 1, Some(40));
}

#[test]
fn deaths_between_tasks_leave_the_count_exact() {
    // Workers die after journaling a result, before or after sending: their results are
    // recovered or were received, the rest is requeued, and each task counts once.
    const N: u64 = 120;
    for step in [FailStep::Journaled, FailStep::BeforeSend, FailStep::AfterSend] {
        let pool = Pool::builder().processes(2).failpoint(step, 3).build().unwrap();
        let (progress, events) = Progress::events();
        let got = pool.map_async_chunked(sqr, 0..N as i64, 10).unwrap().with_progress(progress);
        assert_eq!(got.get().unwrap(), (0..N as i64).map(sqr).collect::<Vec<_>>(), "{step:?}");
        check(&events.collect::<Vec<_>>(), N, 0, Some(N));
        if step == FailStep::Journaled {
            // 120 results journaled by two workers: one of them reached its third.
            assert!(pool.insights().restarts() >= 1, "{step:?}: no death");
        }
    }
}

#[test]
fn a_pools_default_reports_every_bulk_call_and_a_call_can_turn_it_off() {
    let seen: Arc<Mutex<Vec<ProgressUpdate>>> = Arc::default();
    let sink = seen.clone();
    let progress = Progress::callback(move |u| sink.lock().unwrap().push(*u));
    let pool = Pool::builder().processes(2).progress(progress).build().unwrap();
    assert_eq!(pool.map(sqr, 0..10).unwrap().len(), 10);
    assert_eq!(pool.starmap(|a: i64, b: i64| a + b, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    assert_eq!(pool.imap_unordered(sqr, 0..5).unwrap().count(), 5);
    // Not a bulk call: no progress.
    assert_eq!(pool.apply(sqr, (3,)).unwrap(), 9);
    // Turned off for one call, before any of its tasks can finish (they wait at a gate that
    // opens, by its end of file, once the call's progress is off).
    let (gate, open) = pipe();
    let tasks = (0..8).map(|x| (x, pass(&gate)));
    let off = pool.starmap_async(gated_sqr, tasks).unwrap().with_progress(Progress::none());
    drop(open);
    assert_eq!(off.get().unwrap().len(), 8);
    let seen = seen.lock().unwrap().clone();
    let calls: std::collections::BTreeSet<u64> = seen.iter().map(|u| u.call).collect();
    assert_eq!(calls.len(), 3, "{seen:?}");
    let finished: Vec<u64> = seen.iter().filter(|u| u.finished).map(|u| u.done).collect();
    assert_eq!(finished, [10, 2, 5]);
}

#[test]
fn a_panicking_callback_does_not_stop_the_pool() {
    let pool = Pool::new(2).unwrap();
    let progress = Progress::callback(|_| panic!("a callback that panics"));
    let r = pool.map_async(sqr, 0..100).unwrap().with_progress(progress);
    assert_eq!(r.get().unwrap().len(), 100);
    assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
}

#[test]
fn a_bar_on_a_stderr_that_is_not_a_terminal_draws_nothing_and_breaks_nothing() {
    // Under the test runner stderr is a pipe or a file: the bar is hidden.
    let pool = Pool::builder().processes(2).progress(Progress::bar()).build().unwrap();
    assert_eq!(pool.map(sqr, 0..100).unwrap().len(), 100);
    let it = pool.imap(sqr, (0..20).filter(|_| true)).unwrap();
    assert_eq!(it.with_progress(Progress::bar().with_draw_always(true)).count(), 20);
}
