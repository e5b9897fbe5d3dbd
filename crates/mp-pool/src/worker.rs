//! The worker side: the worker's main loop, and the code that runs a task's chunks.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mp_process::Process;
use mp_process::code::{Body, Callable, Entry};
use mp_process::fdpass::{self, PassFd};
use mp_process::wire::WireError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, panic_message};
use crate::meter::{Mark, Meter};
use crate::proto::{self, ChunkHeader, Reader, WorkerBoot, Writer};
use crate::task::Task;

/// How long a worker may hold finished results before sending them (measured with the coarse
/// monotonic clock, read every [`CLOCK_EVERY`] tasks), besides sending them at the end of
/// every batch.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(1);

/// How many tasks a worker finishes between looks at the clock (a look costs about as much
/// as a small task's bookkeeping).
const CLOCK_EVERY: u32 = 8;

/// The coarse monotonic clock (a few milliseconds of resolution).
pub(crate) fn coarse_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(t.tv_sec.unsigned_abs(), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// The tag, bytes and descriptors of a task's entry that is not part of a run.
fn single(outcome: Outcome) -> (u8, Vec<u8>, Vec<OwnedFd>) {
    match outcome {
        Outcome::Owned(bytes, fds) => (proto::T_OK, bytes, fds),
        Outcome::Panic { message, traceback } => {
            let bytes = postcard::to_stdvec(&(message, traceback)).unwrap_or_default();
            (proto::T_PANIC, bytes, Vec::new())
        }
        Outcome::EncodeResult(m) => (proto::T_ENCODE, m.into_bytes(), Vec::new()),
        Outcome::DecodeArgs(m) => (proto::T_DECODE, m.into_bytes(), Vec::new()),
    }
}

/// The worker's side of its shared segment (see [`proto::SEG_STARTED`]): the count of tasks
/// it started, and the journal of results it has not sent, written a word at a time.
pub(crate) struct Journal {
    started: Option<&'static AtomicU64>,
    received: Option<&'static AtomicU64>,
    published: Option<&'static AtomicU64>,
    /// The journal's words (the segment lives as long as the worker process).
    words: &'static [AtomicU64],
    /// The journal's length in bytes (a multiple of 8), as published.
    len: usize,
    /// The task the next result record is implicitly for.
    next: Option<(u64, u64)>,
    /// A record being put together.
    scratch: Vec<u8>,
}

impl Journal {
    /// The journal in `shm`, the worker's segment.
    fn new(shm: &'static mp_shm::SharedMemory) -> Journal {
        let words = (proto::SEG_SIZE - proto::SEG_JOURNAL) / 8;
        Journal {
            started: shm.atomic_u64(proto::SEG_STARTED).ok(),
            received: shm.atomic_u64(proto::SEG_RECEIVED).ok(),
            published: shm.atomic_u64(proto::SEG_JOURNAL_LEN).ok(),
            words: shm.atomic_u64s(proto::SEG_JOURNAL, words).unwrap_or(&[]),
            len: 0,
            next: None,
            scratch: Vec::new(),
        }
    }

    /// Publishes the count of tasks started.
    pub(crate) fn started(&self, n: u64) {
        if let Some(a) = self.started {
            a.store(n, Ordering::Release);
        }
    }

    /// Publishes the count of batches read off the socket.
    pub(crate) fn received(&self, n: u64) {
        if let Some(a) = self.received {
            a.store(n, Ordering::Release);
        }
    }

    /// Keeps the result of task `index` of `job` (`tag` and bytes, no descriptors) until it is
    /// sent; false if it does not fit, and then it must be sent now.
    pub(crate) fn record(&mut self, job: u64, index: u64, tag: u8, bytes: &[u8]) -> bool {
        let mut at = self.len / 8;
        if self.next != Some((job, index)) {
            let [Some(a), Some(b), Some(c)] = [0, 1, 2].map(|k| self.words.get(at + k)) else {
                return false;
            };
            a.store(u64::from(proto::J_TASK), Ordering::Relaxed);
            b.store(job, Ordering::Relaxed);
            c.store(index, Ordering::Relaxed);
            at += 3;
        }
        if bytes.len() <= 6 {
            // The common case: one word.
            let Some(w) = self.words.get(at) else { return false };
            let mut word = u64::from(tag | proto::J_SMALL) | (bytes.len() as u64) << 8;
            for (k, &b) in bytes.iter().enumerate() {
                word |= u64::from(b) << (16 + 8 * k);
            }
            w.store(word, Ordering::Relaxed);
            at += 1;
        } else {
            self.scratch.clear();
            self.scratch.push(tag);
            proto::put_varint(&mut self.scratch, bytes.len() as u64);
            self.scratch.extend_from_slice(bytes);
            let n = self.scratch.len().next_multiple_of(8);
            self.scratch.resize(n, 0);
            let Some(ws) = self.words.get(at..at + n / 8) else { return false };
            for (w, chunk) in ws.iter().zip(self.scratch.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                w.store(u64::from_le_bytes(b), Ordering::Relaxed);
            }
            at += n / 8;
        }
        self.publish(at * 8);
        self.next = Some((job, index.wrapping_add(1)));
        true
    }

    /// Empties the journal (its results were sent).
    pub(crate) fn clear(&mut self) {
        if self.len > 0 {
            self.publish(0);
        }
        self.next = None;
    }

    fn publish(&mut self, len: usize) {
        self.len = len;
        if let Some(a) = self.published {
            a.store(len as u64, Ordering::Release);
        }
    }
}

/// A results frame being filled.
pub(crate) struct Results {
    pub(crate) out: Writer,
    /// Entries in the frame.
    count: u32,
    since: Duration,
    /// The open run: where its header starts, and how many values it holds.
    run: Option<(usize, u32)>,
}

impl Results {
    fn new() -> Results {
        let mut r = Results { out: Writer::default(), count: 0, since: coarse_now(), run: None };
        r.reset();
        r
    }
    fn reset(&mut self) {
        self.out.clear();
        self.out.u8(proto::K_RESULTS);
        self.out.u32(0);
        self.count = 0;
        self.since = coarse_now();
    }
    /// Opens a run at task `index` of `job` unless one is open: values without lengths if
    /// `bare` (a [`proto::T_SEQ`] run).
    pub(crate) fn open_run(&mut self, job: u64, index: u64, bare: bool) {
        if self.run.is_none() {
            let at = self.out.buf.len();
            self.out.u64(job);
            self.out.u64(index);
            self.out.u8(if bare { proto::T_SEQ } else { proto::T_RUN });
            self.out.u32(0);
            self.out.u32(0);
            self.run = Some((at, 0));
        }
    }

    /// Closes the open run: its count and length are filled in, or it is removed if empty.
    pub(crate) fn close_run(&mut self) {
        let Some((at, values)) = self.run.take() else { return };
        if values == 0 {
            self.out.buf.truncate(at);
            return;
        }
        let body = at + 17 + 8;
        let len = u32::try_from(self.out.buf.len().saturating_sub(body)).unwrap_or(u32::MAX);
        if let Some(slot) = self.out.buf.get_mut(at + 17..at + 21) {
            slot.copy_from_slice(&values.to_le_bytes());
        }
        if let Some(slot) = self.out.buf.get_mut(at + 21..at + 25) {
            slot.copy_from_slice(&len.to_le_bytes());
        }
        self.count += 1;
    }

    /// Counts a value appended to the open run.
    pub(crate) fn written(&mut self) {
        if let Some((_, values)) = &mut self.run {
            *values += 1;
        }
    }

    /// Records the outcome of task `index` of `job` (not a value of the open run), and keeps
    /// it in `journal` unless it holds descriptors; false if it must be sent now.
    fn outcome(
        &mut self,
        job: u64,
        index: u64,
        outcome: Outcome,
        journal: Option<&mut Journal>,
    ) -> bool {
        self.close_run();
        self.out.u64(job);
        self.out.u64(index);
        let (tag, bytes, fds) = single(outcome);
        let kept = fds.is_empty() && journal.is_none_or(|j| j.record(job, index, tag, &bytes));
        self.out.u8(tag);
        self.out.blob(&bytes, fds);
        self.count += 1;
        kept
    }

    /// Closes the frame: false if it holds nothing to send.
    fn seal(&mut self) -> bool {
        self.close_run();
        if let Some(slot) = self.out.buf.get_mut(1..5) {
            slot.copy_from_slice(&self.count.to_le_bytes());
        }
        self.count > 0
    }
}

/// The worker process: runs the initializer, then batches of chunks until told to stop, its
/// socket closes, or it has done `maxtasks` chunks.
pub(crate) fn worker_main(sock: PassFd, boot: WorkerBoot) {
    let sock = sock.into_inner();
    install_panic_hook();
    // The segment is kept for the rest of the worker's life.
    let segment: &'static mp_shm::SharedMemory = Box::leak(Box::new(boot.progress));
    #[cfg(feature = "failpoints")]
    crate::failpoint::arm(boot.failpoint);
    let mut run = ChunkRun::new(segment, Outlet::Socket(sock), boot.flush_each);
    if let Some(init) = boot.init {
        let fds = init.fds.into_iter().map(PassFd::into_inner).collect();
        if let Some(message) = run.run_init(init.entry, &init.payload, fds) {
            run.out.send(&proto::message_frame(proto::K_INIT_FAILED, &message));
            return;
        }
    }
    // From here on, results are the parent's.
    run.hold = false;
    run.meter.ready();
    let mut chunks_done = 0u64;
    loop {
        let idle = Mark::now();
        // Waiting for work and receiving it are timed apart (a failed poll only merges them).
        let Some(sock) = run.out.socket() else { return };
        let _ = mp_process::os::poll::readable(sock, None);
        let (waited, arrived) = idle.lap();
        run.meter.add_wait(waited);
        let received = fdpass::recv_frame(sock, proto::MAX_FRAME);
        let (receiving, mark) = arrived.lap();
        run.meter.add_io(receiving);
        // Every frame read counts, also one that could not be received whole: a death from
        // here to the first task of a batch gives that task a strike (see the collector).
        run.frames += 1;
        run.journal.received(run.frames);
        let (bytes, fds) = match received {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => return run.fail_receiving(&format!("receiving tasks: {e}")),
        };
        failpoint!(Received);
        match bytes.first() {
            Some(&proto::K_OBJECTS) => {
                let admitted = run.cache.admit_frame(bytes.get(1..).unwrap_or(&[]), fds);
                if let Err(e) = admitted {
                    return run.fail_receiving(&format!("receiving shared objects: {e}"));
                }
                continue;
            }
            Some(&proto::K_BATCH) => {}
            _ => return,
        }
        run.reader = Reader::new(bytes, fds);
        match run_batch(&mut run, mark, &mut chunks_done, boot.maxtasks) {
            Batch::Done => {}
            Batch::Malformed | Batch::Ended => return,
        }
    }
}

/// How [`run_batch`] ended.
pub(crate) enum Batch {
    /// Every chunk ran and the results were sent.
    Done,
    /// The frame did not parse, or the parent is gone: the worker stops.
    Malformed,
    /// The worker did its `maxtasks` chunks (its results were sent): it stops.
    Ended,
}

/// Runs the chunks of the batch frame in `run.reader` (positioned at its kind byte), then
/// sends the results; `mark` is when the batch arrived, `chunks_done` counts the chunks run
/// towards `maxtasks`.
pub(crate) fn run_batch(
    run: &mut ChunkRun,
    mut mark: Mark,
    chunks_done: &mut u64,
    maxtasks: Option<u64>,
) -> Batch {
    let _ = run.reader.u8();
    // Results wait at most `FLUSH_AFTER` from when work arrived.
    if run.results.count == 0 {
        run.results.since = coarse_now();
    }
    let Ok(nchunks) = run.reader.u32() else { return Batch::Malformed };
    for _ in 0..nchunks {
        let r = &mut run.reader;
        let Ok(ChunkHeader { job, first, entry, count: n, form, len }) =
            ChunkHeader::read(r, &mut run.scope, fdpass::MAX_CACHED)
        else {
            return Batch::Malformed;
        };
        let Ok(start) = r.span(len as usize) else { return Batch::Malformed };
        r.seek(start);
        run.job = job;
        run.first = first;
        run.count = u64::from(n);
        run.form = form;
        run.payload = start..start + len as usize;
        run.time_each = run.meter.time_each(run.count);
        run.task_mark = mark;
        run.io_in_chunk = 0;
        run_chunk(entry, run);
        let (took, now) = mark.lap();
        mark = now;
        let work = took.saturating_sub(run.io_in_chunk);
        run.meter.add_busy(work);
        if !run.time_each {
            run.meter.offer(job, first, u64::from(n), work);
        }
        if !run.alive {
            return Batch::Malformed;
        }
        run.reader.seek(run.payload.end);
        run.results.close_run();
        *chunks_done += 1;
        if maxtasks.is_some_and(|m| *chunks_done >= m) {
            run.flush();
            return Batch::Ended;
        }
    }
    if run.flush() { Batch::Done } else { Batch::Malformed }
}

/// The most bytes of results an engine's worker keeps for one batch.
const MAX_KEPT: usize = 1 << 30;

/// Where a worker's frames go.
pub(crate) enum Outlet {
    /// The pool's socket: a local worker.
    Socket(OwnedFd),
    /// Kept, for an engine's worker to send its own way: each frame as a `u32` length (little
    /// endian) and its bytes. Frames kept here carry no descriptors.
    Kept(Vec<u8>),
}

impl Outlet {
    /// The socket, for a local worker.
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Outlet::Socket(s) => Some(s.as_fd()),
            Outlet::Kept(_) => None,
        }
    }

    /// Sends (or keeps) a frame; false if the parent is gone.
    fn send(&mut self, frame: &Writer) -> bool {
        match self {
            Outlet::Socket(s) => frame.send(s.as_fd()).is_ok(),
            Outlet::Kept(out) => {
                let Ok(len) = u32::try_from(frame.buf.len()) else { return false };
                // The results of one batch travel in one message: past this, the batch stops
                // as if its pool were gone (the pool fails the tasks whose results are
                // missing), so that a batch claiming more tasks than it carries cannot take
                // the worker's memory.
                if out.len().saturating_add(4 + frame.buf.len()) > MAX_KEPT {
                    return false;
                }
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&frame.buf);
                true
            }
        }
    }
}

