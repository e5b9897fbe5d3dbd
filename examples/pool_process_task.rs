//! Seed 000, "Creating a pool of worker processes": a pool of four workers maps a task over
//! ten inputs; each task prints what it processed.
//!
//! The workers print concurrently, so the lines come in any order.

fn process_task(task: u32) {
    // Do some work here
    println!("Task processed: {task}");
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let tasks = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

    // Python's `with Pool(processes=4) as pool:`: the pool is terminated when it goes out of
    // scope, after `map` has returned every result.
    {
        let pool = mp::Pool::new(4)?;
        let _results = pool.map(process_task, tasks)?;
    }
    Ok(())
}
