//! `Process`: a child process created from a target and its arguments.

use std::fmt;
use std::io;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Signal};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::boot::{Boot, ChildIdentity, ChildRun, Encoded};
use crate::bootstrap;
use crate::child::{Child, Via};
use crate::context::{Context, get_start_method};
use crate::method::StartMethod;
use crate::os::code::{Body, Callable, Entry};
use crate::state::global;
use crate::target::Target;
use crate::{Error, Result, fdpass, launcher, os, wire};

/// What a process runs, erased: either a `fn` target with serde arguments or a capturing
/// closure that only a fork can carry.
pub(crate) trait Launch: Send {
    /// Whether only `fork` can run this target.
    fn fork_only(&self) -> bool;
    /// Runs the target in a forked child, returning the exit code.
    fn run_here(self: Box<Self>) -> i32;
    /// The target's checked entry and the encoded arguments, for spawn and forkserver.
    fn encode(&self) -> Result<Encoded>;
}

impl Context {
    /// A process that will start with this context's method (see [`Process::new`]).
    pub fn process<F, Args>(&self, target: F, args: Args) -> Process
    where
        F: Target<Args>,
        Args: Serialize + DeserializeOwned + Send + 'static,
    {
        Process::new(target, args).with_start_method(self.start_method())
    }
}

/// A `fn` target and its arguments.
struct FnLaunch<F, Args> {
    target: F,
    args: Args,
}

/// What a spawned child runs: decodes the arguments and calls the target `F`.
impl<F, Args> Body<ChildRun> for Callable<F, Args>
where
    F: Target<Args>,
    Args: DeserializeOwned,
{
    fn run(self, run: &mut ChildRun) {
        let fds = std::mem::take(&mut run.fds);
        run.code = match fdpass::decode_with_fds::<Args>(&run.payload, fds) {
            Ok(args) => self.0.call(args),
            Err(e) => {
                eprintln!(
                    "mp: cannot decode the arguments of the process target ({}): {e}",
                    std::any::type_name::<Args>()
                );
                crate::BOOTSTRAP_FAILURE
            }
        };
    }
}

impl<F, Args> Launch for FnLaunch<F, Args>
where
    F: Target<Args>,
    Args: Serialize + DeserializeOwned + Send + 'static,
{
    fn fork_only(&self) -> bool {
        false
    }

    fn run_here(self: Box<Self>) -> i32 {
        let FnLaunch { target, args } = *self;
        target.call(args)
    }

    fn encode(&self) -> Result<Encoded> {
        let (payload, fds) = fdpass::encode_with_fds(&self.args)?;
        let entry = Entry::of(Callable::new(self.target)).ok_or_else(|| {
            Error::io("locate the target's code", io::Error::other("outside the executable's text"))
        })?;
        Ok(Encoded { entry, payload, fds })
    }
}

struct ClosureLaunch<C>(C);

impl<C: FnOnce() + Send + 'static> Launch for ClosureLaunch<C> {
    fn fork_only(&self) -> bool {
        true
    }

    fn run_here(self: Box<Self>) -> i32 {
        (self.0)();
        0
    }

    fn encode(&self) -> Result<Encoded> {
        Err(Error::ForkOnly)
    }
}

/// A process: Python's `multiprocessing.Process`.
///
/// Created from a target and its argument tuple, configured (name, daemon, start method),
/// then [`start`](Process::start)ed once and [`join`](Process::join)ed.
///
/// ```
/// fn greet(name: String, times: u32) {
///     for _ in 0..times {
///         println!("hello, {name}");
///     }
/// }
///
/// # fn main() -> Result<(), mp_process::Error> {
/// let mut p = mp_process::Process::new(greet, ("world".to_string(), 2));
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - The target is a `fn` item or a non-capturing closure and `args` a tuple of serde values,
///   so the same code runs under every start method. Capturing closures go through
///   [`Process::fork_closure`], which always forks.
/// - [`join`](Process::join) returns the exit code; [`close`](Process::close) consumes the
///   handle and hands it back if the process still runs.
/// - Dropping a `Process` neither waits for nor kills the child: an unjoined child is reaped
///   by a background thread. Python's `Process` has no destructor semantics to compare.
pub struct Process {
    name: String,
    daemon: bool,
    method: Option<StartMethod>,
    identity: Vec<u32>,
    /// Behind a lock only so that `Process` is `Sync`: it is reached through `&mut self`.
    launch: parking_lot::Mutex<Option<Box<dyn Launch>>>,
    /// The forker to start through, if not the start method's own way.
    forker: Option<Forker>,
    child: Option<Arc<Child>>,
    creator: u32,
}

