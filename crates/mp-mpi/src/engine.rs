//! The pool's side: an [`mp_pool::engine::Engine`] over MPI messages.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mp_pool::engine::{Engine, Hub, Next};

use crate::error::{Error, Result};
use crate::sys::{self, Comm};
use crate::tag;
use crate::worker::{self, Backoff};

/// How long a new pool waits for its workers' first answer (a worker that died starting never
/// answers).
const GREET_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long the end of a pool waits for its workers' answers.
const END_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whose workers these are.
#[derive(Debug)]
enum Kind {
    /// Spawned for this pool: they exit when it ends.
    Spawned,
    /// The world's other ranks: they wait for the next pool; the flag is the world's "busy".
    World(Arc<AtomicBool>),
}

/// Where a worker stands.
#[derive(Debug)]
enum Stand {
    /// Its initializer is running.
    Starting,
    /// Ready for work.
    Ready,
    /// Gone (dead, or its messages fail): it gets nothing more.
    Lost,
}

/// One worker as the pool sees it.
#[derive(Debug)]
struct Worker {
    rank: usize,
    pid: u32,
    host: String,
    /// Its pidfd, when it runs on this host (a death is seen through it).
    pidfd: Option<OwnedFd>,
    stand: Stand,
    /// Batches on their way to it (sent without waiting, so that a worker busy sending its
    /// results never waits for the pool, nor the pool for it).
    sending: std::collections::VecDeque<sys::Sending>,
}

/// How many batches a worker may hold: the next is on its way while it runs one.
const AHEAD: usize = 2;

/// MPI workers for a pool: from [`Mpi::spawn`](crate::Mpi::spawn) or
/// [`Mpi::world`](crate::Mpi::world), given to
/// [`PoolBuilder::engine`](mp_pool::PoolBuilder::engine).
///
/// Each worker has answered already: it runs this executable and holds this process tree's
/// key. Dropped without serving a pool, it lets its workers go.
#[derive(Debug)]
pub struct MpiEngine {
    comm: Comm,
    kind: Kind,
    workers: Vec<Worker>,
    /// Whether the workers were let go.
    ended: bool,
    _live: Arc<()>,
}

impl MpiEngine {
    /// The `n` processes of the remote group of the intercommunicator `comm`, just spawned.
    pub(crate) fn spawned(comm: Comm, n: usize, live: Arc<()>) -> Result<MpiEngine> {
        let mut engine =
            MpiEngine { comm, kind: Kind::Spawned, workers: Vec::new(), ended: false, _live: live };
        engine.greet((0..n).collect())?;
        Ok(engine)
    }

    /// Ranks 1 to `size - 1` of the world communicator `comm`.
    pub(crate) fn world(
        comm: Comm,
        size: usize,
        busy: Arc<AtomicBool>,
        live: Arc<()>,
    ) -> Result<MpiEngine> {
        let mut engine = MpiEngine {
            comm,
            kind: Kind::World(busy),
            workers: Vec::new(),
            ended: false,
            _live: live,
        };
        engine.greet((1..size).collect())?;
        Ok(engine)
    }