/// The context a task's entry runs a chunk with.
pub(crate) struct ChunkRun {
    /// The last entry checked, so that the chunks of one job check theirs once.
    pub entry: Option<mp_process::code::Entry<ChunkRun>>,
    /// The batch frame, positioned at the chunk's first item.
    pub reader: Reader,
    pub results: Results,
    pub job: u64,
    pub first: u64,
    /// The number of items in the chunk.
    pub count: u64,
    /// The chunk's form (`proto::F_SEQ_ARGS`, `proto::F_SEQ_RESULTS`).
    pub form: u8,
    /// Where the chunk's arguments lie in the batch frame.
    pub payload: std::ops::Range<usize>,
    /// The count of tasks started and the journal of results not sent, shared with the
    /// parent.
    pub journal: Journal,
    /// The counters of the pool's insights, shared with the parent.
    pub meter: Meter,
    /// Time each task of the chunk (they are slow enough), from `task_mark` on.
    pub time_each: bool,
    /// When the last task of the chunk ended (or the chunk started).
    pub task_mark: Mark,
    /// Time spent sending results during the chunk.
    pub io_in_chunk: u64,
    pub started: u64,
    pub flush_each: bool,
    /// Where the results go.
    pub out: Outlet,
    /// False once the frame was malformed or the parent went away.
    pub alive: bool,
    /// The message of the last task that failed (for the initializer).
    pub failure: Option<String>,
    /// Send nothing (the initializer's result is not for the parent).
    pub hold: bool,
    /// Tasks finished since the clock was last read.
    pub unclocked: u32,
    /// Frames received (batches and object definitions), published in the segment.
    pub frames: u64,
    /// The shared objects the pool has defined to this worker.
    pub cache: fdpass::ObjectCache,
    /// The chunk's scope: the objects its arguments refer to, by index.
    pub scope: Vec<fdpass::ObjectId>,
}

