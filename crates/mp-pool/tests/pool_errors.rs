//! Task errors and worker deaths: panics, killed workers (failpoint and random kill),
//! timeouts, serialisation failures, under the start method in `MP_START_METHOD`.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mp_pool::{Error, Pool};
use mp_process::fdpass::PassFd;
use mp_testkit::bytes::{hear, say};
use mp_testkit::{eventually, kill, pass, pipe, wait_for_byte};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};

fn sqr(x: i64) -> i64 {
    x * x
}

/// Panics on 3; reports every other call on `out`.
fn panics_on_three(x: i64, out: PassFd) -> i64 {
    if x == 3 {
        panic!("three is not allowed");
    }
    say(&out);
    x
}

#[test]
fn a_panic_becomes_remote_and_map_returns_it_after_the_others_finish() {
    let pool = Pool::new(2).unwrap();
    let (r, w) = pipe();
    let args: Vec<(i64, PassFd)> = (0..20).map(|i| (i, pass(&w))).collect();
    let err = pool.starmap_chunked(panics_on_three, args, 1).unwrap_err();
    match &err {
        Error::Remote { message, traceback } => {
            assert_eq!(message, "three is not allowed");
            assert!(traceback.contains("panics_on_three"), "traceback: {traceback}");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    // Every other task finished before map returned: 19 reports are already in the pipe.
    drop(w);
    let mut n = 0;
    let mut buf = [0u8; 64];
    loop {
        let got = rustix::io::read(r.as_fd(), &mut buf).unwrap();
        if got == 0 {
            break;
        }
        n += got;
        if n >= 19 {
            break;
        }
    }
    assert_eq!(n, 19);
    // The pool goes on.
    assert_eq!(pool.map(sqr, 0..5).unwrap(), [0, 1, 4, 9, 16]);
}

/// Kills its own worker with SIGKILL on 7 (a failpoint).
fn dies_on_seven(x: i64) -> i64 {
    if x == 7 {
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    }
    x
}

/// Aborts on 2.
fn aborts_on_two(x: i64) -> i64 {
    if x == 2 {
        std::process::abort();
    }
    x
}

#[test]
fn a_killed_worker_fails_its_task_only_and_is_replaced() {
    let pool = Pool::new(2).unwrap();
    let before = pool.pids();
    for cs in [1usize, 5] {
        let got: Vec<Result<i64, Error>> =
            pool.imap(dies_on_seven, 0..20).unwrap().with_chunksize(cs).collect();
        for (i, r) in got.iter().enumerate() {
            if i == 7 {
                match r {
                    Err(Error::WorkerDied { signal, pid, .. }) => {
                        assert_eq!(*signal, Some(9));
                        assert!(*pid > 0);
                    }
                    other => panic!("task 7: expected WorkerDied, got {other:?}"),
                }
            } else {
                assert_eq!(r.as_ref().unwrap(), &(i as i64), "task {i} (chunksize {cs})");
            }
        }
    }
    // map reports the death as its error, after the others.
    assert!(matches!(
        pool.map(aborts_on_two, 0..10),
        Err(Error::WorkerDied { signal: Some(6), .. })
    ));
    assert_eq!(pool.map(sqr, 0..4).unwrap(), [0, 1, 4, 9]);
    let after = pool.pids();
    assert_eq!(after.len(), 2);
    assert!(before.iter().any(|p| !after.contains(p)), "a worker was replaced");
}

/// Counts its run in slot `x` of the named segment, and kills its worker on 13.
fn tally_or_die(x: i64, segment: String) -> i64 {
    count_run(x, &segment);
    if x == 13 {
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    }
    x
}

#[test]
fn a_death_inside_a_chunk_of_plain_items_requeues_the_rest_once() {
    // Items without descriptors travel as bare values back to back; the rest of the chunk
    // must be found again when its worker dies.
    let pool = Pool::new(2).unwrap();
    let shm = mp_shm::SharedMemory::create_unique(8 * 30).unwrap();
    let args: Vec<(i64, String)> = (0..30).map(|i| (i, shm.name().to_string())).collect();
    let err = pool.starmap_chunked(tally_or_die, args, 10).unwrap_err();
    assert!(matches!(err, Error::WorkerDied { signal: Some(9), .. }), "{err:?}");
    for x in 0..30 {
        let runs = shm.atomic_u64(8 * x).unwrap().load(std::sync::atomic::Ordering::SeqCst);
        // The results finished before the death (10, 11, 12) are kept, not run again.
        assert_eq!(runs, 1, "task {x} ran {runs} times");
    }
    shm.unlink().unwrap();
    assert_eq!(pool.map(sqr, 0..4).unwrap(), [0, 1, 4, 9]);
}

/// Counts its run in slot `x` of the named segment, panics on 11 and kills its worker on 13.
fn tally_panic_or_die(x: i64, segment: String) -> i64 {
    if x == 11 {
        count_run(x, &segment);
        panic!("eleven");
    }
    tally_or_die(x, segment)
}

#[test]
fn results_finished_before_a_death_are_kept_whatever_they_are() {
    let pool = Pool::new(2).unwrap();
    let shm = mp_shm::SharedMemory::create_unique(8 * 30).unwrap();
    let args: Vec<(i64, String)> = (0..30).map(|i| (i, shm.name().to_string())).collect();
    let got: Vec<Result<i64, Error>> = pool
        .imap(|(x, s): (i64, String)| tally_panic_or_die(x, s), args)
        .unwrap()
        .with_chunksize(10)
        .collect();
    assert_eq!(got.len(), 30);
    for (x, r) in got.iter().enumerate() {
        match x {
            11 => assert!(
                matches!(r, Err(Error::Remote { message, .. }) if message == "eleven"),
                "{r:?}"
            ),
            13 => assert!(matches!(r, Err(Error::WorkerDied { signal: Some(9), .. })), "{r:?}"),
            _ => assert_eq!(r.as_ref().unwrap(), &(x as i64)),
        }
        let runs = shm.atomic_u64(8 * x).unwrap().load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(runs, 1, "task {x} ran {runs} times");
    }
    shm.unlink().unwrap();
}

/// Reports that it started, then waits for a byte.
fn blocks(x: i64, started: PassFd, go: PassFd) -> i64 {
    say(&started);
    wait_for_byte(&go);
    x
}

#[test]
fn a_worker_killed_from_outside_fails_one_task_and_nothing_hangs() {
    let pool = Pool::new(2).unwrap();
    let (started_r, started_w) = pipe();
    let (go_r, go_w) = pipe();
    let args: Vec<(i64, PassFd, PassFd)> =
        (0..10).map(|i| (i, pass(&started_w), pass(&go_r))).collect();
    let r = pool.starmap_async_chunked(blocks, args, 1).unwrap();
    // Both workers are inside a task: kill one of them.
    hear(&started_r, 2);
    let victim = pool.pids()[0];
    kill(victim, Signal::KILL);
    assert!(eventually(Duration::from_secs(10), || !pool.pids().contains(&victim)));
    // Release every task (one byte each; the replaced task is re-run by nobody).
    rustix::io::write(go_w.as_fd(), &[0u8; 10]).unwrap();
    match r.get() {
        Err(Error::WorkerDied { pid, signal: Some(9), .. }) => assert_eq!(pid, victim),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
}

/// Sleeps for `ms` milliseconds (the task's own work, not a synchronisation).
fn naps(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn an_overrunning_task_times_out_and_its_worker_is_replaced() {
    let pool =
        Pool::builder().processes(2).task_timeout(Duration::from_millis(300)).build().unwrap();
    let start = Instant::now();
    let got: Vec<Result<u64, Error>> = pool.imap(naps, [1, 60_000, 2, 3]).unwrap().collect();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(got[0].as_ref().unwrap(), &1);
    assert!(matches!(got[1], Err(Error::Timeout)), "{:?}", got[1]);
    assert_eq!(got[2].as_ref().unwrap(), &2);
    assert_eq!(got[3].as_ref().unwrap(), &3);
    assert_eq!(pool.map(naps, [0, 0, 0]).unwrap(), [0, 0, 0]);
    // Inside a chunk: the rest of the chunk runs on the replacement.
    let got: Vec<Result<u64, Error>> =
        pool.imap(naps, [1, 60_000, 2, 3, 4]).unwrap().with_chunksize(5).collect();
    assert!(matches!(got[1], Err(Error::Timeout)), "{:?}", got[1]);
    let rest: Vec<u64> = [0, 2, 3, 4].iter().map(|&i| *got[i].as_ref().unwrap()).collect();
    assert_eq!(rest, [1, 2, 3, 4]);
}

#[test]
fn get_timeout_times_out_after_at_least_the_timeout() {
    let pool = Pool::new(1).unwrap();
    let (go_r, go_w) = pipe();
    let (started_r, started_w) = pipe();
    let mut r = pool.apply_async(blocks, (5, pass(&started_w), pass(&go_r))).unwrap();
    let start = Instant::now();
    assert!(matches!(r.get_timeout(Duration::from_millis(100)), Err(Error::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    hear(&started_r, 1);
    rustix::io::write(go_w.as_fd(), b"x").unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), 5);
}

/// Serialises unless it holds 3.
#[derive(Debug, PartialEq, Deserialize)]
struct Picky(i64);

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 3 {
            return Err(serde::ser::Error::custom("three does not serialise"));
        }
        s.serialize_i64(self.0)
    }
}

fn picky_id(p: Picky) -> i64 {
    p.0
}

fn picky_out(x: i64) -> Picky {
    Picky(x)
}

#[test]
fn a_value_that_does_not_serialise_fails_its_task_only() {
    let pool = Pool::new(2).unwrap();
    let got: Vec<Result<i64, Error>> = pool.imap(picky_id, (0..6).map(Picky)).unwrap().collect();
    for (i, r) in got.iter().enumerate() {
        if i == 3 {
            assert!(matches!(r, Err(Error::Serialization(_))), "{r:?}");
        } else {
            assert_eq!(r.as_ref().unwrap(), &(i as i64));
        }
    }
    let got: Vec<Result<Picky, Error>> = pool.imap(picky_out, 0..6).unwrap().collect();
    assert!(matches!(got[3], Err(Error::Serialization(_))));
    assert_eq!(got[4].as_ref().unwrap(), &Picky(4));
    assert!(matches!(pool.map(picky_id, (0..6).map(Picky)), Err(Error::Serialization(_))));
}

/// The result holds a descriptor and then a value that does not serialise.
fn picky_with_fd(x: i64) -> (PassFd, Picky) {
    let (_r, w) = pipe();
    (PassFd(w), Picky(x))
}

#[test]
fn a_value_that_does_not_serialise_says_why() {
    // As CPython's MaybeEncodingError keeps the exception, the error keeps the message the
    // value's Serialize gave, for results (bare, in a run, or holding descriptors) and for
    // arguments (alone, or in a chunk).
    fn says_why<T>(r: &Result<T, Error>) -> bool {
        matches!(r, Err(e @ Error::Serialization(_))
            if e.to_string().contains("three does not serialise"))
    }
    let pool = Pool::new(2).unwrap();
    let r = pool.apply(picky_out, (3,));
    assert!(says_why(&r), "{r:?}");
    let r = pool.apply(picky_id, (Picky(3),));
    assert!(says_why(&r), "{r:?}");
    let r = pool.apply(picky_with_fd, (3,)).map(|(_, p)| p);
    assert!(says_why(&r), "{r:?}");
    let got: Vec<Result<Picky, Error>> = pool.imap(picky_out, 0..6).unwrap().collect();
    assert!(says_why(&got[3]), "{:?}", got[3]);
    let got: Vec<Result<i64, Error>> = pool.imap(picky_id, (0..6).map(Picky)).unwrap().collect();
    assert!(says_why(&got[3]), "{:?}", got[3]);
    let r = pool.map(picky_out, 0..6);
    assert!(says_why(&r), "{r:?}");
}

#[test]
fn a_serialisation_failure_here_keeps_its_wire_error_and_one_in_a_worker_its_message() {
    use std::error::Error as _;
    let pool = Pool::new(1).unwrap();
    // The argument fails to encode in this process: the WireError is kept, as the source.
    let local = pool.apply(picky_id, (Picky(3),)).unwrap_err();
    let Error::Serialization(why) = &local else { panic!("{local:?}") };
    assert!(why.message().contains("three does not serialise"), "{why}");
    let wire = why.wire_error().expect("a failure in this process keeps its WireError");
    assert!(matches!(wire, mp_process::wire::WireError::EncodeCustom(_)), "{wire:?}");
    let source = local.source().expect("the WireError is the source");
    assert!(source.downcast_ref::<mp_process::wire::WireError>().is_some(), "{source:?}");
    // The result fails to encode in the worker: only its message crosses.
    let remote = pool.apply(picky_out, (3,)).unwrap_err();
    let Error::Serialization(why) = &remote else { panic!("{remote:?}") };
    assert!(why.message().contains("three does not serialise"), "{why}");
    assert!(why.wire_error().is_none() && remote.source().is_none(), "{remote:?}");
}

/// About a millisecond of work.
fn brief(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(1));
    x
}

/// SIGKILLs a worker picked by the xorshift `seed` (advanced); false if there was none.
fn kill_a_worker(pool: &Pool, seed: &mut u64) -> bool {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let pids = pool.pids();
    let Some(&victim) = pids.get((*seed % pids.len().max(1) as u64) as usize) else {
        return false;
    };
    kill(victim, Signal::KILL);
    true
}

/// Counts a run of task `x` in slot `x` of the named segment.
fn count_run(x: i64, segment: &str) {
    let shm = mp_shm::SharedMemory::open(segment).unwrap();
    shm.atomic_u64(8 * x as usize).unwrap().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn random_kills_fail_at_most_one_task_each_and_every_other_task_completes() {
    let pool = Pool::new(2).unwrap();
    let mut kills = 0;
    let mut results = Vec::new();
    let mut seed = u64::from(std::process::id());
    for (k, r) in pool.imap(brief, 0..400).unwrap().with_chunksize(3).enumerate() {
        results.push(r);
        if k % 60 == 30 && kill_a_worker(&pool, &mut seed) {
            // A pseudo-random worker, at a pseudo-random point of its chunk.
            kills += 1;
        }
    }
    assert_eq!(results.len(), 400);
    let mut died = 0;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as i64),
            Err(Error::WorkerDied { signal: Some(9), .. }) => died += 1,
            Err(e) => panic!("task {i}: {e:?}"),
        }
    }
    assert!(died <= kills, "{died} tasks failed for {kills} kills");
    assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
}

