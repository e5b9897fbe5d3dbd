//! [`Manager`]: Python's `multiprocessing.Manager()` (a `SyncManager`), its builder, and the
//! calls that make proxies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mp_process::fdpass::{PassFd, new_object_id};
use mp_process::{AuthKey, Process, StartMethod, os};
use mp_queue::{Address, IntoAddress, Listener};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::link::Link;
use crate::proto::Call;
use crate::proxy::Handle;
use crate::server::serve::{ListenArgs, Ready, ServerArgs, SetupStep, serve};

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
    /// The manager's process (`None` once shut down, and for a manager reached with
    /// [`Manager::connect`]).
    process: Option<Process>,
    /// The way to it.
    link: Link,
    /// The manager process's pid.
    pid: u32,
    /// The pid that started it: only that process shuts it down when dropped (0: this handle
    /// connected to it).
    owner: u32,
    /// The address it listens on for remote clients, if any.
    address: Option<Address>,
    /// Whether this handle was shut down (or, for a connected one, closed).
    closed: bool,
}

/// Options for starting a [`Manager`], or for serving one on an address
/// ([`get_server`](ManagerBuilder::get_server)).
#[derive(Default)]
pub struct ManagerBuilder {
    method: Option<StartMethod>,
    name: Option<String>,
    setup: Vec<SetupStep>,
    address: Option<Result<Address>>,
    authkey: Option<AuthKey>,
    /// Why the builder cannot start a manager (an initializer's arguments that do not
    /// encode), reported by `start`.
    failure: Option<Error>,
}

/// A manager served in the calling process for remote clients: Python's
/// `BaseManager.get_server()`, from [`ManagerBuilder::get_server`].
///
/// It is bound already ([`address`](Server::address) says where, with the port the kernel
/// chose for port 0); [`serve_forever`](Server::serve_forever) serves.
pub struct Server {
    /// The listening socket.
    listener: Listener,
    /// The registration functions to run before serving.
    setup: Vec<SetupStep>,
}

impl Server {
    /// The address clients connect to.
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    /// Serves in the calling thread, for ever: Python's `Server.serve_forever()`. Remote
    /// clients ([`Manager::connect`]) make and use objects; each client's references and locks
    /// are given back when it disconnects, however it ends. Nothing stops the server but the
    /// end of its process (a signal, or the program's own exit from another thread): remote
    /// clients may not shut it down.
    ///
    /// Errors: [`Error::Remote`] (`"StartFailed"`) if a registration function fails.
    pub fn serve_forever(self) -> Result<()> {
        crate::server::serve::serve_forever(new_object_id(), &self.setup, self.listener)
            .map_err(|why| Error::Remote(crate::RemoteError::new("StartFailed", why)))
    }
}

/// Options for connecting to a manager served on an address, from
/// [`Manager::connect_builder`].
pub struct ConnectBuilder {
    address: Result<Address>,
    authkey: Option<AuthKey>,
    shortcut: bool,
}