/// The next child name and identity of this process (`Process-N`, `Process-N:M`), and the
/// daemon flag a new child takes by default: this process's own, as in Python.
fn next_identity() -> (String, Vec<u32>, bool) {
    let mut g = global();
    g.me.counter += 1;
    let mut identity = g.me.identity.clone();
    identity.push(g.me.counter);
    let digits: Vec<String> = identity.iter().map(u32::to_string).collect();
    (format!("Process-{}", digits.join(":")), identity, g.me.daemon)
}

impl Process {
    fn from_launch(launch: Box<dyn Launch>) -> Process {
        let (name, identity, daemon) = next_identity();
        Process {
            name,
            daemon,
            method: None,
            identity,
            launch: parking_lot::Mutex::new(Some(launch)),
            forker: None,
            child: None,
            creator: crate::os::pid(),
        }
    }

    /// A process that will run `target(args...)`; `args` is a tuple, as in Python
    /// (`()` for none, `(x,)` for one).
    ///
    /// `target` must be a `fn` item or a closure that captures nothing (a compile-time
    /// error otherwise): under `spawn` and `forkserver`, only its code reaches the child.
    ///
    /// The new process is daemonic if the calling process is, as in Python (where a
    /// `Process` copies its creator's daemon flag); [`with_daemon`](Process::with_daemon) and
    /// [`set_daemon`](Process::set_daemon) override that. A daemonic process may not start
    /// children: there a `Process` can be made and inspected, but [`start`](Process::start)
    /// fails with [`Error::DaemonicChildren`].
    pub fn new<F, Args>(target: F, args: Args) -> Process
    where
        F: Target<Args>,
        Args: Serialize + DeserializeOwned + Send + 'static,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "a Process target must be a fn item or a non-capturing closure; \
                 use Process::fork_closure for capturing closures"
            )
        };
        Process::from_launch(Box::new(FnLaunch { target, args }))
    }

    /// A process that runs a capturing closure in a forked child. It always uses the `fork`
    /// start method, whatever the default is, so `MP_START_METHOD=spawn` cannot break it;
    /// asking for another method is an error at `start`. Its daemon flag defaults to the
    /// calling process's, as for [`Process::new`].
    pub fn fork_closure<C: FnOnce() + Send + 'static>(closure: C) -> Process {
        let mut p = Process::from_launch(Box::new(ClosureLaunch(closure)));
        p.method = Some(StartMethod::Fork);
        p
    }

    /// Sets the name (before or after start; Python allows both).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the process through `forker` (a zygote forked earlier: [`Forker::fork`]) rather
    /// than in the way of its start method, which it still reports to the child. The target
    /// must be a `fn` target (not [`fork_closure`](Process::fork_closure)): its arguments cross
    /// as with `forkserver`.
    ///
    /// [`Forker::fork`]: Forker::fork
    pub fn with_forker(mut self, forker: Forker) -> Self {
        self.forker = Some(forker);
        self
    }

    /// Sets the daemon flag (before start), overriding the default taken from the calling
    /// process.
    pub fn with_daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Uses `method` instead of the default start method.
    pub fn with_start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Sets the name.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Sets the daemon flag, overriding the default taken from the calling process; an error
    /// once the process has started (Python asserts this).
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::AlreadyStarted);
        }
        self.daemon = daemon;
        Ok(())
    }

    /// The name: `Process-N` (`Process-N:M` in a child of a child) unless one was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is daemonic: killed when its parent exits, even by SIGKILL, and
    /// not allowed to start children. Unless set, the flag of the process that made this
    /// `Process` (Python's default).
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The chain of child counters that numbers this process (Python's `_identity`).
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    fn check_creator(&self) -> Result<()> {
        let me = crate::os::pid();
        if me != self.creator {
            return Err(Error::WrongProcess { creator: self.creator, current: me });
        }
        Ok(())
    }

    fn child(&self) -> Result<&Arc<Child>> {
        self.check_creator()?;
        self.child.as_ref().ok_or(Error::NotStarted)
    }

    /// Starts the process. Errors: a second call (`AlreadyStarted`), a daemonic caller
    /// (`DaemonicChildren`), an unknown `MP_START_METHOD`, a closure under a method other
    /// than fork, a missing entry hook, or a failing system call.
    pub fn start(&mut self) -> Result<()> {
        self.check_creator()?;
        if self.child.is_some() || self.launch.get_mut().is_none() {
            return Err(Error::AlreadyStarted);
        }
        if bootstrap::marker_present() {
            return Err(Error::Bootstrapping);
        }
        let (me_daemon, parent_name) = {
            let g = global();
            (g.me.daemon, g.name())
        };
        if me_daemon {
            return Err(Error::DaemonicChildren);
        }
        let fork_only = self.launch.get_mut().as_ref().is_some_and(|l| l.fork_only());
        let method = match self.method {
            Some(m) => m,
            None => get_start_method()?,
        };
        if fork_only && method != StartMethod::Fork {
            return Err(Error::ForkOnly);
        }
        if method != StartMethod::Fork && !crate::entry::hook_ran() {
            return Err(Error::EntryHookMissing);
        }
        crate::tracker::ensure_running();
        let ident = ChildIdentity {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent_pid: crate::os::pid() as i32,
            parent_name,
            method,
            authkey: crate::current::key_for_child().map_err(|e| Error::io("getrandom", e))?,
        };
        let child = match (method, &self.forker) {
            (_, Some(forker)) => {
                let encoded = match self.launch.get_mut() {
                    Some(l) if !fork_only => l.encode()?,
                    Some(_) => return Err(Error::ForkOnly),
                    None => return Err(Error::AlreadyStarted),
                };
                let child = crate::forkserver::start_via(forker.client()?, encoded, ident)?;
                *self.launch.get_mut() = None;
                // The child keeps the connection it needs; the forker is its maker's to drop.
                self.forker = None;
                child
            }
            (StartMethod::Fork, None) => {
                let Some(launch) = self.launch.get_mut().take() else {
                    return Err(Error::AlreadyStarted);
                };
                start_fork(launch, ident)?
            }
            (StartMethod::Spawn, None) => {
                let encoded = match self.launch.get_mut() {
                    Some(l) => l.encode()?,
                    None => return Err(Error::AlreadyStarted),
                };
                let child = start_spawn(encoded, ident)?;
                *self.launch.get_mut() = None;
                child
            }
            (StartMethod::Forkserver, None) => {
                let encoded = match self.launch.get_mut() {
                    Some(l) => l.encode()?,
                    None => return Err(Error::AlreadyStarted),
                };
                let child = crate::forkserver::start(encoded, ident)?;
                *self.launch.get_mut() = None;
                child
            }
        };
        let child = Arc::new(child);
        global().children.push(child.clone());
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the process to exit and returns its exit code (see [`exitcode`]).
    ///
    /// On a machine with more than one CPU the wait first looks for the exit without sleeping,
    /// for up to 100 µs (scaled by `mp_sync::set_spin_limit`; 0 turns it off): a child that
    /// finishes quickly is joined without the wake-up of a sleeping parent. A program whose
    /// children run long stops spinning after a spin that ran out (it tries again once in up
    /// to 64 joins).
    ///
    /// [`exitcode`]: Process::exitcode
    pub fn join(&self) -> Result<i32> {
        let child = self.child()?;
        match child.wait(None)? {
            Some(code) => {
                forget_child(child);
                Ok(code)
            }
            None => Err(Error::io("join", std::io::ErrorKind::TimedOut)),
        }
    }

    /// Waits up to `timeout` for the process to exit: `Some(exit code)` if it did, `None`
    /// if it still runs (Python's `join(timeout)`, after which `exitcode` is `None`). A zero
    /// timeout returns at once; a timeout too large to represent waits for ever.
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>> {
        let child = self.child()?;
        let code = child.wait(crate::os::time::deadline(Some(timeout)))?;
        if code.is_some() {
            forget_child(child);
        }
        Ok(code)
    }

    /// Whether the process has started and not yet exited.
    pub fn is_alive(&self) -> bool {
        match self.child() {
            Ok(c) => c.is_alive(),
            Err(_) => false,
        }
    }

    /// The process id, once started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid.as_raw_nonzero().get().unsigned_abs())
    }

    /// `None` while the process runs (or before it starts), then its exit status: 0, the
    /// code it passed to `exit`, 1 after a panic, or minus the signal that killed it.
    pub fn exitcode(&self) -> Option<i32> {
        let child = self.child().ok()?;
        child.poll_status().ok().flatten()
    }

    /// Sends SIGTERM (Python's `terminate`). A process that already exited is left alone.
    pub fn terminate(&self) -> Result<()> {
        self.child()?.signal(Signal::TERM)
    }

    /// Sends SIGKILL (Python's `kill`).
    pub fn kill(&self) -> Result<()> {
        self.child()?.signal(Signal::KILL)
    }

    /// A descriptor that polls readable once the process has exited, for `poll`-style loops
    /// and `wait`: the child's pidfd, opened on the first call (a start does not open one).
    /// For a process joined before the first call, whose pid is no longer its own, it is a
    /// descriptor that always polls readable. Errors: not started, or no descriptor left.
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        self.child()?.sentinel()
    }

    /// Releases the process's resources (Python's `close`). A process that is still running
    /// is handed back inside the error.
    pub fn close(self) -> std::result::Result<(), CloseError> {
        if let Some(c) = &self.child {
            if self.check_creator().is_ok() && c.poll_status().ok().flatten().is_none() {
                return Err(CloseError(self));
            }
        }
        Ok(())
    }
}