/// Panics on 3, returns a value that does not serialise on 5, a descriptor on 8.
fn mixed(x: i64) -> Result<Picky, String> {
    match x {
        3 => panic!("three"),
        5 => Ok(Picky(3)),
        _ => Ok(Picky(x)),
    }
}

#[test]
fn failures_inside_a_chunk_leave_its_other_results_intact() {
    let pool = Pool::new(2).unwrap();
    for cs in [1, 4, 7, 20] {
        let got: Vec<Result<Result<Picky, String>, Error>> =
            pool.imap(mixed, 0..20).unwrap().with_chunksize(cs).collect();
        let got_map = pool.map_chunked(mixed, 0..20, cs);
        assert!(matches!(got_map, Err(Error::Remote { .. })), "cs {cs}: {got_map:?}");
        for (i, r) in got.iter().enumerate() {
            match i {
                3 => assert!(matches!(r, Err(Error::Remote { .. })), "cs {cs}: {r:?}"),
                5 => assert!(matches!(r, Err(Error::Serialization(_))), "cs {cs}: {r:?}"),
                _ => assert_eq!(r.as_ref().unwrap().as_ref().unwrap(), &Picky(i as i64), "cs {cs}"),
            }
        }
    }
}

/// A string of `n` bytes.
fn sized(n: usize) -> String {
    "x".repeat(n)
}

