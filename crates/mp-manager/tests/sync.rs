//! The manager's synchronisation types across processes, under the start method in
//! `MP_START_METHOD`: queues (items and proxies crossing, timeouts, a dead getter),
//! joinable queues, locks (exclusion, release errors, the death of a holder), semaphores,
//! conditions, events and barriers.

use std::time::{Duration, Instant};

use mp_manager::{
    BarrierProxy, ConditionProxy, Error, EventProxy, JoinableQueueProxy, ListProxy, LockProxy,
    Manager, QueueProxy, RLockProxy, SemaphoreProxy, ValueProxy,
};
use mp_process::Process;
use mp_testkit::{die_now, eventually, method};

/// A bound on waits that only a failure reaches.
const LONG: Duration = Duration::from_secs(30);

/// `p`, started.
fn started(mut p: Process) -> Process {
    p.start().unwrap();
    p
}

/// Joins `p` and checks that it succeeded.
fn joined_ok(p: &Process) {
    assert_eq!(p.join().unwrap(), 0, "a child failed under {}", method());
}

/// Asserts that `result` is a remote error of `kind`.
fn assert_remote<T: std::fmt::Debug>(result: Result<T, Error>, kind: &str) {
    match result {
        Err(e) if e.is_remote(kind) => {}
        other => panic!("expected a remote {kind}, got {other:?}"),
    }
}

fn take_and_echo(input: QueueProxy<u32>, output: QueueProxy<u32>, n: u32) -> Result<(), Error> {
    for i in 0..n {
        let v = input.get()?;
        assert_eq!(v, i, "items come in the order they were put");
        output.put(v * 2)?;
    }
    Ok(())
}

