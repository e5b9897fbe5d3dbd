//! Engines: a pool whose tasks run somewhere other than its own worker processes (the ranks of
//! an MPI job, with `mp-mpi`), behind the same [`Pool`](crate::Pool) front end.
//!
//! A pool built with [`PoolBuilder::engine`](crate::PoolBuilder::engine) keeps everything a
//! caller sees (calls, chunking, results, callbacks, progress, `close`/`join`/`terminate`) and
//! hands its engine a [`Hub`] on the pool's own thread instead of starting local workers. The
//! engine moves bytes: it asks the hub for the next batch of a worker
//! ([`Hub::next`]), carries the batch to that worker, where an [`EngineWorker`] of the same
//! executable runs it, and brings the results back ([`Hub::deliver`]). Both ends of a batch
//! are this crate's; an engine never looks inside one.
//!
//! What a local pool does with descriptors does not cross an engine: a task whose arguments
//! hold an `mp` object (a queue, a lock, shared memory) fails with
//! [`Error::Serialization`], and so does a result that holds one.
//! `maxtasksperchild` and task timeouts are the local pool's, and are refused with an engine.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::collector::{InitTemplate, record_results};
use crate::error::{Error, Result};
use crate::meter::Mark;
use crate::proto::{self, Reader, Writer};
use crate::state::{Chunk, Phase, Shared};
use crate::worker::{Batch, ChunkRun, Outlet};

/// Where a pool's tasks run when they do not run in its own worker processes: set with
/// [`PoolBuilder::engine`](crate::PoolBuilder::engine).
pub trait Engine: Send + 'static {
    /// How many workers the engine runs tasks on (the pool's
    /// [`processes`](crate::Pool::processes)); at least one.
    fn workers(&self) -> usize;

    /// Serves the pool on its thread until the hub says to stop: see [`Hub`] for the loop.
    /// Returning early (every worker lost) fails what is outstanding.
    fn serve(self: Box<Self>, hub: Hub);
}

/// What [`Hub::next`] tells an engine to do for one worker.
#[derive(Debug)]
pub enum Next {
    /// Carry this batch to the worker, and its results back with [`Hub::deliver`].
    Batch(Vec<u8>),
    /// Nothing to hand out now: wait ([`Hub::wait`]) or look for results.
    Idle,
    /// The pool is closed and everything submitted is done: tell the workers to stop and
    /// return from [`Engine::serve`].
    Finish,
    /// The pool was terminated: stop the workers as fast as the engine can and return (what
    /// is outstanding has failed with [`Error::Terminated`]).
    Stop,
}

/// A chunk a worker holds, and how many of its tasks have reported.
struct Held {
    chunk: Chunk,
    done: usize,
    /// The last chunk of its batch.
    ends_batch: bool,
}

/// The pool's side of an engine: hands out batches, takes results, and tells the engine when
/// to stop. Every method is cheap and never blocks but [`Hub::wait`].
///
/// An engine's loop:
/// 1. for each worker ready for work, [`next`](Hub::next): send a [`Next::Batch`]; return on
///    [`Next::Finish`] or [`Next::Stop`];
/// 2. [`deliver`](Hub::deliver) the results that came back;
/// 3. when nothing happened, [`wait`](Hub::wait) (it wakes when tasks are submitted or the
///    pool is closed or terminated).
///
/// A batch's results are delivered whole and in order per worker: the first `deliver` of a
/// worker answers its oldest batch outstanding.
pub struct Hub {
    shared: Arc<Shared>,
    init: Option<Vec<u8>>,
    held: Vec<VecDeque<Held>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("workers", &self.held.len()).finish_non_exhaustive()
    }
}

/// The error of a task whose arguments hold descriptors.
fn objects_error() -> Error {
    Error::serialization(
        "the task's arguments hold an mp object (a queue, a lock, shared memory, a descriptor), \
         which cannot cross to an engine's workers"
            .into(),
    )
}

/// The largest batch a hub hands out, in bytes (one more chunk always fits in a frame).
const BATCH_BYTES: usize = proto::SOFT_FRAME;
/// The most chunks in one batch.
const BATCH_CHUNKS: usize = 64;

impl Hub {
    pub(crate) fn new(shared: Arc<Shared>, init: Option<InitTemplate>) -> Result<Hub> {
        let init = match init {
            None => None,
            Some(t) if !t.fds.is_empty() => {
                return Err(Error::InvalidArgument(
                    "an engine's initializer cannot take arguments that hold mp objects",
                ));
            }
            Some(t) => {
                let mut w = Writer::default();
                w.u64(t.entry.0);
                w.u64(t.entry.1);
                w.buf.extend_from_slice(&t.payload);
                Some(w.buf)
            }
        };
        let held = (0..shared.processes).map(|_| VecDeque::new()).collect();
        Ok(Hub { shared, init, held })
    }

    /// How many workers the pool has (the engine's [`Engine::workers`]).
    pub fn workers(&self) -> usize {
        self.held.len()
    }

