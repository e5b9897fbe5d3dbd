//! The collector thread: it hands chunks to workers, reads their results, watches their
//! pidfds, enforces the task timeout, replaces workers that die or retire, and stops the pool.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mp_process::fdpass::{self, PassFd};
use mp_process::{Forker, Process, StartMethod, os};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::error::{Error, Result};
use crate::insights::RestartReason;
use crate::proto::{self, InitSpec, Reader, ResultEntry, WorkerBoot, Writer};
use crate::state::{Chunk, Phase, Raw, Shared, Slot, State};

/// Above this many bytes a batch is not sent to a worker that still has one queued, so that a
/// send never blocks while the worker may itself be blocked sending results: a worker has read
/// its first batch whole before it sends a result, and its socket's buffer holds a second
/// batch of this size (a third of the buffer at most: 208 KiB by default).
const SMALL_BATCH: usize = 64 * 1024;
/// The most chunks in one batch.
const MAX_BATCH_CHUNKS: usize = 256;
/// Tasks slower than this on average are handed out one chunk at a time.
const FAST_TASK: Duration = Duration::from_micros(200);
/// How long to wait for a dead worker's exit status once its pidfd is readable.
const STATUS_WAIT: Duration = Duration::from_millis(500);
/// How long to wait for killed workers to be gone when the pool stops.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// The initializer, kept encoded for every worker the pool starts.
pub(crate) struct InitTemplate {
    pub entry: proto::TaskEntry,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A chunk a worker holds, and how many of its tasks have reported.
struct InChunk {
    chunk: Chunk,
    done: usize,
    /// The last chunk of its batch.
    ends_batch: bool,
    /// If it is the first chunk of its batch: the number, among the frames sent to the
    /// worker (from 1), of the first frame of that batch (definitions of shared objects, or
    /// the batch itself).
    starts_batch: Option<u64>,
}

/// A worker as the collector tracks it.
pub(crate) struct WorkerH {
    pid: u32,
    /// Its place in the pool (see [`crate::Insights`]): a replacement takes the slot of the
    /// worker it replaces.
    slot: usize,
    /// Its process name.
    name: String,
    /// When it was started, in [`proto::monotonic_ns`].
    spawned_ns: u64,
    sock: OwnedFd,
    /// The worker process.
    process: Process,
    inflight: VecDeque<InChunk>,
    /// Batches sent and not finished.
    batches: u32,
    /// Frames sent in all (batches and definitions of shared objects).
    frames_sent: u64,
    /// The shared objects defined to the worker.
    objects: fdpass::PeerObjects,
    /// Why the worker could not receive its tasks, if it said so before exiting.
    recv_failure: Option<String>,
    chunks_sent: u64,
    /// When the task it is running started (as far as the parent can tell).
    busy_since: Instant,
    timed_out: bool,
    dead: bool,
    status: Option<i32>,
    /// The worker's segment: the count of tasks it has started, its journal, its counters.
    progress: Arc<mp_shm::SharedMemory>,
    /// The count of results received from it.
    received: u64,
    /// The largest second batch its socket's buffer is sure to hold (see [`SMALL_BATCH`]).
    small_batch: usize,
}

impl WorkerH {
    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.process.sentinel().ok()
    }

