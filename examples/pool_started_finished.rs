//! Seed 004, the notebook cell whose workers print when they start and finish a two-second
//! task, followed by its question: why `close` comes before `join`. `close` stops new tasks
//! from being submitted; `join` then waits until the workers have finished and exited.
//!
//! The workers print concurrently, so the lines come in any order; "All tasks submitted"
//! comes after every task has finished, because `map` waits for all of them.

use std::time::Duration;

fn worker_function(x: u64) {
    println!("Worker {x} started.");
    std::thread::sleep(Duration::from_secs(2));
    println!("Worker {x} finished.");
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let pool = mp::Pool::new(4)?;
    let _results = pool.map(worker_function, 0..10)?;
    println!("All tasks submitted");

    pool.close()?;
    pool.join()?;
    Ok(())
}
