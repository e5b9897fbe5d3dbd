//! Seed 003, "Barrier": three workers wait at a barrier, then all pass it, and the main
//! process reports when they are done.
//!
//! The tutorial numbers its workers with `barrier.n_waiting + 1`, which races: two workers
//! can read the same count, so its output is not checkable. Here each worker is numbered by
//! its argument before the barrier, and after it by the arrival index `wait` returns, which
//! is different for every worker (0, 1, 2). The workers print concurrently, so the expected
//! output is unordered, except that the main process's line comes after every worker has
//! been joined.

fn worker(barrier: mp::Barrier, number: usize) -> Result<(), mp::sync::Error> {
    println!("Worker {number} is waiting at the barrier.");
    let arrival = barrier.wait()?;
    println!("Worker {} has passed the barrier.", arrival + 1);
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let num_processes = 3;
    let my_barrier = mp::Barrier::new(num_processes)?;

    let mut processes: Vec<mp::Process> = (1..=num_processes)
        .map(|number| mp::Process::new(worker, (my_barrier.clone(), number)))
        .collect();

    for process in &mut processes {
        process.start()?;
    }
    for process in &processes {
        process.join()?;
    }

    println!("Main process has completed.");
    Ok(())
}