/// Removes a joined child from the registry.
fn forget_child(child: &Arc<Child>) {
    global().children.retain(|c| !Arc::ptr_eq(c, child));
}

impl Drop for Process {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else { return };
        if crate::os::pid() != self.creator {
            return;
        }
        match child.poll_status() {
            Ok(Some(_)) => forget_child(&child),
            _ => crate::reaper::abandon(&child),
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("pid", &self.pid())
            .field("exitcode", &self.child.as_ref().and_then(|c| c.cached_status()))
            .finish()
    }
}

/// Forks a child for `launch`, from a thread that lives as long as the process when the
/// child is daemonic.
fn start_fork(launch: Box<dyn Launch>, ident: ChildIdentity) -> Result<Child> {
    let daemon = ident.daemon;
    let name = ident.name.clone();
    let pid = if daemon && !launcher::on_main_thread() {
        launcher::run(move || fork_now(launch, ident))??
    } else {
        fork_now(launch, ident)?
    };
    Ok(Child::new(pid, None, name, daemon, Via::Direct))
}

/// Logs once that a process with threads other than mp's own is being forked. The thread
/// count is read from `/proc/self/stat` at most every 100 ms, so that forking in a loop does
/// not pay for it each time.
fn warn_if_threaded(own_threads: usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    static LAST_CHECK_MS: AtomicU64 = AtomicU64::new(0);
    if WARNED.load(Ordering::Relaxed) {
        return;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_CHECK_MS.load(Ordering::Relaxed);
    if last != 0 && now_ms.saturating_sub(last) < 100 {
        return;
    }
    LAST_CHECK_MS.store(now_ms.max(1), Ordering::Relaxed);
    let Some(threads) = thread_count() else { return };
    if threads > 1 + own_threads && !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "mp: forking a process that has {threads} threads; the child has only the forking \
             one, and locks held by the others stay locked in it (use the forkserver or spawn \
             start method in multithreaded programs, e.g. with tokio or rayon)"
        );
    }
}

