//! MPI for `mp` pools: [`init`] and [`Mpi`], which makes the engines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mp_pool::Pool;

use crate::engine::MpiEngine;
use crate::error::{Error, Result};
use crate::{sys, tag, worker};

/// MPI, initialized for `mp` pools: made by [`init`], finalized when dropped (by the thread
/// that made it, after every pool made from it is gone).
#[derive(Debug)]
pub struct Mpi {
    /// A private copy of the world communicator, when there are other ranks.
    world: Option<sys::Comm>,
    /// Started by a launcher (`mpirun`, `srun`), not as a singleton.
    launched: bool,
    world_size: usize,
    world_busy: Arc<AtomicBool>,
    /// Held by every engine: MPI is finalized only when none is left.
    live: Arc<()>,
    owner: std::thread::ThreadId,
}

/// Initializes MPI (`MPI_Init_thread` with `MPI_THREAD_MULTIPLE`):
///
/// - on a rank other than 0 of a world started by `mpirun -n N`, it serves rank 0's pools and
///   exits when rank 0 drops its [`Mpi`] (it never returns): whatever `main` does before it,
///   every rank does, so call it early;
/// - elsewhere (rank 0, a singleton, `mpirun -n 1`), it returns the [`Mpi`] pools are made
///   from.
///
/// The workers a pool spawns never get here: an entry hook serves them before `main`.
pub fn init() -> Result<Mpi> {
    if sys::initialized() || sys::finalized() {
        return Err(Error::AlreadyInitialized);
    }
    // Read before MPI is initialized (a singleton's library may set such variables itself).
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    let provided = sys::init_thread_multiple()?;
    if provided < sys::thread_multiple() {
        let _ = sys::finalize();
        return Err(Error::ThreadLevel { provided });
    }
    sys::errors_return(sys::world())?;
    if let Some(parent) = sys::parent()? {
        // Spawned by a pool (the entry hook serves those before `main`; this is for a worker
        // started some other way).
        serve_parent(parent);
    }
    let (size, rank) = sys::size_rank(sys::world())?;
    let world = if size > 1 {
        let comm = sys::dup(sys::world())?;
        sys::errors_return(comm)?;
        Some(comm)
    } else {
        None
    };
    if let (Some(comm), true) = (world, rank != 0) {
        serve_and_exit(comm, true);
    }
    Ok(Mpi {
        world,
        launched,
        world_size: size,
        world_busy: Arc::new(AtomicBool::new(false)),
        live: Arc::new(()),
        owner: std::thread::current().id(),
    })
}

/// Set when `MPI_Comm_spawn` failed in this process: under `mpirun`, Open MPI 4.1's
/// `MPI_Finalize` then waits for ever, so [`Mpi`]'s drop leaves MPI as it is there (`mpirun`
/// reports an improper exit). A singleton finalizes as usual (skipping it hangs its exit).
static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);

/// A spawned worker: serves the pool behind `parent`, then ends the process.
fn serve_parent(parent: sys::Comm) -> ! {
    if let Err(e) = sys::errors_return(parent) {
        log::error!(target: "mp_mpi", "a spawned worker fails: {e}; the job is aborted");
        sys::abort(1);
    }
    serve_and_exit(parent, false)
}

/// Serves pools on `comm` (a spawned worker's parent intercommunicator, or a copy of the
/// world for a rank other than 0), then lets it go, finalizes MPI and ends the process; a
/// failure aborts the job, so that no rank waits for ever.
fn serve_and_exit(comm: sys::Comm, world: bool) -> ! {
    match worker::serve(comm, world) {
        Ok(()) => {
            let _ = if world { sys::free(comm) } else { sys::disconnect(comm) };
            let _ = sys::finalize();
            std::process::exit(0);
        }
        Err(e) => {
            log::error!(target: "mp_mpi", "an MPI worker fails: {e}; the job is aborted");
            sys::abort(1);
        }
    }
}

/// The argument a pool's spawned workers get (`MPI_Comm_spawn`'s argv): the entry hook serves
/// a process started with it before `main`.
pub(crate) const WORKER_ARG: &str = "--mp-mpi-worker";

/// The entry hook of spawned workers: an `.init_array` constructor that, in a process started
/// with [`WORKER_ARG`], initializes MPI and serves the pool that spawned it before `main`
/// runs, so that nothing of the program's `main` runs in its workers. Any other process goes
/// on to `main`.
extern "C" fn worker_hook(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
    _envp: *const *const std::ffi::c_char,
) {
    // The arguments are read from /proc rather than through `argv`: no pointer is followed.
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else { return };
    let mut args = cmdline.split(|&b| b == 0);
    if args.nth(1) != Some(WORKER_ARG.as_bytes()) {
        return;
    }
    let started = (|| -> Result<sys::Comm> {
        if sys::initialized() {
            return Err(Error::AlreadyInitialized);
        }
        let provided = sys::init_thread_multiple()?;
        if provided < sys::thread_multiple() {
            return Err(Error::ThreadLevel { provided });
        }
        sys::errors_return(sys::world())?;
        sys::parent()?.ok_or(Error::InvalidArgument("no pool spawned this process"))
    })();
    match started {
        Ok(parent) => serve_parent(parent),
        Err(e) => {
            eprintln!("mp-mpi: {WORKER_ARG}: {e}");
            std::process::exit(2);
        }
    }
}

