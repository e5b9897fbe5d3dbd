//! Seed 004, "Shared Memory": a child adds one to a `Value` the parent made.
//!
//! The guard of `lock()` gives `&mut i32` while the value's lock is held, so the increment is
//! atomic (Python's `shared_value.value += 1` reads and writes under two acquisitions).

fn worker_function(shared_value: mp::Value<i32>) -> Result<(), mp::sync::Error> {
    *shared_value.lock()? += 1;
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let shared_value = mp::Value::new(0i32)?;
    let mut process = mp::Process::new(worker_function, (shared_value.clone(),));
    process.start()?;
    process.join()?;
    println!("Shared value: {}", shared_value.get()?);
    Ok(())
}