/// The number of threads of this process: field 20 of `/proc/self/stat`.
fn thread_count() -> Option<usize> {
    let mut buf = [0u8; 1024];
    let fd = rustix::fs::open(
        "/proc/self/stat",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(17)?.parse().ok()
}

/// The fork itself, with the hygiene DESIGN.md asks for: stdio flushed and its locks held
/// with mp's registry lock across the fork, so the child inherits them unlocked; signals
/// blocked across it, so that no handler of this process runs in the child, whose
/// dispositions are reset before any handler can run there.
fn fork_now(launch: Box<dyn Launch>, ident: ChildIdentity) -> Result<Pid> {
    // A forked child shares the tree's key (entries it makes are its parent's), so the key
    // is made before the fork if it is not yet. (The forkserver forks without one: its
    // children adopt the key their bootstrap message carries.)
    crate::os::code::tree_key();
    let own_threads = {
        let mut g = global();
        g.self_pidfd()?;
        g.own_threads()
    };
    warn_if_threaded(own_threads);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let out = std::io::stdout().lock();
    let err = std::io::stderr().lock();
    let g = global();
    // The registry of shared objects is locked last and never held while printing or taking
    // `GLOBAL`.
    let registry = crate::fdpass::hold_for_fork();
    let mut held = Some((out, err, g, registry));
    // What the child needs is made here, before the fork: every page the child writes costs
    // it a copy (copy-on-write), so it allocates as little as it can.
    let mut job = Some((launch, ident));
    let null = bootstrap::dev_null();
    // Signals stay blocked until the child has reset its dispositions.
    let realtime = os::process::RealtimeSignals::get();
    let mask = os::process::block_signals();
    let pid = os::process::fork_child(&mut || {
        let (Some((out, err, mut g, registry)), Some((launch, ident))) = (held.take(), job.take())
        else {
            return crate::BOOTSTRAP_FAILURE;
        };
        let daemon = ident.daemon;
        let parent_pid = ident.parent_pid;
        drop(registry);
        g.become_forked_child(ident);
        drop(g);
        drop(err);
        drop(out);
        os::process::reset_signals_in_child(realtime);
        bootstrap::stdin_from(null);
        if daemon {
            bootstrap::die_with_parent(parent_pid);
        }
        bootstrap::run_child(move || launch.run_here())
    });
    os::process::restore_signals(&mask);
    drop(held);
    pid.map_err(|e| Error::io("fork", e))
}

/// Spawns a fresh exec of this binary and sends it the target over the bootstrap socket.
fn start_spawn(encoded: Encoded, ident: ChildIdentity) -> Result<Child> {
    let (parent_sock, child_sock) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socketpair", e))?;
    let marker = format!("{}={}", crate::boot::BOOT_ENV, os::process::BOOT_FD);
    let daemon = ident.daemon;
    let pid = if daemon && !launcher::on_main_thread() {
        launcher::run(move || os::process::spawn_self(child_sock.as_fd(), &marker))?
    } else {
        let pid = os::process::spawn_self(child_sock.as_fd(), &marker);
        drop(child_sock);
        pid
    }
    .map_err(|e| Error::io("posix_spawn", e))?;
    let child = Child::new(pid, None, ident.name.clone(), daemon, Via::Direct);
    let parent_pidfd = global().self_pidfd()?;
    let tracker = crate::tracker::inherited();
    let boot = Boot::new(encoded.entry, encoded.payload, ident, tracker.is_some())?;
    let bytes = wire::encode(&boot)?;
    let fds = boot.fds(&parent_pidfd, tracker.as_ref(), &encoded.fds);
    if let Err(e) = fdpass::send_frame(parent_sock.as_fd(), &bytes, &fds, wire::DEFAULT_MAX_FRAME) {
        // The child cannot run without its bootstrap: stop it and reap it before reporting.
        let _ = child.signal(Signal::KILL);
        let _ = child.wait(None);
        return Err(e.into());
    }
    Ok(child)
}

/// `Process::close` on a process that is still running: the process is handed back.
#[derive(Debug)]
pub struct CloseError(pub Process);

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot close a process while it is still running; join it first")
    }
}