    /// Counts `tasks` results of `job` from task `index` on, which must be the next ones its
    /// oldest chunk expects.
    fn accept(&mut self, job: u64, index: u64, tasks: usize) -> Result<(), proto::Malformed> {
        let front = self.inflight.front_mut().ok_or(proto::Malformed)?;
        front.chunk.take_results(&mut front.done, job, index, tasks)?;
        self.received += tasks as u64;
        if front.done >= front.chunk.count {
            let ends = front.ends_batch;
            self.inflight.pop_front();
            if ends {
                self.batches = self.batches.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// The results the dead worker finished and never sent, from its journal (see
    /// [`proto::SEG_STARTED`]): each is recorded if it is the next one expected, and counted.
    fn recover_journal(&mut self, st: &mut State) {
        let len = self
            .progress
            .atomic_u64(proto::SEG_JOURNAL_LEN)
            .map(|a| a.load(std::sync::atomic::Ordering::Acquire))
            .unwrap_or(0);
        let len = usize::try_from(len).unwrap_or(0).min(proto::SEG_SIZE - proto::SEG_JOURNAL);
        let mut bytes = vec![0u8; len];
        if len == 0 || self.progress.read(proto::SEG_JOURNAL, &mut bytes).is_err() {
            return;
        }
        for (job, index, tag, body) in proto::parse_journal(bytes) {
            // Results already received (sent just before the death) are skipped.
            if self.accept(job, index, 1).is_ok() {
                st.record(job, index, single_slot(tag, body));
            }
        }
    }

    fn kill(&self) {
        let _ = self.process.kill();
    }
}

/// Starts workers.
/// How a pool starts its processes: the worker side's code, handed over by `pool.rs`, so
/// that the parent side (this module) and the worker side meet only in `proto`.
#[derive(Clone, Copy)]
pub(crate) struct Starts {
    /// A process that runs a worker on a socket.
    pub worker: fn(PassFd, WorkerBoot) -> Process,
}

pub(crate) struct Spawner {
    starts: Starts,
    pub method: StartMethod,
    /// Under `fork`, the zygote workers are forked from: a forker forked when the pool is made.
    forker: Option<Forker>,
    pub init: Option<InitTemplate>,
    pub maxtasks: Option<u64>,
    pub flush_each: bool,
    /// Where every worker dies, for tests (see [`crate::failpoint`]).
    #[cfg(feature = "failpoints")]
    pub failpoint: Option<(crate::FailStep, u64)>,
    counter: u32,
}

impl Spawner {
    /// A spawner for `method`; under fork this forks the zygote (a `Forker`) now.
    pub fn new(
        method: StartMethod,
        init: Option<InitTemplate>,
        maxtasks: Option<u64>,
        flush_each: bool,
        starts: Starts,
    ) -> Result<Spawner> {
        let forker = if method == StartMethod::Fork { Some(Forker::fork()?) } else { None };
        Ok(Spawner {
            method,
            starts,
            forker,
            init,
            maxtasks,
            flush_each,
            #[cfg(feature = "failpoints")]
            failpoint: None,
            counter: 0,
        })
    }

    fn boot(&self) -> Result<WorkerBoot> {
        let init = match &self.init {
            None => None,
            Some(t) => Some(InitSpec {
                entry: t.entry,
                payload: t.payload.clone(),
                fds: t
                    .fds
                    .iter()
                    .map(|fd| fd.try_clone().map(PassFd).map_err(|e| Error::io("dup", e)))
                    .collect::<Result<_>>()?,
            }),
        };
        let progress = mp_shm::SharedMemory::new(proto::SEG_SIZE)?;
        Ok(WorkerBoot {
            init,
            maxtasks: self.maxtasks,
            flush_each: self.flush_each,
            progress,
            #[cfg(feature = "failpoints")]
            failpoint: self.failpoint,
        })
    }

    /// Starts one worker, in `slot`.
    pub fn spawn(&mut self, slot: usize) -> Result<WorkerH> {
        let spawned_ns = proto::monotonic_ns();
        let (mine, theirs) = socket_pair()?;
        let boot = self.boot()?;
        let progress = Arc::new(boot.progress.try_clone()?);
        self.counter += 1;
        let prefix = match self.method {
            StartMethod::Fork => "ForkPoolWorker",
            StartMethod::Spawn => "SpawnPoolWorker",
            StartMethod::Forkserver => "ForkServerPoolWorker",
        };
        let name = format!("{prefix}-{}", self.counter);
        let mut process = (self.starts.worker)(PassFd(theirs), boot)
            .with_start_method(self.method)
            .with_daemon(true)
            .with_name(name.clone());
        if let Some(forker) = &self.forker {
            process = process.with_forker(forker.clone());
        }
        process.start()?;
        // A worker's death is seen through its pidfd only, which a start does not open: open
        // it now, so that a pool out of descriptors fails the start rather than miss a death.
        if let Err(e) = process.sentinel() {
            let _ = process.kill();
            let _ = process.join();
            return Err(e.into());
        }
        let pid = process.pid().unwrap_or(0);
        let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&mine).unwrap_or(0);
        log::debug!(target: "mp_pool", "started worker {name} (pid {pid})");
        Ok(WorkerH {
            pid,
            slot,
            name,
            spawned_ns,
            small_batch: (sndbuf / 3).min(SMALL_BATCH),
            sock: mine,
            process,
            inflight: VecDeque::new(),
            batches: 0,
            frames_sent: 0,
            objects: fdpass::PeerObjects::new(proto::WORKER_OBJECTS),
            recv_failure: None,
            chunks_sent: 0,
            busy_since: Instant::now(),
            timed_out: false,
            dead: false,
            status: None,
            progress,
            received: 0,
        })
    }

    /// Lets go of the zygote, if there is one: it exits once the workers are gone (a copy of
    /// the spawner in a forked child of the pool's owner lets go of its copy only).
    fn stop(&mut self) {
        if let Some(forker) = self.forker.take() {
            forker.close();
        }
    }
}

fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| Error::io("socketpair", e))
}