#[test]
fn queue_carries_items_between_processes() {
    let manager = Manager::start().unwrap();
    let input = manager.queue::<u32>().unwrap();
    let output = manager.queue::<u32>().unwrap();
    let child = started(Process::new(take_and_echo, (input.clone(), output.clone(), 100)));
    for i in 0..100 {
        input.put(i).unwrap();
    }
    let echoed: Vec<u32> = (0..100).map(|_| output.get().unwrap()).collect();
    assert_eq!(echoed, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    joined_ok(&child);
    assert!(input.empty().unwrap() && output.empty().unwrap());
}

fn take_two(queue: QueueProxy<u32>) -> Result<(), Error> {
    assert_eq!(queue.get()?, 1);
    assert_eq!(queue.get()?, 2);
    Ok(())
}

#[test]
fn full_queue_put_waits_for_a_get_in_a_child() {
    let manager = Manager::start().unwrap();
    let queue = manager.queue_with_maxsize::<u32>(1).unwrap();
    queue.put(1).unwrap();
    let child = started(Process::new(take_two, (queue.clone(),)));
    // Waits in the manager until the child took the first item.
    queue.put(2).unwrap();
    joined_ok(&child);
    assert_eq!(queue.qsize().unwrap(), 0);
}

#[test]
fn queue_timeouts_and_sizes() {
    let manager = Manager::start().unwrap();
    let queue = manager.queue_with_maxsize::<u8>(1).unwrap();
    assert!(queue.empty().unwrap());
    assert!(!queue.full().unwrap());
    assert!(matches!(queue.try_get(), Err(Error::Empty)));
    let start = Instant::now();
    assert!(matches!(queue.get_timeout(Duration::from_millis(100)), Err(Error::Empty)));
    assert!(start.elapsed() >= Duration::from_millis(100));

    queue.try_put(1).unwrap();
    assert!(queue.full().unwrap());
    assert_eq!(queue.qsize().unwrap(), 1);
    assert!(matches!(queue.try_put(2), Err(Error::Full)));
    let start = Instant::now();
    assert!(matches!(queue.put_timeout(2, Duration::from_millis(50)), Err(Error::Full)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(queue.get_timeout(LONG).unwrap(), 1);

    let unbounded = manager.queue::<u8>().unwrap();
    for i in 0..10 {
        unbounded.try_put(i).unwrap();
    }
    assert!(!unbounded.full().unwrap());
    assert_eq!(unbounded.qsize().unwrap(), 10);
}

#[test]
fn a_get_waiting_in_one_thread_does_not_block_the_others() {
    let manager = Manager::start().unwrap();
    let queue = manager.queue::<String>().unwrap();
    std::thread::scope(|s| {
        let getter = s.spawn(|| queue.get().unwrap());
        queue.put("through".to_string()).unwrap();
        assert_eq!(getter.join().unwrap(), "through");
    });
}

fn append_and_return(queue: QueueProxy<ListProxy<u32>>) -> Result<(), Error> {
    let list = queue.get()?;
    list.append(42)?;
    queue.put(list)
}

#[test]
fn proxies_travel_through_a_queue() {
    let manager = Manager::start().unwrap();
    let queue = manager.queue::<ListProxy<u32>>().unwrap();
    // The queue keeps the list alive once this process's proxy is gone.
    queue.put(manager.list(Vec::<u32>::new()).unwrap()).unwrap();
    let child = started(Process::new(append_and_return, (queue.clone(),)));
    joined_ok(&child);
    let list = queue.get_timeout(LONG).unwrap();
    assert_eq!(list.to_vec().unwrap(), [42]);

    // A queue dropped with proxies in it gives their objects back.
    queue.put(list).unwrap();
    drop(queue);
    assert!(
        eventually(LONG, || manager.number_of_objects().unwrap().0 == 0),
        "objects left: {:?}",
        manager.number_of_objects()
    );
}

fn announce_then_get(ready: EventProxy, queue: QueueProxy<u32>) -> Result<(), Error> {
    ready.set()?;
    let v = queue.get()?;
    panic!("the getter was to be killed, it got {v}");
}

#[test]
fn a_killed_getter_takes_no_item() {
    let manager = Manager::start().unwrap();
    let ready = manager.event().unwrap();
    let queue = manager.queue::<u32>().unwrap();
    let child = started(Process::new(announce_then_get, (ready.clone(), queue.clone())));
    ready.wait().unwrap();
    child.kill().unwrap();
    assert_eq!(child.join().unwrap(), -9);
    queue.put(7).unwrap();
    assert_eq!(queue.get_timeout(LONG).unwrap(), 7, "the dead getter's wait took it");
}

fn consume(queue: JoinableQueueProxy<u32>, n: u32) -> Result<(), Error> {
    for _ in 0..n {
        queue.get()?;
        queue.task_done()?;
    }
    Ok(())
}

#[test]
fn joinable_queue_join_returns_after_task_done_in_a_child() {
    let manager = Manager::start().unwrap();
    let queue = manager.joinable_queue::<u32>().unwrap();
    for i in 0..5 {
        queue.put(i).unwrap();
    }
    let start = Instant::now();
    assert!(!queue.join_timeout(Duration::from_millis(20)).unwrap(), "nobody consumed");
    assert!(start.elapsed() >= Duration::from_millis(20));
    let child = started(Process::new(consume, (queue.clone(), 5)));
    queue.join().unwrap();
    assert_eq!(queue.qsize().unwrap(), 0);
    joined_ok(&child);
    assert!(queue.join_timeout(Duration::ZERO).unwrap());
    assert_remote(queue.task_done(), "ValueError");
}

fn count_under_lock(lock: LockProxy, counter: ValueProxy<u64>, times: u32) -> Result<(), Error> {
    for _ in 0..times {
        let _guard = lock.acquire()?;
        let v = counter.get()?;
        counter.set(v + 1)?;
    }
    Ok(())
}

fn count_under_rlock(lock: RLockProxy, counter: ValueProxy<u64>, times: u32) -> Result<(), Error> {
    for _ in 0..times {
        let _outer = lock.acquire()?;
        let _inner = lock.acquire()?;
        let v = counter.get()?;
        counter.set(v + 1)?;
    }
    Ok(())
}

#[test]
fn lock_excludes_across_processes() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    let counter = manager.value(0u64).unwrap();
    let children: Vec<Process> = (0..4)
        .map(|_| started(Process::new(count_under_lock, (lock.clone(), counter.clone(), 50))))
        .collect();
    children.iter().for_each(joined_ok);
    assert_eq!(counter.get().unwrap(), 200);
}

#[test]
fn rlock_excludes_across_processes_with_nested_holds() {
    let manager = Manager::start().unwrap();
    let lock = manager.rlock().unwrap();
    let counter = manager.value(0u64).unwrap();
    let children: Vec<Process> = (0..3)
        .map(|_| started(Process::new(count_under_rlock, (lock.clone(), counter.clone(), 40))))
        .collect();
    children.iter().for_each(joined_ok);
    assert_eq!(counter.get().unwrap(), 120);
}

#[test]
fn lock_release_errors_and_timeouts() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    assert_remote(lock.release(), "RuntimeError");
    let guard = lock.acquire().unwrap();
    assert!(lock.try_acquire().unwrap().is_none());
    let start = Instant::now();
    assert!(lock.acquire_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(50));
    guard.release().unwrap();
    lock.try_acquire().unwrap().expect("free again").forget();
    lock.release().unwrap();
    assert_remote(lock.release(), "RuntimeError");

    let rlock = manager.rlock().unwrap();
    assert_remote(rlock.release(), "RuntimeError");
    let outer = rlock.acquire().unwrap();
    let inner = rlock.try_acquire().unwrap().expect("its owner takes it again");
    std::thread::scope(|s| {
        s.spawn(|| assert!(rlock.try_acquire().unwrap().is_none(), "another thread's"));
        s.spawn(|| assert_remote(rlock.release(), "RuntimeError"));
    });
    drop(inner);
    drop(outer);
    assert_remote(rlock.release(), "RuntimeError");
}

fn release_lock(lock: LockProxy) -> Result<(), Error> {
    lock.release()
}

fn release_rlock(lock: RLockProxy) -> Result<(), Error> {
    assert!(lock.release().unwrap_err().is_remote("RuntimeError"), "not its owner");
    Ok(())
}

#[test]
fn a_lock_is_released_by_any_process_an_rlock_by_its_owner_only() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    lock.acquire().unwrap().forget();
    joined_ok(&started(Process::new(release_lock, (lock.clone(),))));
    assert!(lock.try_acquire().unwrap().is_some(), "as Python's Lock: released by the child");

    let rlock = manager.rlock().unwrap();
    let guard = rlock.acquire().unwrap();
    joined_ok(&started(Process::new(release_rlock, (rlock.clone(),))));
    guard.release().unwrap();
}

