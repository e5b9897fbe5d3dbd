//! Shared objects (queues, locks, values) passed in pool tasks, under the start method in
//! `MP_START_METHOD`: each crosses to a worker once, a process keeps one set of descriptors
//! per object, and any number of tasks completes (issue 10: 300 tasks with a queue each, or
//! 3,000 with a lock each, never returned).

use mp::{Lock, Pool, Queue, Value};

/// How many descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(usize::MAX)
}

/// Puts `i` on the queue under the lock, and reports how many descriptors the worker holds.
fn put_locked((q, lock, i): (Queue<u64>, Lock, u64)) -> (u64, usize) {
    {
        let _g = lock.acquire().unwrap();
        q.put(i).unwrap();
    }
    (i, open_fds())
}

#[test]
fn a_queue_and_a_lock_in_every_task_cross_once_and_any_number_completes() {
    let pool = Pool::new(2).unwrap();
    // A first map starts the workers and settles the parent's descriptors.
    assert_eq!(pool.map(|x: u64| x + 1, 0..4u64).unwrap(), [1, 2, 3, 4]);
    let q: Queue<u64> = Queue::new().unwrap();
    let lock = Lock::new().unwrap();
    let before = open_fds();
    for n in [300u64, 3_000, 20_000] {
        let got = pool.map(put_locked, (0..n).map(|i| (q.clone(), lock.clone(), i))).unwrap();
        assert_eq!(got.len() as u64, n);
        assert!(got.iter().enumerate().all(|(k, (i, _))| *i == k as u64));
        // A worker holds one set of descriptors per object, whatever the number of tasks.
        let most = got.iter().map(|(_, fds)| *fds).max().unwrap();
        assert!(most < 64, "a worker held {most} descriptors after {n} tasks");
        let mut seen: Vec<u64> = (0..n).map(|_| q.get().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        // The parent keeps no descriptor per task.
        assert_eq!(open_fds(), before, "after {n} tasks");
    }
}

/// Adds one to the value of slot `i` and to the counter, under the value's own lock.
fn add_one((values, counter, i): (Vec<Value<u64>>, Value<u64>, usize)) -> usize {
    *values[i].lock().unwrap() += 1;
    *counter.lock().unwrap() += 1;
    open_fds()
}

#[test]
fn more_objects_than_a_worker_keeps_are_released_and_defined_again() {
    // 200 values (two objects each: the segment and its lock), more than the 128 a worker
    // keeps defined: the least recently used are released and defined again when needed.
    let pool = Pool::new(2).unwrap();
    let values: Vec<Value<u64>> = (0..200).map(|_| Value::new(0u64).unwrap()).collect();
    let counter = Value::new(0u64).unwrap();
    for round in 1..=3u64 {
        let tasks = (0..values.len()).map(|i| (vec![values[i].clone()], counter.clone(), 0));
        let fds = pool.map_chunked(add_one, tasks, 7).unwrap();
        assert!(values.iter().all(|v| v.get().unwrap() == round));
        assert_eq!(counter.get().unwrap(), 200 * round);
        let most = fds.into_iter().max().unwrap();
        assert!(most < 600, "a worker held {most} descriptors");
    }
}

fn holds(lock: Lock) -> usize {
    drop(lock);
    open_fds()
}

#[test]
fn objects_the_parent_drops_are_released_in_the_workers() {
    let pool = Pool::new(2).unwrap();
    let baseline = pool.map_chunked(|_: u8| open_fds(), 0..8u8, 1).unwrap();
    let locks: Vec<Lock> = (0..60).map(|_| Lock::new().unwrap()).collect();
    let during = pool.map_chunked(holds, locks.clone(), 1).unwrap();
    assert!(during.iter().max() > baseline.iter().max(), "the workers hold the locks");
    drop(locks);
    // The next batch each worker gets starts with the releases.
    let after = pool.map_chunked(|_: u8| open_fds(), 0..8u8, 1).unwrap();
    assert!(
        after.iter().max() <= baseline.iter().max(),
        "released: {after:?}, before any lock: {baseline:?}"
    );
}

/// Puts through one handle and gets through the other: true if both are one queue.
fn same_queue((a, b): (Queue<u8>, Queue<u8>)) -> bool {
    a.put(1).unwrap();
    b.get().unwrap() == 1
}

#[test]
fn distinct_objects_in_one_task_stay_distinct_and_equal_ones_are_one() {
    let pool = Pool::new(2).unwrap();
    let q1: Queue<u8> = Queue::new().unwrap();
    let q2: Queue<u8> = Queue::new().unwrap();
    let pairs = vec![(q1.clone(), q1.clone()), (q2.clone(), q2.clone())];
    assert_eq!(pool.map(same_queue, pairs).unwrap(), [true, true]);
    let crossed = (q1.clone(), q2.clone());
    assert!(q1.empty() && q2.empty());
    // Two different queues: what is put on one is on it, not on the other.
    fn put_first((a, _b): (Queue<u8>, Queue<u8>)) {
        a.put(9).unwrap();
    }
    pool.apply(put_first, (crossed,)).unwrap();
    assert_eq!(q1.get().unwrap(), 9);
    assert!(q2.empty());
}
