//! `mp`: Python's `multiprocessing`, rebuilt in Rust.
//!
//! This crate only re-exports the `mp-*` crates, so that `use mp::{Process, ...}` is all a
//! program needs. Each part can also be used alone.
//!
//! ```
//! fn task(name: String) {
//!     println!("Task {name} running in process {}", std::process::id());
//! }
//!
//! fn main() -> Result<(), mp::Error> {
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
//! | [`queue`] (`mp-queue`) | `Queue`, `JoinableQueue`, `SimpleQueue`, `pipe`, `Connection`, `wait` |
//! | [`pool`] (`mp-pool`) | `Pool` (`map`, `imap`, `apply_async`, ...), `AsyncResult`, workers replaced when they die |
//! | [`manager`] (`mp-manager`) | managers and proxies (to come) |
#![forbid(unsafe_code)]

#[doc(inline)]
pub use mp_manager as manager;
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

pub use mp_pool::{AsyncResult, Error as PoolError, Imap, Pool};
pub use mp_process::{
    ChildInfo, CloseError, Context, Error, InitGuard, ParentProcess, Process, ProcessInfo,
    StartMethod, active_children, cpu_count, current_process, get_all_start_methods, get_context,
    get_start_method, init, parent_process, set_start_method,
};
pub use mp_queue::{
    Bytes, Connection, Error as QueueError, JoinableQueue, PutError, Queue, QueueBuilder,
    SimpleQueue, pipe, wait,
};
pub use mp_sync::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Value,
};
