//! Timing an operation by a minimum run time rather than a fixed count, in its steady state.
//!
//! The timed part runs in batches of at least [`BATCH_TIME`]: a batch that starts with a control
//! message or a wake-up (a producer told how many items to put, a pool's pipeline refilled)
//! would otherwise be timed mostly in that start-up. The batches that grow the batch size are
//! the warm-up and are not timed. `bench/README.md` says how each row uses this.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

/// The least timed work per run unless `MP_BENCH_MIN_TIME` (seconds) says otherwise.
const DEFAULT_MIN_TIME: Duration = Duration::from_millis(500);

/// The least warm-up before the timed part.
const WARM_UP: Duration = Duration::from_millis(50);

/// A batch is grown until it takes this long, so that what each batch costs once (a control
/// message, a pipeline filling and draining, reading the clock) is noise next to it.
pub const BATCH_TIME: Duration = Duration::from_millis(50);

/// The least timed work per run: `MP_BENCH_MIN_TIME` in seconds, or half a second.
pub fn min_time() -> Result<Duration> {
    match std::env::var("MP_BENCH_MIN_TIME") {
        Ok(text) => {
            let secs: f64 =
                text.parse().with_context(|| format!("bad MP_BENCH_MIN_TIME `{text}`"))?;
            ensure!(
                secs.is_finite() && secs > 0.0,
                "MP_BENCH_MIN_TIME must be positive, got `{text}`"
            );
            Ok(Duration::from_secs_f64(secs))
        }
        Err(_) => Ok(DEFAULT_MIN_TIME),
    }
}

/// Seconds per operation. `run(n)` does the operation `n` times; batches grow (untimed: the
/// warm-up) until one takes [`BATCH_TIME`] and the warm-up lasted at least [`WARM_UP`], then
/// batches of that size run until at least [`min_time`] of timed work is done.
pub fn seconds_per_op(mut run: impl FnMut(u64) -> Result<()>) -> Result<f64> {
    per_op_for(min_time()?, WARM_UP, BATCH_TIME, &mut run)
}

fn per_op_for(
    min: Duration,
    warm_up: Duration,
    batch_time: Duration,
    run: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<f64> {
    let mut batch: u64 = 1;
    let warm_up_start = Instant::now();
    loop {
        let start = Instant::now();
        run(batch)?;
        let long_enough = start.elapsed() >= batch_time || batch >= 1 << 40;
        if long_enough && warm_up_start.elapsed() >= warm_up {
            break;
        }
        if !long_enough {
            batch *= 2;
        }
    }
    let start = Instant::now();
    let mut ops: u64 = 0;
    loop {
        run(batch)?;
        ops += batch;
        let elapsed = start.elapsed();
        if elapsed >= min {
            return Ok(elapsed.as_secs_f64() / ops as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_slow_operations_one_by_one() {
        let mut calls = Vec::new();
        let per_op = per_op_for(
            Duration::from_millis(30),
            Duration::from_millis(5),
            Duration::from_millis(1),
            &mut |n| {
                calls.push(n);
                std::thread::sleep(Duration::from_millis(2) * n as u32);
                Ok(())
            },
        )
        .unwrap();
        assert!(calls.iter().all(|n| *n == 1), "{calls:?}");
        assert!((0.002..0.01).contains(&per_op), "{per_op}");
    }

    #[test]
    fn batches_grow_to_the_batch_time_untimed() {
        let mut calls = Vec::new();
        let per_op = per_op_for(
            Duration::from_millis(40),
            Duration::ZERO,
            Duration::from_millis(8),
            &mut |n| {
                calls.push(n);
                std::thread::sleep(Duration::from_millis(1) * n as u32);
                Ok(())
            },
        )
        .unwrap();
        // 1, 2, 4 are too short; 8 takes the batch time and is the last warm-up batch.
        assert_eq!(&calls[..4], &[1, 2, 4, 8], "{calls:?}");
        assert!(calls[4..].iter().all(|n| *n == 8), "{calls:?}");
        assert!((0.001..0.005).contains(&per_op), "{per_op}");
    }

    #[test]
    fn batches_fast_operations() {
        let mut largest = 0;
        let per_op = per_op_for(
            Duration::from_millis(20),
            Duration::from_millis(5),
            Duration::from_millis(1),
            &mut |n| {
                largest = largest.max(n);
                for i in 0..n {
                    std::hint::black_box(i);
                }
                Ok(())
            },
        )
        .unwrap();
        assert!(largest > 1000, "{largest}");
        assert!(per_op < 1e-6, "{per_op}");
    }

    #[test]
    fn errors_stop_the_run() {
        let result = per_op_for(
            Duration::from_millis(20),
            Duration::ZERO,
            Duration::from_millis(1),
            &mut |_| anyhow::bail!("boom"),
        );
        assert!(result.is_err());
    }
}
