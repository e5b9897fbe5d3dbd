//! The worker's main loop, and the zygote that forks workers under the `fork` start method.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use mp_process::fdpass::{self, PassFd};
use mp_process::{Process, StartMethod};
use rustix::event::{PollFd, PollFlags};
use serde::{Deserialize, Serialize};

use crate::proto::{self, Reader, Writer};
use crate::task::{self, Outcome};

/// How long a worker may hold finished results before sending them, when tasks are quick
/// (measured with the coarse monotonic clock, which costs almost nothing to read).
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(1);

/// The coarse monotonic clock (a few milliseconds of resolution).
pub(crate) fn coarse_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(t.tv_sec.unsigned_abs(), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// The initializer as it crosses into a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    pub entry: u64,
    pub payload: Vec<u8>,
    pub fds: Vec<PassFd>,
}

/// What a worker needs besides its socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerBoot {
    pub init: Option<InitSpec>,
    /// Exit after this many chunks (Python's `maxtasksperchild`).
    pub maxtasks: Option<u64>,
    /// Send every result as soon as it is ready (a task timeout is set).
    pub flush_each: bool,
    /// Eight bytes shared with the parent: the number of tasks this worker has started, so
    /// that the parent knows which task was running if the worker dies.
    pub progress: mp_shm::SharedMemory,
}

/// Appends the tag and blob of a task's entry that is not part of a run.
fn put_single(out: &mut Writer, outcome: Outcome) {
    match outcome {
        Outcome::Written => {}
        Outcome::Owned(bytes, fds) => {
            out.u8(proto::T_OK);
            out.blob(&bytes, fds);
        }
        Outcome::Panic { message, traceback } => {
            out.u8(proto::T_PANIC);
            let bytes = postcard::to_stdvec(&(message, traceback)).unwrap_or_default();
            out.blob(&bytes, []);
        }
        Outcome::EncodeResult(m) => {
            out.u8(proto::T_ENCODE);
            out.blob(m.as_bytes(), []);
        }
        Outcome::DecodeArgs(m) => {
            out.u8(proto::T_DECODE);
            out.blob(m.as_bytes(), []);
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

    /// Records the outcome of task `index` of `job`, whose run was opened before it ran.
    pub(crate) fn outcome(&mut self, job: u64, index: u64, outcome: Outcome) {
        if let Outcome::Written = outcome {
            if let Some((_, values)) = &mut self.run {
                *values += 1;
            }
            return;
        }
        self.close_run();
        self.out.u64(job);
        self.out.u64(index);
        put_single(&mut self.out, outcome);
        self.count += 1;
    }

    /// Sends what has accumulated; false if the parent is gone.
    pub(crate) fn flush(&mut self, sock: &OwnedFd) -> bool {
        self.close_run();
        if self.count == 0 {
            return true;
        }
        if let Some(slot) = self.out.buf.get_mut(1..5) {
            slot.copy_from_slice(&self.count.to_le_bytes());
        }
        let ok = self.out.send(sock.as_fd()).is_ok();
        self.reset();
        ok
    }
}

/// The worker process: runs the initializer, then batches of chunks until told to stop, its
/// socket closes, or it has done `maxtasks` chunks.
pub(crate) fn worker_main(sock: PassFd, boot: WorkerBoot) {
    let sock = sock.into_inner();
    task::install_panic_hook();
    let mut run = ChunkRun {
        reader: Reader::new(Vec::new(), Vec::new()),
        results: Results::new(),
        job: 0,
        first: 0,
        count: 0,
        form: 0,
        payload: 0..0,
        progress: Some(boot.progress),
        started: 0,
        flush_each: boot.flush_each,
        sock,
        alive: true,
        failure: None,
        hold: true,
    };
    if let Some(init) = boot.init {
        // The initializer runs as a chunk of one task whose results are thrown away.
        let mut one = Writer::default();
        one.blob(&init.payload, init.fds.into_iter().map(PassFd::into_inner));
        let frame = std::mem::take(&mut one.buf);
        run.reader = Reader::new(frame, std::mem::take(&mut one.fds));
        run.count = 1;
        run.form = 0;
        let Some(back) = task::run_chunk(init.entry, run) else { return };
        run = back;
        run.results = Results::new();
        run.hold = false;
        // The count of started tasks is the parent's; the initializer is not one of them.
        run.started = 0;
        if let Some(Ok(p)) = run.progress.as_ref().map(|p| p.atomic_u64(0)) {
            p.store(0, std::sync::atomic::Ordering::Release);
        }
        if let Some(message) = run.failure.take().or_else(|| (!run.alive).then(String::new)) {
            let mut w = Writer::default();
            w.u8(proto::K_INIT_FAILED);
            w.buf.extend_from_slice(message.as_bytes());
            let _ = w.send(run.sock.as_fd());
            return;
        }
    }
    let mut chunks_done = 0u64;
    loop {
        let Ok(Some((bytes, fds))) = fdpass::recv_frame(run.sock.as_fd(), proto::MAX_FRAME) else {
            return;
        };
        run.reader = Reader::new(bytes, fds);
        if run.reader.u8().ok() != Some(proto::K_BATCH) {
            return;
        }
        let Ok(nchunks) = run.reader.u32() else { return };
        for _ in 0..nchunks {
            let r = &mut run.reader;
            let (Ok(job), Ok(first), Ok(entry), Ok(n), Ok(form), Ok(len)) =
                (r.u64(), r.u64(), r.u64(), r.u32(), r.u8(), r.u32())
            else {
                return;
            };
            let Ok(start) = r.span(len as usize) else { return };
            r.seek(start);
            run.job = job;
            run.first = first;
            run.count = u64::from(n);
            run.form = form;
            run.payload = start..start + len as usize;
            let Some(back) = task::run_chunk(entry, run) else { return };
            run = back;
            if !run.alive {
                return;
            }
            run.reader.seek(run.payload.end);
            run.results.close_run();
            chunks_done += 1;
            if boot.maxtasks.is_some_and(|m| chunks_done >= m) {
                run.results.flush(&run.sock);
                return;
            }
        }
        if !run.results.flush(&run.sock) {
            return;
        }
    }
}

/// What a worker hands to a task's trampoline for one chunk, and gets back.
pub(crate) struct ChunkRun {
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
    /// Eight shared bytes: the number of tasks this worker has started.
    pub progress: Option<mp_shm::SharedMemory>,
    pub started: u64,
    pub flush_each: bool,
    pub sock: OwnedFd,
    /// False once the frame was malformed or the parent went away.
    pub alive: bool,
    /// The message of the last task that failed (for the initializer).
    pub failure: Option<String>,
    /// Send nothing (the initializer's result is not for the parent).
    pub hold: bool,
}

impl ChunkRun {
    /// Records task `index`'s outcome and flushes when it is time; false if the parent is
    /// gone.
    pub(crate) fn finish_task(&mut self, index: u64, outcome: Outcome) -> bool {
        match &outcome {
            Outcome::Panic { message, .. } => self.failure = Some(message.clone()),
            Outcome::EncodeResult(m) | Outcome::DecodeArgs(m) => self.failure = Some(m.clone()),
            Outcome::Written | Outcome::Owned(..) => {}
        }
        self.results.outcome(self.job, index, outcome);
        if self.hold {
            return true;
        }
        if self.flush_each || coarse_now().saturating_sub(self.results.since) >= FLUSH_AFTER {
            return self.results.flush(&self.sock);
        }
        true
    }
}

/// A request to the zygote.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ZygoteReq {
    /// Fork a worker on this socket.
    Spawn { name: String, sock: PassFd, boot: WorkerBoot },
    /// Kill the workers and exit.
    Stop,
}

/// What the zygote reports.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ZygoteMsg {
    /// A worker started: its pid and a pidfd of it.
    Started { pid: u32, pidfd: PassFd },
    /// Starting a worker failed.
    Failed(String),
    /// A worker exited with this status (Python's form).
    Exited { pid: u32, code: i32 },
}

