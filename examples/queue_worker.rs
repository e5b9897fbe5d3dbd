//! Seed 003, "Queue": the main process creates a worker, puts a greeting on the queue, then
//! starts the worker, which prints it.

use mp::{Process, Queue, QueueError};

fn worker(q: Queue<String>) -> Result<(), QueueError> {
    let data = q.get()?;
    println!("Worker received: {data}");
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let my_queue = Queue::new()?;
    let mut my_process = Process::new(worker, (my_queue.clone(),));
    my_queue.put("Hello from the main process!".to_string())?;
    my_process.start()?;
    my_process.join()?;
    Ok(())
}
