//! `mp-pool`: the process pool, Python's `multiprocessing.Pool`, with workers that are
//! replaced when they die.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), mp_pool::Error> {
//!     let pool = mp_pool::Pool::new(4)?;
//!     assert_eq!(pool.map(square, [1, 2, 3, 4])?, [1, 4, 9, 16]);
//!     Ok(())
//! }
//! ```
//!
//! # Tasks
//! A task is a `fn` item or a closure that captures nothing (checked when the program is
//! compiled), with serde arguments and a serde result, so one program runs under every start
//! method (`fork`, `spawn`, `forkserver`; `MP_START_METHOD` picks the default). Only the task's
//! code crosses into a worker, as a checked entry (`mp_process::code::Entry`: an offset into
//! the executable's text and a tag signing it); the arguments and results are postcard bytes, with descriptors (pipes, locks, shared memory)
//! passed beside them.
//!
//! # Calls
//! [`Pool::apply`], [`Pool::apply_async`], [`Pool::map`], [`Pool::map_async`],
//! [`Pool::starmap`], [`Pool::starmap_async`] (with `_chunked` variants taking a chunksize;
//! the default follows CPython: about four chunks per worker), and the lazy [`Pool::imap`] and
//! [`Pool::imap_unordered`].
//!
//! ```
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//! # fn main() -> Result<(), mp_pool::Error> {
//! let pool = mp_pool::Pool::new(2)?;
//! assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
//! let firsts: Vec<i64> = pool.imap(|x: i64| x * 10, 0..)?.take(3).collect::<Result<_, _>>()?;
//! assert_eq!(firsts, [0, 10, 20]);
//! pool.close()?;
//! pool.join()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Async
//! [`AsyncResult`] is a [`std::future::Future`] and [`Imap`] a [`futures_core::Stream`]: the
//! pool's collector thread wakes the awaiting task, so no runtime is needed.
//!
//! # Robustness
//! See [`Pool`]: panics become [`Error::Remote`], a dead worker's task gets
//! [`Error::WorkerDied`] while every result it finished is kept and nothing runs twice, the
//! worker is replaced, tasks can have a timeout, and Ctrl-C ends a running call with
//! [`Error::Interrupted`].
//!
//! # Seeing a pool work
//! [`Progress`] reports the progress of bulk calls (`map`, `starmap`, `imap`,
//! `imap_unordered` and their async and chunked forms) to a terminal bar, a callback or a
//! stream of [`ProgressUpdate`]s: for every bulk call of a pool with
//! [`PoolBuilder::progress`], for one with [`AsyncResult::with_progress`] or
//! [`Imap::with_progress`]. [`Pool::insights`] tells what each worker did and where the time
//! went ([`Insights`], a table when printed). The crate logs with the target `mp_pool`.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//! # fn main() -> Result<(), mp_pool::Error> {
//! let (progress, events) = mp_pool::Progress::events();
//! let pool = mp_pool::Pool::new(2)?;
//! pool.map_async(square, 0..100)?.with_progress(progress).get()?;
//! assert!(events.last().is_some_and(|u| u.done == 100 && u.finished));
//! assert_eq!(pool.insights().tasks(), 100);
//! # Ok(())
//! # }
//! ```
//!
//! # Engines
//! A pool can run its tasks somewhere other than its own worker processes: the ranks of an MPI
//! job, with `mp-mpi`. [`PoolBuilder::engine`] takes the [`engine::Engine`]; the pool's API
//! is the same, so moving a program from one host to a cluster changes how the pool is built
//! and nothing else.
//!
//! # Features
//! `progress` (off by default here, on by default in the umbrella crate `mp`) adds
//! [`Progress::bar`], drawn with `indicatif`.
//!
//! `failpoints` (off by default; the crate's own tests turn it on) adds
//! `Builder::failpoint` and `FailStep`: every worker of a pool can be made to SIGKILL
//! itself at a chosen step of its protocol, for tests of what a worker's death loses. Without
//! it, none of that code exists.
#![forbid(unsafe_code)]

/// Counts a time this worker reached the step (`failpoint!(Journaled)`) and dies there if the
/// pool armed it; expands to nothing without the `failpoints` feature.
macro_rules! failpoint {
    ($step:ident) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($crate::FailStep::$step);
    };
}

mod collector;
pub mod engine;
mod error;
#[cfg(feature = "failpoints")]
mod failpoint;
mod insights;
mod jobs;
mod meter;
mod pool;
mod progress;
mod proto;
mod result;
mod state;
mod task;
mod worker;

pub use error::{Error, Result, SerializationError};
#[cfg(feature = "failpoints")]
pub use failpoint::FailStep;
pub use insights::{Insights, Restart, RestartReason, SlowTask, WorkerInsights};
pub use pool::{Pool, PoolBuilder, default_chunksize};
pub use progress::{DEFAULT_INTERVAL, Progress, ProgressEvents, ProgressUpdate};
pub use result::{AsyncResult, Imap};
pub use task::Task;
