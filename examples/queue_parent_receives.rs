//! Seed 004, "Using Queues for Communication": a worker puts a message on a queue; the parent
//! joins it, then takes the message and prints it.
//!
//! Joining before taking is safe here whatever the message's size: a `put` has finished once
//! the message is in the queue's shared memory (Python's feeder thread can deadlock this order
//! with large messages).

use mp::{Process, Queue, QueueError};

fn worker_function(queue: Queue<String>) -> Result<(), QueueError> {
    queue.put("Message from worker".to_string())?;
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let queue = Queue::new()?;
    let mut process = Process::new(worker_function, (queue.clone(),));
    process.start()?;
    process.join()?;
    let message = queue.get()?;
    println!("Parent received: {message}");
    Ok(())
}
