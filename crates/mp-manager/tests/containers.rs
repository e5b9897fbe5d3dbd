//! The manager's containers, used as Python's are: from the owner and from child processes
//! under the run's start method.

use mp_manager::{DictProxy, Error, ListProxy, Manager, NamespaceProxy, ValueProxy};
use mp_process::Process;

/// Starts a child running `f(args)` and checks that it exits 0.
fn run_child<F, A>(f: F, args: A)
where
    F: mp_process::Target<A>,
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(f, args);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0, "the child failed");
}

#[test]
fn a_list_does_what_pythons_does() {
    let m = Manager::start().unwrap();
    let l = m.list(vec![3i64, 1, 2]).unwrap();
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.get(-1).unwrap(), 2);
    l.append(5).unwrap();
    l.extend([1, 9]).unwrap();
    l.insert(0, 7).unwrap();
    l.insert(-100, 8).unwrap(); // clamped, as Python's insert
    assert_eq!(l.to_vec().unwrap(), vec![8, 7, 3, 1, 2, 5, 1, 9]);
    assert_eq!(l.count(&1).unwrap(), 2);
    assert_eq!(l.index(&1).unwrap(), 3);
    assert!(l.contains(&9).unwrap());
    assert!(!l.contains(&4).unwrap());
    l.remove(&1).unwrap();
    assert_eq!(l.pop().unwrap(), 9);
    assert_eq!(l.pop_at(0).unwrap(), 8);
    l.delete(1).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![7, 2, 5, 1]);
    l.sort().unwrap();
    assert_eq!(l.to_string(), "[1, 2, 5, 7]");
    l.sort_descending().unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![7, 5, 2, 1]);
    l.reverse().unwrap();
    assert_eq!(l.update_with(0, |x: i64| x * 100).unwrap(), 100);
    assert_eq!(l.copy().unwrap(), vec![100, 2, 5, 7]);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
}

#[test]
fn list_errors_keep_pythons_kinds() {
    let m = Manager::start().unwrap();
    let l = m.list(vec![1u8]).unwrap();
    assert!(l.get(5).unwrap_err().is_remote("IndexError"));
    assert!(l.set(-2, 0).unwrap_err().is_remote("IndexError"));
    assert!(l.remove(&7).unwrap_err().is_remote("ValueError"));
    assert!(l.index(&7).unwrap_err().is_remote("ValueError"));
    l.clear().unwrap();
    let e = l.pop().unwrap_err();
    assert_eq!(e.remote().unwrap().message, "pop from empty list");
    // The list still serves after errors.
    l.append(4).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![4]);
}

#[test]
fn a_long_list_is_read_in_batches_whole_and_in_order() {
    let m = Manager::start().unwrap();
    // 3 MiB of items: more than one batch.
    let items: Vec<Vec<u8>> = (0..48u8).map(|i| vec![i; 64 * 1024]).collect();
    let l = m.list(items.clone()).unwrap();
    assert_eq!(l.to_vec().unwrap(), items);
}