impl ChunkRun {
    /// A run with nothing read yet, on the worker's segment `segment`, sending to `out`.
    pub(crate) fn new(
        segment: &'static mp_shm::SharedMemory,
        out: Outlet,
        flush_each: bool,
    ) -> Self {
        ChunkRun {
            reader: Reader::new(Vec::new(), Vec::new()),
            results: Results::new(),
            job: 0,
            first: 0,
            count: 0,
            form: 0,
            payload: 0..0,
            journal: Journal::new(segment),
            meter: Meter::new(segment),
            time_each: false,
            task_mark: Mark::now(),
            io_in_chunk: 0,
            started: 0,
            flush_each,
            out,
            alive: true,
            failure: None,
            hold: true,
            unclocked: 0,
            frames: 0,
            cache: fdpass::ObjectCache::default(),
            scope: Vec::new(),
            entry: None,
        }
    }

    /// Runs the initializer (`entry` with the encoded arguments `payload` and their
    /// descriptors) as a chunk of one task whose result is thrown away; its failure message
    /// if it failed.
    pub(crate) fn run_init(
        &mut self,
        entry: proto::TaskEntry,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Option<String> {
        self.failure = None;
        self.alive = true;
        let mut one = Writer::default();
        one.blob(payload, fds);
        let frame = std::mem::take(&mut one.buf);
        self.reader = Reader::new(frame, std::mem::take(&mut one.fds));
        self.count = 1;
        self.form = proto::F_SELF_CONTAINED;
        run_chunk(entry, self);
        self.results = Results::new();
        // The count of started tasks is the parent's; the initializer is not one of them.
        self.started = 0;
        self.journal.started(0);
        self.failure.take().or_else(|| (!self.alive).then(String::new))
    }

    /// Sends the results finished so far, then tells the parent why this worker cannot go on
    /// (it exits next): its unfinished tasks fail with the reason, and are not run again.
    fn fail_receiving(&mut self, why: &str) {
        if self.flush() {
            self.out.send(&proto::message_frame(proto::K_RECV_FAILED, why));
        }
    }

    /// Counts task `index` as started.
    pub(crate) fn start_task(&mut self) {
        self.started += 1;
        self.journal.started(self.started);
    }

    /// Records task `index`'s outcome, a value appended to the open run from `from` on (after
    /// a varint length unless the run is `bare`), and sends the results when it is time; false
    /// if the parent is gone.
    pub(crate) fn finish_written(&mut self, index: u64, from: usize, bare: bool) -> bool {
        self.results.written();
        if self.hold {
            return true;
        }
        let mut at = from;
        if !bare {
            let _ = proto::get_varint(&self.results.out.buf, &mut at);
        }
        let bytes = self.results.out.buf.get(at..).unwrap_or(&[]);
        let kept = self.journal.record(self.job, index, proto::T_OK, bytes);
        self.task_finished(index);
        if kept {
            failpoint!(Journaled);
        }
        self.after_task(!kept)
    }

    /// Records task `index`'s outcome and sends the results when it is time; false if the
    /// parent is gone.
    pub(crate) fn finish_task(&mut self, index: u64, mut outcome: Outcome) -> bool {
        if matches!(&outcome, Outcome::Owned(_, fds) if !fds.is_empty())
            && matches!(self.out, Outlet::Kept(_))
        {
            outcome = Outcome::EncodeResult(
                "the result holds descriptors (an mp object), which cannot cross to the pool \
                 from this worker"
                    .into(),
            );
        }
        match &outcome {
            Outcome::Panic { message, .. } => self.failure = Some(message.clone()),
            Outcome::EncodeResult(m) | Outcome::DecodeArgs(m) => self.failure = Some(m.clone()),
            Outcome::Owned(..) => {}
        }
        let journal = if self.hold { None } else { Some(&mut self.journal) };
        let kept = self.results.outcome(self.job, index, outcome, journal);
        if self.hold {
            return true;
        }
        self.task_finished(index);
        self.after_task(!kept)
    }

    /// Counts task `index` as finished (its outcome is journaled or about to be sent), and
    /// times it if the chunk's tasks are timed one by one.
    fn task_finished(&mut self, index: u64) {
        self.meter.task_done();
        if self.time_each {
            let (took, now) = self.task_mark.lap();
            self.task_mark = now;
            self.meter.offer(self.job, index, 1, took);
        }
    }

    /// Sends the results if `now`, if every result is to be sent at once, or if the oldest has
    /// waited long enough; false if the parent is gone.
    fn after_task(&mut self, now: bool) -> bool {
        self.unclocked += 1;
        let late = self.unclocked >= CLOCK_EVERY && {
            self.unclocked = 0;
            coarse_now().saturating_sub(self.results.since) >= FLUSH_AFTER
        };
        if now || late || self.flush_each || self.results.out.buf.len() >= proto::SOFT_FRAME {
            return self.flush();
        }
        true
    }

    /// Sends the results; false if the parent is gone.
    pub(crate) fn flush(&mut self) -> bool {
        if !self.results.seal() {
            return true;
        }
        failpoint!(BeforeSend);
        let sending = Mark::now();
        let ok = self.out.send(&self.results.out);
        if ok {
            failpoint!(AfterSend);
            self.journal.clear();
        }
        self.results.reset();
        let (took, _) = sending.lap();
        self.meter.add_io(took);
        self.io_in_chunk += took;
        ok
    }
}

// ---------------------------------------------------------------------------------------------
// Running tasks: the entry a task becomes, and the code that runs a chunk of it.
// ---------------------------------------------------------------------------------------------

/// What one call of a task produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The result, which holds descriptors: its bytes and descriptors.
    Owned(Vec<u8>, Vec<OwnedFd>),
    /// The task panicked.
    Panic { message: String, traceback: String },
    /// The result did not serialise.
    EncodeResult(String),
    /// The arguments did not deserialise.
    DecodeArgs(String),
}

