//! `Pool` and its builder.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mp_process::{Context, StartMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::collector::{Collector, InitTemplate, Spawner, Starts};
use crate::error::{Error, Result};
use crate::insights::{Book, Insights};
use crate::progress::Progress;
use crate::result::{AsyncResult, Imap, build_chunks, decode_one, decode_vec, queue_chunks};
use crate::state::{Job, Phase, Shared, State, Store};
use crate::task::Task;
use crate::worker::{self, entry_for};

/// A job whose input is still being read: if reading it panics, the job is failed and
/// dropped once its queued tasks are done.
struct Unfinished<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        if let Some(j) = g.jobs.get_mut(&self.id) {
            j.abandoned = true;
            if j.failed.is_none() {
                j.failed = Some(Error::Terminated);
            }
            g.to_settle.push(self.id);
        }
        drop(g);
        self.shared.settle();
    }
}

/// Python's default chunksize for `map`: the input split into about four chunks per worker.
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let per = processes.max(1) * 4;
    len.div_ceil(per)
}

/// Configures a [`Pool`]: Python's `Pool(processes, initializer, initargs, maxtasksperchild,
/// context)` plus a per-task timeout.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// # fn main() -> Result<(), mp_pool::Error> {
/// let pool = mp_pool::Pool::builder().processes(2).maxtasksperchild(100).build()?;
/// assert_eq!(pool.map(square, 1..=3)?, [1, 4, 9]);
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<Result<InitTemplate>>,
    maxtasks: Option<usize>,
    method: Option<StartMethod>,
    timeout: Option<Duration>,
    progress: Option<Progress>,
    engine: Option<Box<dyn crate::engine::Engine>>,
    #[cfg(feature = "failpoints")]
    failpoint: Option<(crate::FailStep, u64)>,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.init.is_some())
            .field("maxtasksperchild", &self.maxtasks)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress)
            .field("engine", &self.engine.is_some())
            .finish()
    }
}

impl PoolBuilder {
    /// A builder with Python's defaults: `cpu_count()` workers, no initializer, workers that
    /// live as long as the pool, the default start method, no task timeout.
    pub fn new() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers (zero is an error at [`build`](PoolBuilder::build)).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `initializer(args...)` once in every worker when it starts (Python's
    /// `initializer` and `initargs`). If it panics, the pool stops and every task fails with
    /// [`Error::Initializer`] (CPython would restart workers for ever).
    pub fn initializer<F, Args>(mut self, initializer: F, args: Args) -> Self
    where
        F: Task<Args, Output = ()>,
        Args: Serialize + DeserializeOwned,
    {
        self.init = Some(entry_for::<F, Args>(initializer).and_then(|entry| {
            let (payload, fds) = crate::proto::encode(&args)?;
            Ok(InitTemplate { entry, payload, fds })
        }));
        self
    }

    /// Replaces a worker after it has completed `n` tasks (Python's `maxtasksperchild`; a
    /// chunk of a `map` counts as one task, as in CPython). Zero is an error.
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasks = Some(n);
        self
    }

    /// Starts workers with `ctx`'s start method (Python's `context`).
    pub fn context(mut self, ctx: &Context) -> Self {
        self.method = Some(ctx.start_method());
        self
    }

    /// Starts workers with `method`.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Kills a worker whose task runs longer than `timeout`: that task fails with
    /// [`Error::Timeout`] and the worker is replaced. Zero is an error.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Reports the progress of every bulk call of the pool (`map`, `starmap`, `imap`,
    /// `imap_unordered`, their async and chunked forms; not `apply`) to `progress`: a bar
    /// ([`Progress::bar`], feature `progress`), a callback or a stream. A call can say
    /// otherwise with its own [`AsyncResult::with_progress`] or [`Imap::with_progress`]
    /// ([`Progress::none`] for none).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// # fn main() -> Result<(), mp_pool::Error> {
    /// let (progress, events) = mp_pool::Progress::events();
    /// let pool = mp_pool::Pool::builder().processes(2).progress(progress).build()?;
    /// pool.map(square, 0..50)?;
    /// drop(pool); // the stream ends with the pool's copy of `progress`
    /// let last = events.last().unwrap();
    /// assert_eq!((last.done, last.finished), (50, true));
    /// # Ok(())
    /// # }
    /// ```
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Runs the tasks on `engine`'s workers instead of local worker processes (the ranks of
    /// an MPI job, with `mp-mpi`); the pool has [`Engine::workers`](crate::engine::Engine)
    /// workers, and [`processes`](PoolBuilder::processes) and the start method are ignored.
    /// `maxtasksperchild` and task timeouts are the local pool's: [`build`](PoolBuilder::build)
    /// refuses them with an engine, and an initializer's arguments may not hold `mp` objects.
    /// See [`engine`](crate::engine).
    pub fn engine(mut self, engine: impl crate::engine::Engine) -> Self {
        self.engine = Some(Box::new(engine));
        self
    }