/// The length of `s`.
fn length(s: String) -> usize {
    s.len()
}

#[test]
fn a_value_larger_than_a_frame_fails_its_task_only() {
    // 60 MiB is more than one value may take of a 64 MiB frame.
    let huge = 60 << 20;
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    // Results.
    let got: Vec<Result<String, Error>> =
        pool.imap(sized, [10, huge, 20]).unwrap().with_chunksize(3).collect();
    assert_eq!(got[0].as_ref().unwrap().len(), 10);
    assert!(
        matches!(&got[1], Err(Error::Serialization(m)) if m.message().contains("result")),
        "{:?}",
        got[1].as_ref().map(String::len)
    );
    assert_eq!(got[2].as_ref().unwrap().len(), 20);
    assert!(matches!(pool.map_chunked(sized, [1, huge, 2], 3), Err(Error::Serialization(_))));
    // Arguments.
    let args = || vec!["a".to_string(), sized(huge), "bb".to_string()];
    let got: Vec<Result<usize, Error>> =
        pool.imap(length, args()).unwrap().with_chunksize(3).collect();
    assert_eq!(got[0].as_ref().unwrap(), &1);
    assert!(
        matches!(&got[1], Err(Error::Serialization(m)) if m.message().contains("argument")),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2].as_ref().unwrap(), &2);
    assert!(matches!(pool.map_chunked(length, args(), 3), Err(Error::Serialization(_))));
    // No worker died for it.
    assert_eq!(pool.pids(), pids);
}