impl ConnectBuilder {
    /// The key the manager checks (by default this process's key, [`mp_process::authkey`]).
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(AuthKey::new(key.as_ref()));
        self
    }

    /// Whether connections move to shared memory when the manager is on this host (`true`
    /// by default; see [`Manager::connect`]). `false` keeps every call on the network, as a
    /// client on another host has it. Proxies sent to other processes take the choice along.
    pub fn same_host_shortcut(mut self, shortcut: bool) -> Self {
        self.shortcut = shortcut;
        self
    }

    /// Connects: [`Manager::connect`].
    ///
    /// Errors: as [`Manager::connect`]'s; an address that does not parse is
    /// [`Error::Connection`].
    pub fn connect(self) -> Result<Manager> {
        let address = self.address?;
        let key = match self.authkey {
            Some(key) => key,
            None => mp_process::authkey().map_err(|e| Error::Io { op: "getrandom", source: e })?,
        };
        let (link, pid) = Link::remote(address.clone(), key, self.shortcut)?;
        Ok(Manager { process: None, link, pid, owner: 0, address: Some(address), closed: false })
    }
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

    /// Makes `start` and `get_server` fail with `error`.
    pub(crate) fn fail_setup(mut self, error: Error) -> Self {
        self.failure.get_or_insert(error);
        self
    }

    /// Registers a function the manager's process runs before it serves (with `args` in the
    /// registry while it runs): it registers the program's own types (see
    /// [`Registry`](crate::Registry)) or does whatever initialisation the manager needs
    /// (Python's `initializer`).
    pub(crate) fn setup_entry(mut self, entry: (u64, u64), args: Vec<u8>) -> Self {
        self.setup.push(SetupStep { entry, args });
        self
    }

    /// Also serves remote clients on `address` (Python's `BaseManager(address=...)`): a TCP
    /// address (`"127.0.0.1:50000"`, or `":50000"`, which is loopback too; port 0 for one the
    /// kernel chooses; name an interface, `"0.0.0.0:50000"` for all, only when other hosts
    /// must reach it), an `AF_UNIX` path or an abstract name. Clients
    /// reach it with [`Manager::connect`] and the key ([`authkey`](ManagerBuilder::authkey),
    /// by default this process's, [`mp_process::authkey`]). [`Manager::address`] says where
    /// it listens.
    pub fn address(mut self, address: impl IntoAddress) -> Self {
        self.address = Some(address.into_address().map_err(Error::from));
        self
    }

    /// The key remote clients must hold (default: this process's key, `mp_process::authkey`,
    /// as Python's managers).
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(AuthKey::new(key));
        self
    }

    /// Where to listen and with which key, if an address was given.
    fn listen_args(&mut self) -> Result<Option<ListenArgs>> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        let Some(address) = self.address.take() else { return Ok(None) };
        let key = match self.authkey.take() {
            Some(key) => key,
            None => mp_process::authkey().map_err(|e| Error::Io { op: "getrandom", source: e })?,
        };
        Ok(Some(ListenArgs { address: address?, key: key.as_bytes().to_vec() }))
    }

    /// Binds the address and returns a [`Server`] to run in this process: Python's
    /// `BaseManager(address, authkey).get_server()`. The registered types and the
    /// initializer are the builder's; the start method and name are not used.
    ///
    /// Errors: [`Error::Connection`] if the address cannot be bound (in use, say), or none was
    /// given (`InvalidArgument`).
    pub fn get_server(mut self) -> Result<Server> {
        let listen =
            self.listen_args()?.ok_or(Error::Connection(mp_queue::Error::InvalidArgument(
                "get_server needs an address (ManagerBuilder::address)",
            )))?;
        let listener = crate::server::serve::bind(&listen)?;
        Ok(Server { listener, setup: self.setup })
    }

    /// Starts the manager and waits until it serves.
    ///
    /// Errors: [`Error::Process`] if its process cannot start, [`Error::ManagerGone`] if it
    /// died before it was ready, [`Error::Remote`] if it could not set itself up.
    pub fn start(mut self) -> Result<Manager> {
        let listen = self.listen_args()?;
        let (server_end, client_end) =
            os::socket::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        let (ready, ready_tx) = mp_queue::pipe(false)?;
        let owner = os::pid();
        let n = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
        let id = new_object_id();
        let args = ServerArgs {
            id,
            doorway: PassFd(server_end),
            ready: ready_tx,
            owner,
            setup: self.setup,
            listen,
        };
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
        let (pid, address) = match ready.recv::<Ready>()? {
            Ok(ready) => ready,
            Err(why) => {
                let _ = process.join_timeout(SHUTDOWN_TIMEOUT);
                return Err(Error::Remote(crate::RemoteError::new("StartFailed", why)));
            }
        };
        Ok(Manager {
            process: Some(process),
            link: Link::new(id, client_end),
            pid,
            owner,
            address,
            closed: false,
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

    /// Connects to a manager served on `address` by another process tree, possibly on
    /// another host (Python's `BaseManager(address, authkey).connect()`): a manager started
    /// with [`ManagerBuilder::address`] or served with [`Server::serve_forever`].
    ///
    /// `authkey` is the key the manager checks; `None` uses this process's key
    /// ([`mp_process::authkey`]), as Python's managers do. The connection runs CPython's
    /// mutual HMAC-SHA256 handshake first: with a wrong key, nothing of the manager is
    /// reachable. The proxies made through the returned handle work as any manager's
    /// (registered types by name: the client need not register them, and may be another
    /// program that defines the same types), except that `update_with` and `sort`, which run
    /// a function of this program in the manager, are refused (`"Refused"`): a remote manager
    /// runs no code sent to it. This process's references and locks are given back when it
    /// ends or disconnects.
    ///
    /// [`shutdown`](Manager::shutdown) on this handle closes it only: the manager is its
    /// owner's to stop.
    ///
    /// When the manager runs on this host (in this network namespace) and under this user,
    /// each connection moves from the socket to shared memory once it is authenticated (the
    /// *same-host shortcut*: a connection as fast as those of the manager's own process
    /// tree, with a remote client's rights still); elsewhere it stays on the network.
    /// [`Manager::connect_builder`] can turn that off; [`Manager::is_same_host`] says which
    /// was taken.
    ///
    /// Errors: [`Error::ManagerGone`] if nothing listens at `address`;
    /// [`Error::Connection`] with `mp_queue::Error::Authentication` for a wrong key, or other
    /// connection errors.
    pub fn connect(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Manager> {
        let mut builder = Manager::connect_builder(address);
        if let Some(key) = authkey {
            builder = builder.authkey(key);
        }
        builder.connect()
    }

    /// Options for connecting to a manager served on an address: [`Manager::connect`] with
    /// more choices.
    ///
    /// ```
    /// let server = mp_manager::Manager::builder().address("127.0.0.1:0").authkey(b"k").start()?;
    /// let client = mp_manager::Manager::connect_builder(server.address().unwrap())
    ///     .authkey(b"k")
    ///     .same_host_shortcut(false)
    ///     .connect()?;
    /// assert!(!client.is_same_host(), "every call goes over TCP");
    /// assert_eq!(client.dict::<u8, u8>()?.len()?, 0);
    /// # Ok::<(), mp_manager::Error>(())
    /// ```
    pub fn connect_builder(address: impl IntoAddress) -> ConnectBuilder {
        ConnectBuilder {
            address: address.into_address().map_err(Error::from),
            authkey: None,
            shortcut: true,
        }
    }

    /// Whether this process's calls to a manager reached with [`Manager::connect`] take the
    /// same-host shortcut (shared memory) rather than the network: as of the last connection
    /// this process opened to it. `false` for a manager of this process tree (its calls take
    /// shared memory through its doorway, no network involved).
    pub fn is_same_host(&self) -> bool {
        self.link.is_remote() && self.link.same_host()
    }

    /// The manager process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The address the manager listens on for remote clients (Python's `address`): the one
    /// given to [`ManagerBuilder::address`] (with the port chosen for port 0), or to
    /// [`Manager::connect`]. `None` for a manager of this process tree only.
    pub fn address(&self) -> Option<&Address> {
        self.address.as_ref()
    }

    /// Whether this handle was shut down.
    pub fn is_shut_down(&self) -> bool {
        self.closed
    }

    /// Stops the manager: asks it to exit, waits [`SHUTDOWN_TIMEOUT`], then terminates and
    /// at last kills it. Every proxy of it then fails with [`Error::ManagerGone`]. Idempotent.
    /// On a handle from [`Manager::connect`], only closes the handle.
    pub fn shutdown(&mut self) -> Result<()> {
        self.closed = true;
        let Some(process) = self.process.take() else { return Ok(()) };
        if self.owner != os::pid() {
            // A forked child's copy: the manager is its parent's to stop.
            std::mem::forget(process);
            return Ok(());
        }
        // A manager that was asked (or is gone) gets its time to exit; one that could not be
        // asked (this process is out of descriptors, say) is terminated at once.
        let asked = match self.link.call(Call::Shutdown) {
            Ok(_) | Err(Error::ManagerGone) => true,
            Err(e) => {
                log::warn!(target: "mp_manager", "asking the manager to stop: {e}");
                false
            }
        };
        if !asked || process.join_timeout(SHUTDOWN_TIMEOUT)?.is_none() {
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
            None if self.owner == 0 => Err(Error::NotOwner),
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
        if self.closed { Err(Error::ShutDown) } else { Ok(()) }
    }

    /// Makes an object of `typeid` from `args` and returns a handle holding its reference.
    pub(crate) fn create<A: Serialize + ?Sized>(&self, typeid: &str, args: &A) -> Result<Handle> {
        self.check()?;
        let args = postcard::to_allocvec(args)
            .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, args)))?;
        let id: u64 = self.link.call_decode(Call::Create { typeid, args: &args })?;
        Ok(Handle::owned(self.link.clone(), id, typeid))
    }

    /// Publishes `value` under `name` in the manager, for other clients (other processes,
    /// other programs through [`Manager::connect`]) to [`lookup`](Manager::lookup): the way
    /// to share a queue or a dict between programs started separately (Python registers a
    /// callable that returns the shared object). `value` is usually a proxy of this manager,
    /// or a value holding some (a tuple of a queue and a lock, say); the manager keeps the
    /// objects alive while they are published. Publishing a name again replaces its value.
    ///
    /// ```
    /// let m = mp_manager::Manager::start()?;
    /// let jobs = m.queue::<String>()?;
    /// m.publish("jobs", &jobs)?;
    /// drop(jobs); // the manager keeps the queue: it is published
    /// let jobs: mp_manager::QueueProxy<String> = m.lookup("jobs")?;
    /// jobs.put("first".to_string())?;
    /// assert!(m.lookup::<mp_manager::DictProxy<u8, u8>>("jobs").is_err(), "not a dict");
    /// assert!(m.unpublish("jobs")?);
    /// assert!(m.lookup::<mp_manager::QueueProxy<String>>("jobs").unwrap_err().is_remote("NoSuchName"));
    /// # Ok::<(), mp_manager::Error>(())
    /// ```
    ///
    /// Errors: [`Error::Wire`] if `value` does not encode; those of any call.
    pub fn publish<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.check()?;
        let value = crate::proxy::encode_item(&self.link, value)?;
        self.link.call(Call::Publish { name, value }).map(drop)
    }

    /// The value published under `name` ([`publish`](Manager::publish)), decoded as a `T`
    /// (a proxy type: its object's type is checked).
    ///
    /// Errors: [`Error::Remote`] `"NoSuchName"` if nothing is published under `name`;
    /// [`Error::Wire`] if the value is not a `T` (a proxy of another type).
    pub fn lookup<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.check()?;
        let payload = self.link.call(Call::Lookup { name })?;
        crate::proxy::decode_payload(&self.link, payload)
    }

    /// Removes what was published under `name`; whether there was something.
    pub fn unpublish(&self, name: &str) -> Result<bool> {
        self.check()?;
        self.link.call_decode(Call::Unpublish { name })
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
