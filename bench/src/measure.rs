//! Timing an operation by a minimum run time rather than a fixed count, in its steady state.
//!
//! The timed part runs in batches of at least [`BATCH_TIME`]: a batch that starts with a control
//! message or a wake-up (a producer told how many items to put, a pool's pipeline refilled)
//! would otherwise be timed mostly in that start-up. The batches that grow the batch size are
//! the warm-up and are not timed. The blocking rows instead time their operations one by one
//! and take the median ([`time_one_by_one`]). `bench/README.md` says how each row uses this.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// Whether [`seconds_per_op`] gives the median of operations timed one by one.
static ONE_BY_ONE: AtomicBool = AtomicBool::new(false);

/// Makes every later [`seconds_per_op`] of this process give the median of operations timed
/// one by one (after the same warm-up), not the mean of batches. The blocking rows call it
/// first, on every side: their round trips come in two kinds, one where the receiver sleeps and
/// one where it catches the message awake, and the mean of a batch is set by the share of the
/// second kind, which changes by the minute and with how light a side's loop is
/// (bench/README.md, "The blocking rows"). Each side of a row runs in a process of its own, so
/// this never reaches another row.
pub fn time_one_by_one() {
    ONE_BY_ONE.store(true, Ordering::Relaxed);
}

/// Seconds per operation. `run(n)` does the operation `n` times; batches grow (untimed: the
/// warm-up) until one takes [`BATCH_TIME`] and the warm-up lasted at least [`WARM_UP`], then
/// batches of that size run until at least [`min_time`] of timed work is done. After
/// [`time_one_by_one`], the same warm-up is followed by [`median_for`].
///
/// With `MP_BENCH_SPREAD` set, it then times [`SPREAD_OPS`] operations one by one (or takes the
/// ones it timed) and prints their spread on stderr ([`spread`]): a mean can hide two kinds of
/// operation (bench/README.md, "The blocking rows").
pub fn seconds_per_op(mut run: impl FnMut(u64) -> Result<()>) -> Result<f64> {
    let origin = Instant::now();
    let now = || origin.elapsed();
    let show_spread = std::env::var_os("MP_BENCH_SPREAD").is_some();
    if ONE_BY_ONE.load(Ordering::Relaxed) {
        per_op_for(Duration::ZERO, WARM_UP, BATCH_TIME, &mut run, &now)?;
        let (median, mut times) = median_for(min_time()?, MEDIAN_MIN_OPS, &mut run, &now)?;
        if show_spread {
            eprintln!("{}", spread(&mut times));
        }
        return Ok(median);
    }
    let per_op = per_op_for(min_time()?, WARM_UP, BATCH_TIME, &mut run, &now)?;
    if show_spread {
        let (_, mut times) = median_for(Duration::ZERO, SPREAD_OPS, &mut run, &now)?;
        eprintln!("{}", spread(&mut times));
    }
    Ok(per_op)
}

/// The fewest operations [`median_for`] times, however long they take.
const MEDIAN_MIN_OPS: usize = 1_000;

/// Times `run(1)` one by one until at least `min` of them is done and at least `min_ops`
/// ran (at least one), with `now` as in [`per_op_for`]; gives the median in seconds and the
/// times (sorted).
fn median_for(
    min: Duration,
    min_ops: usize,
    run: &mut dyn FnMut(u64) -> Result<()>,
    now: &dyn Fn() -> Duration,
) -> Result<(f64, Vec<Duration>)> {
    let mut times = Vec::with_capacity(min_ops);
    let mut total = Duration::ZERO;
    while total < min || times.len() < min_ops.max(1) {
        let start = now();
        run(1)?;
        let took = now().saturating_sub(start);
        times.push(took);
        total += took;
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    Ok((median.as_secs_f64(), times))
}

/// How many operations `MP_BENCH_SPREAD` times one by one.
const SPREAD_OPS: usize = 20_000;

/// A line that describes the spread of `times` (sorted here): percentiles, and the share of
/// operations in each tenth of the range from the fastest to the 99th percentile.
fn spread(times: &mut [Duration]) -> String {
    times.sort_unstable();
    let Some(last) = times.len().checked_sub(1) else { return "spread: no operations".into() };
    let at = |p: usize| times[last * p / 100];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let percentiles = [1, 10, 25, 50, 75, 90, 99]
        .iter()
        .map(|&p| format!("p{p} {:.3}", us(at(p))))
        .collect::<Vec<_>>()
        .join(", ");
    let (low, high) = (us(times[0]), us(at(99)));
    let width = ((high - low) / 10.0).max(f64::MIN_POSITIVE);
    let mut counts = [0usize; 10];
    for t in times.iter() {
        let bin = ((us(*t) - low) / width) as usize;
        if let Some(count) = counts.get_mut(bin.min(9)) {
            *count += 1;
        }
    }
    let bins = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let share = 100.0 * *count as f64 / times.len() as f64;
            format!("{:.2}: {share:.1}%", low + width * i as f64)
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("spread of {} operations, µs: {percentiles}; from: {bins}", times.len())
}

/// [`seconds_per_op`] with its durations, and `now`, the time since some fixed origin (the
/// monotonic clock; a virtual one in the tests).
fn per_op_for(
    min: Duration,
    warm_up: Duration,
    batch_time: Duration,
    run: &mut dyn FnMut(u64) -> Result<()>,
    now: &dyn Fn() -> Duration,
) -> Result<f64> {
    let mut batch: u64 = 1;
    let warm_up_start = now();
    loop {
        let start = now();
        run(batch)?;
        let end = now();
        let long_enough = end.saturating_sub(start) >= batch_time || batch >= 1 << 40;
        if long_enough && end.saturating_sub(warm_up_start) >= warm_up {
            break;
        }
        if !long_enough {
            batch *= 2;
        }
    }
    let start = now();
    let mut ops: u64 = 0;
    loop {
        run(batch)?;
        ops += batch;
        let elapsed = now().saturating_sub(start);
        if elapsed >= min {
            return Ok(elapsed.as_secs_f64() / ops as f64);
        }
    }
}

/// The peak resident set of this process in KiB, `VmHWM` in /proc/self/status.
pub fn peak_rss_kib() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    line.trim().trim_end_matches("kB").trim().parse().with_context(|| format!("bad VmHWM `{line}`"))
}