fn hold_lock_and_die(lock: LockProxy, held: EventProxy) {
    lock.acquire().unwrap().forget();
    held.set().unwrap();
    die_now();
}

fn hold_rlock_and_die(lock: RLockProxy, held: EventProxy) {
    for _ in 0..3 {
        lock.acquire().unwrap().forget();
    }
    held.set().unwrap();
    die_now();
}

fn hold_condition_and_die(cond: ConditionProxy, held: EventProxy) {
    cond.acquire().unwrap().forget();
    cond.acquire().unwrap().forget();
    held.set().unwrap();
    die_now();
}

#[test]
fn a_killed_holder_releases_its_lock() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    let held = manager.event().unwrap();
    let child = started(Process::new(hold_lock_and_die, (lock.clone(), held.clone())));
    held.wait().unwrap();
    let guard = lock.acquire_timeout(LONG).unwrap();
    assert!(guard.is_some(), "the dead holder's lock was not released");
    assert_eq!(child.join().unwrap(), -9);
}

#[test]
fn a_killed_holder_releases_every_level_of_its_rlock() {
    let manager = Manager::start().unwrap();
    let lock = manager.rlock().unwrap();
    let held = manager.event().unwrap();
    let child = started(Process::new(hold_rlock_and_die, (lock.clone(), held.clone())));
    held.wait().unwrap();
    let guard = lock.acquire_timeout(LONG).unwrap();
    assert!(guard.is_some(), "the dead holder's rlock was not released");
    assert_eq!(child.join().unwrap(), -9);
}

#[test]
fn a_killed_holder_releases_its_condition() {
    let manager = Manager::start().unwrap();
    let cond = manager.condition().unwrap();
    let held = manager.event().unwrap();
    let child = started(Process::new(hold_condition_and_die, (cond.clone(), held.clone())));
    held.wait().unwrap();
    let guard = cond.acquire_timeout(LONG).unwrap();
    assert!(guard.is_some(), "the dead holder's condition lock was not released");
    assert_eq!(cond.notify_all().unwrap(), 0);
    assert_eq!(child.join().unwrap(), -9);
}