/// A spawner dropped without [`Collector::wind_down`] (a pool that failed to start) lets go of
/// its zygote.
impl Drop for Spawner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The collector's own state: the workers (only this thread touches them).
pub(crate) struct Collector {
    pub shared: Arc<Shared>,
    pub spawner: Spawner,
    pub workers: Vec<WorkerH>,
    pub timeout: Option<Duration>,
    /// A running average of a task's duration.
    ema: Option<Duration>,
    /// The frame being sent, kept between batches so its memory is reused.
    out: Writer,
}

impl Collector {
    pub fn new(
        shared: Arc<Shared>,
        spawner: Spawner,
        workers: Vec<WorkerH>,
        timeout: Option<Duration>,
    ) -> Collector {
        Collector { shared, spawner, workers, timeout, ema: None, out: Writer::default() }
    }

    /// The thread's body.
    pub fn run(mut self) {
        loop {
            let progress_due;
            {
                let shared = self.shared.clone();
                let mut st = shared.lock();
                match st.phase {
                    Phase::Stopping | Phase::Stopped => {
                        drop(st);
                        self.shutdown();
                        return;
                    }
                    Phase::Closed => {
                        if st.queue.is_empty()
                            && st.feeders == 0
                            && self.workers.iter().all(|w| w.inflight.is_empty())
                        {
                            drop(st);
                            self.finish();
                            return;
                        }
                    }
                    Phase::Running => {}
                }
                self.shared.sleeping.store(true, std::sync::atomic::Ordering::SeqCst);
                let sends = self.dispatch(&mut st);
                progress_due = st.progress_due;
                drop(st);
                if self.send_batches(sends) {
                    // Batches failed and freed their workers: dispatch again at once (no
                    // event would come to wake the collector).
                    self.shared.settle();
                    continue;
                }
            }
            self.wait_and_handle(progress_due);
            self.shared.settle();
            self.replace();
        }
    }

    /// Keeps the pool at its size while there is or may be work.
    fn replace(&mut self) {
        loop {
            {
                let st = self.shared.lock();
                let wanted = match st.phase {
                    Phase::Running => true,
                    Phase::Closed => !st.queue.is_empty() || st.feeders > 0,
                    _ => false,
                };
                if !wanted || st.failure.is_some() || self.workers.len() >= self.shared.processes {
                    return;
                }
            }
            let slot = (0..self.shared.processes)
                .find(|k| self.workers.iter().all(|w| w.slot != *k))
                .unwrap_or(self.workers.len());
            match self.spawner.spawn(slot) {
                Ok(w) => {
                    self.workers.push(w);
                    self.publish_pids();
                }
                Err(e) => {
                    log::error!(target: "mp_pool", "cannot replace a worker: {e}; the pool stops");
                    let mut st = self.shared.lock();
                    st.failure = Some(e);
                    st.phase = Phase::Stopping;
                    return;
                }
            }
        }
    }

    /// Publishes the workers' pids for [`Pool::pids`](crate::Pool::pids), and the workers
    /// started since the last time to the book of insights.
    pub fn publish_pids(&self) {
        let pids = self.workers.iter().map(|w| w.pid).collect();
        let mut st = self.shared.lock();
        st.pids = pids;
        for w in &self.workers {
            st.book.started(w.slot, w.pid, w.progress.clone(), w.spawned_ns);
        }
    }

