//! The program's own types in a manager (Python's `BaseManager.register`): registered in the
//! manager's process under the start method `MP_START_METHOD` chooses, used from child
//! processes through typed proxies; `method_to_typeid`, `create_method=False`, unexposed
//! methods, remote errors, the initializer.

use std::sync::atomic::{AtomicU64, Ordering};

use mp_manager::{Error, Managed, Manager, Method, Proxy, ProxyMethod, Registry, RemoteError};
use mp_process::Process;

/// A counter with a history of what was added.
struct Counter {
    value: i64,
    added: Vec<i64>,
}

impl Managed for Counter {
    const TYPEID: &'static str = "Counter";
    type Init = i64;
    fn create(start: i64) -> Result<Self, RemoteError> {
        if start < 0 {
            return Err(RemoteError::new("ValueError", format!("negative start {start}")));
        }
        Ok(Counter { value: start, added: Vec::new() })
    }
}

const ADD: Method<Counter, i64, i64> = Method::new("add", |c, n| {
    if n < 0 {
        return Err(RemoteError::new("ValueError", format!("cannot add {n}")));
    }
    c.value += n;
    c.added.push(n);
    Ok(c.value)
});

const GET: Method<Counter, (), i64> = Method::new("get", |c, ()| Ok(c.value));

/// Defined, never exposed.
const RESET: Method<Counter, (), ()> = Method::new("reset", |c, ()| {
    c.value = 0;
    Ok(())
});

/// Another constant under the name of `GET`, with another result type.
const GET_AS_TEXT: Method<Counter, (), String> =
    Method::new("get", |c, ()| Ok(c.value.to_string()));

const PANIC: Method<Counter, (), ()> = Method::new("panic", |_, ()| panic!("the method panicked"));

/// Python's `method_to_typeid`: a snapshot of the history as a new managed object.
const HISTORY: ProxyMethod<Counter, (), History> =
    ProxyMethod::new("history", |c, ()| Ok(History(c.added.clone())));

/// Reachable only through `HISTORY` (`create_method=False`).
struct History(Vec<i64>);

impl Managed for History {
    const TYPEID: &'static str = "History";
    type Init = Vec<i64>;
    fn create(items: Vec<i64>) -> Result<Self, RemoteError> {
        Ok(History(items))
    }
}

const ITEMS: Method<History, (), Vec<i64>> = Method::new("items", |h, ()| Ok(h.0.clone()));
const SUM: Method<History, (), i64> = Method::new("sum", |h, ()| Ok(h.0.iter().sum()));

/// Set by the initializer, in the manager's process only.
static INITIALIZED: AtomicU64 = AtomicU64::new(0);

fn initialize() {
    INITIALIZED.store(42, Ordering::SeqCst);
}

/// What the initializer left in the manager.
struct Probe;

impl Managed for Probe {
    const TYPEID: &'static str = "Probe";
    type Init = ();
    fn create((): ()) -> Result<Self, RemoteError> {
        Ok(Probe)
    }
}

const INITIALIZED_VALUE: Method<Probe, (), u64> =
    Method::new("initialized", |_, ()| Ok(INITIALIZED.load(Ordering::SeqCst)));

/// Never registered.
struct Stranger;

impl Managed for Stranger {
    const TYPEID: &'static str = "Stranger";
    type Init = ();
    fn create((): ()) -> Result<Self, RemoteError> {
        Ok(Stranger)
    }
}

fn register(registry: &mut Registry) {
    registry.register::<Counter>().expose(ADD).expose(GET).expose(PANIC).expose(HISTORY);
    registry.register::<History>().expose(ITEMS).expose(SUM).create_method(false);
    registry.register::<Probe>().expose(INITIALIZED_VALUE);
}

fn manager() -> Manager {
    Manager::builder().initializer(initialize).register(register).start().expect("start")
}

fn run<F, Args>(target: F, args: Args)
where
    F: mp_process::Target<Args>,
    Args: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(target, args);
    p.start().expect("start");
    assert_eq!(p.join().expect("join"), 0, "the child failed");
}

fn add_ten_times(counter: Proxy<Counter>, n: i64) {
    for _ in 0..10 {
        counter.call(&ADD, n).unwrap();
    }
}

#[test]
fn a_registered_type_is_used_from_child_processes() {
    let manager = manager();
    let counter = manager.make::<Counter>(5).unwrap();
    let mut children: Vec<Process> =
        (1..=4).map(|n| Process::new(add_ten_times, (counter.clone(), n))).collect();
    for p in &mut children {
        p.start().unwrap();
    }
    for p in &children {
        assert_eq!(p.join().unwrap(), 0);
    }
    assert_eq!(counter.call(&GET, ()).unwrap(), 5 + 10 * (1 + 2 + 3 + 4));
}

fn sum_history(history: Proxy<History>, expected: i64) {
    assert_eq!(history.call(&SUM, ()).unwrap(), expected);
}