thread_local! {
    /// The backtrace of the last panic on this thread, recorded by the worker's panic hook.
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The code a worker runs for a chunk of tasks of type `F` with arguments `Args`: runs each
/// task under `catch_unwind` and appends the results to the chunk's.
impl<F, Args> Body<ChunkRun> for Callable<F, Args>
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    fn run(self, run: &mut ChunkRun) {
        run_tasks(self.0, run);
    }
}

/// Runs the tasks of the chunk `run` describes with the task `task`.
fn run_tasks<F, Args>(task: F, run: &mut ChunkRun)
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    let seq_args = run.form & proto::F_SEQ_ARGS != 0;
    let seq_results = run.form & proto::F_SEQ_RESULTS != 0;
    run.results.out.buf.reserve(usize::try_from(run.count.min(1 << 16)).unwrap_or(0) * 8);
    // With bare arguments, where the next one starts.
    let mut seq_at = run.payload.start;
    let seq_end = run.payload.end;
    // Arguments that refer to shared objects are decoded in one session per chunk, in the
    // chunk's scope (lent by the worker, given back below).
    let mut scope = std::mem::take(&mut run.scope);
    let mut cache = std::mem::take(&mut run.cache);
    let mut session = if scope.is_empty() || run.form & proto::F_SELF_CONTAINED != 0 {
        None
    } else {
        // Fails only while the thread ends; the items then fail to decode.
        fdpass::DecodeSession::begin(&mut scope, &mut cache).ok()
    };
    for i in 0..run.count {
        let index = run.first.wrapping_add(i);
        // The task counts as started before its arguments are decoded: a decoder that kills
        // the worker is blamed on this task, which then fails, instead of being run again.
        run.start_task();
        let args = if seq_args {
            let bytes = run.reader.slice(seq_at..seq_end);
            let taken = match session.as_mut() {
                None => postcard::take_from_bytes::<Args>(bytes)
                    .map(|(args, tail)| (args, bytes.len() - tail.len()))
                    .map_err(|e| e.to_string()),
                Some(session) => session.take::<Args>(bytes, Vec::new()).map_err(|e| e.to_string()),
            };
            match taken {
                Ok((args, used)) => {
                    seq_at += used;
                    Ok(args)
                }
                Err(e) => {
                    // Nothing tells where the next value starts: the rest fail too.
                    seq_at = seq_end;
                    Err(e)
                }
            }
        } else {
            let Ok((input, fds)) = run.reader.blob_ref() else {
                run.alive = false;
                break;
            };
            if run.form & proto::F_SELF_CONTAINED != 0 {
                proto::decode::<Args>(input, fds).map_err(|e| e.to_string())
            } else if let Some(session) = session.as_mut() {
                match session.take::<Args>(input, fds) {
                    Ok((args, used)) if used == input.len() => Ok(args),
                    Ok((_, used)) => {
                        Err(WireError::TrailingBytes { extra: input.len() - used }.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            } else {
                fdpass::decode_in::<Args>(input, fds, &mut Vec::new(), &mut Default::default())
                    .map_err(|e| e.to_string())
            }
        };
        run.results.open_run(run.job, index, seq_results);
        let outcome = match args {
            Err(e) => Outcome::DecodeArgs(e),
            Ok(args) => match catch_unwind(AssertUnwindSafe(|| task.call(args))) {
                Err(payload) => panic_outcome(payload.as_ref()),
                Ok(value) => {
                    let from = run.results.out.buf.len();
                    match run.results.out.run_value(&value, seq_results) {
                        Ok(()) => {
                            if !run.finish_written(index, from, seq_results) {
                                run.alive = false;
                                break;
                            }
                            continue;
                        }
                        Err(e) if proto::too_large(&e) => {
                            Outcome::EncodeResult(proto::too_large_message("result"))
                        }
                        // A value holding descriptors (or one that does not serialise).
                        Err(_) => match mp_process::fdpass::encode_with_fds(&value) {
                            Ok((bytes, _)) if bytes.len() > proto::MAX_VALUE => {
                                Outcome::EncodeResult(proto::too_large_message("result"))
                            }
                            Ok((bytes, fds)) => Outcome::Owned(bytes, fds),
                            Err(e) => Outcome::EncodeResult(e.to_string()),
                        },
                    }
                }
            },
        };
        if !run.finish_task(index, outcome) {
            run.alive = false;
            break;
        }
    }
    drop(session);
    run.scope = scope;
    run.cache = cache;
}

/// The message of a caught panic and the backtrace the worker's hook recorded.
pub(crate) fn panic_outcome(payload: &(dyn Any + Send)) -> Outcome {
    let message = panic_message(payload);
    let traceback = LAST_BACKTRACE.with(|b| b.borrow_mut().take()).unwrap_or_default();
    Outcome::Panic { message, traceback }
}

/// Installs the worker's panic hook: it records the backtrace for the task's `Remote` error
/// instead of printing, as a Python worker sends its traceback with the exception.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|_info| {
        let bt = Backtrace::force_capture().to_string();
        let _ = LAST_BACKTRACE.try_with(|b| {
            if let Ok(mut slot) = b.try_borrow_mut() {
                *slot = Some(bt);
            }
        });
    }));
}

