//! Seed 003, "Condition": a worker waits on a condition, a notifier process and then the main
//! process notify it.
//!
//! The tutorial sleeps 2 seconds hoping the worker waits before the notifier notifies; if the
//! notification comes first, the worker waits forever and the program hangs. Here the worker
//! waits for a *predicate* (`wait_for`): a shared flag that the notifier raises under the
//! condition's lock before it notifies. A notification that comes before the worker waits
//! then finds the flag already up, so the program cannot hang, and no sleep is needed. The
//! processes print concurrently, so the expected output is unordered.

fn worker(condition: mp::Condition, notified: mp::Value<u8>) -> Result<(), mp::sync::Error> {
    let mut guard = condition.acquire()?;
    println!("Worker waiting for a condition.");
    guard.wait_for(|| notified.get().is_ok_and(|flag| flag == 1))?;
    println!("Worker woke up!");
    Ok(())
}

fn notifier(condition: mp::Condition, notified: mp::Value<u8>) -> Result<(), mp::sync::Error> {
    let mut guard = condition.acquire()?;
    println!("Notifier notifying the condition.");
    notified.set(1)?;
    guard.notify_all()?;
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let my_lock = mp::Lock::new()?;
    let my_condition = mp::Condition::with_lock(my_lock)?;
    // The flag has a lock of its own (the condition's `Lock` is not recursive, and the
    // predicate runs while the worker holds it); it is written only under the condition's
    // lock, which is what makes the predicate and the notification agree.
    let notified = mp::Value::new(0u8)?;

    let mut worker_process = mp::Process::new(worker, (my_condition.clone(), notified.clone()));
    let mut notifier_process = mp::Process::new(notifier, (my_condition.clone(), notified.clone()));

    worker_process.start()?;
    notifier_process.start()?;
    notifier_process.join()?;

    {
        let mut guard = my_condition.acquire()?;
        println!("Main process notifying the condition.");
        guard.notify_all()?;
    }

    worker_process.join()?;
    Ok(())
}