    /// Hands queued chunks to workers with room, one batch per worker per round: the chunks
    /// move from the queue to the workers' in-flight lists under the state lock; the batches
    /// to send are returned, as (worker, first in-flight position, chunks), and sent after the
    /// lock is released ([`Collector::send_batches`]).
    fn dispatch(&mut self, st: &mut State) -> Vec<(usize, usize, usize)> {
        let slow = self.timeout.is_some() || self.ema.is_none_or(|e| e > FAST_TASK);
        let max_batches = if slow { 1 } else { 2 };
        let n = self.workers.len().max(1);
        let mut sends = Vec::new();
        loop {
            let mut sent_any = false;
            for (i, w) in self.workers.iter_mut().enumerate() {
                if st.queue.is_empty() {
                    return sends;
                }
                if w.dead || w.timed_out || w.batches >= max_batches {
                    continue;
                }
                let mut budget =
                    if slow { 1 } else { (st.queue.len() / (2 * n)).clamp(1, MAX_BATCH_CHUNKS) };
                if let Some(m) = self.spawner.maxtasks {
                    budget = budget.min(
                        usize::try_from(m.saturating_sub(w.chunks_sent)).unwrap_or(usize::MAX),
                    );
                }
                if budget == 0 {
                    continue;
                }
                let byte_cap = if w.batches > 0 { w.small_batch } else { 8 << 20 };
                if w.inflight.is_empty() {
                    w.busy_since = Instant::now();
                }
                let start = w.inflight.len();
                let mut taken = 0usize;
                let mut bytes = 0usize;
                let mut fds = 0usize;
                while taken < budget {
                    let Some(c) = st.queue.front() else { break };
                    let size = c.payload.len() + 33 + 8 * c.objects.len();
                    if taken > 0 && bytes + size > byte_cap {
                        break;
                    }
                    if taken == 0 && w.batches > 0 && size > byte_cap {
                        break;
                    }
                    // A frame carries at most `MAX_FDS_PER_FRAME` descriptors (a chunk holds
                    // at most `CHUNK_FDS`).
                    if taken > 0 && fds + c.fds.len() > fdpass::MAX_FDS_PER_FRAME {
                        break;
                    }
                    let Some(c) = st.queue.pop_front() else { break };
                    bytes += size;
                    fds += c.fds.len();
                    w.chunks_sent += 1;
                    w.inflight.push_back(InChunk {
                        chunk: c,
                        done: 0,
                        ends_batch: false,
                        starts_batch: None,
                    });
                    taken += 1;
                }
                if taken == 0 {
                    continue;
                }
                if let Some(last) = w.inflight.back_mut() {
                    last.ends_batch = true;
                }
                w.batches += 1;
                sends.push((i, start, taken));
                sent_any = true;
            }
            if !sent_any {
                return sends;
            }
        }
    }

    /// Sends the batches [`Collector::dispatch`] planned, each after the definitions of the
    /// shared objects its chunks refer to that the worker does not have yet. A batch that
    /// cannot be sent (too large for a frame; its objects' descriptors cannot be duplicated)
    /// fails its tasks with the reason; a worker that cannot be written to is dying, and its
    /// death puts the chunks back.
    fn send_batches(&mut self, sends: Vec<(usize, usize, usize)>) -> bool {
        let mut failed = Vec::new();
        for (i, start, k) in sends {
            let Some(w) = self.workers.get_mut(i) else { continue };
            let chunks = w.inflight.range(start..start + k).map(|ic| &ic.chunk.objects);
            let defs = match w.objects.prepare(chunks) {
                Ok(defs) => defs,
                Err(mp_process::wire::WireError::Io(source)) => {
                    // Out of descriptors, most likely: the definitions could not be made.
                    let op = "send the task's shared objects to a worker";
                    failed.push((i, start, k, Error::Io { op, source }));
                    continue;
                }
                Err(e) => {
                    failed.push((i, start, k, e.into()));
                    continue;
                }
            };
            if let Some(first) = w.inflight.get_mut(start) {
                first.starts_batch = Some(w.frames_sent + 1);
            }
            let sock = w.sock.as_fd();
            let out = &mut self.out;
            for (table, fds) in defs {
                out.clear();
                out.u8(proto::K_OBJECTS);
                out.buf.extend_from_slice(&table);
                let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
                w.frames_sent += 1;
                // A failure here is the worker's death (see below).
                let _ = fdpass::send_frame(sock, &out.buf, &fds, proto::MAX_FRAME);
            }
            out.clear();
            out.u8(proto::K_BATCH);
            out.u32(u32::try_from(k).unwrap_or(0));
            let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
            for ic in w.inflight.range(start..start + k) {
                let c = &ic.chunk;
                c.write_to(out);
                fds.extend(c.fds.iter().map(AsFd::as_fd));
            }
            w.frames_sent += 1;
            match fdpass::send_frame(sock, &out.buf, &fds, proto::MAX_FRAME) {
                // The worker is gone or going: its death puts the chunks back.
                Ok(()) | Err(mp_process::wire::WireError::Io(_)) => {}
                Err(e) => failed.push((i, start, k, e.into())),
            }
        }
        // The memory of an unusually large batch is not kept.
        self.out.clear();
        if self.out.buf.capacity() > proto::SOFT_FRAME {
            self.out.buf = Vec::new();
        }
        if failed.is_empty() {
            return false;
        }
        let shared = self.shared.clone();
        let mut st = shared.lock();
        for (i, start, k, err) in failed.into_iter().rev() {
            let Some(w) = self.workers.get_mut(i) else { continue };
            let gone: Vec<InChunk> = w.inflight.drain(start..start + k).collect();
            w.batches = w.batches.saturating_sub(1);
            w.chunks_sent = w.chunks_sent.saturating_sub(k as u64);
            for ic in gone {
                let c = ic.chunk;
                for t in 0..c.count as u64 {
                    st.record(c.job, c.first + t, Err(err.duplicate()));
                }
            }
        }
        drop(st);
        self.shared.settle();
        true
    }