/// Polls `fds` for input, retrying interruptions; returns the readiness flags.
pub(crate) fn poll_in(fds: &[std::os::fd::BorrowedFd<'_>], timeout: Option<Duration>) -> Vec<bool> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
    let ts = timeout.map(|d| rustix::event::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    loop {
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    pfds.iter().map(|p| !p.revents().is_empty()).collect()
}

/// The zygote: forked from the pool's owner when the pool is made, single-threaded, it forks
/// workers on request and reports their pids, pidfds and exit statuses. It exits (killing its
/// workers) when asked, when its socket closes, or when the pool's owner dies.
pub(crate) fn zygote_main(sock: PassFd) {
    let sock = sock.into_inner();
    let parent = mp_process::parent_process();
    let mut workers: Vec<Process> = Vec::new();
    loop {
        let ready = {
            let mut fds = vec![sock.as_fd()];
            if let Some(fd) = parent.as_ref().and_then(|p| p.sentinel()) {
                fds.push(fd);
            }
            let base = fds.len();
            for w in &workers {
                if let Ok(fd) = w.sentinel() {
                    fds.push(fd);
                }
            }
            let ready = poll_in(&fds, None);
            (
                ready.first().copied().unwrap_or(false),
                base > 1 && ready.get(1) == Some(&true),
                ready,
            )
        };
        let (sock_ready, parent_gone, flags) = ready;
        if parent_gone {
            break;
        }
        let base = if parent.as_ref().and_then(|p| p.sentinel()).is_some() { 2 } else { 1 };
        let mut k = 0;
        workers.retain(|w| {
            let exited = flags.get(base + k).copied().unwrap_or(false);
            k += 1;
            if !exited {
                return true;
            }
            let code = w.join().unwrap_or(-9);
            let pid = w.pid().unwrap_or(0);
            let _ = fdpass::send_value(
                sock.as_fd(),
                &ZygoteMsg::Exited { pid, code },
                proto::MAX_FRAME,
            );
            false
        });
        if !sock_ready {
            continue;
        }
        match fdpass::recv_value::<ZygoteReq>(sock.as_fd(), proto::MAX_FRAME) {
            Ok(Some(ZygoteReq::Spawn { name, sock: wsock, boot })) => {
                let mut p = Process::new(worker_main, (wsock, boot))
                    .with_start_method(StartMethod::Fork)
                    .with_daemon(true)
                    .with_name(name);
                let msg = match p.start() {
                    Ok(()) => {
                        let pid = p.pid().unwrap_or(0);
                        match p.sentinel().and_then(|fd| {
                            fd.try_clone_to_owned()
                                .map_err(|e| mp_process::Error::Io { op: "dup", source: e })
                        }) {
                            Ok(fd) => {
                                workers.push(p);
                                ZygoteMsg::Started { pid, pidfd: PassFd(fd) }
                            }
                            Err(e) => {
                                let _ = p.kill();
                                ZygoteMsg::Failed(e.to_string())
                            }
                        }
                    }
                    Err(e) => ZygoteMsg::Failed(e.to_string()),
                };
                if fdpass::send_value(sock.as_fd(), &msg, proto::MAX_FRAME).is_err() {
                    break;
                }
            }
            Ok(Some(ZygoteReq::Stop)) | Ok(None) | Err(_) => break,
        }
    }
    for w in &workers {
        let _ = w.kill();
    }
    for w in &workers {
        let _ = w.join();
    }
}