#[test]
fn values_that_together_pass_a_frame_all_arrive() {
    // Four values of 20 MiB: more than a 64 MiB frame in one chunk.
    let pool = Pool::new(2).unwrap();
    let n = 20 << 20;
    let got = pool.map_chunked(sized, [n, n + 1, n + 2, n + 3], 4).unwrap();
    assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [n, n + 1, n + 2, n + 3]);
    let args: Vec<String> = (0..4).map(|k| sized(n + k)).collect();
    assert_eq!(pool.map_chunked(length, args, 4).unwrap(), [n, n + 1, n + 2, n + 3]);
}

/// Counts its run in slot `x` of the named segment, then takes a moment.
fn tally_briefly((x, segment): (i64, String)) -> i64 {
    count_run(x, &segment);
    std::thread::sleep(Duration::from_micros(300));
    x
}

#[test]
fn under_random_kills_every_task_runs_exactly_once() {
    // Whatever moment a worker is killed at, the task it was running fails and is not run
    // again, the results it finished are kept (sent or journaled), and the rest of its work
    // runs once elsewhere.
    const N: usize = 600;
    let pool = Pool::new(2).unwrap();
    let shm = mp_shm::SharedMemory::create_unique(8 * N).unwrap();
    let args: Vec<(i64, String)> = (0..N as i64).map(|i| (i, shm.name().to_string())).collect();
    let mut kills = 0;
    let mut seed = u64::from(std::process::id()) | 1;
    let mut got: Vec<Option<i64>> = vec![None; N];
    for (k, r) in pool.imap_unordered(tally_briefly, args).unwrap().with_chunksize(7).enumerate() {
        match r {
            Ok(x) => got[x as usize] = Some(x),
            Err(Error::WorkerDied { signal: Some(9), .. }) => {}
            Err(e) => panic!("result {k}: {e:?}"),
        }
        if k % 50 == 25 && kill_a_worker(&pool, &mut seed) {
            kills += 1;
        }
    }
    let failed = got.iter().filter(|g| g.is_none()).count();
    assert!(failed <= kills, "{failed} tasks failed for {kills} kills");
    for (x, g) in got.iter().enumerate() {
        let runs = shm.atomic_u64(8 * x).unwrap().load(std::sync::atomic::Ordering::SeqCst);
        if g.is_some() {
            assert_eq!(runs, 1, "task {x} ran {runs} times");
        } else {
            // Killed while it ran: maybe before it counted itself.
            assert!(runs <= 1, "task {x}, killed, ran {runs} times");
        }
    }
    shm.unlink().unwrap();
    assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
}

