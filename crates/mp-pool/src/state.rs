//! The state a pool shares between its callers and its collector thread: the queue of chunks
//! not yet handed to a worker, and the jobs whose results are awaited.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use mp_process::fdpass::{self, ObjectList};
use mp_process::wire::WireError;
use rustix::process::Pid;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::insights::Book;
use crate::jobs::JobTable;
use crate::progress::{JobProgress, Pending, Progress};

/// An encoded value and the descriptors it carries. The bytes are a range of a buffer that
/// may hold other values too (a whole results frame), so that results need no copy each.
#[derive(Debug)]
pub(crate) struct Raw {
    buf: Arc<Vec<u8>>,
    range: Range<usize>,
    pub fds: Vec<OwnedFd>,
    /// 0 for one value; otherwise the bytes are a run of this many values, each a varint
    /// length and the value's bytes, or (`seq`) the values' bytes back to back.
    run: u32,
    /// The run's values have no lengths: only their type tells where each ends.
    seq: bool,
}

impl Raw {
    /// A value that owns its bytes.
    pub fn new(bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Raw {
        let range = 0..bytes.len();
        Raw { buf: Arc::new(bytes), range, fds, run: 0, seq: false }
    }

    /// A value that is `range` of a shared buffer.
    pub fn in_buffer(buf: &Arc<Vec<u8>>, range: Range<usize>, fds: Vec<OwnedFd>) -> Raw {
        Raw { buf: buf.clone(), range, fds, run: 0, seq: false }
    }

    /// A run of `count` values (see [`Raw::run`]) that is `range` of a shared buffer; `seq`
    /// if the values have no length prefixes.
    pub fn run_in_buffer(buf: &Arc<Vec<u8>>, range: Range<usize>, count: u32, seq: bool) -> Raw {
        Raw { buf: buf.clone(), range, fds: Vec::new(), run: count, seq }
    }

    /// Whether this is a run whose values can only be told apart by decoding them.
    pub fn is_seq(&self) -> bool {
        self.seq && self.run > 0
    }

    /// How many tasks' results this holds.
    pub fn tasks(&self) -> u64 {
        u64::from(self.run.max(1))
    }

    /// The values of a run (or the one value), as byte ranges of the buffer.
    pub fn value_ranges(&self) -> Vec<Range<usize>> {
        if self.run == 0 {
            return vec![self.range.clone()];
        }
        let mut out = Vec::with_capacity(self.run as usize);
        let mut pos = self.range.start;
        for _ in 0..self.run {
            let Some(len) = crate::proto::get_varint(&self.buf, &mut pos) else { break };
            let end =
                pos.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(self.range.end);
            out.push(pos..end);
            pos = end;
        }
        out
    }

    /// Decodes every value (of a run, or the one value) into `out`, one result per task: a
    /// value that does not decode is an error, and so is every value of a run without lengths
    /// after it (nothing tells where they start).
    pub fn decode_each<T: DeserializeOwned>(&self, out: &mut VecDeque<Result<T>>) {
        if self.run == 0 {
            out.push_back(self.decode());
            return;
        }
        if self.seq {
            let mut rest = self.bytes();
            for k in 0..self.run {
                match postcard::take_from_bytes::<T>(rest) {
                    Ok((value, tail)) => {
                        out.push_back(Ok(value));
                        rest = tail;
                    }
                    Err(e) => {
                        let e: Error = WireError::Decode(e).into();
                        out.extend((k..self.run).map(|_| Err(e.duplicate())));
                        return;
                    }
                }
            }
            return;
        }
        let ranges = self.value_ranges();
        let missing = (self.run as usize).saturating_sub(ranges.len());
        for r in ranges {
            out.push_back(
                crate::proto::decode(self.buf.get(r).unwrap_or(&[]), Vec::new())
                    .map_err(Error::from),
            );
        }
        let e = Error::serialization("a result run ended early".into());
        out.extend((0..missing).map(|_| Err(e.duplicate())));
    }

    /// Decodes every value (of a run, or the one value).
    pub fn decode_all<T: DeserializeOwned>(&self, out: &mut Vec<T>) -> Result<()> {
        if self.run == 0 {
            out.push(self.decode()?);
            return Ok(());
        }
        if self.seq {
            let mut rest = self.bytes();
            for _ in 0..self.run {
                let (value, tail) =
                    postcard::take_from_bytes::<T>(rest).map_err(WireError::Decode)?;
                out.push(value);
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(WireError::TrailingBytes { extra: rest.len() }.into());
            }
            return Ok(());
        }
        for r in self.value_ranges() {
            out.push(crate::proto::decode(self.buf.get(r).unwrap_or(&[]), Vec::new())?);
        }
        Ok(())
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        self.buf.get(self.range.clone()).unwrap_or(&[])
    }

    /// Decodes the value (the first of a run); the descriptors are duplicated, so the raw
    /// form stays intact.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        if self.is_seq() {
            let (value, _) =
                postcard::take_from_bytes::<T>(self.bytes()).map_err(WireError::Decode)?;
            return Ok(value);
        }
        if self.run > 0 {
            let r = self.value_ranges().into_iter().next().unwrap_or(0..0);
            return Ok(crate::proto::decode(self.buf.get(r).unwrap_or(&[]), Vec::new())?);
        }
        let fds = self.dup_fds()?;
        Ok(crate::proto::decode(self.bytes(), fds)?)
    }

    /// Duplicates of the descriptors.
    pub fn dup_fds(&self) -> Result<Vec<OwnedFd>> {
        self.fds.iter().map(|fd| fd.try_clone().map_err(|e| Error::io("dup", e))).collect()
    }
}

