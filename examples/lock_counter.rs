//! Seed 000, "Using a lock to synchronize access to shared resources": two processes each add
//! one to a shared counter 10,000 times, under a lock, and the parent prints the total.
//!
//! As in the tutorial, the counter and the lock are separate objects; the counter is a
//! `Value`, whose `get` and `set` copy in and out.

fn increment(counter: mp::Value<i32>, lock: mp::Lock) -> Result<(), mp::sync::Error> {
    for _ in 0..10_000 {
        let _guard = lock.acquire()?;
        counter.set(counter.get()? + 1)?;
    }
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let counter = mp::Value::new(0i32)?;
    let lock = mp::Lock::new()?;

    let mut p1 = mp::Process::new(increment, (counter.clone(), lock.clone()));
    let mut p2 = mp::Process::new(increment, (counter.clone(), lock.clone()));

    p1.start()?;
    p2.start()?;

    p1.join()?;
    p2.join()?;

    println!("Counter value: {}", counter.get()?);
    Ok(())
}