/// Counts its run in slot `x` of the named segment.
fn tally((x, segment): (i64, String)) -> i64 {
    count_run(x, &segment);
    x
}

#[test]
fn deaths_between_tasks_lose_and_repeat_nothing() {
    // A worker that dies after journaling a result, before sending, or after sending but
    // before emptying its journal, was running no task: every call still succeeds, and every
    // task ran exactly once.
    const N: usize = 120;
    for step in
        [mp_pool::FailStep::Journaled, mp_pool::FailStep::BeforeSend, mp_pool::FailStep::AfterSend]
    {
        for n in [1u64, 3] {
            let pool = Pool::builder().processes(2).failpoint(step, n).build().unwrap();
            let first = pool.pids();
            let shm = mp_shm::SharedMemory::create_unique(8 * N).unwrap();
            let args: Vec<(i64, String)> =
                (0..N as i64).map(|i| (i, shm.name().to_string())).collect();
            let want: Vec<i64> = (0..N as i64).collect();
            assert_eq!(pool.map_chunked(tally, args.clone(), 10).unwrap(), want, "{step:?} {n}");
            let got: Vec<i64> =
                pool.imap(tally, args).unwrap().with_chunksize(4).map(Result::unwrap).collect();
            assert_eq!(got, want, "{step:?} {n}");
            assert!(first.iter().all(|p| !pool.pids().contains(p)), "{step:?} {n}: no death");
            for x in 0..N {
                let runs = shm.atomic_u64(8 * x).unwrap().load(std::sync::atomic::Ordering::SeqCst);
                assert_eq!(runs, 2, "{step:?} {n}: task {x} ran {runs} times in two calls");
            }
            shm.unlink().unwrap();
        }
    }
}