impl std::error::Error for CloseError {}

/// A forker of the zygote flavour: a single-threaded process forked from its maker, which
/// forks children on request (their memory is the maker's at the time of [`Forker::fork`]) and
/// reports their exit statuses. Start a [`Process`](crate::Process) through it with
/// [`Process::with_forker`](crate::Process::with_forker).
///
/// Its children are the maker's (`parent_process` in them is the maker), and daemonic ones die
/// with the forker. When the maker drops its last `Forker` (or calls [`Forker::close`]), the
/// forker kills the daemonic children it forked for the maker and exits, and is reaped; one
/// that a non-daemonic child keeps busy is killed after a short wait.
///
/// ```
/// # let _guard = mp_process::init()?;
/// fn hello() {}
/// let forker = mp_process::Forker::fork()?;
/// let mut p = mp_process::Process::new(hello, ()).with_forker(forker.clone());
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), mp_process::Error>(())
/// ```
#[derive(Clone)]
pub struct Forker {
    inner: Arc<ForkerInner>,
}

struct ForkerInner {
    /// The connection to the server; `None` only while dropping.
    client: Option<Arc<crate::relay::Client>>,
    server: Option<Process>,
}

impl std::fmt::Debug for Forker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.inner.server.as_ref().and_then(Process::pid);
        f.debug_struct("Forker").field("pid", &pid).finish_non_exhaustive()
    }
}