    /// Polls the doorbell and the workers, and handles what is ready; wakes by
    /// `progress_due` to make the progress updates held back by their interval.
    fn wait_and_handle(&mut self, progress_due: Option<Instant>) {
        let deadline = self.timeout.and_then(|t| {
            self.workers
                .iter()
                .filter(|w| !w.inflight.is_empty() && !w.timed_out && !w.dead)
                .filter_map(|w| w.busy_since.checked_add(t))
                .min()
        });
        let deadline = match (deadline, progress_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = vec![self.shared.doorbell.as_fd()];
            for w in &self.workers {
                fds.push(w.sock.as_fd());
                fds.push(w.pidfd().unwrap_or(w.sock.as_fd()));
            }
            // A poll that fails (out of memory) counts as nothing ready: the loop comes back.
            let ready = os::poll::ready_flags(&fds, deadline).unwrap_or_default();
            self.shared.sleeping.store(false, std::sync::atomic::Ordering::SeqCst);
            ready
        };
        let mut k = 0;
        let mut next = || {
            let r = ready.get(k).copied().unwrap_or(false);
            k += 1;
            r
        };
        if next() {
            os::eventfd::drain(self.shared.doorbell.as_fd());
        }
        let flags: Vec<(bool, bool)> = self.workers.iter().map(|_| (next(), next())).collect();
        // Socket reads and status waits happen without the state lock, so that callers are
        // never held up by them.
        let mut frames: Vec<(usize, Vec<Frame>)> = Vec::new();
        for (i, (sock_ready, died)) in flags.into_iter().enumerate() {
            if sock_ready {
                frames.push((i, self.read_frames(i, 16)));
            }
            if died {
                if let Some(w) = self.workers.get_mut(i) {
                    w.dead = true;
                }
            }
        }
        // Deaths whose status is known; what the dead worker sent before dying is drained.
        let mut deaths: Vec<usize> = Vec::new();
        for i in 0..self.workers.len() {
            let status_known = match self.workers.get_mut(i) {
                Some(w) if w.dead => {
                    // A child of a forker (the zygote, the forkserver) has its status relayed
                    // by the forker, a moment after its pidfd turns readable.
                    w.status = w.process.join_timeout(STATUS_WAIT).ok().flatten();
                    true
                }
                _ => false,
            };
            if status_known {
                frames.push((i, self.read_frames(i, usize::MAX)));
                deaths.push(i);
            }
        }
        let shared = self.shared.clone();
        let mut st = shared.lock();
        for (i, list) in frames {
            let Some(w) = self.workers.get_mut(i) else { continue };
            for frame in list {
                if handle_frame(&mut st, w, frame, &mut self.ema).is_err() {
                    w.kill();
                    break;
                }
            }
        }
        for &i in deaths.iter().rev() {
            if i < self.workers.len() {
                let w = self.workers.remove(i);
                self.handle_death(&mut st, w);
            }
        }
        if !deaths.is_empty() {
            drop(st);
            self.publish_pids();
            st = shared.lock();
        }
        // Timeouts.
        if let Some(t) = self.timeout {
            let now = Instant::now();
            for w in &mut self.workers {
                let due = w.busy_since.checked_add(t).is_some_and(|d| now >= d);
                if !w.inflight.is_empty() && !w.timed_out && !w.dead && due {
                    log::warn!(
                        target: "mp_pool",
                        "worker {} (pid {}) overran the task timeout ({t:?}): it is killed",
                        w.name,
                        w.pid
                    );
                    w.timed_out = true;
                    w.kill();
                }
            }
        }
        if st.progress_due.is_some() {
            st.flush_progress(Instant::now());
        }
        self.shared.notify(st);
    }