    /// For tests (feature `failpoints`): every worker kills itself (SIGKILL) at `step` of its
    /// protocol the `n`th time it gets there (replacements too).
    #[cfg(feature = "failpoints")]
    pub fn failpoint(mut self, step: crate::FailStep, n: u64) -> Self {
        self.failpoint = Some((step, n));
        self
    }

    /// Starts the workers.
    pub fn build(mut self) -> Result<Pool> {
        if let Some(engine) = self.engine.take() {
            return self.build_on(engine);
        }
        let processes = self.processes.unwrap_or_else(mp_process::cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument("a pool needs at least one process"));
        }
        if self.maxtasks == Some(0) {
            return Err(Error::InvalidArgument("maxtasksperchild must be at least 1"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument("the task timeout must be positive"));
        }
        let init = self.init.transpose()?;
        let method = match self.method {
            Some(m) => m,
            None => mp_process::get_start_method()?,
        };
        let maxtasks = self.maxtasks.map(|m| m as u64);
        // The collector's doorbell comes first: a failure after the first child starts must
        // still be able to stop what started (a spawner dropped early lets go of its zygote).
        let doorbell = mp_process::os::eventfd::doorbell().map_err(|e| Error::io("eventfd", e))?;
        let mut spawner = Spawner::new(
            method,
            init,
            maxtasks,
            self.timeout.is_some(),
            Starts { worker: worker::worker_process },
        )?;
        #[cfg(feature = "failpoints")]
        {
            spawner.failpoint = self.failpoint;
        }
        let mut workers = Vec::with_capacity(processes);
        for slot in 0..processes {
            match spawner.spawn(slot) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    // Kills and reaps the workers started so far, then lets go of the zygote.
                    let shared = Arc::new(new_shared(doorbell, processes, Phase::Stopping, None));
                    Collector::new(shared, spawner, workers, None).run();
                    return Err(e);
                }
            }
        }
        let shared = Arc::new(new_shared(doorbell, processes, Phase::Running, self.progress));
        shared.lock().pids = Vec::new();
        let collector = Collector::new(shared.clone(), spawner, workers, self.timeout);
        collector.publish_pids();
        let thread = std::thread::Builder::new()
            .name("mp-pool-collector".into())
            .spawn(move || collector.run())
            .map_err(|e| Error::io("start the collector thread", e))?;
        Ok(Pool { shared, thread: Mutex::new(Some(thread)), method })
    }
}

impl PoolBuilder {
    /// [`build`](PoolBuilder::build) with an engine.
    fn build_on(self, engine: Box<dyn crate::engine::Engine>) -> Result<Pool> {
        let processes = engine.workers();
        if processes == 0 {
            return Err(Error::InvalidArgument("a pool needs at least one process"));
        }
        if self.maxtasks.is_some() {
            return Err(Error::InvalidArgument("maxtasksperchild is not available with an engine"));
        }
        if self.timeout.is_some() {
            return Err(Error::InvalidArgument("task timeouts are not available with an engine"));
        }
        let init = self.init.transpose()?;
        let doorbell = mp_process::os::eventfd::doorbell().map_err(|e| Error::io("eventfd", e))?;
        let shared = Arc::new(new_shared(doorbell, processes, Phase::Running, self.progress));
        let hub = crate::engine::Hub::new(shared.clone(), init)?;
        let thread = std::thread::Builder::new()
            .name("mp-pool-engine".into())
            .spawn(move || engine.serve(hub))
            .map_err(|e| Error::io("start the engine's thread", e))?;
        Ok(Pool { shared, thread: Mutex::new(Some(thread)), method: StartMethod::Spawn })
    }
}

