//! Seeds 001 and 004, "Creating processes": a worker function in a child process.
//!
//! Seed 001 starts the process and never joins it; here the `init` guard joins it at the end
//! of `main`, as Python does at interpreter exit.

fn worker() {
    println!("Worker process");
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let mut process = mp::Process::new(worker, ());
    process.start()?;
    process.join()?;
    Ok(())
}