    /// The pool's initializer, if it has one, for [`EngineWorker::init`] on every worker before
    /// its first batch.
    pub fn init(&self) -> Option<&[u8]> {
        self.init.as_deref()
    }

    /// The number of batches handed to `worker` whose results have not been delivered.
    pub fn outstanding(&self, worker: usize) -> usize {
        self.held.get(worker).map_or(0, |h| h.iter().filter(|c| c.ends_batch).count())
    }

    /// Whether any worker has a batch outstanding.
    pub fn busy(&self) -> bool {
        self.held.iter().any(|h| !h.is_empty())
    }

    /// Whether the pool was terminated or failed: the engine stops its workers and returns
    /// (what [`next`](Hub::next) says too, for a worker ready for work).
    pub fn stopping(&self) -> bool {
        matches!(self.shared.lock().phase, Phase::Stopping | Phase::Stopped)
    }

    /// The next thing to do for `worker`: a batch of queued chunks to carry to it, nothing for
    /// now, or the end of the pool.
    pub fn next(&mut self, worker: usize) -> Next {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        match st.phase {
            Phase::Stopping | Phase::Stopped => return Next::Stop,
            Phase::Closed if st.queue.is_empty() && st.feeders == 0 && !self.busy() => {
                return Next::Finish;
            }
            _ => {}
        }
        // Set under the lock before the queue is looked at: a chunk queued after this rings.
        self.shared.sleeping.store(true, Ordering::SeqCst);
        // About half a worker's share of the queue per batch, as the collector hands out.
        let budget = (st.queue.len() / (2 * self.held.len().max(1))).clamp(1, BATCH_CHUNKS);
        let Some(held) = self.held.get_mut(worker) else { return Next::Idle };
        let mut out = Writer::default();
        out.u8(proto::K_BATCH);
        out.u32(0);
        let mut taken = 0u32;
        let mut refused = Vec::new();
        while (taken as usize) < budget {
            let Some(c) = st.queue.front() else { break };
            if taken > 0 && out.buf.len() + c.payload.len() > BATCH_BYTES {
                break;
            }
            let Some(c) = st.queue.pop_front() else { break };
            if !c.fds.is_empty() || !c.objects.ids().is_empty() {
                refused.push(c);
                continue;
            }
            c.write_to(&mut out);
            held.push_back(Held { chunk: c, done: 0, ends_batch: false });
            taken += 1;
        }
        for c in refused {
            for t in 0..c.count as u64 {
                st.record(c.job, c.first + t, Err(objects_error()));
            }
        }
        drop(st);
        self.shared.settle();
        if taken == 0 {
            return Next::Idle;
        }
        if let Some(last) = held.back_mut() {
            last.ends_batch = true;
        }
        if let Some(count) = out.buf.get_mut(1..5) {
            count.copy_from_slice(&taken.to_le_bytes());
        }
        Next::Batch(out.buf)
    }