/// The entry of task `F` with arguments `Args`, as the offset and tag that cross into workers.
/// Takes a value of `F`, which is what allows a worker to re-make one.
pub(crate) fn entry_for<F, Args>(task: F) -> Result<proto::TaskEntry>
where
    F: Task<Args>,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a pool task must be a fn item or a non-capturing closure"
        )
    };
    Entry::of(Callable::new(task))
        .map(Entry::to_parts)
        .ok_or(Error::InvalidArgument("the task's code lies outside the executable's text"))
}

/// Runs the chunk `run` describes with the task behind `entry`. An entry this pool did not
/// make (the tag does not sign it) fails every task of the chunk.
pub(crate) fn run_chunk(entry: proto::TaskEntry, run: &mut ChunkRun) {
    if run.entry.is_none_or(|e| e.to_parts() != entry) {
        run.entry = Entry::from_parts(entry.0, entry.1);
    }
    if let Some(e) = run.entry {
        e.call(run);
        return;
    }
    // Bare arguments have no framing to run out of: a forged chunk could claim billions of
    // tasks. One that claims more than a task per byte of its payload is malformed.
    let bare = run.form & proto::F_SEQ_ARGS != 0;
    if bare && run.count > run.payload.len() as u64 {
        run.alive = false;
        return;
    }
    for i in 0..run.count {
        if run.form & proto::F_SEQ_ARGS == 0 && run.reader.blob_ref().is_err() {
            run.alive = false;
            break;
        }
        let index = run.first.wrapping_add(i);
        run.results.open_run(run.job, index, false);
        let outcome =
            Outcome::DecodeArgs(format!("task entry {:#x} is not one this pool made", entry.0));
        if !run.finish_task(index, outcome) {
            run.alive = false;
            break;
        }
    }
}