    /// Reads up to `frames` frames that are waiting on worker `i`'s socket.
    fn read_frames(&mut self, i: usize, frames: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        let Some(w) = self.workers.get_mut(i) else { return out };
        for _ in 0..frames {
            if !os::poll::readable(w.sock.as_fd(), Some(Instant::now())).unwrap_or(false) {
                break;
            }
            match fdpass::recv_frame(w.sock.as_fd(), proto::MAX_FRAME) {
                Ok(Some(f)) => out.push(f),
                Ok(None) | Err(_) => {
                    // End of stream or garbage: the worker is finished either way.
                    w.kill();
                    break;
                }
            }
        }
        out
    }

    /// Fails or re-queues what a dead worker held. The results it finished and did not send
    /// are taken from its journal; the task it was running (known from its progress counter,
    /// which counts a task before its arguments are decoded) fails; the rest of the running
    /// task's chunk is queued again once; later chunks, never started, are queued again as
    /// they were. If no task was running, the next one to run gets a strike, and fails at its
    /// second ([`STRIKES`](crate::state::STRIKES)). Arguments are split by the boundaries
    /// recorded when they were encoded: no decoder of the caller's runs here.
    fn handle_death(&mut self, st: &mut State, mut w: WorkerH) {
        let code = w.status;
        if code == Some(-2) && st.failure.is_none() {
            log::warn!(target: "mp_pool", "worker {} (pid {}) got SIGINT: the pool stops", w.name, w.pid);
            st.failure = Some(Error::Interrupted);
            st.phase = Phase::Stopping;
        }
        w.recover_journal(st);
        // A worker that has done its `maxtasksperchild` exits on its own (the collector may
        // have killed it first, seeing its socket close before it was gone).
        let retired =
            w.inflight.is_empty() && self.spawner.maxtasks.is_some_and(|m| w.chunks_sent >= m);
        let reason = if w.timed_out {
            RestartReason::Timeout
        } else if retired {
            RestartReason::MaxTasks
        } else {
            RestartReason::Died { exitcode: code }
        };
        st.book.gone(w.slot, Some(reason));
        match reason {
            RestartReason::MaxTasks => log::debug!(
                target: "mp_pool",
                "worker {} (pid {}) retired at maxtasksperchild; it is replaced",
                w.name,
                w.pid
            ),
            _ => log::warn!(
                target: "mp_pool",
                "worker {} (pid {}) {reason} holding {} task(s); it is replaced",
                w.name,
                w.pid,
                w.inflight.iter().map(|ic| ic.chunk.count - ic.done).sum::<usize>()
            ),
        }
        let started = w
            .progress
            .atomic_u64(proto::SEG_STARTED)
            .map(|a| a.load(std::sync::atomic::Ordering::Acquire))
            .unwrap_or(w.received + 1);
        let running = started.checked_sub(w.received + 1);
        if let Some(why) = w.recv_failure.take() {
            // The worker could not receive its tasks: they fail with the reason rather than
            // go round again.
            let why = format!("the worker could not receive the task: {why}");
            for ic in std::mem::take(&mut w.inflight) {
                let c = &ic.chunk;
                for index in c.first + ic.done as u64..c.first + c.count as u64 {
                    st.record(c.job, index, Err(Error::serialization(why.clone())));
                }
            }
            return;
        }
        let err = if w.timed_out {
            Error::Timeout
        } else {
            Error::WorkerDied {
                pid: w.pid,
                signal: code.filter(|c| *c < 0).map(|c| -c),
                exitcode: code,
            }
        };
        let mut requeue: Vec<Chunk> = Vec::new();
        let pending: u64 = w.inflight.iter().map(|ic| (ic.chunk.count - ic.done) as u64).sum();
        let received = w
            .progress
            .atomic_u64(proto::SEG_RECEIVED)
            .map(|a| a.load(std::sync::atomic::Ordering::Acquire))
            .unwrap_or(0);
        // No task was running, and the worker died after it read the batch of the next task
        // and before it started any task of that batch: nothing can be blamed but that task,
        // which gets a strike. (A worker that dies between tasks it ran, before it reads its
        // next batch, gives no strike.)
        let mut strike = running.is_none_or(|r| r >= pending)
            && w.inflight
                .front()
                .is_some_and(|ic| ic.done == 0 && ic.starts_batch.is_some_and(|b| b <= received));
        let mut k = 0u64;
        for ic in std::mem::take(&mut w.inflight) {
            let base = ic.chunk.first + ic.done as u64;
            let (job, entry, was_requeued) = (ic.chunk.job, ic.chunk.entry, ic.chunk.requeued);
            // Strikes belong to a chunk's first task: they lapse once it has reported.
            let mut strikes = if ic.done == 0 { ic.chunk.strikes } else { 0 };
            let done = ic.done;
            let count = ic.chunk.count;
            // The items keep referring to the chunk's objects by their indices there.
            let objects = ic.chunk.objects.clone();
            let fresh = |first: u64, requeued: bool| {
                let mut c = Chunk::new(job, entry, first, requeued);
                c.objects = objects.clone();
                c
            };
            let items: Vec<Raw> = ic.chunk.into_raws().into_iter().skip(done).collect();
            // Items that cannot be told apart any more (a damaged payload) fail.
            for index in base + items.len() as u64..base + count.saturating_sub(done) as u64 {
                st.record(
                    job,
                    index,
                    Err(Error::serialization("a task's arguments were lost".into())),
                );
            }
            let mut run = fresh(base, was_requeued);
            let mut after_running = false;
            for (j, raw) in items.into_iter().enumerate() {
                let index = base + j as u64;
                if std::mem::take(&mut strike) {
                    strikes += 1;
                    if strikes >= crate::state::STRIKES {
                        st.record(job, index, Err(err.duplicate()));
                        run.first = index + 1;
                        strikes = 0;
                        k += 1;
                        continue;
                    }
                }
                if Some(k) == running {
                    let next = fresh(index + 1, true);
                    let mut before = std::mem::replace(&mut run, next);
                    if before.count > 0 {
                        before.strikes = strikes;
                        requeue.push(before);
                    }
                    strikes = 0;
                    st.record(job, index, Err(err.duplicate()));
                    after_running = true;
                } else if after_running && was_requeued {
                    st.record(job, index, Err(err.duplicate()));
                    run.first = index + 1;
                } else {
                    run.push_raw(raw);
                }
                k += 1;
            }
            if run.count > 0 {
                run.requeued = was_requeued || after_running;
                run.strikes = strikes;
                requeue.push(run);
            }
        }
        for c in requeue.into_iter().rev() {
            st.queue.push_front(c);
        }
    }