fn release_semaphore(sem: SemaphoreProxy) -> Result<(), Error> {
    sem.release()
}

#[test]
fn semaphores_count_and_bounded_ones_refuse_over_release() {
    let manager = Manager::start().unwrap();
    let bounded = manager.bounded_semaphore(1).unwrap();
    assert_remote(bounded.release(), "ValueError");
    let permit = bounded.acquire().unwrap();
    assert_eq!(bounded.get_value().unwrap(), 0);
    assert!(bounded.try_acquire().unwrap().is_none());
    drop(permit);
    assert_eq!(bounded.get_value().unwrap(), 1);
    bounded.acquire().unwrap().forget();
    bounded.release().unwrap();
    assert_remote(bounded.release(), "ValueError");

    let sem = manager.semaphore(0).unwrap();
    let start = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(30)).unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(30));
    let child = started(Process::new(release_semaphore, (sem.clone(),)));
    let permit = sem.acquire_timeout(LONG).unwrap();
    assert!(permit.is_some(), "the child's release did not arrive");
    joined_ok(&child);
    drop(permit);
    sem.release().unwrap();
    assert_eq!(sem.get_value().unwrap(), 2, "an unbounded semaphore goes above its start");
}

fn wait_for_go(cond: ConditionProxy, state: ValueProxy<u32>) -> Result<(), Error> {
    let _guard = cond.acquire()?;
    state.set(1)?;
    cond.notify_all()?;
    assert!(cond.wait_for(|| state.get().unwrap() == 2, None)?);
    state.set(3)
}

#[test]
fn condition_notify_wakes_a_waiter_in_another_process() {
    let manager = Manager::start().unwrap();
    let cond = manager.condition().unwrap();
    let state = manager.value(0u32).unwrap();
    let guard = cond.acquire().unwrap();
    let child = started(Process::new(wait_for_go, (cond.clone(), state.clone())));
    // The child takes the lock while this process waits, and gives it back only by waiting.
    assert!(cond.wait_for(|| state.get().unwrap() == 1, Some(LONG)).unwrap());
    state.set(2).unwrap();
    assert_eq!(cond.notify(1).unwrap(), 1, "the child waits");
    drop(guard);
    joined_ok(&child);
    assert_eq!(state.get().unwrap(), 3);
}

#[test]
fn condition_errors_timeouts_and_depth() {
    let manager = Manager::start().unwrap();
    let cond = manager.condition().unwrap();
    assert_remote(cond.wait_timeout(Duration::from_millis(1)), "RuntimeError");
    assert_remote(cond.notify(1), "RuntimeError");
    assert_remote(cond.release(), "RuntimeError");

    let outer = cond.acquire().unwrap();
    let inner = cond.acquire().unwrap();
    let start = Instant::now();
    assert!(!cond.wait_timeout(Duration::from_millis(50)).unwrap(), "nobody notifies");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(!cond.wait_for(|| false, Some(Duration::from_millis(20))).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| assert!(cond.try_acquire().unwrap().is_none(), "held again after the wait"));
    });
    // Both levels came back.
    inner.release().unwrap();
    outer.release().unwrap();
    assert_remote(cond.release(), "RuntimeError");
}

fn set_event(event: EventProxy) -> Result<(), Error> {
    event.set()
}

