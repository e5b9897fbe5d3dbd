//! Seeing a pool work: a few thousand tasks of uneven length mapped with a progress bar (on
//! stderr, drawn only when it is a terminal), then what each worker did, as a table.

use std::hint::black_box;

/// Work whose length depends on `n`: most tasks are quick, every 97th is long.
fn uneven(n: u64) -> u64 {
    let steps = if n % 97 == 0 { 200_000 } else { 1_000 + (n % 13) * 500 };
    let mut x = black_box(n | 1);
    for _ in 0..black_box(steps) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let pool = mp::Pool::builder().processes(2).progress(mp::Progress::bar()).build()?;
    let results = pool.map_chunked(uneven, 0..3000, 16)?;
    println!("mapped {} tasks", results.len());
    pool.close()?;
    pool.join()?;
    let insights = pool.insights();
    println!("tasks done by the workers: {}", insights.tasks());
    print!("{insights}");
    Ok(())
}
