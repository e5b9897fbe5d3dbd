//! Seed 000, "Creating a process": a child prints its name.
//!
//! The tutorial's snippet starts the process inside `my_func` itself, which would recurse;
//! here the main process starts it, as the tutorial intends.

fn my_func() {
    println!("Hello from process {}", mp::current_process().name());
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let mut process = mp::Process::new(my_func, ());
    process.start()?;
    process.join()?;
    Ok(())
}
