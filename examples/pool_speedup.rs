//! The pool's main job: CPU-bound work spread over every core. Eight tasks of the same
//! unfoldable arithmetic run one after another, then on a pool with a worker per CPU, and the
//! example prints both times and the speed-up.

use std::hint::black_box;
use std::time::Instant;

/// About 100 ms of xorshift steps the compiler cannot fold away.
fn crunch(seed: u64) -> u64 {
    let mut x = black_box(seed | 1);
    // A tenth of the work in a debug build, so the example stays quick when the test matrix runs it.
    let steps = if cfg!(debug_assertions) { 6_000_000u64 } else { 60_000_000 };
    for _ in 0..black_box(steps) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let seeds: Vec<u64> = (1..=8).collect();

    let start = Instant::now();
    let serial: Vec<u64> = seeds.iter().map(|&s| crunch(s)).collect();
    let serial_time = start.elapsed();

    let pool = mp::Pool::new(mp::cpu_count())?;
    let start = Instant::now();
    let parallel = pool.map_chunked(crunch, seeds, 1)?;
    let pool_time = start.elapsed();
    assert_eq!(serial, parallel);

    println!("8 tasks one after another: {:.0} ms", serial_time.as_secs_f64() * 1e3);
    println!(
        "8 tasks on a pool of {} workers: {:.0} ms",
        pool.processes(),
        pool_time.as_secs_f64() * 1e3
    );
    println!("speed-up: {:.2}x", serial_time.as_secs_f64() / pool_time.as_secs_f64());
    Ok(())
}