/// One task's outcome in its encoded form.
pub(crate) type Slot = Result<Raw, Error>;

/// Where a job keeps its results.
#[derive(Debug)]
pub(crate) enum Store {
    /// The one result of a one-task job (`apply`, `apply_async`): no map, so no node
    /// allocated per call.
    One(Option<Slot>),
    /// By index, for jobs whose length is known up front (`apply`, `map`).
    Dense(BTreeMap<u64, Slot>, usize),
    /// Results not yet taken, by index (`imap`, `imap_unordered`).
    Sparse(BTreeMap<u64, Slot>),
}

/// Called once when a job completes, with its results, or with why it failed as a whole.
pub(crate) type Callback = Box<dyn FnOnce(&Store, Option<&Error>) + Send>;

/// A job: one `apply`, `map` or `imap` call.
pub(crate) struct Job {
    pub store: Store,
    /// How many results there will be, once known.
    pub expected: Option<u64>,
    /// How many results have arrived.
    pub received: u64,
    /// Every result is in (or the job failed) and its callback has run.
    pub complete: bool,
    /// Why the job failed as a whole (the pool stopped), if it did.
    pub failed: Option<Error>,
    /// The task waiting for this job, if it is awaited.
    pub waker: Option<Waker>,
    pub callback: Option<Callback>,
    /// Its handle is gone: drop the job once it completes.
    pub abandoned: bool,
    /// When the call was made.
    pub created: std::time::Instant,
    /// How many of the results that arrived are errors.
    pub failures: u64,
    /// Where its progress is reported, if anywhere.
    pub progress: Option<Box<JobProgress>>,
}

impl Job {
    pub fn new(store: Store, expected: Option<u64>) -> Job {
        Job {
            store,
            expected,
            received: 0,
            complete: false,
            failed: None,
            waker: None,
            callback: None,
            abandoned: false,
            created: std::time::Instant::now(),
            failures: 0,
            progress: None,
        }
    }

    /// Whether every result has arrived.
    pub fn all_in(&self) -> bool {
        self.failed.is_some() || self.expected.is_some_and(|n| self.received >= n)
    }
}