/// An argument whose decoder counts itself in slot `slot` of a named segment and then, if
/// `kill`, aborts the process decoding it.
#[derive(Clone)]
struct Poison {
    segment: String,
    slot: i64,
    kill: bool,
}

impl Serialize for Poison {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.segment, self.slot, self.kill).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Poison {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (segment, slot, kill) = <(String, i64, bool)>::deserialize(d)?;
        count_run(slot, &segment);
        if kill {
            std::process::abort();
        }
        Ok(Poison { segment, slot, kill })
    }
}

fn takes_poison(p: Poison) -> i64 {
    p.slot
}

#[test]
fn arguments_whose_decoder_kills_the_worker_fail_once_and_the_parent_never_decodes_them() {
    // Issue 10: such a task was re-queued as "not started" for ever, and the parent decoded
    // the dead worker's arguments to re-queue them (dying itself when the decoder aborts).
    const N: usize = 12;
    let pool = Pool::new(2).unwrap();
    let shm = mp_shm::SharedMemory::create_unique(8 * N).unwrap();
    let poison = |slot: i64, kill: bool| Poison { segment: shm.name().to_string(), slot, kill };

    match pool.apply(takes_poison, (poison(0, true),)) {
        Err(Error::WorkerDied { signal: Some(6), .. }) => {}
        other => panic!("expected WorkerDied by SIGABRT, got {other:?}"),
    }
    // In the middle of a chunk: the items after it are split off and re-queued by the parent.
    let items: Vec<Poison> = (1..N as i64).map(|i| poison(i, i == 5)).collect();
    let got: Vec<_> = pool.imap(takes_poison, items).unwrap().with_chunksize(N).collect();
    for (k, r) in got.iter().enumerate() {
        let i = k as i64 + 1;
        match r {
            Ok(v) => assert_eq!(*v, i),
            Err(Error::WorkerDied { .. }) => assert_eq!(i, 5, "task {i} failed"),
            Err(e) => panic!("task {i}: {e:?}"),
        }
    }
    assert!(got[4].is_err());
    for x in 0..N {
        let runs = shm.atomic_u64(8 * x).unwrap().load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(runs, 1, "the arguments of task {x} were decoded {runs} times");
    }
    shm.unlink().unwrap();
    assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
}

#[test]
fn a_task_whose_worker_dies_before_it_starts_fails_after_two_deaths() {
    // Every worker dies as soon as its first batch arrives, before it starts a task: no task
    // can be blamed, so the next one to run gets a strike, and fails at its second.
    let pool =
        Pool::builder().processes(2).failpoint(mp_pool::FailStep::Received, 1).build().unwrap();
    match pool.apply(sqr, (3,)) {
        Err(Error::WorkerDied { signal: Some(9), .. }) => {}
        other => panic!("expected WorkerDied by SIGKILL, got {other:?}"),
    }
    let got: Vec<_> = pool.imap(sqr, 0..4).unwrap().with_chunksize(1).collect();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| matches!(r, Err(Error::WorkerDied { .. }))), "{got:?}");
}