/// A process that runs a worker on `sock` (the pool's `Starts`).
pub(crate) fn worker_process(sock: PassFd, boot: WorkerBoot) -> Process {
    Process::new(worker_main, (sock, boot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_bytes(j: &Journal) -> Vec<u8> {
        let len = j.published.map_or(0, |a| a.load(Ordering::Acquire)) as usize;
        j.words[..len / 8].iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect()
    }

    #[test]
    fn the_journal_reads_back_what_was_recorded() {
        let mut j =
            Journal::new(Box::leak(Box::new(mp_shm::SharedMemory::new(proto::SEG_SIZE).unwrap())));
        let big = vec![7u8; 300];
        let mut want = Vec::new();
        for (job, index, tag, bytes) in [
            (1u64, 0u64, proto::T_OK, vec![1u8]),
            (1, 1, proto::T_OK, vec![]),
            (1, 2, proto::T_OK, vec![1, 2, 3, 4, 5, 6]),
            (1, 3, proto::T_PANIC, vec![9; 7]),
            (1, 4, proto::T_OK, big.clone()),
            (2, 10, proto::T_DECODE, b"bad".to_vec()),
            (2, 11, proto::T_OK, vec![0x80, 1]),
            (1, 9, proto::T_OK, vec![5]),
        ] {
            assert!(j.record(job, index, tag, &bytes));
            want.push((job, index, tag, bytes));
            assert_eq!(proto::parse_journal(journal_bytes(&j)), want);
        }
        j.clear();
        assert!(proto::parse_journal(journal_bytes(&j)).is_empty());
        // A record that does not fit is refused, and what was there stays.
        assert!(j.record(3, 0, proto::T_OK, &[1]));
        assert!(!j.record(3, 1, proto::T_OK, &vec![0u8; proto::SEG_SIZE]));
        assert_eq!(proto::parse_journal(journal_bytes(&j)), [(3, 0, proto::T_OK, vec![1])]);
        // A journal cut anywhere parses to a prefix of its records.
        j.clear();
        for k in 0..5u64 {
            assert!(j.record(4, k, proto::T_OK, &big[..k as usize * 3]));
        }
        let full = journal_bytes(&j);
        let all = proto::parse_journal(full.clone());
        assert_eq!(all.len(), 5);
        for cut in 0..full.len() {
            let part = proto::parse_journal(full[..cut].to_vec());
            assert!(all.starts_with(&part), "cut at {cut}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever is recorded reads back the same, in order, across task switches.
        #[test]
        fn journal_round_trips(records in proptest::collection::vec(
            (0u64..3, 0u64..4, prop_oneof![Just(proto::T_OK), Just(proto::T_PANIC), Just(proto::T_DECODE)],
             proptest::collection::vec(any::<u8>(), 0..40)),
            0..40,
        )) {
            let mut j = Journal::new(Box::leak(Box::new(
            mp_shm::SharedMemory::new(proto::SEG_SIZE).unwrap(),
        )));
            let mut want = Vec::new();
            let mut index = 0u64;
            for (job, skip, tag, bytes) in records {
                index += skip;
                prop_assert!(j.record(job, index, tag, &bytes));
                want.push((job, index, tag, bytes));
                index += 1;
            }
            let len = j.published.map_or(0, |a| a.load(Ordering::Acquire)) as usize;
            let bytes: Vec<u8> =
                j.words[..len / 8].iter().flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes()).collect();
            prop_assert_eq!(proto::parse_journal(bytes), want);
        }

        /// Garbage parses to some records or none, never a panic.
        #[test]
        fn garbage_journals_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = proto::parse_journal(bytes);
        }
    }
}
