//! Seed 004, the notebook cell whose workers sleep for a second before squaring: ten tasks on
//! four workers take about three seconds. The tutorial forgets `close` and `join`; in Rust the
//! pool is terminated when it is dropped, after `map` has returned.

use std::time::Duration;

fn worker_function(x: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(1));
    x * x
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let pool = mp::Pool::new(4)?;
    let results = pool.map(worker_function, 0..10)?;
    // Missing pool.close() and pool.join()
    println!("{results:?}");
    Ok(())
}