/// How many workers may die holding a chunk as the next one to run, with no task of it known
/// to have started, before its first task is failed with `WorkerDied` (loky's and pebble's
/// rule: a task that kills two workers is not tried again).
pub(crate) const STRIKES: u8 = 2;

/// A run of consecutive tasks of one job, handed to one worker as a unit.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub job: u64,
    /// The index of the first task within its job.
    pub first: u64,
    /// The task's entry (offset and tag).
    pub entry: crate::proto::TaskEntry,
    /// The encoded arguments, as they are sent: one blob after another (a header, see
    /// `proto::put_blob_header`, and the bytes), or with `seq`, the bare values back to back.
    pub payload: Vec<u8>,
    /// With `seq`, where each item's bytes end in `payload`, recorded as they are encoded:
    /// the parent splits a chunk again without decoding its items (a user's decoder never
    /// runs in the parent).
    pub ends: Vec<u32>,
    /// The descriptors of every item, in order (never with `seq`).
    pub fds: Vec<OwnedFd>,
    /// The shared objects its items refer to (by their index here): defined to each worker
    /// once, by the collector, before the first chunk that refers to them.
    pub objects: ObjectList,
    /// While it is built: an item went through the object-recording encoder (so the next
    /// ones skip the plain attempt).
    pub with_objects: bool,
    /// The number of items.
    pub count: usize,
    /// This is the rest of a chunk whose worker died: it is not re-queued again.
    pub requeued: bool,
    /// How many workers died holding this chunk as the next one to run without having started
    /// any task (so no task could be blamed): at [`STRIKES`], its first task fails.
    pub strikes: u8,
    /// The arguments are bare postcard values back to back (none holds a descriptor).
    pub seq: bool,
    /// The job keeps its results by index, so the worker may send them as a run without
    /// lengths.
    pub seq_results: bool,
}

impl Chunk {
    /// An empty chunk of `job` starting at task `first`, its items in blob form.
    pub fn new(job: u64, entry: crate::proto::TaskEntry, first: u64, requeued: bool) -> Chunk {
        Chunk {
            job,
            first,
            entry,
            payload: Vec::new(),
            ends: Vec::new(),
            fds: Vec::new(),
            objects: ObjectList::default(),
            with_objects: false,
            count: 0,
            requeued,
            strikes: 0,
            seq: false,
            seq_results: false,
        }
    }

    /// Counts `tasks` results of `job` from task `index` on into `done` (how many of the
    /// chunk's tasks have reported), if they are the next ones the chunk expects.
    pub fn take_results(
        &self,
        done: &mut usize,
        job: u64,
        index: u64,
        tasks: usize,
    ) -> Result<(), crate::proto::Malformed> {
        let next = self.first.checked_add(*done as u64);
        if self.job != job || next != Some(index) || tasks == 0 || *done + tasks > self.count {
            return Err(crate::proto::Malformed);
        }
        *done += tasks;
        Ok(())
    }

    /// Appends the chunk to a batch frame: its header and payload (its descriptors go beside
    /// the frame).
    pub fn write_to(&self, out: &mut crate::proto::Writer) {
        let header = crate::proto::ChunkHeader {
            job: self.job,
            first: self.first,
            entry: self.entry,
            count: u32::try_from(self.count).unwrap_or(u32::MAX),
            form: self.form(),
            len: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
        };
        header.write(out, self.objects.ids());
        out.buf.extend_from_slice(&self.payload);
    }

    /// The flags the worker reads: bit 0, the arguments are bare values back to back; bit 1,
    /// the results may be sent as a run without lengths.
    pub fn form(&self) -> u8 {
        let mut form = 0;
        if self.seq {
            form |= crate::proto::F_SEQ_ARGS;
        }
        if self.seq_results {
            form |= crate::proto::F_SEQ_RESULTS;
        }
        form
    }

