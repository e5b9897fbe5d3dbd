//! A `JoinableQueue` of tasks for four workers (Python's documented task-queue pattern): the
//! parent puts the tasks, `join` waits until every one is reported done, then one `None` per
//! worker stops them. Results come back on a plain `Queue`.

use mp::{JoinableQueue, Process, Queue, QueueError};

fn worker(tasks: JoinableQueue<Option<u64>>, results: Queue<(u64, u64)>) -> Result<(), QueueError> {
    loop {
        let task = tasks.get()?;
        let Some(n) = task else {
            tasks.task_done()?;
            return Ok(());
        };
        results.put((n, (1..=n).product()))?;
        tasks.task_done()?;
    }
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let tasks = JoinableQueue::new()?;
    let results = Queue::new()?;
    let mut workers: Vec<Process> =
        (0..4).map(|_| Process::new(worker, (tasks.clone(), results.clone()))).collect();
    for w in &mut workers {
        w.start()?;
    }
    for n in 1..=10 {
        tasks.put(Some(n))?;
    }
    tasks.join()?;
    println!("all {} tasks done", results.qsize());
    let mut factorials: Vec<(u64, u64)> =
        (0..10).map(|_| results.get()).collect::<Result<_, _>>()?;
    factorials.sort();
    for (n, f) in factorials {
        println!("{n}! = {f}");
    }
    for _ in &workers {
        tasks.put(None)?;
    }
    for w in &workers {
        w.join()?;
    }
    Ok(())
}
