//! Remote managers: a manager served on an address with a key, reached with
//! `Manager::connect` from separate process trees (this test binary run again as a plain
//! process, not an `mp` child), a server killed, a client killed, 16 clients at once, wrong
//! keys, what a remote client may not do, and a type defined by "another program"; each
//! over the same-host shortcut (shared memory) and over the network, and the shortcut not
//! taken from another network namespace or by another user.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mp_manager::{
    DictProxy, Error, LockProxy, Managed, Manager, Method, Proxy, QueueProxy, Registry, RemoteError,
};
use mp_process::Process;
use mp_testkit::{eventually, pass, pipe, wait_for_byte};

const KEY: &[u8] = b"remote manager test key";

/// A manager listening on loopback with the test key.
fn served() -> Manager {
    Manager::builder().address("127.0.0.1:0").authkey(KEY).start().expect("start")
}

/// The address of a served manager, as text.
fn address_of(m: &Manager) -> String {
    m.address().expect("an address").to_string()
}

/// A remote client of the manager at `address`, over the same-host shortcut or the network.
fn connect(address: &str, shortcut: bool) -> Manager {
    let m = Manager::connect_builder(address)
        .authkey(KEY)
        .same_host_shortcut(shortcut)
        .connect()
        .expect("connect");
    assert_eq!(m.is_same_host(), shortcut, "the shortcut is taken exactly when asked");
    m
}

/// Both ways a remote client talks to a manager of its host.
const BOTH: [bool; 2] = [true, false];

/// A separate process tree: this test binary run again (a plain process) to run the ignored
/// helper test `name`, with `MP_REMOTE_ADDRESS` set. Killed when dropped.
struct Tree(Child);

