//! `mp-manager`: managers and proxies, Python's `multiprocessing.Manager()`.
//!
//! A [`Manager`] is a process of its own holding objects (lists, dicts, namespaces, values,
//! arrays, queues, locks, events, barriers, and types a program registers) that other
//! processes use through proxies. The seed program of Python's tutorial, in Rust:
//!
//! ```
//! use mp_manager::{ListProxy, Manager};
//!
//! fn update_shared_list(list: ListProxy<u64>, index: u64) {
//!     list.set(index as isize, index * index).unwrap();
//! }
//!
//! let manager = Manager::start()?;
//! let list = manager.list(vec![0u64; 5])?;
//! let mut processes: Vec<_> = (0..5)
//!     .map(|i| mp_process::Process::new(update_shared_list, (list.clone(), i)))
//!     .collect();
//! for p in &mut processes {
//!     p.start()?;
//! }
//! for p in &processes {
//!     assert_eq!(p.join()?, 0);
//! }
//! assert_eq!(format!("Updated shared list: {list}"), "Updated shared list: [0, 1, 4, 9, 16]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Types of the program's own
//! Python's `BaseManager.register`, typed: a type implements [`Managed`], its methods are
//! constants ([`Method`], and [`ProxyMethod`] for a method returning a new managed object,
//! Python's `method_to_typeid`), a function given to [`ManagerBuilder::register`] registers
//! them in the manager's process ([`Registry::register`]), and [`Manager::make`] returns a
//! [`Proxy`] whose [`call`](Proxy::call) is checked against the method's types.
//! [`SharedMemoryManager`] is Python's manager of named shared-memory segments.
//!
//! # Remote managers
//! A manager given an address ([`ManagerBuilder::address`], with a key:
//! [`ManagerBuilder::authkey`]) also serves clients of other process trees and other hosts,
//! which reach it with [`Manager::connect`] (Python's `BaseManager(address, authkey)` and
//! `connect()`); [`ManagerBuilder::get_server`] serves one in the calling process
//! ([`Server::serve_forever`]). Connections are `mp_queue` `Listener`/`Client` connections:
//! CPython's mutual HMAC handshake first, so nothing is reachable without the key. A client on
//! the manager's host, of its user, then moves each authenticated connection to shared memory
//! (the same-host shortcut; [`ConnectBuilder::same_host_shortcut`] turns it off). Programs
//! share objects by name ([`Manager::publish`], [`Manager::lookup`]); a remote client runs no
//! code in the manager (no `update_with`, `sort` or barrier actions) and may not shut it
//! down; its references and locks are given back when it disconnects.
//!
//! ```
//! use mp_manager::{DictProxy, Manager};
//!
//! let server = Manager::builder().address("127.0.0.1:0").authkey(b"secret").start()?;
//! server.publish("scores", &server.dict::<String, u32>()?)?;
//! // Elsewhere (another program, another host), with the address and the key:
//! let client = Manager::connect(server.address().unwrap(), Some(b"secret"))?;
//! let scores: DictProxy<String, u32> = client.lookup("scores")?;
//! scores.insert("ada".into(), 3)?;
//! let mine: DictProxy<String, u32> = server.lookup("scores")?;
//! assert_eq!(mine.get(&"ada".into())?, Some(3));
//! # Ok::<(), mp_manager::Error>(())
//! ```
//!
//! # How it works
//! The manager's process is started under any start method and watches the pidfd of the process
//! that started it: it never outlives it. Each client thread talks to it on a connection of its
//! own (an `mp_queue` pipe, shared-memory lanes with bounded spinning; in a process that does
//! not spin, a plain socket pair, `mp_queue::socket_pipe`), opened through the manager's
//! private doorway, with an id on every request. The manager counts references per client
//! process and gives back those of a process that ends, however it ends. A call that blocks in
//! the manager (a queue's `get`) blocks only its own thread.
//!
//! Values are stored as their postcard encodings and compared by them: equal for integers,
//! strings, tuples, structs and enums of them, but floats compare by their bits. Typed
//! operations the manager cannot do on bytes (`sort`, `update_with`) run functions of the
//! program in the manager, named as checked entries (accepted only from the manager's own
//! process tree).
#![deny(unsafe_code)]

mod apply;
mod custom;
mod error;
mod link;
mod managed;
mod manager;
mod pair;
mod proto;
mod proxies;
mod proxy;
mod server;
mod shm_manager;
mod shortcut;

pub use error::{Error, RemoteError, Result};
pub use managed::{Exposed, Managed, Method, Proxy, ProxyMethod, RemoteMethod};
pub use manager::{ConnectBuilder, Manager, ManagerBuilder, SHUTDOWN_TIMEOUT, Server};
pub use proxies::containers::{ArrayProxy, DictProxy, ListProxy, NamespaceProxy, ValueProxy};
pub use proxies::sync::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, EventProxy, JoinableQueueProxy, LockGuard,
    LockProxy, QueueProxy, RLockProxy, SemaphoreGuard, SemaphoreProxy,
};
pub use server::custom::Registration;
pub use server::registry::Registry;
pub use shm_manager::SharedMemoryManager;