/// Prints a run's one result line, `RESULT <value> <unit> <peak_rss_kib>`, which
/// `cargo xtask bench` reads.
pub fn report(value: f64, unit: &str) -> Result<()> {
    let rss = peak_rss_kib()?;
    println!("RESULT {value} {unit} {rss}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A virtual clock, and an operation that takes `each` of it per call.
    fn virtual_op(clock: &Cell<Duration>, each: Duration, n: u64) {
        clock.set(clock.get() + each * u32::try_from(n).unwrap());
    }

    #[test]
    fn times_slow_operations_one_by_one() {
        let clock = Cell::new(Duration::ZERO);
        let mut calls = Vec::new();
        let per_op = per_op_for(
            Duration::from_millis(30),
            Duration::from_millis(5),
            Duration::from_millis(1),
            &mut |n| {
                calls.push(n);
                virtual_op(&clock, Duration::from_millis(2), n);
                Ok(())
            },
            &|| clock.get(),
        )
        .unwrap();
        assert!(calls.iter().all(|n| *n == 1), "{calls:?}");
        assert!((per_op - 0.002).abs() < 1e-12, "{per_op}");
    }

    #[test]
    fn batches_grow_to_the_batch_time_untimed() {
        let clock = Cell::new(Duration::ZERO);
        let mut calls = Vec::new();
        let per_op = per_op_for(
            Duration::from_millis(40),
            Duration::ZERO,
            Duration::from_millis(8),
            &mut |n| {
                calls.push(n);
                virtual_op(&clock, Duration::from_millis(1), n);
                Ok(())
            },
            &|| clock.get(),
        )
        .unwrap();
        // 1, 2, 4 are too short; 8 takes the batch time and is the last warm-up batch; then
        // five timed batches of 8 make the 40 ms.
        assert_eq!(calls, [1, 2, 4, 8, 8, 8, 8, 8, 8], "{calls:?}");
        assert!((per_op - 0.001).abs() < 1e-12, "{per_op}");
    }

    #[test]
    fn batches_fast_operations() {
        let clock = Cell::new(Duration::ZERO);
        let mut largest = 0;
        let per_op = per_op_for(
            Duration::from_millis(20),
            Duration::from_millis(5),
            Duration::from_millis(1),
            &mut |n| {
                largest = largest.max(n);
                virtual_op(&clock, Duration::from_nanos(1), n);
                Ok(())
            },
            &|| clock.get(),
        )
        .unwrap();
        // A batch grows to the first power of two that takes 1 ms at 1 ns each.
        assert_eq!(largest, 1 << 20, "{largest}");
        assert!((per_op - 1e-9).abs() < 1e-15, "{per_op}");
    }

    #[test]
    fn spread_gives_percentiles_and_shares() {
        // 90 operations of 1 µs and 10 of 11 µs: two modes.
        let mut times: Vec<Duration> =
            (0..100).map(|i| Duration::from_micros(if i % 10 == 0 { 11 } else { 1 })).collect();
        let line = spread(&mut times);
        assert!(line.starts_with("spread of 100 operations"), "{line}");
        assert!(line.contains("p50 1.000") && line.contains("p90 1.000"), "{line}");
        assert!(line.contains("p99 11.000"), "{line}");
        assert!(line.contains("1.00: 90.0%") && line.contains("10.00: 10.0%"), "{line}");
        assert_eq!(spread(&mut []), "spread: no operations");
    }

    #[test]
    fn the_median_is_the_typical_operation_not_the_mean() {
        // Three operations in four take 10 ms, the fourth 1 ms: the mean is 7.75 ms, the
        // median 10 ms. They run until 50 ms are timed and at least MEDIAN_MIN_OPS ran.
        let clock = Cell::new(Duration::ZERO);
        let mut calls = 0u64;
        let (median, times) = median_for(
            Duration::from_millis(50),
            MEDIAN_MIN_OPS,
            &mut |n| {
                assert_eq!(n, 1);
                calls += 1;
                let each = if calls % 4 == 0 { 1 } else { 10 };
                virtual_op(&clock, Duration::from_millis(each), 1);
                Ok(())
            },
            &|| clock.get(),
        )
        .unwrap();
        assert_eq!(times.len(), MEDIAN_MIN_OPS);
        assert!(times.is_sorted());
        assert!((median - 0.010).abs() < 1e-12, "{median}");
        assert!(
            median_for(Duration::ZERO, 1, &mut |_| anyhow::bail!("boom"), &|| clock.get()).is_err()
        );
    }

    #[test]
    fn errors_stop_the_run() {
        let result = per_op_for(
            Duration::from_millis(20),
            Duration::ZERO,
            Duration::from_millis(1),
            &mut |_| anyhow::bail!("boom"),
            &Duration::default,
        );
        assert!(result.is_err());
    }
}
