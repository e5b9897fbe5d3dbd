//! Seed 003, "Process": the fundamental component, a function run in a new process.

fn my_function() {
    println!("Hello from a subprocess!");
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let mut my_process = mp::Process::new(my_function, ());
    my_process.start()?;
    my_process.join()?;
    Ok(())
}