    /// The workers' host names, by worker.
    pub fn hosts(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.host.clone()).collect()
    }

    /// Sends every worker the tree key and the executable's fingerprint, and takes their
    /// answers.
    fn greet(&mut self, ranks: Vec<usize>) -> Result<()> {
        let print = mp_process::code::executable_fingerprint().map_err(|_| Error::Mpi {
            call: "hello",
            message: "cannot read this executable to fingerprint it".into(),
        })?;
        let [k0, k1] = mp_process::code::tree_key();
        let mut hello = Vec::with_capacity(24);
        for w in [k0, k1, print] {
            hello.extend_from_slice(&w.to_le_bytes());
        }
        self.workers = ranks
            .iter()
            .map(|&rank| Worker {
                rank,
                pid: 0,
                host: String::new(),
                pidfd: None,
                stand: Stand::Starting,
                sending: std::collections::VecDeque::new(),
            })
            .collect();
        for &rank in &ranks {
            sys::send(self.comm, rank, tag::HELLO, &hello)?;
        }
        let me = worker::hostname();
        let mut answered = 0;
        let mut wait = Backoff::new();
        let mut refused = None;
        let deadline = Instant::now() + GREET_LIMIT;
        while answered < ranks.len() {
            let Some((source, t, len)) = sys::probe_any(self.comm)? else {
                if Instant::now() >= deadline {
                    self.end(false);
                    return Err(Error::Mpi {
                        call: "hello",
                        message: format!(
                            "{} of {} workers answered within {GREET_LIMIT:?}",
                            answered,
                            ranks.len()
                        ),
                    });
                }
                let nap = wait.next();
                if !nap.is_zero() {
                    std::thread::sleep(nap);
                }
                continue;
            };
            wait.reset();
            let bytes = sys::recv(self.comm, source, t, len)?;
            let Some(w) = self.workers.iter_mut().find(|w| w.rank == source) else { continue };
            if t != tag::READY {
                continue;
            }
            answered += 1;
            match bytes.first() {
                Some(&worker::READY_OK) => {
                    let (pid, host) = parse_ready(&bytes);
                    w.pid = pid;
                    w.pidfd = watch(&me, &host, pid);
                    w.host = host;
                }
                _ => refused = refused.or(Some(Error::WrongExecutable { rank: source })),
            }
        }
        match refused {
            Some(e) => {
                self.end(false);
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Lets the workers go: a spawned worker exits, a world's waits for the next pool. Each
    /// worker answers the end, and every message it sent before is taken first, so that none
    /// is left in flight to be matched by a later communicator (MPI reuses their contexts).
    /// `healthy`: no worker was lost, so spawned workers can be disconnected from
    /// (`MPI_Comm_disconnect` waits for both sides); else the communicator is only freed.
    fn end(&mut self, healthy: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut waiting = Vec::new();
        for w in &self.workers {
            if !matches!(w.stand, Stand::Lost)
                && sys::send(self.comm, w.rank, tag::END, &[]).is_ok()
            {
                waiting.push(w.rank);
            }
        }
        let deadline = Instant::now() + END_LIMIT;
        let mut wait = Backoff::new();
        let mut complete = true;
        while !waiting.is_empty() {
            match sys::probe_any(self.comm) {
                Ok(Some((source, t, len))) => {
                    wait.reset();
                    if sys::recv(self.comm, source, t, len).is_err() {
                        complete = false;
                        break;
                    }
                    if t == tag::END {
                        waiting.retain(|&r| r != source);
                    }
                }
                Ok(None) if Instant::now() < deadline => {
                    let nap = wait.next();
                    if !nap.is_zero() {
                        std::thread::sleep(nap);
                    }
                }
                _ => {
                    log::warn!(
                        target: "mp_mpi",
                        "MPI workers {waiting:?} did not answer the end of their pool"
                    );
                    complete = false;
                    break;
                }
            }
        }
        // The workers have read every batch before their answer: the sends are complete (one
        // that is not is let go, its bytes leaked).
        for w in &mut self.workers {
            w.sending.clear();
        }
        match &self.kind {
            Kind::Spawned if healthy && complete => {
                if let Err(e) = sys::disconnect(self.comm) {
                    log::warn!(target: "mp_mpi", "{e}");
                }
            }
            Kind::Spawned => {
                let _ = sys::free(self.comm);
            }
            Kind::World(busy) => busy.store(false, Ordering::Release),
        }
    }

    /// Handles one message from a worker.
    fn handle(&mut self, hub: &mut Hub, source: usize, t: std::ffi::c_int, bytes: &[u8]) {
        let Some(i) = self.workers.iter().position(|w| w.rank == source) else { return };
        match t {
            tag::RESULTS => hub.deliver(i, bytes),
            tag::READY => match bytes.first() {
                Some(&worker::READY_OK) => {
                    if let Some(w) = self.workers.get_mut(i) {
                        w.stand = Stand::Ready;
                    }
                }
                Some(&worker::READY_INIT_FAILED) => {
                    let message = String::from_utf8_lossy(bytes.get(1..).unwrap_or(&[]));
                    hub.fail(mp_pool::Error::Initializer(message.into_owned()));
                }
                _ => hub.fail(mp_pool::Error::Engine(format!(
                    "MPI worker rank {source} could not start"
                ))),
            },
            _ => {}
        }
    }

    /// Looks at the pidfds of the workers on this host; a dead one is lost, and its tasks
    /// fail.
    fn check_deaths(&mut self, hub: &mut Hub) {
        for (i, w) in self.workers.iter_mut().enumerate() {
            let Some(fd) = &w.pidfd else { continue };
            let dead =
                mp_process::os::poll::readable(fd.as_fd(), Some(Instant::now())).unwrap_or(false);
            if dead && !matches!(w.stand, Stand::Lost) {
                log::warn!(
                    target: "mp_mpi",
                    "MPI worker rank {} (pid {}) died: its tasks fail",
                    w.rank,
                    w.pid
                );
                w.stand = Stand::Lost;
                hub.lose_worker(
                    i,
                    mp_pool::Error::WorkerDied { pid: w.pid, signal: None, exitcode: None },
                );
            }
        }
    }

    /// The pool's loop; the outcome for [`MpiEngine::end`]: whether no worker was lost.
    fn run(&mut self, hub: &mut Hub) -> Result<bool> {
        let init = hub.init().map(<[u8]>::to_vec).unwrap_or_default();
        for w in &self.workers {
            sys::send(self.comm, w.rank, tag::INIT, &init)?;
        }
        let mut wait = Backoff::new();
        loop {
            if hub.stopping() {
                return Ok(self.healthy());
            }
            let mut active = false;
            for i in 0..self.workers.len() {
                let Some(w) = self.workers.get_mut(i) else { continue };
                while let Some(s) = w.sending.front_mut() {
                    match s.done() {
                        Ok(true) => drop(w.sending.pop_front()),
                        _ => break,
                    }
                }
                if !matches!(w.stand, Stand::Ready) || hub.outstanding(i) >= AHEAD {
                    continue;
                }
                match hub.next(i) {
                    Next::Batch(batch) => {
                        active = true;
                        match sys::isend(self.comm, w.rank, tag::BATCH, batch) {
                            Ok(s) => w.sending.push_back(s),
                            Err(e) => {
                                log::error!(target: "mp_mpi", "worker rank {}: {e}", w.rank);
                                w.stand = Stand::Lost;
                                let error = mp_pool::Error::WorkerDied {
                                    pid: w.pid,
                                    signal: None,
                                    exitcode: None,
                                };
                                hub.lose_worker(i, error);
                            }
                        }
                    }
                    Next::Idle => {}
                    Next::Finish | Next::Stop => return Ok(self.healthy()),
                }
            }
            while let Some((source, t, len)) = sys::probe_any(self.comm)? {
                active = true;
                let bytes = sys::recv(self.comm, source, t, len)?;
                self.handle(hub, source, t, &bytes);
            }
            self.check_deaths(hub);
            if self.workers.iter().all(|w| matches!(w.stand, Stand::Lost)) {
                hub.fail(mp_pool::Error::Engine("every MPI worker died".into()));
                return Ok(false);
            }
            if active {
                wait.reset();
                continue;
            }
            let starting = self.workers.iter().any(|w| matches!(w.stand, Stand::Starting));
            if hub.busy() || starting {
                let nap = wait.next();
                if !nap.is_zero() {
                    hub.wait(Some(nap));
                }
            } else {
                hub.wait(None);
            }
        }
    }

    fn healthy(&self) -> bool {
        self.workers.iter().all(|w| !matches!(w.stand, Stand::Lost))
    }
}

impl Engine for MpiEngine {
    fn workers(&self) -> usize {
        self.workers.len()
    }

    fn serve(mut self: Box<Self>, mut hub: Hub) {
        let healthy = match self.run(&mut hub) {
            Ok(healthy) => healthy,
            Err(e) => {
                log::error!(target: "mp_mpi", "the pool's MPI messages fail: {e}; the pool stops");
                hub.fail(mp_pool::Error::Engine(format!("MPI: {e}")));
                false
            }
        };
        // The hub fails what is left when it is dropped, before the workers are let go.
        drop(hub);
        self.end(healthy);
    }
}

impl Drop for MpiEngine {
    fn drop(&mut self) {
        let healthy = self.healthy();
        self.end(healthy);
    }
}

/// The pid and host name of a [`worker::READY_OK`] answer.
fn parse_ready(bytes: &[u8]) -> (u32, String) {
    let pid = bytes.get(1..5).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
    let host = String::from_utf8_lossy(bytes.get(5..).unwrap_or(&[])).into_owned();
    (pid, host)
}

/// A pidfd for a worker on this host (same host name), to see its death.
fn watch(me: &str, host: &str, pid: u32) -> Option<OwnedFd> {
    if host != me || pid == 0 {
        return None;
    }
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_answer_of_any_shape_parses() {
        assert_eq!(parse_ready(&[]), (0, String::new()));
        assert_eq!(parse_ready(&[worker::READY_OK, 1, 2]), (0, String::new()));
        let mut ok = vec![worker::READY_OK];
        ok.extend_from_slice(&42u32.to_le_bytes());
        ok.extend_from_slice(b"h2");
        assert_eq!(parse_ready(&ok), (42, "h2".to_owned()));
        ok.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(parse_ready(&ok).0, 42);
    }

    #[test]
    fn only_a_live_worker_on_this_host_is_watched() {
        let me = worker::hostname();
        assert!(watch(&me, &me, std::process::id()).is_some());
        assert!(watch(&me, "elsewhere", std::process::id()).is_none());
        assert!(watch(&me, &me, 0).is_none());
        assert!(watch(&me, &me, u32::MAX).is_none());
    }
}