    /// Appends the bare encoding of `value` to a chunk in `seq` form: true if it did, false
    /// (with nothing appended) if the value holds descriptors or does not serialise, an error
    /// if it is too large. A value that refers to shared objects stays bare: the objects are
    /// recorded in `session` (whose list becomes [`Chunk::objects`] when the chunk closes).
    pub fn push_seq<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
        session: &mut fdpass::EncodeSession,
    ) -> Result<bool> {
        let start = self.payload.len();
        let too_large = || Error::serialization(crate::proto::too_large_message("argument"));
        // Plain postcard first, unless the chunk's items are known to refer to objects.
        if !self.with_objects {
            let out = crate::proto::Append::new(&mut self.payload);
            match postcard::serialize_with_flavor(value, out) {
                Ok(()) => return Ok(self.pushed_seq()),
                Err(e) if crate::proto::too_large(&e) => {
                    self.payload.truncate(start);
                    return Err(too_large());
                }
                Err(_) => self.payload.truncate(start),
            }
        }
        match session.encode(value, crate::proto::Append::new(&mut self.payload)) {
            Ok(((), fds)) if fds.is_empty() => {
                self.with_objects = true;
                Ok(self.pushed_seq())
            }
            Err(WireError::Encode(e)) if crate::proto::too_large(&e) => {
                self.payload.truncate(start);
                Err(too_large())
            }
            // Descriptors of its own (a blob), or an error (which the blob form reports).
            Ok(_) | Err(_) => {
                self.payload.truncate(start);
                Ok(false)
            }
        }
    }

    /// Counts the bare item just appended; true.
    fn pushed_seq(&mut self) -> bool {
        self.count += 1;
        // A chunk is closed at `SOFT_FRAME` bytes, far below 4 GiB.
        self.ends.push(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        true
    }

    /// Appends the encoding of `value` as a blob, its objects recorded in `session`; on failure
    /// nothing is appended.
    pub fn push<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
        session: &mut fdpass::EncodeSession,
    ) -> Result<()> {
        match crate::proto::put_prefixed(&mut self.payload, value, true) {
            Ok(()) => {
                self.count += 1;
                Ok(())
            }
            Err(e) if crate::proto::too_large(&e) => {
                Err(Error::serialization(crate::proto::too_large_message("argument")))
            }
            Err(_) => {
                // A value holding descriptors or objects (or one that does not serialise,
                // which fails again here).
                let (bytes, fds) = session.encode(value, postcard::ser_flavors::AllocVec::new())?;
                self.with_objects = true;
                if bytes.len() > crate::proto::MAX_VALUE {
                    return Err(Error::serialization(crate::proto::too_large_message("argument")));
                }
                self.push_raw(Raw::new(bytes, fds));
                Ok(())
            }
        }
    }

    /// Appends an encoded item (to a chunk in blob form).
    pub fn push_raw(&mut self, raw: Raw) {
        crate::proto::put_blob_header(&mut self.payload, raw.bytes().len(), raw.fds.len());
        self.payload.extend_from_slice(raw.bytes());
        self.fds.extend(raw.fds);
        self.count += 1;
    }

    /// The items, split apart again (to re-queue part of a chunk) by the boundaries recorded
    /// when they were encoded, never by decoding them. Fewer than `count` only if the payload
    /// is damaged, which cannot happen to a chunk this process encoded.
    pub fn into_raws(self) -> Vec<Raw> {
        if self.seq {
            let mut start = 0usize;
            return self
                .ends
                .iter()
                .map(|&end| {
                    let end = end as usize;
                    let raw =
                        Raw::new(self.payload.get(start..end).unwrap_or(&[]).to_vec(), Vec::new());
                    start = end;
                    raw
                })
                .collect();
        }
        let mut r = crate::proto::Reader::new(self.payload, self.fds);
        (0..self.count)
            .map_while(|_| r.blob().ok())
            .map(|(bytes, fds)| Raw::new(bytes, fds))
            .collect()
    }
}

/// Where the pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// No new calls; the workers finish what was submitted, then exit.
    Closed,
    /// Terminate: kill the workers, fail what is outstanding.
    Stopping,
    /// The collector has finished; every worker is gone.
    Stopped,
}

