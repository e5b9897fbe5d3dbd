//! Seed 003, "Lock": five processes each add one to a shared value under a lock.

fn update_shared_data(lock: mp::Lock, shared_data: mp::Value<i32>) -> Result<(), mp::sync::Error> {
    let _guard = lock.acquire()?;
    shared_data.set(shared_data.get()? + 1)?;
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let shared_data = mp::Value::new(0i32)?;
    let my_lock = mp::Lock::new()?;

    let mut processes: Vec<mp::Process> = (0..5)
        .map(|_| mp::Process::new(update_shared_data, (my_lock.clone(), shared_data.clone())))
        .collect();

    for process in &mut processes {
        process.start()?;
    }
    for process in &processes {
        process.join()?;
    }

    println!("Final value: {}", shared_data.get()?);
    Ok(())
}