    /// Closed and drained: tells every worker to exit, waits for them, lets go of the zygote.
    fn finish(self) {
        let mut stop = Writer::default();
        stop.u8(proto::K_STOP);
        for w in &self.workers {
            let _ = stop.send(w.sock.as_fd());
        }
        self.wind_down();
    }

    /// Terminate: kills every worker, fails everything outstanding, lets go of the zygote.
    fn shutdown(self) {
        for w in &self.workers {
            w.kill();
        }
        {
            let mut st = self.shared.lock();
            let err = st.failure.as_ref().map_or(Error::Terminated, Error::duplicate);
            st.fail_all(&err);
        }
        self.shared.settle();
        self.wind_down();
    }

    /// The end of `finish` and `shutdown`: reaps the workers, stops the spawner, settles
    /// what is left and marks the pool stopped.
    fn wind_down(mut self) {
        self.reap();
        self.spawner.stop();
        self.shared.settle();
        let mut st = self.shared.lock();
        st.phase = Phase::Stopped;
        st.changed = true;
        self.shared.notify(st);
    }

    /// Waits (up to a bound) for every worker to exit, killing those that outlive it.
    fn reap(&mut self) {
        let end = Instant::now() + REAP_LIMIT;
        for w in &self.workers {
            let p = &w.process;
            if p.join_timeout(end.saturating_duration_since(Instant::now()))
                .ok()
                .flatten()
                .is_none()
            {
                let _ = p.kill();
                let _ = p.join();
            }
        }
        {
            // Their counters are final now.
            let mut st = self.shared.lock();
            for w in &self.workers {
                st.book.gone(w.slot, None);
            }
        }
        self.workers.clear();
        self.shared.lock().pids.clear();
    }
}

