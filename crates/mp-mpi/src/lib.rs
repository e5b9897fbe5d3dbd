//! `mp-mpi`: the pool on MPI, past one machine. The same [`mp_pool::Pool`] (every call,
//! chunking, results, callbacks, progress), with its workers MPI processes: spawned with
//! `MPI_Comm_spawn` like the workers of `mpi4py.futures.MPIPoolExecutor`, or the other ranks of
//! a static world started by `mpirun -n N`.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // A world's other ranks serve here and never return (a spawned worker never runs
//!     // `main`: an entry hook serves it before).
//!     let mpi = mp_mpi::init()?;
//!     let pool = mpi.spawn_pool(2)?;
//!     assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
//!     Ok(())
//! }
//! ```
//!
//! # Two ways to get workers
//! - **Spawned** ([`Mpi::spawn`], [`Mpi::spawn_pool`]): the workers are new processes of this
//!   executable started by `MPI_Comm_spawn`, under `mpirun -n 1` or as a singleton without
//!   `mpirun`, with an argument that an entry hook of this crate (an `.init_array`
//!   constructor, like `mp-process`'s for the spawn start method) sees before `main`: it serves
//!   the pool there, so nothing of the program's `main` runs in its workers. Without a count, [`Mpi::pool`] takes the MPI universe size less one (Open MPI:
//!   `OMPI_UNIVERSE_SIZE`, or the slots of `-host h:N`), at least one.
//! - **A static world** ([`Mpi::world`]): under `mpirun -n N prog`, rank 0 runs `main`, and
//!   the other ranks serve its pools inside [`init`] until rank 0 drops its [`Mpi`]. For
//!   systems without dynamic process management (mpi4py's `-m mpi4py.futures` mode).
//!
//! [`Mpi::pool`] picks the world when there is one and spawns otherwise, so one program runs
//! both ways.
//!
//! # How it works
//! [`init`] calls `MPI_Init_thread` asking for `MPI_THREAD_MULTIPLE` (refused with
//! [`Error::ThreadLevel`] below it): each pool's thread makes its own MPI calls. Every
//! communicator this crate makes returns its errors (`MPI_ERRORS_RETURN`), so a failed spawn
//! or send is an `Err`. A pool's thread is `mp-pool`'s engine ([`mp_pool::engine`]): it hands
//! batches of encoded tasks to the workers in MPI messages and takes their results back;
//! workers run them with [`mp_pool::engine::EngineWorker`], exactly as local workers do. A
//! task is a `fn` item of this executable: a worker gets the key of this process tree with the
//! executable's fingerprint first, and a worker that runs another executable is refused
//! ([`Error::WrongExecutable`]).
//!
//! # Failures
//! - A panic in a task is [`mp_pool::Error::Remote`], as in the local pool.
//! - A panic that unwinds through [`Mpi`] (out of `main`) calls `MPI_Abort`, so that no rank
//!   waits for ever (rsmpi #197); so does a worker whose MPI calls fail.
//! - A worker process that dies: **under `mpirun`, Open MPI 4.1 aborts the whole job** (every
//!   rank is killed and `mpirun` exits with a non-zero status); the local pool's promise that
//!   a death fails one task and the pool goes on cannot hold there. A worker on the pool's
//!   host is watched through its pidfd: its death fails the tasks it held with
//!   [`mp_pool::Error::WorkerDied`] and the pool goes on with the others, unless Open MPI ends
//!   them too (it may abort a spawned job when one of its processes dies, also under a
//!   singleton): once every worker is gone, the pool stops with [`mp_pool::Error::Engine`].
//! - A spawn that fails (not enough slots, say) is an [`Error`], not an abort. Open MPI 4.1
//!   may refuse every later spawn of the process after one, and under `mpirun` its
//!   `MPI_Finalize` can then wait for ever: [`Mpi`] leaves MPI unfinalized there, so the program
//!   ends and `mpirun` reports an improper exit.
//! - `mp` objects (queues, locks, shared memory) do not cross to MPI workers: a task holding
//!   one fails with [`mp_pool::Error::Serialization`].
#![deny(unsafe_code)]

mod engine;
mod error;
mod session;
mod sys;
mod tag;
mod worker;

pub use engine::MpiEngine;
pub use error::{Error, Result};
pub use session::{Mpi, init};