impl Tree {
    fn run(name: &str, address: &str) -> Tree {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("MP_REMOTE_ADDRESS", address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("run the test binary again");
        Tree(child)
    }

    /// Waits for the tree's process to end; whether it succeeded.
    fn succeeded(mut self) -> bool {
        self.0.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address a helper was given.
fn helper_address() -> String {
    std::env::var("MP_REMOTE_ADDRESS").expect("run by another test")
}

#[test]
#[ignore = "a helper: run as a separate process tree by a_separate_process_tree_shares_published_objects"]
fn helper_producer() {
    let m = Manager::connect(helper_address().as_str(), Some(KEY)).unwrap();
    let jobs: QueueProxy<String> = m.lookup("jobs").unwrap();
    let counts: DictProxy<String, u64> = m.lookup("counts").unwrap();
    for i in 0..10 {
        jobs.put(format!("job {i}")).unwrap();
    }
    counts.insert("produced".to_string(), 10).unwrap();
    // A dict made by this client and published for the owner.
    let reply = m.dict::<u8, String>().unwrap();
    reply.insert(1, "from the other tree".to_string()).unwrap();
    m.publish("reply", &reply).unwrap();
}

#[test]
fn a_separate_process_tree_shares_published_objects() {
    let m = served();
    let jobs = m.queue::<String>().unwrap();
    let counts = m.dict::<String, u64>().unwrap();
    m.publish("jobs", &jobs).unwrap();
    m.publish("counts", &counts).unwrap();
    assert!(Tree::run("helper_producer", &address_of(&m)).succeeded());
    let got: Vec<String> = (0..10).map(|_| jobs.get().unwrap()).collect();
    assert_eq!(got, (0..10).map(|i| format!("job {i}")).collect::<Vec<_>>());
    assert_eq!(counts.get(&"produced".to_string()).unwrap(), Some(10));
    let reply: DictProxy<u8, String> = m.lookup("reply").unwrap();
    assert_eq!(reply.get(&1).unwrap().as_deref(), Some("from the other tree"));
    // The other tree ended: its references are given back; what is published stays.
    drop(reply);
    let (objects, _) = m.number_of_objects().unwrap();
    assert_eq!(objects, 3, "jobs, counts and the published reply");
}

#[test]
fn a_wrong_key_reaches_nothing() {
    let m = served();
    let before = m.number_of_objects().unwrap();
    match Manager::connect(address_of(&m).as_str(), Some(b"wrong")) {
        Err(Error::Connection(mp_queue::Error::Authentication(why))) => {
            assert_eq!(why, "digest sent was rejected");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.number_of_objects().unwrap(), before);
    // No key given: this process's key, which is not the manager's.
    assert!(matches!(
        Manager::connect(address_of(&m).as_str(), None),
        Err(Error::Connection(mp_queue::Error::Authentication(_)))
    ));
    // Nothing listens: the manager is gone.
    let port = m.address().map(ToString::to_string).unwrap();
    drop(m);
    assert!(matches!(Manager::connect(port.as_str(), Some(KEY)), Err(Error::ManagerGone)));
}

#[test]
fn a_remote_client_runs_no_code_in_the_manager_and_cannot_stop_it() {
    for shortcut in BOTH {
        remote_client_rights(shortcut);
    }
}

/// What a remote client may not do, over the shortcut or the network.
fn remote_client_rights(shortcut: bool) {
    let m = served();
    let remote = connect(&address_of(&m), shortcut);
    let d = remote.dict::<u8, u64>().unwrap();
    d.insert(1, 1).unwrap();
    let refused = d.update_with(&1, |v| v.unwrap_or(0) + 1).unwrap_err();
    assert!(refused.is_remote("Refused"), "{refused:?}");
    assert_eq!(d.get(&1).unwrap(), Some(1));
    // Closing the connected handle closes it only.
    let mut remote = remote;
    remote.shutdown().unwrap();
    assert!(matches!(remote.dict::<u8, u8>(), Err(Error::ShutDown)));
    assert!(matches!(remote.join_timeout(Duration::ZERO), Err(Error::NotOwner)));
    assert_eq!(d.len().unwrap(), 1, "the manager still serves");
    // The owner's own handle runs entries as before.
    let local = m.dict::<u8, u64>().unwrap();
    assert_eq!(local.update_with(&1, |v| v.unwrap_or(0) + 1).unwrap(), 1);
}

/// Serves forever on an address (Python's `get_server().serve_forever()`), saying where.
fn serve_forever(ready: mp_process::fdpass::PassFd) {
    let server = Manager::builder().address("127.0.0.1:0").authkey(KEY).get_server().unwrap();
    mp_testkit::lines::say(&ready, &server.address().to_string());
    server.serve_forever().unwrap();
}

#[test]
fn a_killed_server_fails_the_clients_calls_at_once() {
    let _guard = mp_process::init().unwrap();
    for shortcut in BOTH {
        killed_server(shortcut);
    }
}

/// A server killed under a client over the shortcut or the network.
fn killed_server(shortcut: bool) {
    let (r, w) = pipe();
    let mut server = Process::new(serve_forever, (pass(&w),));
    server.start().unwrap();
    drop(w);
    let address = mp_testkit::lines::Lines::new(r).next();
    let m = connect(&address, shortcut);
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 2).unwrap();
    let q = m.queue::<u8>().unwrap();
    std::thread::scope(|s| {
        // A call blocked in the manager when it dies (or, if the kill comes first, one that
        // finds it gone): either way the manager is gone.
        let blocked = s.spawn(|| q.get());
        server.kill().unwrap();
        server.join().unwrap();
        assert!(matches!(blocked.join().unwrap(), Err(Error::ManagerGone)));
    });
    assert!(matches!(d.get(&1), Err(Error::ManagerGone)));
    assert!(matches!(m.dict::<u8, u8>(), Err(Error::ManagerGone)));
}

/// A remote client in a child: holds a lock and five objects, says so, waits to be killed.
fn hold_and_wait(
    address: String,
    shortcut: bool,
    said: mp_process::fdpass::PassFd,
    go: mp_process::fdpass::PassFd,
) {
    let m = connect(&address, shortcut);
    let lock: LockProxy = m.lookup("lock").unwrap();
    let _guard = lock.acquire().unwrap();
    let held: Vec<DictProxy<u8, u8>> = (0..5).map(|_| m.dict().unwrap()).collect();
    mp_testkit::bytes::say(&said);
    wait_for_byte(&go);
    drop(held);
}

#[test]
fn a_killed_remote_client_gives_back_its_references_and_locks() {
    let _guard = mp_process::init().unwrap();
    for shortcut in BOTH {
        killed_client(shortcut);
    }
}

/// A client over the shortcut or the network killed while it holds a lock and objects.
fn killed_client(shortcut: bool) {
    let m = served();
    let lock = m.lock().unwrap();
    m.publish("lock", &lock).unwrap();
    let (said_r, said_w) = pipe();
    let (go_r, go_w) = pipe();
    let mut child =
        Process::new(hold_and_wait, (address_of(&m), shortcut, pass(&said_w), pass(&go_r)));
    child.start().unwrap();
    mp_testkit::bytes::hear(&said_r, 1);
    assert_eq!(m.number_of_objects().unwrap().0, 6);
    assert!(lock.try_acquire().unwrap().is_none(), "the child holds it");
    child.kill().unwrap();
    child.join().unwrap();
    drop(go_w);
    // The lock is free again, and the five dicts are gone.
    assert!(lock.acquire_timeout(Duration::from_secs(10)).unwrap().is_some());
    assert!(eventually(Duration::from_secs(10), || m.number_of_objects().unwrap().0 == 1));
}

#[test]
fn sixteen_remote_clients_at_once() {
    let m = served();
    let counts = m.dict::<u32, u32>().unwrap();
    m.publish("counts", &counts).unwrap();
    let address = address_of(&m);
    std::thread::scope(|s| {
        for i in 0..16u32 {
            let address = address.clone();
            s.spawn(move || {
                // Half of them over the shortcut, half over the network.
                let remote = connect(&address, i % 2 == 0);
                let counts: DictProxy<u32, u32> = remote.lookup("counts").unwrap();
                for n in 0..20 {
                    counts.insert(i, n).unwrap();
                }
            });
        }
    });
    assert_eq!(counts.len().unwrap(), 16);
    assert!(counts.values().unwrap().iter().all(|&n| n == 19));
}

/// The server's type: a counter, as the serving program defines it.
mod server_program {
    use super::*;

    pub struct Counter(pub i64);

    impl Managed for Counter {
        const TYPEID: &'static str = "Counter";
        type Init = i64;
        fn create(start: i64) -> Result<Self, RemoteError> {
            Ok(Counter(start))
        }
    }

    pub const ADD: Method<Counter, i64, i64> = Method::new("add", |c, n| {
        c.0 += n;
        Ok(c.0)
    });

    pub fn register(registry: &mut Registry) {
        registry.register::<Counter>().expose(ADD);
    }
}

/// The same type as a client program defines it (another module path: another program).
mod client_program {
    use super::*;

    pub struct Counter;

    impl Managed for Counter {
        const TYPEID: &'static str = "Counter";
        type Init = i64;
        fn create(_: i64) -> Result<Self, RemoteError> {
            Err(RemoteError::new("Unreachable", "the client never makes one itself"))
        }
    }

    pub const ADD: Method<Counter, i64, i64> =
        Method::new("add", |_, _| Err(RemoteError::new("Unreachable", "runs in the server")));

    /// Same name, other argument type: refused.
    pub const ADD_TEXT: Method<Counter, String, i64> =
        Method::new("add", |_, _| Err(RemoteError::new("Unreachable", "runs in the server")));
}

#[test]
fn registered_types_work_remotely_by_name_from_another_program() {
    let m = Manager::builder()
        .address("127.0.0.1:0")
        .authkey(KEY)
        .register(server_program::register)
        .start()
        .unwrap();
    let remote = Manager::connect(address_of(&m).as_str(), Some(KEY)).unwrap();
    let counter: Proxy<client_program::Counter> = remote.make(10).unwrap();
    assert_eq!(counter.call(&client_program::ADD, 5).unwrap(), 15);
    let refused = counter.call(&client_program::ADD_TEXT, "5".to_string()).unwrap_err();
    assert!(refused.is_remote("TypeError"), "{refused:?}");
    // The owner sees the same object through its own type.
    m.publish("counter", &counter).unwrap();
    let mine: Proxy<server_program::Counter> = m.lookup("counter").unwrap();
    assert_eq!(mine.call(&server_program::ADD, 1).unwrap(), 16);
}

#[test]
fn stalled_unauthenticated_peers_hold_up_nobody_for_long() {
    let m = served();
    let Some(mp_queue::Address::Tcp(addr)) = m.address().cloned() else { panic!("tcp") };
    // Many peers that connect and say nothing: at most 64 are in their handshake, for 5 s at
    // most; the others are closed at once. The manager's own tree is not held up at all.
    let stalled: Vec<std::net::TcpStream> =
        (0..80).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    // Once they are gone, a remote client gets in.
    drop(stalled);
    let remote = eventually(Duration::from_secs(30), || {
        Manager::connect(address_of(&m).as_str(), Some(KEY)).is_ok()
    });
    assert!(remote, "a remote client gets in once the stalled peers are gone");
}

/// A client in a network namespace of its own (another host, as far as abstract sockets go)
/// reaching the manager through its `AF_UNIX` path: it stays on that socket. Exits 77 when
/// it may not make a namespace.
fn client_in_another_namespace(address: String) {
    // SAFETY: a network namespace only (no `FILES`): no descriptor table is split.
    #[allow(unsafe_code)]
    if unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }.is_err() {
        std::process::exit(77);
    }
    let m = Manager::connect(address.as_str(), Some(KEY)).unwrap();
    assert!(!m.is_same_host(), "the side door is not reachable from another namespace");
    let d: DictProxy<String, u32> = m.lookup("d").unwrap();
    d.insert("from another namespace".into(), 1).unwrap();
}

#[test]
fn a_client_in_another_network_namespace_stays_on_the_network() {
    let _guard = mp_process::init().unwrap();
    let dir = std::env::temp_dir().join(format!("mp-remote-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("manager.sock");
    let m = Manager::builder().address(path.as_path()).authkey(KEY).start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    m.publish("d", &d).unwrap();
    // This process, in the manager's namespace, takes the shortcut through the same path.
    assert!(connect(&address_of(&m), true).is_same_host());
    let mut child = Process::new(client_in_another_namespace, (address_of(&m),));
    child.start().unwrap();
    let code = child.join().unwrap();
    let got = d.get(&"from another namespace".into());
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    if code == 77 {
        eprintln!("SKIPPED: cannot make a network namespace here (not root?)");
        return;
    }
    assert_eq!(code, 0, "the client in another namespace failed");
    assert_eq!(got.unwrap(), Some(1));
}

/// A client of another user (nobody) on the manager's host: the side door refuses it, and it
/// goes on over TCP. Exits 77 when it may not change its user.
fn client_of_another_user(address: String) {
    let nobody = rustix::process::Uid::from_raw(65534);
    if rustix::thread::set_thread_res_uid(nobody, nobody, nobody).is_err() {
        std::process::exit(77);
    }
    let m = Manager::connect(address.as_str(), Some(KEY)).unwrap();
    assert!(!m.is_same_host(), "the side door refuses another user");
    let d: DictProxy<String, u32> = m.lookup("d").unwrap();
    d.insert("from nobody".into(), 2).unwrap();
}

#[test]
fn a_client_of_another_user_stays_on_the_network() {
    let _guard = mp_process::init().unwrap();
    let m = served();
    let d = m.dict::<String, u32>().unwrap();
    m.publish("d", &d).unwrap();
    let mut child = Process::new(client_of_another_user, (address_of(&m),));
    child.start().unwrap();
    let code = child.join().unwrap();
    if code == 77 {
        eprintln!("SKIPPED: cannot change user here (not root?)");
        return;
    }
    assert_eq!(code, 0, "the client of another user failed");
    assert_eq!(d.get(&"from nobody".into()).unwrap(), Some(2));
}

/// A child's use of a proxy its parent got from a remote manager: the child opens connections
/// of its own, the way its parent chose (over the shortcut or the network).
fn append_in_child(l: mp_manager::ListProxy<u32>, n: u32) {
    l.append(n).unwrap();
}

#[test]
fn proxies_of_a_remote_client_work_in_its_children_both_ways() {
    let _guard = mp_process::init().unwrap();
    let m = served();
    for shortcut in BOTH {
        let remote = connect(&address_of(&m), shortcut);
        let l = remote.list::<u32>(vec![]).unwrap();
        let mut children: Vec<Process> =
            (0..3).map(|n| Process::new(append_in_child, (l.clone(), n))).collect();
        for c in &mut children {
            c.start().unwrap();
        }
        for c in &children {
            assert_eq!(c.join().unwrap(), 0);
        }
        let mut got = l.to_vec().unwrap();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2]);
    }
}

#[test]
fn proxies_of_two_remote_managers_cross_in_one_message_and_stay_apart() {
    // Shared objects are known by their first descriptor's inode: two remote links must not
    // be taken for one (each gets an inode of its own).
    let (a, b) = (served(), served());
    let (ra, rb) = (connect(&address_of(&a), true), connect(&address_of(&b), false));
    let (da, db) = (ra.dict::<u8, u8>().unwrap(), rb.dict::<u8, u8>().unwrap());
    let (bytes, fds) = mp_process::fdpass::encode_with_fds(&(da.clone(), db.clone())).unwrap();
    let (ga, gb): (DictProxy<u8, u8>, DictProxy<u8, u8>) =
        mp_process::fdpass::decode_with_fds(&bytes, fds).unwrap();
    ga.insert(1, 10).unwrap();
    gb.insert(2, 20).unwrap();
    assert_eq!(da.items().unwrap(), vec![(1, 10)]);
    assert_eq!(db.items().unwrap(), vec![(2, 20)]);
}