#[test]
fn a_method_returning_a_managed_type_gives_a_working_proxy() {
    let manager = manager();
    let counter = manager.make::<Counter>(0).unwrap();
    for n in [3, 1, 4] {
        counter.call(&ADD, n).unwrap();
    }
    let (objects, _) = manager.number_of_objects().unwrap();
    let history: Proxy<History> = counter.call(&HISTORY, ()).unwrap();
    assert_eq!(manager.number_of_objects().unwrap().0, objects + 1);
    assert_eq!(history.call(&ITEMS, ()).unwrap(), [3, 1, 4]);
    // The snapshot is an object of its own: later additions do not change it.
    counter.call(&ADD, 10).unwrap();
    assert_eq!(history.call(&SUM, ()).unwrap(), 8);
    // Its reference is given back with the last clone. (A child that used a proxy gives its
    // reference back when the manager sees it end, which no event tells this process: so
    // this is checked before any child uses one.)
    let clone = history.clone();
    drop(history);
    assert_eq!(manager.number_of_objects().unwrap().0, objects + 1);
    drop(clone);
    assert_eq!(manager.number_of_objects().unwrap().0, objects);
    // Another snapshot, used in a child.
    let history = counter.call(&HISTORY, ()).unwrap();
    run(sum_history, (history.clone(), 18));
    assert_eq!(history.call(&ITEMS, ()).unwrap(), [3, 1, 4, 10]);
}

#[test]
fn create_method_false_is_refused_by_make() {
    let manager = manager();
    let err = manager.make::<History>(vec![1, 2]).unwrap_err();
    assert!(err.is_remote("Refused"), "{err}");
}

#[test]
fn an_unexposed_method_is_a_not_exposed_error() {
    let manager = manager();
    let counter = manager.make::<Counter>(7).unwrap();
    let err = counter.call(&RESET, ()).unwrap_err();
    assert!(err.is_remote("NotExposed"), "{err}");
    assert!(err.remote().unwrap().message.contains("reset"), "{err}");
    assert_eq!(counter.call(&GET, ()).unwrap(), 7);
}

#[test]
fn a_method_of_the_same_name_but_other_types_is_refused() {
    let manager = manager();
    let counter = manager.make::<Counter>(7).unwrap();
    let err = counter.call(&GET_AS_TEXT, ()).unwrap_err();
    assert!(err.is_remote("TypeError"), "{err}");
    assert_eq!(counter.call(&GET, ()).unwrap(), 7);
}

#[test]
fn an_unregistered_type_is_refused() {
    let manager = manager();
    let err = manager.make::<Stranger>(()).unwrap_err();
    assert!(err.is_remote("NotExposed"), "{err}");
}

#[test]
fn remote_errors_keep_their_kind_and_message() {
    let manager = manager();
    let counter = manager.make::<Counter>(0).unwrap();
    match counter.call(&ADD, -3) {
        Err(Error::Remote(e)) => {
            assert_eq!(e, RemoteError::new("ValueError", "cannot add -3"));
        }
        other => panic!("{other:?}"),
    }
    // So do the constructor's.
    match manager.make::<Counter>(-1) {
        Err(Error::Remote(e)) => {
            assert_eq!(e, RemoteError::new("ValueError", "negative start -1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_panicking_method_is_a_panic_error_and_the_manager_serves_on() {
    let manager = manager();
    let counter = manager.make::<Counter>(1).unwrap();
    let err = counter.call(&PANIC, ()).unwrap_err();
    assert!(err.is_remote("Panic"), "{err}");
    assert!(err.remote().unwrap().message.contains("the method panicked"), "{err}");
    assert_eq!(counter.call(&ADD, 1).unwrap(), 2);
}

#[test]
fn the_initializer_runs_in_the_manager() {
    let manager = manager();
    let probe = manager.make::<Probe>(()).unwrap();
    assert_eq!(probe.call(&INITIALIZED_VALUE, ()).unwrap(), 42);
    assert_eq!(INITIALIZED.load(Ordering::SeqCst), 0, "the initializer ran in the client");
}

fn bad_registration(_: &mut Registry) {
    panic!("cannot register");
}

#[test]
fn a_panicking_registration_fails_the_start() {
    let err = Manager::builder().register(bad_registration).start().unwrap_err();
    assert!(err.is_remote("StartFailed"), "{err}");
}

#[test]
fn a_proxy_of_another_type_is_refused_when_received() {
    let manager = manager();
    let counter = manager.make::<Counter>(0).unwrap();
    let (bytes, fds) = mp_process::fdpass::encode_with_fds(&counter).unwrap();
    let err = mp_process::fdpass::decode_with_fds::<Proxy<History>>(&bytes, fds).unwrap_err();
    assert!(err.to_string().contains("Counter"), "{err}");
}

/// Set by `seed`, in the manager's process only.
static SEEDED: AtomicU64 = AtomicU64::new(0);

fn seed((a, b): (u64, String)) {
    SEEDED.store(a + b.len() as u64, Ordering::SeqCst);
}

const SEEDED_VALUE: Method<Probe, (), u64> =
    Method::new("seeded", |_, ()| Ok(SEEDED.load(Ordering::SeqCst)));

fn register_seed_probe(registry: &mut Registry) {
    registry.register::<Probe>().expose(SEEDED_VALUE);
}

#[test]
fn an_initializer_gets_its_arguments_under_every_start_method() {
    let manager = Manager::builder()
        .initializer_with(seed, (40u64, "ab".to_string()))
        .register(register_seed_probe)
        .start()
        .unwrap();
    let probe = manager.make::<Probe>(()).unwrap();
    assert_eq!(probe.call(&SEEDED_VALUE, ()).unwrap(), 42);
    assert_eq!(SEEDED.load(Ordering::SeqCst), 0, "it ran in the manager, not here");
}