fn new_shared(
    doorbell: std::os::fd::OwnedFd,
    processes: usize,
    phase: Phase,
    progress: Option<Progress>,
) -> Shared {
    Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            jobs: crate::jobs::JobTable::default(),
            next_job: 0,
            phase,
            failure: None,
            feeders: 0,
            pids: Vec::new(),
            to_settle: Vec::new(),
            waiters: 0,
            changed: false,
            progress_out: Vec::new(),
            progress_due: None,
            book: Book::new(processes),
        }),
        cv: Condvar::new(),
        doorbell,
        creator: rustix::process::getpid(),
        processes,
        sleeping: std::sync::atomic::AtomicBool::new(false),
        progress,
        delivering: Mutex::new(()),
    }
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Tasks are `fn` items or non-capturing closures (checked at compile time) with serde
/// arguments and results, so the same program runs under every start method.
///
/// # Lifetime
/// [`close`](Pool::close) stops new calls and lets the workers finish what was submitted;
/// [`join`](Pool::join) then waits for them. [`terminate`](Pool::terminate) kills the workers
/// at once and fails every outstanding result with [`Error::Terminated`]. **Dropping a pool
/// terminates it**, as leaving Python's `with Pool() as pool:` block does: call `close` and
/// `join` first to let submitted work finish. A pool (or a copy of it inherited by a forked
/// child) used from a process other than the one that made it returns
/// [`Error::WrongProcess`], and its `Drop` does nothing there.
///
/// # Workers
/// Under `fork`, workers are forked from a *zygote* (an `mp_process::Forker`): a
/// single-threaded copy of the process forked when the pool is made, so replacing a worker
/// never forks a large, multithreaded parent (and workers see the memory of that moment, not
/// of later ones). Under `spawn` and `forkserver` they are daemonic children started the
/// method's way. Either way they are the pool's process's daemonic children and die with it,
/// even if it is SIGKILLed. The zygote is an ordinary child of the pool's process (it appears
/// in `active_children`); it exits when the pool is dropped, so make pools after
/// `mp::init()`, whose guard joins children at the end of `main`.
///
/// A collector thread in the pool's process hands tasks to the workers (in chunks, several
/// at a time when tasks are quick), reads their results, and watches each worker's pidfd.
/// Result callbacks ([`AsyncResult::with_callbacks`]) run on that thread: they must return
/// quickly and must not wait for another result of the same pool; a panicking callback is
/// caught and the pool goes on.
///
/// # Queues, locks and shared memory in arguments
/// Arguments may hold `mp` objects (queues, locks, values, shared memory; CPython refuses
/// them). Each object crosses to a worker once: the pool defines it to the worker before the
/// first chunk that needs it, and later tasks only name it, so a queue passed in every one of
/// 100,000 tasks is mapped once per worker and the parent duplicates no descriptor per task.
/// A worker keeps at most 128 objects defined (the least recently used are released, and
/// defined again if needed); an object the parent has dropped is released at the worker's
/// next batch. A descriptor passed as such (`PassFd`) still crosses with every task.
///
/// # Errors and robustness
/// - A task that panics gives [`Error::Remote`] with the panic message and the worker's
///   backtrace; the pool goes on. `map` returns a task error once every task has finished, as
///   CPython does; it is the error of the first failed task by position (CPython keeps the
///   first to arrive), so the outcome does not depend on timing.
/// - A worker that dies mid-task (SIGKILL, abort, OOM) is detected by its pidfd: that task gets
///   [`Error::WorkerDied`] (each worker keeps a count of the tasks it started in shared
///   memory, so the parent knows which one it was); every result it finished is kept, sent or
///   not (it journals each in shared memory as it finishes; only a result holding descriptors
///   is sent at once instead); the rest of its chunk is queued again (once), the worker is
///   replaced, and nothing hangs. No task runs twice because of a death.
/// - An argument or result may encode to at most a little under 56 MiB (a 64 MiB frame less
///   room for others); a larger one fails its task with [`Error::Serialization`] before it
///   takes that memory, and the worker goes on.
/// - With [`PoolBuilder::task_timeout`], an overrunning task's worker is killed and replaced and
///   the task gets [`Error::Timeout`].
/// - A task whose argument or result does not serialise fails alone with
///   [`Error::Serialization`], with the value's own message.
/// - A task whose arguments kill the worker while they are decoded fails with
///   [`Error::WorkerDied`] (the task counts as started before it decodes); the parent never
///   decodes arguments. A worker that dies after reading a batch, before starting any task of
///   it, gives the batch's first task a strike; at the second, the task fails, so no task can
///   kill workers for ever.
/// - Out of descriptors, a pool fails to start with an error naming the cause and stops what
///   it started; a batch whose objects cannot be sent fails its tasks, and the pool goes on.
///
/// # Ctrl-C
/// SIGINT sent to the process group (Ctrl-C in a terminal) reaches the workers, which die of
/// it. The pool treats a worker killed by SIGINT as an interruption: it kills the other
/// workers, every outstanding call (a running `map` included) returns [`Error::Interrupted`]
/// at once, and the pool stops; nothing is left running. (Without a SIGINT handler the pool's
/// own process dies of the same signal, and its workers with it.)
///
/// # Differences from Python's multiprocessing
/// - A worker's death fails its task instead of hanging the pool; a failing initializer stops
///   the pool instead of restarting workers for ever.
/// - `map` and `starmap` take any `IntoIterator`; `imap` pulls its input lazily with a bound
///   on tasks in flight.
/// - Callbacks are registered on the [`AsyncResult`] ([`AsyncResult::with_callbacks`]).
pub struct Pool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    method: StartMethod,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.shared.processes)
            .field("method", &self.method)
            .finish()
    }
}