    /// Delivers the results of `worker`'s oldest outstanding batch: the bytes its
    /// [`EngineWorker::run`] returned. Results that do not parse, or that the batch does not
    /// expect, fail the tasks they were for; the batch is answered either way.
    pub fn deliver(&mut self, worker: usize, results: &[u8]) {
        let Some(held) = self.held.get_mut(worker) else { return };
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let mut rest = results;
        let mut broken = false;
        while !rest.is_empty() && !broken {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                broken = true;
                break;
            };
            let len = u32::from_le_bytes(*len) as usize;
            let Some(frame) = tail.get(..len) else {
                broken = true;
                break;
            };
            rest = tail.get(len..).unwrap_or(&[]);
            let mut r = Reader::new(frame.to_vec(), Vec::new());
            if r.u8() != Ok(proto::K_RESULTS) {
                broken = true;
                break;
            }
            // A frame that does not parse records nothing: what it counted is undone.
            let before: Vec<usize> = held.iter().map(|h| h.done).collect();
            let taken = record_results(&mut st, r, |e| accept(held, e.job, e.index, e.tasks));
            if taken.is_err() {
                broken = true;
                for (h, done) in held.iter_mut().zip(before) {
                    h.done = done;
                }
            }
        }
        // Whatever the batch still expects fails: the results are in, or will never be.
        let why = if broken {
            "the worker's results for the task did not parse"
        } else {
            "the worker sent no result for the task"
        };
        while let Some(h) = held.pop_front() {
            let c = &h.chunk;
            for t in h.done as u64..c.count as u64 {
                st.record(c.job, c.first + t, Err(Error::serialization(why.into())));
            }
            if h.ends_batch {
                break;
            }
        }
        drop(st);
        self.shared.settle();
    }

    /// Fails every task `worker` holds with `error` (the worker is lost: its host died, its
    /// rank ended); the engine hands it nothing more.
    pub fn lose_worker(&mut self, worker: usize, error: Error) {
        let Some(held) = self.held.get_mut(worker) else { return };
        let shared = self.shared.clone();
        let mut st = shared.lock();
        for h in held.drain(..) {
            let c = &h.chunk;
            for t in h.done as u64..c.count as u64 {
                st.record(c.job, c.first + t, Err(error.duplicate()));
            }
        }
        drop(st);
        self.shared.settle();
    }

    /// Stops the pool with `error` (a worker's initializer failed, the engine cannot go on):
    /// every outstanding and later call fails with it. The engine stops its workers and
    /// returns next.
    pub fn fail(&mut self, error: Error) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if st.failure.is_none() {
            st.failure = Some(error);
        }
        if st.phase != Phase::Stopped {
            st.phase = Phase::Stopping;
        }
        let err = st.failure.as_ref().map_or(Error::Terminated, Error::duplicate);
        st.fail_all(&err);
        drop(st);
        self.shared.settle();
    }

    /// Waits until something may have changed for the engine (tasks submitted, the pool
    /// closed or terminated) or `timeout` passes; `None` waits for the pool alone. Progress
    /// reports held back by their interval are made on the way.
    pub fn wait(&mut self, timeout: Option<Duration>) {
        let progress_due = self.shared.lock().progress_due;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let deadline = match (deadline, progress_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let doorbell = self.shared.doorbell.as_fd();
        if mp_process::os::poll::readable(doorbell, deadline).unwrap_or(false) {
            mp_process::os::eventfd::drain(doorbell);
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        let mut st = self.shared.lock();
        if st.progress_due.is_some() {
            st.flush_progress(Instant::now());
        }
        drop(st);
        self.shared.settle();
    }
}

/// Counts `tasks` results of `job` from task `index` on, which must be the next ones the
/// oldest chunk of `held` expects.
fn accept(
    held: &mut VecDeque<Held>,
    job: u64,
    index: u64,
    tasks: usize,
) -> std::result::Result<(), proto::Malformed> {
    let front = held.iter_mut().find(|h| h.done < h.chunk.count).ok_or(proto::Malformed)?;
    front.chunk.take_results(&mut front.done, job, index, tasks)
}

/// The end of an engine's service: the pool is stopped, and what is outstanding fails (with
/// the pool's failure, or as terminated).
impl Drop for Hub {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let err = st.failure.as_ref().map_or(Error::Terminated, Error::duplicate);
        st.fail_all(&err);
        for held in &mut self.held {
            held.clear();
        }
        drop(st);
        self.shared.settle();
        let mut st = shared.lock();
        st.phase = Phase::Stopped;
        st.changed = true;
        self.shared.notify(st);
    }
}

/// The worker side of an engine, in a process of the same executable as the pool's: runs the
/// initializer and the batches a [`Hub`] hands out.
///
/// Tasks arrive as checked entries of this executable, signed with the key of the pool's
/// process tree: the engine must give the worker that key
/// ([`mp_process::code::adopt_tree_key`]) before it runs anything, or every task fails as one
/// this pool did not make.
pub struct EngineWorker {
    run: ChunkRun,
    chunks: u64,
}

impl std::fmt::Debug for EngineWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineWorker").field("chunks", &self.chunks).finish_non_exhaustive()
    }
}

impl EngineWorker {
    /// A worker (it makes itself a small private segment for its bookkeeping).
    pub fn new() -> Result<EngineWorker> {
        crate::worker::install_panic_hook();
        let segment = mp_shm::SharedMemory::new(proto::SEG_SIZE)?;
        // The segment is kept for the rest of the process's life, as a local worker's is.
        let segment: &'static mp_shm::SharedMemory = Box::leak(Box::new(segment));
        let mut run = ChunkRun::new(segment, Outlet::Kept(Vec::new()), false);
        run.hold = false;
        run.meter.ready();
        Ok(EngineWorker { run, chunks: 0 })
    }

    /// Runs the pool's initializer ([`Hub::init`]); its failure message if it panicked or its
    /// frame did not parse.
    pub fn init(&mut self, init: &[u8]) -> std::result::Result<(), String> {
        let mut r = Reader::new(init.to_vec(), Vec::new());
        let (Ok(offset), Ok(tag)) = (r.u64(), r.u64()) else {
            return Err("the initializer's frame is malformed".into());
        };
        self.run.hold = true;
        let failed = self.run.run_init((offset, tag), init.get(16..).unwrap_or(&[]), Vec::new());
        self.run.hold = false;
        self.run.out = Outlet::Kept(Vec::new());
        match failed {
            Some(message) => Err(message),
            None => Ok(()),
        }
    }

    /// Runs a batch ([`Next::Batch`]) and returns its results, for [`Hub::deliver`]. A batch
    /// that does not parse gives the results of the tasks that ran before the fault (the hub
    /// fails the rest).
    pub fn run(&mut self, batch: Vec<u8>) -> Vec<u8> {
        self.run.reader = Reader::new(batch, Vec::new());
        self.run.alive = true;
        let outcome = crate::worker::run_batch(&mut self.run, Mark::now(), &mut self.chunks, None);
        if !matches!(outcome, Batch::Done) {
            self.run.flush();
        }
        match &mut self.run.out {
            Outlet::Kept(out) => std::mem::take(out),
            Outlet::Socket(_) => Vec::new(),
        }
    }
}
