//! `mp-process`: processes and start methods for `mp`, Python's `multiprocessing` in Rust.
//!
//! ```
//! use mp_process::{Process, current_process};
//!
//! fn hello(greeting: String) {
//!     println!("{greeting} from {}", current_process().name());
//! }
//!
//! fn main() -> Result<(), mp_process::Error> {
//!     let _guard = mp_process::init()?;
//!     let mut p = Process::new(hello, ("Hello".to_string(),));
//!     p.start()?;
//!     assert_eq!(p.join()?, 0);
//!     Ok(())
//! }
//! ```
//!
//! # Processes
//! A [`Process`] runs a target (a `fn` item or a non-capturing closure) with a tuple of serde
//! arguments in a child process, under any of the three start methods. [`Process::fork_closure`]
//! runs a capturing closure, always by `fork`. Exit codes follow Python: 0, the code given to
//! `std::process::exit`, 1 after a panic (whose message and backtrace go to the child's
//! stderr), or minus the number of the signal that killed the child.
//!
//! # Start methods
//! `fork` (the default), `spawn` and `forkserver`, chosen with [`set_start_method`], per
//! [`Context`] ([`get_context`]), per process ([`Process::with_start_method`]), or for a whole
//! run with the `MP_START_METHOD` environment variable. Under `spawn` and `forkserver` the
//! child is a fresh exec of the current executable (`/proc/self/exe`, checked to be the same
//! inode), diverted before `main` by an `.init_array` entry hook, so test binaries and
//! programs work without ceremony. [`init`] is the documented guard: it checks the hook ran
//! and, when dropped, terminates daemonic children and joins the others, as Python does at
//! exit.
//!
//! ```
//! fn square(x: u64) {
//!     assert_eq!(x * x, 49);
//! }
//! # fn main() -> Result<(), mp_process::Error> {
//! let ctx = mp_process::get_context("spawn")?;
//! let mut p = ctx.process(square, (7u64,));
//! p.start()?;
//! assert_eq!(p.join()?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Threads and `fork`
//! A forked child has only the thread that forked; locks other threads held stay locked in
//! it. mp holds its own locks and the stdio locks across the fork, and logs one warning (with
//! the `log` crate) the first time it forks a process that has other threads. Runtimes that
//! own thread pools, such as tokio and rayon, do not work in a forked child: programs that
//! use them should choose the `forkserver` (or `spawn`) start method, whose children start
//! from a fresh, single-threaded exec of the executable.
//!
//! # The wire and file descriptors
//! [`wire`] is the one framing for every byte stream (length-prefixed postcard, with a size
//! limit checked before allocating); [`fdpass`] carries file descriptors beside the bytes
//! with `SCM_RIGHTS`, into spawned and forkserver children and into running processes.
//! [`fdpass::PassFd`] is an argument that carries a descriptor into a child. The crates above
//! make their handles (queues, locks, shared memory) [`fdpass::SharedObject`]s: an object
//! crosses defined once per message (once per receiver on a pool's worker streams), a process
//! keeps one handle per object whatever the number of times it arrives, and everything
//! received is checked before use (descriptor types, seals, kinds, item types).
//!
//! # Which handles are `Send` and `Sync`
//! | type | `Send` | `Sync` | why |
//! | --- | --- | --- | --- |
//! | [`Process`] | yes | yes | its state is a pid, a pidfd opened on first need and a status behind a lock; any thread may join, poll or signal it. Only the process that created it may use it (others get [`Error::WrongProcess`]). |
//! | [`Context`], [`StartMethod`] | yes | yes | plain values. |
//! | [`ProcessInfo`], [`ChildInfo`] | yes | yes | snapshots. |
//! | [`ParentProcess`] | yes | yes | a pid, a name and a shared pidfd. |
//! | [`InitGuard`] | yes | yes | remembers the pid that made it; dropping it elsewhere does nothing. |
//! | [`fdpass::PassFd`] | yes | yes | an owned descriptor. |
//!
//! # Differences from Python's multiprocessing
//! - Targets are `fn` items or non-capturing closures with serde arguments (checked at compile
//!   time), so one program runs unchanged under every start method.
//! - A process that owns children remembers its pid: a handle used in another process (say,
//!   captured by a forked child) returns an error and its `Drop` does nothing there.
//! - `cpu_count` honours the affinity mask and the cgroup CPU quota (Python's
//!   `os.process_cpu_count()` plus the quota).
#![deny(unsafe_code)]

mod authkey;
mod boot;
mod bootstrap;
mod child;
mod context;
mod cpu;
mod current;
mod entry;
mod error;
pub mod fdpass;
mod forkserver;
mod launcher;
pub mod logging;
mod method;
pub mod os;
mod parent;
mod process;
mod reaper;
mod relay;
mod state;
mod target;
pub mod tracker;
pub mod wire;

pub use authkey::{AUTHKEY_LEN, AuthKey, fill_random};
pub use boot::BOOTSTRAP_FAILURE;
pub use context::{Context, get_context, get_start_method, set_start_method};
pub use cpu::cpu_count;
pub use current::{
    ChildInfo, ProcessInfo, active_children, authkey, current_process, parent_process, set_authkey,
};
pub use error::Error;
pub use logging::log_to_stderr;
pub use method::{START_METHOD_ENV, StartMethod, get_all_start_methods};
pub use os::code;
pub use parent::ParentProcess;
pub use process::{CloseError, Forker, Process};
pub use target::{Target, TargetOutput};

/// The result type of `mp-process`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The guard [`init`] returns: when it is dropped (at the end of `main`), daemonic children
/// still running are terminated and every other child is joined, as Python does at exit.
#[derive(Debug)]
#[must_use = "the guard joins the children when it is dropped; bind it: `let _guard = mp::init()?;`"]
pub struct InitGuard {
    pid: rustix::process::Pid,
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        if rustix::process::getpid() == self.pid {
            current::exit_function();
        }
    }
}

/// Checks that this binary can start processes under every start method and returns the
/// guard that joins children at the end of `main`.
///
/// Call it first in `main`: `let _guard = mp::init()?;`. The entry hook that diverts
/// spawned children before `main` works without it; `init` asserts that the hook is linked
/// and ran (else [`Error::EntryHookMissing`]) and that this process is not a child whose
/// bootstrap failed to run (else [`Error::Bootstrapping`]).
pub fn init() -> Result<InitGuard> {
    if bootstrap::marker_present() {
        return Err(Error::Bootstrapping);
    }
    if !entry::hook_ran() {
        return Err(Error::EntryHookMissing);
    }
    Ok(InitGuard { pid: rustix::process::getpid() })
}
