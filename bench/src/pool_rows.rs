//! The pool rows: `pool_apply_async`, `pool_apply_latency`, `pool_map_small`,
//! `pool_map_with_objects`, `pool_imap_chunked`, `pool_cpu_speedup` and
//! `pool_cpu_speedup_consumer` (and `pool_apply_async_loaded`).

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::floor::wait_ok;
use crate::measure::seconds_per_op;
use crate::rows::{Figure, Side};

/// The task of the small rows.
fn square(x: u64) -> u64 {
    x * x
}

/// A 2-worker pool under fork, as every pool row uses.
fn pool2() -> Result<mp::Pool> {
    let ctx = mp::get_context("fork").context("get_context(fork)")?;
    Ok(mp::Pool::builder().processes(2).context(&ctx).build()?)
}

/// pool_apply_async: `apply_async(square, i)` n times on a 2-worker pool, then every `get`,
/// in tasks/s.
pub fn pool_apply_async(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "pool_apply_async has no floor side");
    let pool = pool2()?;
    let seconds = seconds_per_op(|n| {
        let results =
            (0..n).map(|i| pool.apply_async(square, (i,))).collect::<Result<Vec<_>, _>>()?;
        for (i, r) in results.into_iter().enumerate() {
            ensure!(r.get()? == square(i as u64), "a wrong result");
        }
        Ok(())
    })?;
    Ok(Figure { value: 1.0 / seconds, unit: "tasks/s" })
}

/// pool_apply_async_loaded: the same while every core runs a CPU hog (the xtask starts them).
pub fn pool_apply_async_loaded(side: Side) -> Result<Figure> {
    pool_apply_async(side)
}

/// pool_apply_latency: one `apply(square, i)` at a time, submit to result, in µs per task.
pub fn pool_apply_latency(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "pool_apply_latency has no floor side");
    let pool = pool2()?;
    let seconds = seconds_per_op(|n| {
        for i in 0..n {
            ensure!(pool.apply(square, (i,))? == square(i), "a wrong result");
        }
        Ok(())
    })?;
    Ok(Figure { value: seconds * 1e6, unit: "us/task" })
}

/// The length of one `pool_map_small` map.
const MAP_LEN: u64 = 100_000;

/// pool_map_small: `map(square, 0..100_000)` on a 2-worker pool with the default chunksize, in
/// tasks/s.
pub fn pool_map_small(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "pool_map_small has no floor side");
    let pool = pool2()?;
    let seconds = seconds_per_op(|n| {
        for _ in 0..n {
            let got = pool.map(square, 0..MAP_LEN)?;
            ensure!(got.len() as u64 == MAP_LEN, "a short result");
        }
        Ok(())
    })?;
    Ok(Figure { value: MAP_LEN as f64 / seconds, unit: "tasks/s" })
}

/// The task of `pool_map_with_objects`: a queue and a lock cross with every argument.
fn square_with_objects((q, lock, x): (mp::Queue<u64>, mp::Lock, u64)) -> u64 {
    black_box((&q, &lock));
    x * x
}

/// How many descriptors this process has open.
fn open_fds() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd").context("/proc/self/fd")?.count())
}

/// pool_map_with_objects: `map` over 100,000 tasks that each take a `Queue` and a `Lock`
/// (clones of one of each) on a 2-worker pool, default chunksize, in tasks/s; the parent's
/// descriptor count must stay flat. The floor is the same map without the objects
/// (`pool_map_small`'s work). CPython refuses such arguments.
pub fn pool_map_with_objects(side: Side) -> Result<Figure> {
    let pool = pool2()?;
    let seconds = match side {
        Side::Mp => {
            let q: mp::Queue<u64> = mp::Queue::new()?;
            let lock = mp::Lock::new()?;
            // Warm: the workers have the objects, the parent its buffers.
            pool.map(square_with_objects, (0..1000).map(|i| (q.clone(), lock.clone(), i)))?;
            let before = open_fds()?;
            let seconds = seconds_per_op(|n| {
                for _ in 0..n {
                    let items = (0..MAP_LEN).map(|i| (q.clone(), lock.clone(), i));
                    let got = pool.map(square_with_objects, items)?;
                    ensure!(got.len() as u64 == MAP_LEN, "a short result");
                }
                Ok(())
            })?;
            let after = open_fds()?;
            ensure!(after == before, "the parent's descriptors went from {before} to {after}");
            seconds
        }
        Side::Floor => seconds_per_op(|n| {
            for _ in 0..n {
                let got = pool.map(square, 0..MAP_LEN)?;
                ensure!(got.len() as u64 == MAP_LEN, "a short result");
            }
            Ok(())
        })?,
    };
    Ok(Figure { value: MAP_LEN as f64 / seconds, unit: "tasks/s" })
}