/// The state behind [`Shared::state`].
pub(crate) struct State {
    pub queue: VecDeque<Chunk>,
    /// By job id (consecutive numbers, hashed by a multiplication).
    pub jobs: JobTable<Job>,
    pub next_job: u64,
    pub phase: Phase,
    /// Why the pool stopped on its own (interrupted, initializer failure), if it did.
    pub failure: Option<Error>,
    /// `imap` iterators that may still submit tasks (they keep a closed pool going).
    pub feeders: usize,
    /// The pids of the current workers.
    pub pids: Vec<u32>,
    /// Jobs whose results are all in and whose callback is still to run.
    pub to_settle: Vec<u64>,
    /// Threads waiting on [`Shared::cv`].
    pub waiters: usize,
    /// Something a waiter may be waiting for happened since the last notification.
    pub changed: bool,
    /// Progress updates to deliver outside the lock ([`Shared::settle`]), in order.
    pub progress_out: Vec<Pending>,
    /// When a progress update held back by its interval is due, if one is.
    pub progress_due: Option<std::time::Instant>,
    /// What the pool's insights are made of.
    pub book: Book,
}

impl State {
    /// Records one result; queues the job for settling when it was the last one.
    pub fn record(&mut self, job: u64, index: u64, slot: Slot) {
        self.record_run(job, std::iter::once((index, slot)));
    }

    /// Records results of one job.
    pub fn record_run(&mut self, job: u64, slots: impl Iterator<Item = (u64, Slot)>) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.complete {
            return;
        }
        let received = j.received;
        for (index, slot) in slots {
            let tasks = slot.as_ref().map_or(1, Raw::tasks);
            let failed = u64::from(slot.is_err());
            match &mut j.store {
                Store::One(one) => {
                    if index == 0 && one.is_none() {
                        *one = Some(slot);
                        j.received += tasks;
                        j.failures += failed;
                    }
                }
                Store::Dense(m, _) => {
                    // A run stays whole, at the index of its first task.
                    if m.insert(index, slot).is_none() {
                        j.received += tasks;
                        j.failures += failed;
                    }
                }
                Store::Sparse(m) => {
                    // A run stays whole too: the iterator that takes it splits it.
                    m.insert(index, slot);
                    j.received += tasks;
                    j.failures += failed;
                }
            }
        }
        if let Some(p) = &mut j.progress {
            if j.received != received {
                match p.tick(j.received, j.failures, j.expected) {
                    Ok(update) => self.progress_out.push(update),
                    Err(due) => {
                        self.progress_due = Some(self.progress_due.map_or(due, |d| d.min(due)))
                    }
                }
            }
        }
        if let Some(w) = &j.waker {
            w.wake_by_ref();
        }
        self.changed = true;
        if j.all_in() {
            self.to_settle.push(job);
        }
    }

    /// Takes the progress updates held back by their interval that are due at `now`, and sets
    /// when the next is due.
    pub fn flush_progress(&mut self, now: std::time::Instant) {
        if self.progress_due.is_none_or(|d| d > now) {
            return;
        }
        let mut next: Option<std::time::Instant> = None;
        for j in self.jobs.values_mut() {
            let Some(p) = &mut j.progress else { continue };
            match p.due(j.received, j.failures, j.expected, now) {
                Ok(update) => self.progress_out.push(update),
                Err(Some(due)) => next = Some(next.map_or(due, |d| d.min(due))),
                Err(None) => {}
            }
        }
        self.progress_due = next;
    }

    /// Reports job `id`'s progress to `progress` from now on (replacing where it went), with
    /// `hint` as its total until its input has ended.
    /// With `announce`, the first update is made at once (else with the first result).
    pub fn attach_progress(
        &mut self,
        id: u64,
        progress: &Progress,
        hint: Option<u64>,
        announce: bool,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else { return };
        j.progress = progress.start(id, hint, j.created).map(Box::new);
        if let Some(p) = &mut j.progress {
            if announce || j.complete {
                self.progress_out.extend(p.now(j.received, j.failures, j.expected, j.complete));
            }
        }
    }

    /// Makes the last progress update of job `id`, whose handle is gone, if not made yet.
    pub fn end_progress(&mut self, id: u64) {
        let Some(j) = self.jobs.get_mut(&id) else { return };
        if let Some(p) = &mut j.progress {
            self.progress_out.extend(p.now(j.received, j.failures, j.expected, true));
        }
    }

    /// Whether new calls are refused, and with what.
    pub fn refuse(&self) -> Option<Error> {
        if let Some(f) = &self.failure {
            return Some(f.duplicate());
        }
        match self.phase {
            Phase::Running => None,
            _ => Some(Error::Closed),
        }
    }

    /// Fails every job that is not complete with `err` (the pool is stopping).
    pub fn fail_all(&mut self, err: &Error) {
        self.queue.clear();
        let ids: Vec<u64> = self.jobs.iter().filter(|(_, j)| !j.complete).map(|(k, _)| k).collect();
        for id in ids {
            if let Some(j) = self.jobs.get_mut(&id) {
                if j.failed.is_none() && !j.all_in() {
                    j.failed = Some(err.duplicate());
                }
                if !self.to_settle.contains(&id) {
                    self.to_settle.push(id);
                }
            }
        }
    }
}