#[test]
fn a_dict_does_what_pythons_does() {
    let m = Manager::start().unwrap();
    let d: DictProxy<String, i32> = m.dict().unwrap();
    assert!(d.is_empty().unwrap());
    d.insert("b".into(), 2).unwrap();
    d.insert("a".into(), 1).unwrap();
    d.insert("b".into(), 3).unwrap();
    assert_eq!(d.get(&"b".into()).unwrap(), Some(3));
    assert_eq!(d.get(&"z".into()).unwrap(), None);
    assert!(d.get_item(&"z".into()).unwrap_err().is_remote("KeyError"));
    assert!(d.contains_key(&"a".into()).unwrap());
    assert_eq!(d.len().unwrap(), 2);
    // Insertion order, as Python's dict.
    assert_eq!(d.keys().unwrap(), vec!["b".to_string(), "a".to_string()]);
    assert_eq!(d.values().unwrap(), vec![3, 1]);
    assert_eq!(d.to_string(), r#"{"b": 3, "a": 1}"#);
    assert_eq!(d.setdefault("c".into(), 7).unwrap(), 7);
    assert_eq!(d.setdefault("c".into(), 8).unwrap(), 7);
    d.update([("d".to_string(), 4), ("a".to_string(), 10)]).unwrap();
    assert_eq!(d.pop(&"a".into()).unwrap(), Some(10));
    assert_eq!(d.pop(&"a".into()).unwrap(), None);
    assert!(d.delete(&"a".into()).unwrap_err().is_remote("KeyError"));
    assert_eq!(d.popitem().unwrap(), ("d".to_string(), 4));
    assert_eq!(d.update_with(&"n".into(), |v: Option<i32>| v.unwrap_or(0) + 1).unwrap(), 1);
    assert_eq!(d.update_with(&"n".into(), |v: Option<i32>| v.unwrap_or(0) + 1).unwrap(), 2);
    assert_eq!(d.copy().unwrap().len(), 3);
    d.clear().unwrap();
    assert!(d.popitem().unwrap_err().is_remote("KeyError"));
}

/// Adds one to `key` `n` times, atomically.
fn count_into(d: DictProxy<u32, u64>, key: u32, n: u32) {
    for _ in 0..n {
        d.update_with(&key, |v: Option<u64>| v.unwrap_or(0) + 1).unwrap();
    }
}

#[test]
fn update_with_from_many_processes_loses_nothing() {
    let m = Manager::start().unwrap();
    let d: DictProxy<u32, u64> = m.dict().unwrap();
    let mut children: Vec<Process> =
        (0..4).map(|_| Process::new(count_into, (d.clone(), 7, 300))).collect();
    for c in &mut children {
        c.start().unwrap();
    }
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
    assert_eq!(d.get(&7).unwrap(), Some(1200));
}

/// Sets attributes of a namespace.
fn fill_namespace(ns: NamespaceProxy) {
    ns.set("x", 1i32).unwrap();
    ns.set("name", "child".to_string()).unwrap();
}

#[test]
fn a_namespace_is_shared_and_prints_as_pythons() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    run_child(fill_namespace, (ns.clone(),));
    assert_eq!(ns.get::<i32>("x").unwrap(), 1);
    assert_eq!(ns.get::<String>("name").unwrap(), "child");
    ns.set("_hidden", 2u8).unwrap();
    assert_eq!(ns.get::<u8>("_hidden").unwrap(), 2);
    assert_eq!(ns.to_string(), r#"Namespace(name="child", x=1)"#);
    ns.delete("x").unwrap();
    assert!(!ns.contains("x").unwrap());
    assert!(ns.get::<i32>("x").unwrap_err().is_remote("AttributeError"));
    assert!(ns.delete("x").unwrap_err().is_remote("AttributeError"));
}

#[test]
fn values_and_arrays() {
    let m = Manager::start().unwrap();
    let v: ValueProxy<f64> = m.value(1.5).unwrap();
    assert_eq!(v.get().unwrap(), 1.5);
    v.set(2.5).unwrap();
    assert_eq!(v.update_with(|x: f64| x * 2.0).unwrap(), 5.0);
    assert_eq!(v.to_string(), "Value(5.0)");
    let a = m.array([1u32, 2, 3]).unwrap();
    a.set(-1, 30).unwrap();
    assert_eq!(a.get(0).unwrap(), 1);
    assert_eq!(a.len().unwrap(), 3);
    assert_eq!(a.update_with(1, |x: u32| x + 1).unwrap(), 3);
    assert_eq!(a.to_string(), "array([1, 3, 30])");
    assert!(a.get(3).unwrap_err().is_remote("IndexError"));
}

/// Appends to the list found at `outer[0]`.
fn append_inner(outer: ListProxy<ListProxy<u8>>) {
    outer.get(0).unwrap().append(1).unwrap();
}

#[test]
fn a_proxy_stored_in_a_container_is_the_same_object() {
    let m = Manager::start().unwrap();
    let inner = m.list(Vec::<u8>::new()).unwrap();
    let outer = m.list(vec![inner.clone()]).unwrap();
    run_child(append_inner, (outer.clone(),));
    assert_eq!(inner.to_vec().unwrap(), vec![1]);
    // The outer list keeps the inner one alive after every proxy of it is gone.
    let (before, _) = m.number_of_objects().unwrap();
    drop(inner);
    assert_eq!(m.number_of_objects().unwrap().0, before);
    assert_eq!(outer.get(0).unwrap().to_vec().unwrap(), vec![1]);
    // Removing it from the outer list releases it.
    outer.clear().unwrap();
    assert_eq!(m.number_of_objects().unwrap().0, before - 1);
}

#[test]
fn a_dict_key_holding_a_proxy_is_refused_and_the_dict_goes_on() {
    let m = Manager::start().unwrap();
    let key = m.list(vec![1u8]).unwrap();
    let d: DictProxy<ListProxy<u8>, i32> = m.dict().unwrap();
    let (objects, _) = m.number_of_objects().unwrap();
    let err = d.insert(key.clone(), 1).unwrap_err();
    assert!(err.is_remote("TypeError"), "{err}");
    assert!(err.to_string().contains("a dict key cannot hold a proxy"), "{err}");
    // Nothing was stored and no reference was kept for the refused call.
    assert_eq!(d.len().unwrap(), 0);
    assert_eq!(m.number_of_objects().unwrap().0, objects);
    assert!(d.update([(key, 2)]).unwrap_err().is_remote("TypeError"));
    assert_eq!(d.len().unwrap(), 0);
}

#[test]
fn proxies_are_released_when_dropped() {
    let m = Manager::start().unwrap();
    let (start, mine) = m.number_of_objects().unwrap();
    assert_eq!((start, mine), (0, 0));
    let d: DictProxy<u8, u8> = m.dict().unwrap();
    let copy = d.clone();
    assert_eq!(m.number_of_objects().unwrap(), (1, 1));
    drop(d);
    assert_eq!(m.number_of_objects().unwrap(), (1, 1));
    drop(copy);
    assert_eq!(m.number_of_objects().unwrap(), (0, 0));
}

/// Reads the list a queue of pipes carried here.
fn read_list_from_pipe(rx: mp_queue::Connection, out: mp_queue::Connection) {
    let list: ListProxy<u32> = rx.recv().unwrap();
    out.send(&list.to_vec().unwrap()).unwrap();
}

#[test]
fn a_proxy_crosses_inside_a_message() {
    let m = Manager::start().unwrap();
    let list = m.list(vec![1u32, 2]).unwrap();
    let (rx, tx) = mp_queue::pipe(false).unwrap();
    let (out_rx, out_tx) = mp_queue::pipe(false).unwrap();
    let mut p = Process::new(read_list_from_pipe, (rx, out_tx));
    p.start().unwrap();
    tx.send(&list).unwrap();
    assert_eq!(out_rx.recv::<Vec<u32>>().unwrap(), vec![1, 2]);
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn a_proxy_of_the_wrong_type_is_refused_when_it_arrives() {
    let m = Manager::start().unwrap();
    let list = m.list(vec![1u32]).unwrap();
    let (bytes, fds) = mp_process::fdpass::encode_with_fds(&list).unwrap();
    let wrong = mp_process::fdpass::decode_with_fds::<DictProxy<u32, u32>>(&bytes, fds);
    let e = wrong.unwrap_err().to_string();
    assert!(e.contains("where one of a dict was expected"), "{e}");
}

#[test]
fn a_shut_down_manager_says_so() {
    let mut m = Manager::start().unwrap();
    let l = m.list(vec![1u8]).unwrap();
    m.shutdown().unwrap();
    assert!(m.is_shut_down());
    assert!(matches!(m.list(vec![1u8]), Err(Error::ShutDown)));
    assert!(matches!(l.len(), Err(Error::ManagerGone)));
    m.shutdown().unwrap();
}

#[test]
fn scope_shuts_down_at_its_end() {
    let pid = Manager::scope(|m| {
        let l = m.list(vec![1u8]).unwrap();
        assert_eq!(l.len().unwrap(), 1);
        m.pid()
    })
    .unwrap();
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    );
    // Gone, or a zombie about to be reaped: it no longer runs.
    if let Ok(fd) = pidfd {
        assert!(mp_testkit::exits_within(fd, std::time::Duration::from_secs(10)));
    }
}