/// pool_imap_chunked: `imap(square, 0..100_000).with_chunksize(100)` on a 2-worker pool, every
/// result consumed in order, in tasks/s (reported; BENCHMARKS.md sets no target).
pub fn pool_imap_chunked(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "pool_imap_chunked has no floor side");
    let pool = pool2()?;
    let seconds = seconds_per_op(|n| {
        for _ in 0..n {
            let mut count = 0u64;
            for (i, r) in pool.imap(square, 0..MAP_LEN)?.with_chunksize(100).enumerate() {
                ensure!(r? == square(i as u64), "a wrong result");
                count += 1;
            }
            ensure!(count == MAP_LEN, "a short result");
        }
        Ok(())
    })?;
    Ok(Figure { value: MAP_LEN as f64 / seconds, unit: "tasks/s" })
}

/// About 100 ms of xorshift steps the compiler cannot fold away.
fn crunch(seed: u64) -> u64 {
    let mut x = black_box(seed | 1);
    for _ in 0..black_box(60_000_000u64) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// The number of CPU-bound tasks of `pool_cpu_speedup`.
const TASKS: u64 = 8;

/// The eight tasks one after another.
fn serial() -> Duration {
    let start = Instant::now();
    for s in 0..TASKS {
        black_box(crunch(s));
    }
    start.elapsed()
}

/// The eight tasks split between two raw forked processes (the floor's parallel run).
fn raw_parallel() -> Result<Duration> {
    let start = Instant::now();
    let mut pids = Vec::new();
    for k in 0..2u64 {
        // SAFETY: the child only computes and calls `_exit`; it takes no lock, so forking is
        // sound even if the parent had other threads.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => return Err(io::Error::last_os_error()).context("fork"),
            0 => {
                for s in (k..TASKS).step_by(2) {
                    black_box(crunch(s));
                }
                // SAFETY: `_exit` ends the child without running the parent's destructors or
                // atexit handlers.
                unsafe { libc::_exit(0) }
            }
            pid => pids.push(pid),
        }
    }
    for pid in pids {
        wait_ok(pid)?;
    }
    Ok(start.elapsed())
}

/// How many times each side times the serial and the parallel run, alternately; the best of
/// each is kept, so that a burst of outside load on this small machine does not decide the
/// ratio.
const TRIES: usize = 2;

/// pool_cpu_speedup: 8 CPU-bound tasks of ~100 ms, serial time over the time on a 2-worker
/// pool (chunksize 1), as a speed-up. The floor is the same work split between two raw forked
/// processes.
pub fn pool_cpu_speedup(side: Side) -> Result<Figure> {
    let pool = match side {
        Side::Mp => Some(pool2()?),
        Side::Floor => None,
    };
    let mut best_serial = Duration::MAX;
    let mut best_parallel = Duration::MAX;
    for _ in 0..TRIES {
        best_serial = best_serial.min(serial());
        let parallel = match &pool {
            Some(pool) => {
                let start = Instant::now();
                let got = pool.map_chunked(crunch, 0..TASKS, 1)?;
                ensure!(got.len() as u64 == TASKS, "a short result");
                start.elapsed()
            }
            None => raw_parallel()?,
        };
        best_parallel = best_parallel.min(parallel);
    }
    Ok(Figure { value: best_serial.as_secs_f64() / best_parallel.as_secs_f64(), unit: "x" })
}

/// A task of `pool_cpu_speedup_consumer`: crunches, then puts the result on the parent's queue.
fn crunch_and_put((seed, results): (u64, mp::Queue<u64>)) -> u64 {
    let x = crunch(seed);
    // A failed put shows as a missing item in the parent, which then fails the row.
    let _ = results.put(x);
    x
}

/// The eight tasks on the pool, each putting its result on a queue that the parent blocks on
/// (`get`, eight times) while the workers compute.
fn consumed_parallel(pool: &mp::Pool, results: &mp::Queue<u64>) -> Result<Duration> {
    let start = Instant::now();
    let handles = (0..TASKS)
        .map(|s| pool.apply_async(crunch_and_put, ((s, results.clone()),)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sum = 0u64;
    for _ in 0..TASKS {
        sum = sum.wrapping_add(results.get()?);
    }
    let elapsed = start.elapsed();
    let mut check = 0u64;
    for h in handles {
        check = check.wrapping_add(h.get()?);
    }
    ensure!(sum == check, "the queue and the results differ");
    Ok(elapsed)
}

/// pool_cpu_speedup_consumer: pool_cpu_speedup with a consumer waiting in the parent: the
/// tasks put their results on a `Queue` and the parent blocks in `get` until all eight came
/// (the waiting must not cost the workers CPU). The floor is the same raw forked processes.
pub fn pool_cpu_speedup_consumer(side: Side) -> Result<Figure> {
    if side == Side::Floor {
        return pool_cpu_speedup(Side::Floor);
    }
    let pool = pool2()?;
    let results = mp::Queue::new()?;
    let mut best_serial = Duration::MAX;
    let mut best_parallel = Duration::MAX;
    for _ in 0..TRIES {
        best_serial = best_serial.min(serial());
        best_parallel = best_parallel.min(consumed_parallel(&pool, &results)?);
    }
    Ok(Figure { value: best_serial.as_secs_f64() / best_parallel.as_secs_f64(), unit: "x" })
}