impl Forker {
    /// Forks a new forker from this process (daemonic: it dies with this process).
    ///
    /// Errors: as [`Process::start`](crate::Process::start) with the `fork` method.
    pub fn fork() -> Result<Forker> {
        let (mine, theirs) = os::socket::stream_pair().map_err(|e| Error::io("socketpair", e))?;
        // The forked server must not keep our end open (it would never see it close): the
        // end rides in a slot that the child empties, closing its copy.
        let slot = Arc::new(parking_lot::Mutex::new(Some(mine)));
        let in_child = Arc::clone(&slot);
        let mut server = Process::fork_closure(move || {
            drop(in_child.lock().take());
            os::process::ignore_sigint(true);
            // Its exit code is 0 whenever the loop ends: the last connection closed.
            let _ = crate::forkserver::serve_loop(theirs);
        })
        .with_daemon(true)
        .with_name("Forker");
        server.start()?;
        let mine = slot.lock().take().ok_or(Error::ForkserverLost)?;
        let client = Some(Arc::new(crate::relay::Client::new(mine)));
        Ok(Forker { inner: Arc::new(ForkerInner { client, server: Some(server) }) })
    }

    /// The connection to the server.
    pub(crate) fn client(&self) -> Result<Arc<crate::relay::Client>> {
        self.inner.client.clone().ok_or(Error::ForkserverLost)
    }

    /// Lets go of the forker. If this was the last handle on it, tells it so, waits for it to
    /// exit (it kills its daemonic children and exits; a non-daemonic child still running
    /// keeps it, and after a short wait it is killed) and returns its exit code: 0 if it exited
    /// on its own, -9 if it was killed. `None` if other handles remain (the last one to go
    /// reaps it).
    pub fn close(self) -> Option<i32> {
        Arc::try_unwrap(self.inner).ok().and_then(|mut inner| inner.finish())
    }

    /// The forker's pid.
    pub fn pid(&self) -> Option<u32> {
        self.inner.server.as_ref().and_then(Process::pid)
    }
}

/// How long a dropped forker may take to exit on its own before it is killed.
const FORKER_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl ForkerInner {
    /// Lets go of the server and reaps it: its exit code (0 when it exited on its own, -9 when
    /// it had to be killed), `None` if it was reaped already.
    fn finish(&mut self) -> Option<i32> {
        let server = self.server.take()?;
        // Told that the maker lets go, it closes the maker's connection (also where copies of it
        // live on, in processes forked since, or in children the maker still holds), kills the
        // daemonic children it forked for the maker, and exits once their connections close.
        if let Some(client) = self.client.take() {
            client.close();
        }
        // A server that does not exit (a non-daemonic child still runs) is killed after a
        // short wait, and its daemonic children with it (their death signal).
        match server.join_timeout(FORKER_EXIT_WAIT) {
            Ok(Some(code)) => Some(code),
            _ => {
                let _ = server.kill();
                server.join().ok()
            }
        }
    }
}

impl Drop for ForkerInner {
    fn drop(&mut self) {
        self.finish();
    }
}
