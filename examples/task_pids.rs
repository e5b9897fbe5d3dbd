//! Seed 001, "Another multiprocessing example": two tasks print the pid they run in.
//!
//! The two children and the parent print concurrently, so the lines come in any order.

fn task(name: String) {
    println!("Task {name} running in process {}", std::process::id());
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    // Creates a new process and passes it the argument "A" (and "B").
    let mut process1 = mp::Process::new(task, ("A".to_string(),));
    let mut process2 = mp::Process::new(task, ("B".to_string(),));

    process1.start()?;
    process2.start()?;

    println!("Processes started");

    // Wait for the processes to finish before continuing.
    process1.join()?;
    process2.join()?;
    Ok(())
}