// SAFETY: an `.init_array` entry must be a pointer to an `extern "C"` function taking
// `(argc, argv, envp)`, which `worker_hook` is; the loader calls it once, before `main`, on the
// main thread, after the constructors of the libraries it depends on (MPI's among them).
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static WORKER_HOOK: extern "C" fn(
    std::ffi::c_int,
    *const *const std::ffi::c_char,
    *const *const std::ffi::c_char,
) = worker_hook;

impl Mpi {
    /// The number of ranks in the world (1 for a singleton or `mpirun -n 1`).
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The MPI universe size, if the launcher set one: how many processes the job may have.
    pub fn universe_size(&self) -> Option<usize> {
        sys::universe_size()
    }

    /// Spawns `n` workers (new processes of this executable, `MPI_Comm_spawn`), for
    /// [`PoolBuilder::engine`](mp_pool::PoolBuilder::engine).
    pub fn spawn(&self, n: usize) -> Result<MpiEngine> {
        self.spawn_with(n, &[])
    }

    /// [`spawn`](Mpi::spawn) with `MPI_Info` keys for `MPI_Comm_spawn` (Open MPI: `host`,
    /// `hostfile`, `map_by`, `wdir`, ...).
    pub fn spawn_with(&self, n: usize, info: &[(&str, &str)]) -> Result<MpiEngine> {
        if n == 0 {
            return Err(Error::InvalidArgument("a pool needs at least one worker"));
        }
        let program = std::env::current_exe()
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
            .ok_or(Error::InvalidArgument("this executable's path is not valid UTF-8"))?;
        let mut info: Vec<(String, String)> =
            info.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        // A pool may have more workers than the host has cores, as a local pool may (Open
        // MPI refuses to oversubscribe its slots unless told; other libraries ignore the key).
        if !info.iter().any(|(k, _)| k == "map_by") {
            info.push(("map_by".into(), "slot:OVERSUBSCRIBE".into()));
        }
        // The hook must be in the executable the workers run (this one): reading it here makes
        // the linker keep it.
        std::hint::black_box(&WORKER_HOOK);
        let comm = sys::spawn(&program, &[WORKER_ARG.to_owned()], n, &info)
            .inspect_err(|_| SPAWN_FAILED.store(true, Ordering::Relaxed))?;
        let ranks = sys::remote_size(comm)?;
        MpiEngine::spawned(comm, ranks, self.live.clone())
    }

    /// The other ranks of the world as workers (ranks 1 to N-1 of `mpirun -n N`), for
    /// [`PoolBuilder::engine`](mp_pool::PoolBuilder::engine): one pool at a time.
    pub fn world(&self) -> Result<MpiEngine> {
        let comm = self.world.ok_or(Error::NoWorld)?;
        if self.world_busy.swap(true, Ordering::AcqRel) {
            return Err(Error::WorldBusy);
        }
        let engine =
            MpiEngine::world(comm, self.world_size, self.world_busy.clone(), self.live.clone());
        if engine.is_err() {
            self.world_busy.store(false, Ordering::Release);
        }
        engine
    }

    /// A pool of `n` spawned workers.
    pub fn spawn_pool(&self, n: usize) -> Result<Pool> {
        Ok(Pool::builder().engine(self.spawn(n)?).build()?)
    }

    /// A pool on the world's other ranks if there are any ([`world`](Mpi::world)), else of
    /// `n` spawned workers (without `n`, the universe size less one, at least one).
    pub fn pool(&self, n: Option<usize>) -> Result<Pool> {
        let engine = if self.world.is_some() {
            self.world()?
        } else {
            let n = n.unwrap_or_else(|| self.universe_size().unwrap_or(2).saturating_sub(1).max(1));
            self.spawn(n)?
        };
        Ok(Pool::builder().engine(engine).build()?)
    }
}

impl Drop for Mpi {
    /// Tells a world's other ranks to exit and finalizes MPI. A panic unwinding through here
    /// aborts the job instead (`MPI_Abort`), so that no rank waits for ever.
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!(target: "mp_mpi", "a panic unwinds through mp_mpi::Mpi: the job is aborted");
            sys::abort(1);
        }
        if Arc::strong_count(&self.live) > 1 {
            log::warn!(
                target: "mp_mpi",
                "mp_mpi::Mpi dropped while pools made from it live: MPI is not finalized"
            );
            return;
        }
        if std::thread::current().id() != self.owner {
            log::warn!(
                target: "mp_mpi",
                "mp_mpi::Mpi dropped by another thread than the one that made it: MPI is not \
                 finalized"
            );
            return;
        }
        if let Some(comm) = self.world.take() {
            for rank in 1..self.world_size {
                let _ = sys::send(comm, rank, tag::QUIT, &[]);
            }
            let _ = sys::free(comm);
        }
        if self.launched && SPAWN_FAILED.load(Ordering::Relaxed) {
            log::warn!(
                target: "mp_mpi",
                "MPI is not finalized: a spawn failed in this process, after which Open MPI's \
                 finalize can wait for ever"
            );
            return;
        }
        if let Err(e) = sys::finalize() {
            log::warn!(target: "mp_mpi", "{e}");
        }
    }
}