#[test]
fn event_set_in_a_child_wakes_the_parent() {
    let manager = Manager::start().unwrap();
    let event = manager.event().unwrap();
    assert!(!event.is_set().unwrap());
    let start = Instant::now();
    assert!(!event.wait_timeout(Duration::from_millis(20)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(20));
    let child = started(Process::new(set_event, (event.clone(),)));
    assert!(event.wait_timeout(LONG).unwrap());
    assert!(event.is_set().unwrap());
    joined_ok(&child);
    event.clear().unwrap();
    assert!(!event.is_set().unwrap());
    assert!(!event.wait_timeout(Duration::ZERO).unwrap());
}

fn wait_at_barrier(barrier: BarrierProxy, indices: QueueProxy<usize>) -> Result<(), Error> {
    indices.put(barrier.wait()?)
}

#[test]
fn barrier_of_three_parties_across_processes() {
    let manager = Manager::start().unwrap();
    let barrier = manager.barrier(3).unwrap();
    let indices = manager.queue::<usize>().unwrap();
    assert_eq!(barrier.parties().unwrap(), 3);
    for _cycle in 0..2 {
        let children: Vec<Process> = (0..2)
            .map(|_| started(Process::new(wait_at_barrier, (barrier.clone(), indices.clone()))))
            .collect();
        let mut seen = vec![barrier.wait().unwrap()];
        seen.extend((0..2).map(|_| indices.get_timeout(LONG).unwrap()));
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        children.iter().for_each(joined_ok);
        assert_eq!(barrier.n_waiting().unwrap(), 0);
        assert!(!barrier.broken().unwrap());
    }
}

#[test]
fn barrier_breaks_on_timeout_and_abort_and_is_reset() {
    let manager = Manager::start().unwrap();
    assert_remote(manager.barrier(0), "ValueError");
    let barrier = manager.barrier(2).unwrap();
    let start = Instant::now();
    assert!(matches!(barrier.wait_timeout(Duration::from_millis(50)), Err(Error::BrokenBarrier)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(barrier.broken().unwrap());
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
    barrier.reset().unwrap();
    assert!(!barrier.broken().unwrap());

    for abort in [true, false] {
        std::thread::scope(|s| {
            let waiter = s.spawn(|| barrier.wait());
            assert!(eventually(LONG, || barrier.n_waiting().unwrap() == 1));
            if abort {
                barrier.abort().unwrap();
            } else {
                barrier.reset().unwrap();
            }
            assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
        });
        assert_eq!(barrier.broken().unwrap(), abort);
        barrier.reset().unwrap();
    }
}

fn wait_at_barrier_forever(barrier: BarrierProxy) -> Result<(), Error> {
    barrier.wait().map(drop)
}

#[test]
fn a_party_killed_at_the_barrier_breaks_it() {
    let manager = Manager::start().unwrap();
    let barrier = manager.barrier(2).unwrap();
    let child = started(Process::new(wait_at_barrier_forever, (barrier.clone(),)));
    assert!(eventually(LONG, || barrier.n_waiting().unwrap() == 1));
    child.kill().unwrap();
    assert_eq!(child.join().unwrap(), -9);
    assert!(eventually(LONG, || barrier.broken().unwrap()), "the dead party left it whole");
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
}

/// How many times the barrier action ran, in the manager's process.
static TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The barrier's action: counts the trip.
fn count_trip() {
    TRIPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Reads `TRIPS` where it lives: in the manager.
struct TripCounter;

impl mp_manager::Managed for TripCounter {
    const TYPEID: &'static str = "TripCounter";
    type Init = ();
    fn create((): ()) -> Result<Self, mp_manager::RemoteError> {
        Ok(TripCounter)
    }
}

const TRIPS_SO_FAR: mp_manager::Method<TripCounter, (), u64> =
    mp_manager::Method::new("trips", |_, ()| Ok(TRIPS.load(std::sync::atomic::Ordering::SeqCst)));

fn register_trips(r: &mut mp_manager::Registry) {
    r.register::<TripCounter>().expose(TRIPS_SO_FAR);
}

#[test]
fn a_barrier_action_runs_in_the_manager_once_per_cycle() {
    let manager = Manager::builder().register(register_trips).start().unwrap();
    let counter = manager.make::<TripCounter>(()).unwrap();
    let barrier = manager.barrier_with_action(3, count_trip, None).unwrap();
    let indices = manager.queue::<usize>().unwrap();
    for cycle in 1..=2u64 {
        let children: Vec<Process> = (0..2)
            .map(|_| started(Process::new(wait_at_barrier, (barrier.clone(), indices.clone()))))
            .collect();
        let mine = barrier.wait().unwrap();
        let mut seen = vec![mine, indices.get().unwrap(), indices.get().unwrap()];
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
        children.iter().for_each(joined_ok);
        assert_eq!(counter.call(&TRIPS_SO_FAR, ()).unwrap(), cycle);
    }
}

/// A barrier action that panics.
fn panicking_action() {
    panic!("the action failed");
}

/// Waits at `barrier` and reports whether it was broken.
fn wait_expecting_broken(barrier: BarrierProxy, out: QueueProxy<bool>) -> Result<(), Error> {
    out.put(matches!(barrier.wait(), Err(Error::BrokenBarrier)))
}

#[test]
fn a_panicking_action_breaks_the_barrier_and_a_default_timeout_applies() {
    let manager = Manager::start().unwrap();
    let barrier = manager.barrier_with_action(2, panicking_action, None).unwrap();
    let out = manager.queue::<bool>().unwrap();
    let child = started(Process::new(wait_expecting_broken, (barrier.clone(), out.clone())));
    // Whoever arrives last runs the action: the parent or the child.
    match barrier.wait() {
        Err(Error::Remote(e)) => {
            assert_eq!(e.kind, "Panic");
            assert!(out.get().unwrap(), "the other party sees a broken barrier");
        }
        Err(Error::BrokenBarrier) => assert!(!out.get().unwrap(), "the child ran the action"),
        other => panic!("{other:?}"),
    }
    joined_ok(&child);
    assert!(barrier.broken().unwrap());
    // A default timeout: one party alone breaks it once the timeout passes.
    let lonely = manager.barrier_with_timeout(2, Duration::from_millis(20)).unwrap();
    assert!(matches!(lonely.wait(), Err(Error::BrokenBarrier)));
    assert!(lonely.broken().unwrap());
}

#[test]
fn a_remote_client_cannot_make_a_barrier_with_an_action() {
    let manager = Manager::builder().address("127.0.0.1:0").authkey(b"k").start().unwrap();
    let remote = Manager::connect(manager.address().unwrap(), Some(b"k")).unwrap();
    assert_remote(remote.barrier_with_action(2, count_trip, None), "Refused");
    assert_eq!(remote.barrier(2).unwrap().parties().unwrap(), 2);
}

/// Waits on `cond` (made with a lock) until `flag` is set, then reports.
fn wait_for_flag(
    cond: ConditionProxy,
    flag: ValueProxy<bool>,
    out: QueueProxy<String>,
) -> Result<(), Error> {
    let _held = cond.acquire()?;
    out.put("waiting".to_string())?;
    while !flag.get()? {
        cond.wait()?;
    }
    out.put("woken".to_string())
}

#[test]
fn a_condition_made_with_a_lock_shares_it_across_processes() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    let cond = manager.condition_with_lock(&lock).unwrap();
    let flag = manager.value(false).unwrap();
    let out = manager.queue::<String>().unwrap();
    let child = started(Process::new(wait_for_flag, (cond.clone(), flag.clone(), out.clone())));
    assert_eq!(out.get_timeout(LONG).unwrap(), "waiting");
    // The child waits, so the lock is free: taking the lock itself (not the condition) lets
    // this process set the flag and notify.
    let held = lock.acquire_timeout(LONG).unwrap().expect("the waiter released the lock");
    flag.set(true).unwrap();
    assert_eq!(cond.notify_all().unwrap(), 1);
    drop(held);
    assert_eq!(out.get_timeout(LONG).unwrap(), "woken");
    joined_ok(&child);
    // Without the lock, notify is an error, as in Python.
    assert_remote(cond.notify(1), "RuntimeError");
    // A lock of another manager is refused.
    let other = Manager::start().unwrap();
    let foreign = other.lock().unwrap();
    assert_remote(manager.condition_with_lock(&foreign), "TypeError");
    // An RLock works too, at depth.
    let rlock = manager.rlock().unwrap();
    let rcond = manager.condition_with_rlock(&rlock).unwrap();
    let a = rlock.acquire().unwrap();
    let b = rcond.acquire().unwrap();
    assert!(!rcond.wait_timeout(Duration::from_millis(5)).unwrap());
    drop(b);
    drop(a);
    assert!(rlock.try_acquire().unwrap().is_some());
}
