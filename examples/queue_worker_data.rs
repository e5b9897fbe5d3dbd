//! Seed 002, "sharing data between processes": the parent puts data on a queue before it
//! starts a worker, which takes it. The seed's worker only says "Do something with the data";
//! this one prints it.

use mp::{Process, Queue, QueueError};

fn worker(queue: Queue<String>) -> Result<(), QueueError> {
    let data = queue.get()?;
    println!("Worker got: {data}");
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let queue = Queue::new()?;
    queue.put("Hello, multiprocessing!".to_string())?;
    let mut p = Process::new(worker, (queue,));
    p.start()?;
    p.join()?;
    Ok(())
}
