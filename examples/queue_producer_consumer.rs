//! Seed 000, "Using a queue to communicate between processes": a producer process puts the
//! numbers 0 to 9 on a queue and a consumer process prints them.
//!
//! The seed's consumer loops for ever (`while True: item = queue.get()`), so its program never
//! ends. Here the producer puts a sentinel, `None`, after the numbers, and the consumer stops
//! when it takes it.

use mp::{Process, Queue, QueueError};

fn producer(queue: Queue<Option<u32>>) -> Result<(), QueueError> {
    for i in 0..10 {
        queue.put(Some(i))?;
    }
    queue.put(None)?;
    Ok(())
}

fn consumer(queue: Queue<Option<u32>>) -> Result<(), QueueError> {
    while let Some(item) = queue.get()? {
        println!("{item}");
    }
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