/// What a pool's handles and its collector share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Notified whenever results arrive or the phase changes.
    pub cv: Condvar,
    /// An eventfd that wakes the collector.
    pub doorbell: OwnedFd,
    /// The process that made the pool.
    pub creator: Pid,
    /// The number of workers.
    pub processes: usize,
    /// The collector may be waiting in `poll` (see [`Shared::ring_if_sleeping`]).
    pub sleeping: AtomicBool,
    /// Where bulk calls report their progress unless told otherwise.
    pub progress: Option<Progress>,
    /// Held by the thread delivering progress updates, so that they arrive in order.
    pub delivering: Mutex<()>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a notification (see [`Shared::notify`]).
    pub fn wait<'a>(&self, mut g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        g.waiters += 1;
        let mut g = self.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        g.waiters -= 1;
        g
    }

    /// Waits for a notification, at most `timeout`.
    pub fn wait_timeout<'a>(
        &self,
        mut g: MutexGuard<'a, State>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, State> {
        g.waiters += 1;
        let mut g =
            self.cv.wait_timeout(g, timeout).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        g.waiters -= 1;
        g
    }

    /// Wakes the threads waiting in [`Shared::wait`], if there are any and something changed.
    pub fn notify(&self, mut g: MutexGuard<'_, State>) {
        let wake = g.waiters > 0 && std::mem::take(&mut g.changed);
        drop(g);
        if wake {
            self.cv.notify_all();
        }
    }

    /// Delivers the progress updates made so far, outside the state lock and in order: one
    /// thread delivers at a time (the others leave it their updates), and it looks again after
    /// letting go, so that no update is left behind. A callback that calls into the pool (and
    /// so here) leaves its updates to the thread already delivering.
    pub fn deliver_progress(&self) {
        self.deliver_progress_with(false);
    }

    /// [`Shared::deliver_progress`]; with `wait`, waits for another thread delivering to finish
    /// and delivers what is left, so that every update made so far has been delivered when it
    /// returns (unless it is called from a progress callback, whose thread delivers them
    /// after the callback returns).
    pub fn deliver_progress_with(&self, wait: bool) {
        thread_local! {
            /// This thread is delivering progress updates (a callback called into the pool).
            static DELIVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if DELIVERING.with(std::cell::Cell::get) {
            return;
        }
        loop {
            let turn = if wait {
                self.delivering.lock().unwrap_or_else(PoisonError::into_inner)
            } else {
                match self.delivering.try_lock() {
                    Ok(g) => g,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return,
                }
            };
            DELIVERING.with(|d| d.set(true));
            loop {
                let updates = std::mem::take(&mut self.lock().progress_out);
                if updates.is_empty() {
                    break;
                }
                crate::progress::deliver(updates);
            }
            DELIVERING.with(|d| d.set(false));
            drop(turn);
            if self.lock().progress_out.is_empty() {
                return;
            }
        }
    }

    /// Wakes the collector.
    pub fn ring(&self) {
        mp_process::os::eventfd::ring(self.doorbell.as_fd());
    }

    /// Wakes the collector if it may be asleep with nothing to do: after new chunks were
    /// queued. The collector sets `sleeping` under the state lock before it last looks at the
    /// queue, so a chunk queued after that look always rings.
    pub fn ring_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.ring();
        }
    }

    /// An error if the caller is not the process that made the pool.
    pub fn check_process(&self) -> Result<()> {
        let me = mp_process::os::pid();
        let creator = self.creator.as_raw_nonzero().get().unsigned_abs();
        if me != creator {
            return Err(Error::WrongProcess { creator, current: me });
        }
        Ok(())
    }

    /// Runs the callbacks of jobs whose results are all in, outside the lock and under
    /// `catch_unwind`, then marks those jobs complete and wakes their waiters.
    pub fn settle(&self) {
        loop {
            let mut g = self.lock();
            let Some(id) = g.to_settle.pop() else {
                let deliver = !g.progress_out.is_empty();
                self.notify(g);
                if deliver {
                    self.deliver_progress();
                }
                break;
            };
            let Some(job) = g.jobs.get_mut(&id) else { continue };
            if job.complete {
                continue;
            }
            if let Some(cb) = job.callback.take() {
                let store = std::mem::replace(&mut job.store, Store::One(None));
                let failed = job.failed.as_ref().map(Error::duplicate);
                drop(g);
                let _ = catch_unwind(AssertUnwindSafe(|| cb(&store, failed.as_ref())));
                g = self.lock();
                if let Some(job) = g.jobs.get_mut(&id) {
                    job.store = store;
                }
            }
            // The last progress update is delivered before the result is ready, as callbacks
            // run before it.
            let last = g.jobs.get_mut(&id).and_then(|job| {
                let p = job.progress.as_mut()?;
                p.now(job.received, job.failures, job.expected, true)
            });
            if let Some(last) = last {
                g.progress_out.push(last);
                drop(g);
                self.deliver_progress_with(true);
                g = self.lock();
            }
            if let Some(job) = g.jobs.get_mut(&id) {
                job.complete = true;
                if let Some(w) = job.waker.take() {
                    w.wake();
                }
                if job.abandoned {
                    g.jobs.remove(&id);
                }
            }
            g.changed = true;
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// A run of bare values decodes back.
        #[test]
        fn bare_runs_round_trip(values in proptest::collection::vec(any::<(u64, String)>(), 1..30)) {
            let mut bytes = Vec::new();
            for v in &values {
                postcard::serialize_with_flavor(v, crate::proto::Append::new(&mut bytes)).unwrap();
            }
            let buf = Arc::new(bytes);
            let raw = Raw::run_in_buffer(&buf, 0..buf.len(), values.len() as u32, true);
            let mut out: Vec<(u64, String)> = Vec::new();
            raw.decode_all(&mut out).unwrap();
            prop_assert_eq!(&out, &values);
        }

        /// Garbage in a run is an error (or wrong values of the right type), never a panic.
        #[test]
        fn garbage_runs_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100), count in 0u32..20) {
            let buf = Arc::new(bytes);
            let raw = Raw::run_in_buffer(&buf, 0..buf.len(), count, true);
            let mut out: Vec<(u8, String)> = Vec::new();
            let _ = raw.decode_all(&mut out);
            let _ = raw.decode::<(u8, String)>();
            let raw = Raw::run_in_buffer(&buf, 0..buf.len(), count, false);
            let _ = raw.decode_all(&mut out);
        }
    }
}