/// A frame as received: bytes and descriptors.
type Frame = (Vec<u8>, Vec<OwnedFd>);

/// The error a result entry that is not a value stands for.
fn single_failure(tag: u8, bytes: &[u8]) -> Slot {
    match tag {
        proto::T_PANIC => {
            let (message, traceback) =
                postcard::from_bytes::<(String, String)>(bytes).unwrap_or_default();
            Err(Error::Remote { message, traceback })
        }
        _ => Err(Error::serialization(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// One task's result from a journal record.
fn single_slot(tag: u8, bytes: Vec<u8>) -> Slot {
    match tag {
        proto::T_OK => Ok(Raw::new(bytes, Vec::new())),
        _ => single_failure(tag, &bytes),
    }
}

/// Records the results of a [`proto::K_RESULTS`] frame (read past its kind byte), each
/// entry once `accept` takes it (it is the next its worker owes); the count of tasks they
/// cover. Nothing is recorded from a frame that does not parse.
pub(crate) fn record_results(
    st: &mut State,
    mut r: Reader,
    mut accept: impl FnMut(&ResultEntry) -> Result<(), proto::Malformed>,
) -> Result<u64, proto::Malformed> {
    let n = r.u32()?;
    let mut entries = Vec::with_capacity((n as usize).min(1 << 16));
    let mut total = 0u64;
    for _ in 0..n {
        let e = ResultEntry::read(&mut r)?;
        total += e.tasks as u64;
        accept(&e)?;
        entries.push(e);
    }
    let buf = Arc::new(r.into_buf());
    let slot = |e: ResultEntry| {
        let range = e.start..e.start + e.len;
        let slot: Slot = match e.tag {
            proto::T_OK => Ok(Raw::in_buffer(&buf, range, e.fds)),
            proto::T_RUN | proto::T_SEQ => Ok(Raw::run_in_buffer(
                &buf,
                range,
                u32::try_from(e.tasks).unwrap_or(u32::MAX),
                e.tag == proto::T_SEQ,
            )),
            _ => single_failure(e.tag, buf.get(range).unwrap_or(&[])),
        };
        (e.index, slot)
    };
    // One look-up per run of results of the same job.
    let mut entries = entries.into_iter().peekable();
    while let Some(e) = entries.next() {
        let job = e.job;
        let mut run = vec![slot(e)];
        while let Some(e) = entries.next_if(|e| e.job == job) {
            run.push(slot(e));
        }
        st.record_run(job, run.into_iter());
    }
    Ok(total)
}

/// Handles one frame from worker `w`.
fn handle_frame(
    st: &mut State,
    w: &mut WorkerH,
    (bytes, fds): (Vec<u8>, Vec<OwnedFd>),
    ema: &mut Option<Duration>,
) -> std::result::Result<(), proto::Malformed> {
    let mut r = Reader::new(bytes, fds);
    match r.u8()? {
        proto::K_RESULTS => {
            let total = record_results(st, r, |e| {
                if e.tag == proto::T_SEQ && w.inflight.front().is_none_or(|f| !f.chunk.seq_results)
                {
                    return Err(proto::Malformed);
                }
                w.accept(e.job, e.index, e.tasks)
            })?;
            let now = Instant::now();
            if total > 0 {
                // The time per task (not per entry: a run holds many).
                let per = now.saturating_duration_since(w.busy_since)
                    / u32::try_from(total).unwrap_or(u32::MAX);
                *ema = Some(match *ema {
                    None => per,
                    Some(e) => e.saturating_mul(3).saturating_add(per) / 4,
                });
            }
            w.busy_since = now;
            Ok(())
        }
        proto::K_RECV_FAILED => {
            w.recv_failure = Some(r.rest_text());
            Ok(())
        }
        proto::K_INIT_FAILED => {
            if st.failure.is_none() {
                st.failure = Some(Error::Initializer(r.rest_text()));
                st.phase = Phase::Stopping;
            }
            Ok(())
        }
        _ => Err(proto::Malformed),
    }
}
