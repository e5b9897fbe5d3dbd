//! Seed 003, "Event": one process waits for an event that another sets after a delay.
//!
//! The tutorial sleeps 3 seconds; this sleeps a tenth of a second. The two processes print
//! concurrently, so the order of their lines varies (the expected output is unordered), but
//! each line always appears: the waiter prints its second line only once the event is set.

use std::time::Duration;

fn wait_for_event(event: mp::Event) -> Result<(), mp::sync::Error> {
    println!("Waiting for event to be set.");
    event.wait()?;
    println!("Event has been set. Continuing.");
    Ok(())
}

fn set_event(event: mp::Event, delay_ms: u64) {
    println!("Sleeping for {} seconds before setting the event.", delay_ms as f64 / 1000.0);
    std::thread::sleep(Duration::from_millis(delay_ms));
    event.set();
    println!("Event has been set.");
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let my_event = mp::Event::new()?;

    let mut process1 = mp::Process::new(wait_for_event, (my_event.clone(),));
    let mut process2 = mp::Process::new(set_event, (my_event.clone(), 100));

    process1.start()?;
    process2.start()?;

    process1.join()?;
    process2.join()?;
    Ok(())
}