impl Pool {
    /// A pool of `processes` workers under the default start method (Python's
    /// `Pool(processes)`); zero is an error.
    pub fn new(processes: usize) -> Result<Pool> {
        PoolBuilder::new().processes(processes).build()
    }

    /// A [`PoolBuilder`] for the other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.shared.processes
    }

    /// The start method of the workers.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// The pids of the current workers.
    pub fn pids(&self) -> Vec<u32> {
        self.shared.lock().pids.clone()
    }

    /// What the workers have done so far and where their time went (mpire's
    /// `get_insights`): per worker slot, tasks finished, time busy, waiting for work and
    /// receiving and sending, start-up time, and the workers replaced and why; per pool, the
    /// slowest tasks and the share of time spent on work rather than overhead. The counters
    /// are always kept (a few stores to the worker's shared segment per task), and the
    /// workers that are gone are included. `Display` gives a small table.
    pub fn insights(&self) -> Insights {
        self.shared.lock().book.insights()
    }

    /// A new job, refused if the pool takes no new calls.
    fn new_job(
        &self,
        store: Store,
        expected: Option<u64>,
    ) -> Result<(u64, std::sync::MutexGuard<'_, State>)> {
        self.shared.check_process()?;
        let mut g = self.shared.lock();
        if let Some(e) = g.refuse() {
            return Err(e);
        }
        let id = g.next_job;
        g.next_job += 1;
        g.jobs.insert(id, Job::new(store, expected));
        Ok((id, g))
    }

    /// Encodes `items` in chunks and submits them. Each chunk is queued as soon as it is
    /// encoded, so the workers start while the rest is being encoded. `n` is the number of
    /// items expected (for the default chunksize); the job's length is what `items` yields.
    fn submit_items<T: Serialize + DeserializeOwned>(
        &self,
        entry: crate::proto::TaskEntry,
        items: impl Iterator<Item = T>,
        n: usize,
        chunksize: Option<usize>,
        bulk: bool,
    ) -> Result<u64> {
        let cs = chunksize.unwrap_or_else(|| default_chunksize(n, self.processes())).max(1);
        // The length is known for sure only once the input ends.
        // A call that is not bulk is one task (`apply_async`): its result needs no map.
        let store = if bulk { Store::Dense(BTreeMap::new(), n) } else { Store::One(None) };
        let (id, mut g) = self.new_job(store, None)?;
        let attached = match (bulk, &self.shared.progress) {
            (true, Some(p)) => {
                g.attach_progress(id, p, Some(n as u64), false);
                true
            }
            _ => false,
        };
        drop(g);
        if attached {
            self.shared.deliver_progress();
        }
        // If the input panics, the job is given up (nobody will get its handle).
        let guard = Unfinished { shared: &self.shared, id };
        // Looking one item ahead tells that the input ended with the chunk that took its last
        // item, so that the job's length is set with that chunk (one lock for `apply`).
        let mut items = items.peekable();
        let mut first = 0u64;
        let mut settle = false;
        loop {
            let (mut chunks, errors) = build_chunks(items.by_ref().take(cs), entry, first, cs);
            let got = chunks.iter().map(|c| c.count as u64).sum::<u64>() + errors.len() as u64;
            first += got;
            for c in &mut chunks {
                c.seq_results = true;
            }
            let ended = got < cs as u64 || items.peek().is_none();
            let mut g = self.shared.lock();
            let stopping = matches!(g.phase, Phase::Stopping | Phase::Stopped);
            if !stopping {
                queue_chunks(&mut g, id, chunks, errors);
            }
            if stopping || ended {
                if let Some(j) = g.jobs.get_mut(&id) {
                    j.expected = Some(first);
                    if let Store::Dense(_, len) = &mut j.store {
                        *len = usize::try_from(first).unwrap_or(usize::MAX);
                    }
                    if j.all_in() {
                        g.to_settle.push(id);
                    }
                }
            }
            // Results recorded here (encoding errors, a job complete at once) are settled below.
            settle |= !g.to_settle.is_empty() || !g.progress_out.is_empty();
            drop(g);
            self.shared.ring_if_sleeping();
            if stopping || ended {
                break;
            }
        }
        std::mem::forget(guard);
        if settle {
            self.shared.settle();
        }
        Ok(id)
    }

    /// Submits the items of `iterable` as [`Pool::submit_items`] does, without collecting them
    /// first when the iterator knows its length.
    fn submit_iter<T: Serialize + DeserializeOwned>(
        &self,
        entry: crate::proto::TaskEntry,
        iterable: impl IntoIterator<Item = T>,
        chunksize: Option<usize>,
    ) -> Result<u64> {
        let iter = iterable.into_iter();
        match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => self.submit_items(entry, iter, lo, chunksize, true),
            _ => {
                let items: Vec<T> = iter.collect();
                let n = items.len();
                self.submit_items(entry, items.into_iter(), n, chunksize, true)
            }
        }
    }

    /// Runs `f(args...)` in a worker and returns its result (Python's `apply`).
    pub fn apply<F, Args>(&self, f: F, args: Args) -> Result<F::Output>
    where
        F: Task<Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args)?.get()
    }

    /// Submits `f(args...)` and returns at once (Python's `apply_async`).
    ///
    /// ```
    /// fn add(a: i32, b: i32) -> i32 {
    ///     a + b
    /// }
    /// # fn main() -> Result<(), mp_pool::Error> {
    /// let pool = mp_pool::Pool::new(2)?;
    /// let r = pool.apply_async(add, (2, 3))?;
    /// assert_eq!(r.get()?, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn apply_async<F, Args>(&self, f: F, args: Args) -> Result<AsyncResult<F::Output>>
    where
        F: Task<Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let entry = entry_for::<F, Args>(f)?;
        self.shared.check_process()?;
        let id = self.submit_items(entry, std::iter::once(args), 1, Some(1), false)?;
        Ok(AsyncResult::new(self.shared.clone(), id, decode_one::<F::Output>))
    }

    /// `f` applied to every item, in order (Python's `map`), with the default chunksize. The
    /// first task error (by position) is returned once every task has finished.
    pub fn map<F, A, I>(&self, f: F, iterable: I) -> Result<Vec<F::Output>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.map_async(f, iterable)?.get()
    }

    /// [`map`](Pool::map) with an explicit chunksize (at least 1).
    pub fn map_chunked<F, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<Vec<F::Output>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.map_async_chunked(f, iterable, chunksize)?.get()
    }

    /// The asynchronous [`map`](Pool::map) (Python's `map_async`).
    pub fn map_async<F, A, I>(&self, f: F, iterable: I) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.map_async_impl(f, iterable, None)
    }

    /// [`map_async`](Pool::map_async) with an explicit chunksize (at least 1).
    pub fn map_async_chunked<F, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.map_async_impl(f, iterable, Some(chunksize))
    }

    fn map_async_impl<F, A, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.shared.check_process()?;
        let entry = entry_for::<F, (A,)>(f)?;
        // Each item is encoded on its own: `(A,)` has the same encoding as `A`.
        let id = self.submit_iter(entry, iterable, chunksize)?;
        Ok(AsyncResult::new(self.shared.clone(), id, decode_vec::<F::Output>))
    }

    /// `f(args...)` for every argument tuple, in order (Python's `starmap`).
    pub fn starmap<F, Args, I>(&self, f: F, iterable: I) -> Result<Vec<F::Output>>
    where
        F: Task<Args>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.starmap_async(f, iterable)?.get()
    }

    /// [`starmap`](Pool::starmap) with an explicit chunksize (at least 1).
    pub fn starmap_chunked<F, Args, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<Vec<F::Output>>
    where
        F: Task<Args>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.starmap_async_impl(f, iterable, Some(chunksize))?.get()
    }

    /// The asynchronous [`starmap`](Pool::starmap) (Python's `starmap_async`).
    pub fn starmap_async<F, Args, I>(
        &self,
        f: F,
        iterable: I,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Task<Args>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.starmap_async_impl(f, iterable, None)
    }

    /// [`starmap_async`](Pool::starmap_async) with an explicit chunksize (at least 1).
    pub fn starmap_async_chunked<F, Args, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Task<Args>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.starmap_async_impl(f, iterable, Some(chunksize))
    }

    fn starmap_async_impl<F, Args, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<F::Output>>>
    where
        F: Task<Args>,
        I: IntoIterator<Item = Args>,
        Args: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.shared.check_process()?;
        let entry = entry_for::<F, Args>(f)?;
        let id = self.submit_iter(entry, iterable, chunksize)?;
        Ok(AsyncResult::new(self.shared.clone(), id, decode_vec::<F::Output>))
    }

    /// A lazy iterator of `f` over `iterable`, in order (Python's `imap`; chunksize 1 unless
    /// set with [`Imap::with_chunksize`]).
    pub fn imap<F, A, I>(&self, f: F, iterable: I) -> Result<Imap<I::IntoIter, F::Output>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.imap_impl(f, iterable, true)
    }

    /// Like [`imap`](Pool::imap), but yielding results as they complete (Python's
    /// `imap_unordered`).
    pub fn imap_unordered<F, A, I>(&self, f: F, iterable: I) -> Result<Imap<I::IntoIter, F::Output>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        self.imap_impl(f, iterable, false)
    }

    fn imap_impl<F, A, I>(
        &self,
        f: F,
        iterable: I,
        ordered: bool,
    ) -> Result<Imap<I::IntoIter, F::Output>>
    where
        F: Task<(A,)>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        F::Output: Serialize + DeserializeOwned,
    {
        let entry = entry_for::<F, (A,)>(f)?;
        let input = iterable.into_iter();
        let total = match input.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        };
        let (id, mut g) = self.new_job(Store::Sparse(BTreeMap::new()), None)?;
        g.feeders += 1;
        if let Some(p) = &self.shared.progress {
            g.attach_progress(id, p, total, false);
        }
        drop(g);
        self.shared.deliver_progress();
        Ok(Imap::new(self.shared.clone(), id, input, entry, ordered, self.processes(), total))
    }

    /// Stops new calls; the workers exit once everything submitted is done (Python's
    /// `close`).
    pub fn close(&self) -> Result<()> {
        self.shared.check_process()?;
        let mut g = self.shared.lock();
        if g.phase == Phase::Running {
            g.phase = Phase::Closed;
        }
        drop(g);
        self.shared.ring();
        Ok(())
    }

    /// Kills the workers now; every outstanding result fails with [`Error::Terminated`]
    /// (Python's `terminate`). Returns once the workers are gone.
    pub fn terminate(&self) -> Result<()> {
        self.shared.check_process()?;
        let mut g = self.shared.lock();
        if g.phase != Phase::Stopped {
            g.phase = Phase::Stopping;
        }
        drop(g);
        self.shared.ring();
        self.join_thread();
        Ok(())
    }

    /// Waits for the workers to exit, after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate) (Python's `join`); [`Error::StillRunning`] otherwise.
    pub fn join(&self) -> Result<()> {
        self.shared.check_process()?;
        if self.shared.lock().phase == Phase::Running {
            return Err(Error::StillRunning);
        }
        self.join_thread();
        Ok(())
    }

    fn join_thread(&self) {
        let mut slot = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        // A callback (on the collector thread) that drops or terminates the pool cannot wait
        // for its own thread: the collector stops by itself once it returns.
        if slot.as_ref().is_some_and(|h| h.thread().id() == std::thread::current().id()) {
            return;
        }
        let handle = slot.take();
        drop(slot);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.shared.check_process().is_ok() {
            let _ = self.terminate();
        }
    }
}
