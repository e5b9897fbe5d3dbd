//! [`Manager`]: Python's `multiprocessing.Manager()` (a `SyncManager`), its builder, and the
//! calls that make proxies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mp_process::fdpass::{PassFd, new_object_id};
use mp_process::{Process, StartMethod, os};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::link::Link;
use crate::proto::Call;
use crate::proxy::Handle;
use crate::server::serve::{ServerArgs, serve};

/// How long [`Manager::shutdown`] waits for the manager to exit before terminating it
/// (Python's `shutdown_timeout`, 1 s by default).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long [`ManagerBuilder::start`] waits for the manager's process to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts the managers this process started, for their names (`SyncManager-1`, ...).
static STARTED: AtomicU32 = AtomicU32::new(0);

/// A manager: a process of its own that holds objects (lists, dicts, queues, locks, ...)
/// which other processes use through proxies. Python's `multiprocessing.Manager()`.
///
/// [`Manager::start`] starts the manager's process under the default start method (or the
/// builder's), and the manager's methods make objects in it and return proxies to them:
/// [`list`](Manager::list), [`dict`](Manager::dict), [`namespace`](Manager::namespace),
/// [`value`](Manager::value), [`array`](Manager::array), and the synchronisation types.
/// Proxies are `Clone`, `Serialize` and `Deserialize`: they pass into a `Process`, a pool task,
/// a queue message, and into another object of the same manager.
///
/// The manager's process never outlives the process that started it (it watches its pidfd),
/// and gives back the objects a client process held when that process ends, however it ends.
/// Dropping the `Manager` in the process that started it shuts the manager down, as Python's
/// `with Manager() as m:` does at the end of the block.
///
/// ```
/// let manager = mp_manager::Manager::start()?;
/// let squares = manager.list(vec![0u64; 5])?;
/// for i in 0..5 {
///     squares.set(i, (i * i) as u64)?;
/// }
/// assert_eq!(squares.to_string(), "[0, 1, 4, 9, 16]");
/// # Ok::<(), mp_manager::Error>(())
/// ```
pub struct Manager {
    /// The manager's process (`None` once shut down).
    process: Option<Process>,
    /// The way to it.
    link: Link,
    /// The manager process's pid.
    pid: u32,
    /// The pid that started it: only that process shuts it down when dropped.
    owner: u32,
}

/// Options for starting a [`Manager`].
#[derive(Default)]
pub struct ManagerBuilder {
    method: Option<StartMethod>,
    name: Option<String>,
    setup: Vec<(u64, u64)>,
}

impl ManagerBuilder {
    /// Starts the manager's process with `method` instead of the default start method.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Names the manager's process (default `SyncManager-N`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Registers a function the manager's process runs before it serves: it registers the
    /// program's own types (see [`Registry`](crate::Registry)) or does whatever initialisation
    /// the manager needs (Python's `initializer`).
    pub(crate) fn setup_entry(mut self, entry: (u64, u64)) -> Self {
        self.setup.push(entry);
        self
    }

    /// Starts the manager and waits until it serves.
    ///
    /// Errors: [`Error::Process`] if its process cannot start, [`Error::ManagerGone`] if it
    /// died before it was ready, [`Error::Remote`] if it could not set itself up.
    pub fn start(self) -> Result<Manager> {
        let (server_end, client_end) =
            os::socket::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        let (ready, ready_tx) = mp_queue::pipe(false)?;
        let owner = os::pid();
        let n = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
        let args =
            ServerArgs { doorway: PassFd(server_end), ready: ready_tx, owner, setup: self.setup };
        let mut process = Process::new(serve, (args,))
            .with_name(self.name.unwrap_or_else(|| format!("SyncManager-{n}")))
            .with_daemon(true);
        if let Some(method) = self.method {
            process = process.with_start_method(method);
        }
        process.start()?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready.poll_timeout(Duration::from_millis(50))? {
            if !process.is_alive() || Instant::now() > deadline {
                let _ = process.kill();
                let _ = process.join_timeout(SHUTDOWN_TIMEOUT);
                return Err(Error::ManagerGone);
            }
        }
        let pid = match ready.recv::<std::result::Result<u32, String>>()? {
            Ok(pid) => pid,
            Err(why) => {
                let _ = process.join_timeout(SHUTDOWN_TIMEOUT);
                return Err(Error::Remote(crate::RemoteError::new("StartFailed", why)));
            }
        };
        Ok(Manager {
            process: Some(process),
            link: Link::new(new_object_id(), client_end),
            pid,
            owner,
        })
    }
}

impl Manager {
    /// Starts a manager with the default start method: Python's `multiprocessing.Manager()`.
    pub fn start() -> Result<Manager> {
        ManagerBuilder::default().start()
    }

    /// Options for starting one.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Runs `f` with a new manager and shuts it down after: Python's `with Manager() as m:`.
    pub fn scope<R>(f: impl FnOnce(&Manager) -> R) -> Result<R> {
        let mut manager = Manager::start()?;
        let r = f(&manager);
        manager.shutdown()?;
        Ok(r)
    }

    /// The manager process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the manager was shut down.
    pub fn is_shut_down(&self) -> bool {
        self.process.is_none()
    }

    /// Stops the manager: asks it to exit, waits [`SHUTDOWN_TIMEOUT`], then terminates and
    /// at last kills it. Every proxy of it then fails with [`Error::ManagerGone`]. Idempotent.
    pub fn shutdown(&mut self) -> Result<()> {
        let Some(process) = self.process.take() else { return Ok(()) };
        if self.owner != os::pid() {
            // A forked child's copy: the manager is its parent's to stop.
            std::mem::forget(process);
            return Ok(());
        }
        match self.link.call(Call::Shutdown) {
            Ok(_) | Err(Error::ManagerGone) => {}
            Err(e) => log::warn!(target: "mp_manager", "asking the manager to stop: {e}"),
        }
        if process.join_timeout(SHUTDOWN_TIMEOUT)?.is_none() {
            process.terminate()?;
            if process.join_timeout(SHUTDOWN_TIMEOUT)?.is_none() {
                process.kill()?;
                process.join()?;
            }
        }
        Ok(())
    }

    /// Waits for the manager's process to end (after [`shutdown`](Manager::shutdown) from
    /// another handle, or its death), at most `timeout`; its exit code, if it ended.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        match &self.process {
            Some(p) => Ok(p.join_timeout(timeout)?),
            None => Err(Error::ShutDown),
        }
    }

    /// How many objects the manager holds (Python's `_number_of_objects`), and how many
    /// references this process holds to them.
    pub fn number_of_objects(&self) -> Result<(u64, u64)> {
        self.check()?;
        self.link.call_decode(Call::Count)
    }

    /// Fails with [`Error::ShutDown`] after a shutdown.
    fn check(&self) -> Result<()> {
        if self.process.is_none() { Err(Error::ShutDown) } else { Ok(()) }
    }

    /// Makes an object of `typeid` from `args` and returns a handle holding its reference.
    pub(crate) fn create<A: Serialize + ?Sized>(&self, typeid: &str, args: &A) -> Result<Handle> {
        self.check()?;
        let args = postcard::to_allocvec(args)
            .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, args)))?;
        let id: u64 = self.link.call_decode(Call::Create { typeid, args: &args })?;
        Ok(Handle::owned(self.link.clone(), id, typeid))
    }

    /// The manager's link (for proxies made from items).
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!(target: "mp_manager", "shutting the manager down: {e}");
        }
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("pid", &self.pid)
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}
