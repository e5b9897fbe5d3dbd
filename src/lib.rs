//! `mp`: Python's `multiprocessing`, rebuilt in Rust.
//!
//! This crate re-exports the `mp-*` crates, so that `use mp::{Process, ...}` is all a program
//! needs, and adds one error type, [`Error`], that every crate's error converts into. Each
//! part can also be used alone.
//!
//! ```
//! fn task(name: String) {
//!     println!("Task {name} running in process {}", std::process::id());
//! }
//!
//! fn main() -> mp::Result<()> {
//!     let _guard = mp::init()?;
//!     let mut a = mp::Process::new(task, ("A".to_string(),));
//!     let mut b = mp::Process::new(task, ("B".to_string(),));
//!     a.start()?;
//!     b.start()?;
//!     a.join()?;
//!     b.join()?;
//!     Ok(())
//! }
//! ```
//!
//! | crate | holds |
//! | --- | --- |
//! | [`process`] (`mp-process`) | `Process`, start methods and contexts, the wire and fd passing |
//! | [`shm`] (`mp-shm`) | `SharedMemory`, `RawValue`, `RawArray`, `ShareableList` |
//! | [`sync`] (`mp-sync`) | `Lock`, `RLock`, `Semaphore`, `Event`, `Condition`, `Barrier`, `Value`, `Array` |
//! | [`queue`] (`mp-queue`) | `Queue`, `JoinableQueue`, `SimpleQueue`, `pipe`, `Connection`, `wait`, `Listener`, `Client` (also in [`connection`], Python's `multiprocessing.connection`) |
//! | [`pool`] (`mp-pool`) | `Pool` (`map`, `imap`, `apply_async`, ...), `AsyncResult`, workers replaced when they die, `Progress` of bulk calls, `Pool::insights` |
//! | [`manager`] (`mp-manager`) | `Manager` and its proxies (`ListProxy`, `DictProxy`, `NamespaceProxy`, ...), objects served by a process of their own |
//!
//! # Names at the root
//! Every public type of every crate is here under its own name (`mp::SharedMemory`,
//! `mp::Lock`, `mp::Queue`, `mp::Pool`, ...), with the functions Python's module has at its
//! top (`mp::current_process`, `mp::pipe`, `mp::wait`, ...). The crates' `Error` types are
//! here under the crate's name: [`ProcessError`], [`ShmError`], [`SyncError`],
//! [`QueueError`], [`PoolError`], [`ManagerError`]; `mp::Error` is the umbrella [`Error`]. Everything else
//! (constants, the wire, fd passing, the tracker, futexes) is in the crate's module
//! (`mp::process::wire`, `mp::queue::DEFAULT_CAPACITY`, ...).
//!
//! # Seeing what happens
//! [`Progress`] reports the progress of a pool's bulk calls (a terminal bar with the
//! default feature `progress`, a callback or a stream of [`ProgressUpdate`]s),
//! [`Pool::insights`] tells what each worker did, and [`log_to_stderr`] (Python's) prints mp's
//! log records, `[LEVEL/ProcessName] message`, in this process and its children. mp logs
//! through the `log` facade, with targets that begin with the crate's name (`mp_process`,
//! `mp_shm`, `mp_sync`, `mp_queue`, `mp_pool`, `mp_manager`, `mp_mpi`).
//!
//! # Features
//! `progress` (on by default) brings `Progress::bar` and its dependency `indicatif`; a
//! library depending on mp can leave it out with `default-features = false`.
//!
//! `mpi` (off by default) brings `mp::mpi` (crate `mp-mpi`): the same [`Pool`] with its workers
//! MPI processes, spawned or the ranks of `mpirun -n N`, on one host or many. It needs an MPI
//! library and libclang to build (see the README).
//!
//! # One error
//! Each crate returns its own error. [`Error`] has a variant per crate (and one for
//! `std::io::Error`), with `From` conversions, so `?` mixes them in a function returning
//! [`mp::Result`](Result):
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> mp::Result<()> {
//!     let pool = mp::Pool::new(2)?; // mp_pool::Error
//!     let results = mp::Queue::new()?; // mp_queue::Error
//!     for y in pool.map(square, 1..=3)? {
//!         results.put(y)?; // mp_queue::PutError<u64>, its value dropped
//!     }
//!     let total = mp::Value::new(0u64)?; // mp_sync::Error
//!     for _ in 0..3 {
//!         *total.lock()? += results.get()?; // mp_sync::LockError, mp_queue::Error
//!     }
//!     assert_eq!(total.get()?, 14);
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]

