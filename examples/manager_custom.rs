//! A type of the program's own in a manager (Python's `BaseManager.register`): four processes
//! add to one `Counter` the manager holds, through typed proxies. A method returns a new
//! managed object (Python's `method_to_typeid`) of a type clients may not create themselves
//! (`create_method=False`).

use mp::manager::{Managed, Manager, Method, Proxy, ProxyMethod, Registry, RemoteError};

const WORKERS: usize = 4;

/// The manager's counter: its value, and how much each worker added.
struct Counter {
    value: i64,
    by_worker: Vec<i64>,
}

impl Managed for Counter {
    const TYPEID: &'static str = "Counter";
    type Init = i64;
    fn create(start: i64) -> Result<Self, RemoteError> {
        Ok(Counter { value: start, by_worker: vec![0; WORKERS] })
    }
}

/// Adds one on behalf of a worker; returns the new value.
const INCREMENT: Method<Counter, usize, i64> = Method::new("increment", |c, worker| {
    let slot = c
        .by_worker
        .get_mut(worker)
        .ok_or_else(|| RemoteError::new("IndexError", format!("no worker {worker}")))?;
    *slot += 1;
    c.value += 1;
    Ok(c.value)
});

const VALUE: Method<Counter, (), i64> = Method::new("value", |c, ()| Ok(c.value));

/// Never exposed: calling it is refused.
const RESET: Method<Counter, (), ()> = Method::new("reset", |c, ()| {
    c.value = 0;
    Ok(())
});

/// A snapshot of the tallies, as a new object of the manager.
const TALLY: ProxyMethod<Counter, (), Tally> =
    ProxyMethod::new("tally", |c, ()| Ok(Tally(c.by_worker.clone())));

/// How much each worker added, at one moment.
struct Tally(Vec<i64>);

impl Managed for Tally {
    const TYPEID: &'static str = "Tally";
    type Init = Vec<i64>;
    fn create(items: Vec<i64>) -> Result<Self, RemoteError> {
        Ok(Tally(items))
    }
}

const ITEMS: Method<Tally, (), Vec<i64>> = Method::new("items", |t, ()| Ok(t.0.clone()));

/// Runs in the manager's process, under every start method.
fn register(registry: &mut Registry) {
    registry.register::<Counter>().expose(INCREMENT).expose(VALUE).expose(TALLY);
    registry.register::<Tally>().expose(ITEMS).create_method(false);
}

fn worker(counter: Proxy<Counter>, id: usize) -> Result<(), mp::manager::Error> {
    for _ in 0..25 {
        counter.call(&INCREMENT, id)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _guard = mp::init()?;
    let manager = Manager::builder().register(register).start()?;
    let counter = manager.make::<Counter>(0)?;

    let mut processes: Vec<mp::Process> =
        (0..WORKERS).map(|id| mp::Process::new(worker, (counter.clone(), id))).collect();
    for process in &mut processes {
        process.start()?;
    }
    for process in &processes {
        process.join()?;
    }

    println!("Counter value: {}", counter.call(&VALUE, ())?);
    let tally = counter.call(&TALLY, ())?;
    println!("Increments by worker: {:?}", tally.call(&ITEMS, ())?);
    if let Err(e) = counter.call(&RESET, ()) {
        println!("reset: {e}");
    }
    if let Err(e) = manager.make::<Tally>(vec![]) {
        println!("a Tally made directly: {e}");
    }
    Ok(())
}
