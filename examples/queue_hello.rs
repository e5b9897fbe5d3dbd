//! Seed 001, "Sharing data using a queue": a producer process puts a greeting on a queue and
//! a consumer process prints what it receives.

use mp::{Process, Queue, QueueError};

fn producer(queue: Queue<String>) -> Result<(), QueueError> {
    queue.put("Hello from Producer".to_string())?;
    Ok(())
}

fn consumer(queue: Queue<String>) -> Result<(), QueueError> {
    let message = queue.get()?;
    println!("Received: {message}");
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let queue = Queue::new()?;
    let mut p1 = Process::new(producer, (queue.clone(),));
    let mut p2 = Process::new(consumer, (queue,));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