mod error;

/// Python's `multiprocessing.connection`: [`Listener`](connection::Listener) and
/// [`Client`](connection::Client) for processes that are not parent and child (other
/// programs, other hosts), beside [`pipe`](connection::pipe), [`wait`](connection::wait) and
/// the [`Connection`](connection::Connection) they all give.
///
/// Framing and the handshake are CPython's (3.12+: HMAC-SHA256 challenges both ways; Python
/// 3.11's HMAC-MD5 when asked for), so either end may be a Python program using
/// `send_bytes`/`recv_bytes`; typed `send`/`recv` are postcard, for Rust peers. The default
/// key of a process tree is [`authkey`](connection::authkey) (Python's
/// `current_process().authkey`).
///
/// ```
/// use mp::connection::{Client, Listener};
///
/// fn client(address: String) -> mp::Result<()> {
///     let conn = Client::builder(address.as_str())?.current_authkey().connect_now()?;
///     conn.send("ping")?;
///     assert_eq!(conn.recv::<String>()?, "pong");
///     Ok(())
/// }
///
/// fn main() -> mp::Result<()> {
///     let _guard = mp::init()?;
///     let listener = Listener::builder().current_authkey().bind()?; // an AF_UNIX path
///     let mut p = mp::Process::new(client, (listener.address().to_string(),));
///     p.start()?;
///     let conn = listener.accept()?; // the child proves it holds the tree's key
///     assert_eq!(conn.recv::<String>()?, "ping");
///     conn.send("pong")?;
///     assert_eq!(p.join()?, 0);
///     Ok(())
/// }
/// ```
pub mod connection {
    pub use mp_process::{AUTHKEY_LEN, AuthKey, authkey, set_authkey};
    pub use mp_queue::{
        Address, Client, Connection, DEFAULT_BACKLOG, DEFAULT_HANDSHAKE_TIMEOUT, IntoAddress,
        Listener, ListenerBuilder, Pending, pipe, socket_pipe, wait, wait_timeout,
    };
}

pub use error::{Error, Result};

#[doc(inline)]
pub use mp_manager as manager;
/// The pool on MPI, past one machine (feature `mpi`, off by default: it needs an MPI library
/// and libclang to build).
#[cfg(feature = "mpi")]
#[doc(inline)]
pub use mp_mpi as mpi;
#[doc(inline)]
pub use mp_pool as pool;
#[doc(inline)]
pub use mp_process as process;
#[doc(inline)]
pub use mp_queue as queue;
#[doc(inline)]
pub use mp_shm as shm;
#[doc(inline)]
pub use mp_sync as sync;

pub use mp_manager::{
    ArrayProxy, DictProxy, Error as ManagerError, ListProxy, Manager, ManagerBuilder,
    NamespaceProxy, RemoteError, ValueProxy,
};
pub use mp_pool::{
    AsyncResult, Error as PoolError, Imap, Insights, Pool, PoolBuilder, Progress, ProgressEvents,
    ProgressUpdate, Restart, RestartReason, SerializationError, SlowTask, Task, WorkerInsights,
};
pub use mp_process::logging::LevelFilter;
pub use mp_process::wire::WireError;
pub use mp_process::{
    AuthKey, ChildInfo, CloseError, Context, Error as ProcessError, InitGuard, ParentProcess,
    Process, ProcessInfo, StartMethod, Target, TargetOutput, active_children, authkey, cpu_count,
    current_process, get_all_start_methods, get_context, get_start_method, init, log_to_stderr,
    parent_process, set_authkey, set_start_method,
};
pub use mp_queue::{
    Address, Bytes, Client, Connection, Error as QueueError, JoinableQueue, Listener, PutError,
    Queue, QueueBuilder, SimpleQueue, pipe, wait, wait_timeout,
};
pub use mp_shm::{Error as ShmError, Item, RawArray, RawValue, ShareableList, SharedMemory};
pub use mp_sync::{
    AnyLock, Array, ArrayGuard, Barrier, BoundedSemaphore, Condition, ConditionGuard,
    Error as SyncError, Event, Lock, LockError, LockGuard, LockResult, RLock, Semaphore,
    SemaphoreGuard, TryLockResult, Value, ValueGuard,
};

/// The README's programs, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
