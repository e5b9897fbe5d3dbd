//! `Pool::insights`: tasks per worker add up to the tasks run, restarts match the deaths
//! caused and their reasons, the table prints.

use std::time::Duration;

use mp_pool::{Pool, RestartReason};
use mp_process::fdpass::PassFd;
use mp_testkit::{pass, pipe, wait_for_byte};
use rustix::process::Signal;

fn sqr(x: i64) -> i64 {
    x * x
}

/// Kills its own worker on multiples of 10.
fn dies_on_tens(x: i64) -> i64 {
    if x % 10 == 0 {
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    }
    x
}

/// Blocks until `go` has a byte (never, in the test): the task timeout kills it.
fn blocks(go: PassFd) -> i64 {
    wait_for_byte(&go);
    0
}

#[test]
fn tasks_per_worker_add_up_to_the_tasks_run() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map_chunked(sqr, 0..500, 7).unwrap().len(), 500);
    assert_eq!(pool.imap(sqr, 0..100).unwrap().count(), 100);
    assert_eq!(pool.apply(sqr, (2,)).unwrap(), 4);
    let insights = pool.insights();
    assert_eq!(insights.tasks(), 601, "{insights}");
    assert_eq!(insights.restarts(), 0, "{insights}");
    assert_eq!(insights.workers.len(), 2);
    let mut pids: Vec<u32> = insights.workers.iter().filter_map(|w| w.pid).collect();
    let mut want = pool.pids();
    pids.sort();
    want.sort();
    assert_eq!(pids, want);
    assert!(insights.slowest.len() <= 5 && !insights.slowest.is_empty(), "{insights}");
    assert!(insights.slowest.windows(2).all(|p| p[0].duration >= p[1].duration));
    assert!((0.0..=1.0).contains(&insights.work_share()));
    let table = insights.to_string();
    assert!(table.starts_with("worker"), "{table}");
    assert!(table.contains("total: 601 tasks"), "{table}");
    // After close and join, the workers' final counts are kept.
    pool.close().unwrap();
    pool.join().unwrap();
    let after = pool.insights();
    assert_eq!(after.tasks(), 601, "{after}");
    assert!(after.workers.iter().all(|w| w.pid.is_none()), "{after}");
}

#[test]
fn restarts_match_the_deaths_caused_and_say_why() {
    let pool = Pool::new(2).unwrap();
    // Tasks 0, 10, ..., 90 kill their worker: ten deaths, each failing its own task only.
    let got: Vec<_> = pool.imap(dies_on_tens, 0..100).unwrap().collect();
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 10);
    let insights = pool.insights();
    assert_eq!(insights.restarts(), 10, "{insights}");
    assert_eq!(insights.workers.iter().map(|w| w.died).sum::<u64>(), 10, "{insights}");
    // The tasks a worker died running were not finished by anyone.
    assert_eq!(insights.tasks(), 90, "{insights}");
    for w in &insights.workers {
        for r in &w.recent_restarts {
            assert_eq!(r.reason, RestartReason::Died { exitcode: Some(-9) }, "{insights}");
        }
    }
    assert!(insights.to_string().contains("killed by signal 9"), "{insights}");
}

#[test]
fn a_task_timeout_and_maxtasksperchild_are_told_apart() {
    let pool =
        Pool::builder().processes(1).task_timeout(Duration::from_millis(200)).build().unwrap();
    let (never, _keep) = pipe();
    assert!(matches!(pool.apply(blocks, (pass(&never),)), Err(mp_pool::Error::Timeout)));
    let insights = pool.insights();
    assert_eq!((insights.workers[0].timed_out, insights.restarts()), (1, 1), "{insights}");
    assert_eq!(insights.workers[0].recent_restarts[0].reason, RestartReason::Timeout);

    let pool = Pool::builder().processes(1).maxtasksperchild(2).build().unwrap();
    assert_eq!(pool.map_chunked(sqr, 0..10, 1).unwrap().len(), 10);
    let insights = pool.insights();
    let w = &insights.workers[0];
    // Five workers ran two chunks each; the first four were replaced for the rest to run.
    assert!(w.retired >= 4, "{insights}");
    assert_eq!((w.died, w.timed_out), (0, 0), "{insights}");
    assert_eq!(insights.tasks(), 10, "{insights}");
}
