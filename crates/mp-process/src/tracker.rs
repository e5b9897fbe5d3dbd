//! The resource tracker: a helper process that unlinks named shared-memory segments the
//! program leaves behind, as Python's `resource_tracker` does.
//!
//! The first child started in a process tree (or the first [`register_shm`], if that comes
//! earlier) starts the tracker: a fresh exec of the
//! executable, diverted before `main` like a spawned child. It holds one end of a
//! `SOCK_SEQPACKET` socketpair; every process of the tree holds the other (forked children
//! inherit it, spawned and forkserver children receive it with their bootstrap), and sends
//! `register` and `unregister` messages. When the last of them exits, however it exits (a
//! SIGKILL included), the tracker reads end-of-file, unlinks every name still registered,
//! and exits. It keeps a set of names: registering a name twice keeps it once, and
//! unregistering or unlinking a name it does not hold (or that is already gone) does nothing.
//!
//! # A tracker that dies
//!
//! If the tracker itself is killed, the next message a process sends to it fails (`EPIPE`)
//! and, before a child starts, a process finds its connection hung up. Either way that
//! process starts a new tracker (its own child) with a warning through `log`, as Python
//! does, and, where Python's tracker does not, registers with it again every name *it* has
//! registered and not unregistered, so those are still cleaned up; then it sends its message
//! once more. Each process keeps that set for itself (a forked child starts with an empty
//! one: the names are its parent's). Other processes of the tree still hold the dead
//! connection and start their own tracker when they next fail to reach it, re-registering
//! their own names; children started afterwards share the new tracker of the process that
//! starts them. A new tracker sees end-of-file when the processes that hold *its* connection
//! are gone, so the names of a process that replaced the tracker are unlinked once that
//! process and the children it started since are gone, even if its parent still runs. The
//! process that started a dead tracker reaps it when it replaces it.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketType};

use crate::child::{Child, Via, open_pidfd};
use crate::state::{Global, global};
use crate::{Error, Result, bootstrap};

/// The environment variable that marks the tracker process; its value is its socket's fd.
pub(crate) const TRACKER_ENV: &str = "MP_TRACKER_FD";

/// The longest name the tracker accepts (`NAME_MAX`).
const MAX_NAME: usize = 255;

/// How long a process waits to reap a dead tracker it replaced (it is already exiting: its
/// socket is closed).
const REAP_WAIT: Duration = Duration::from_secs(1);

/// Which connection a caller needs.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// The current one, whatever its state (starting a tracker if there is none).
    Any,
    /// The current one if the tracker has not hung up, else a new tracker's.
    Alive,
    /// Not this one, which failed: a new tracker's, unless another thread replaced it already.
    Not(&'a Arc<OwnedFd>),
}

/// A tracker this process replaced, reported once the registry lock is released (code
/// holding it never prints, see ARCHITECTURE.md).
struct Replaced {
    /// The old tracker process, if this process started it (and so must reap it).
    old: Option<Child>,
    new_pid: u32,
    names: usize,
}

/// Whether a send error means the tracker is gone.
fn is_gone(e: Errno) -> bool {
    e == Errno::PIPE || e == Errno::CONNRESET
}

/// Whether the tracker has hung up: it never writes, so a readable connection means
/// end-of-file.
fn hung_up(fd: &OwnedFd) -> bool {
    crate::os::poll::readable(fd.as_fd(), Some(std::time::Instant::now())).unwrap_or(false)
}

/// The connection of this process to the tree's tracker, as `want` asks, starting a tracker
/// if there is none or the current one is dead. Called with the registry locked.
fn connection_locked(g: &mut Global, want: Want<'_>) -> Result<(Arc<OwnedFd>, Option<Replaced>)> {
    if let Some(fd) = &g.tracker {
        let keep = match want {
            Want::Any => true,
            Want::Alive => !hung_up(fd),
            Want::Not(dead) => !Arc::ptr_eq(fd, dead),
        };
        if keep {
            return Ok((fd.clone(), None));
        }
    }
    // None yet (or an earlier start failed), or a dead one to replace.
    let dead = g.tracker.take().is_some();
    let old = g.tracker_process.take();
    let spawned = bootstrap::spawn_helper(
        TRACKER_ENV,
        SocketType::SEQPACKET,
        "starting the resource tracker",
    );
    let (mine, pid) = match spawned {
        Ok(got) => got,
        Err(e) => {
            g.tracker_process = old;
            return Err(e);
        }
    };
    let fd = Arc::new(mine);
    // The new tracker is this process's child: keep its pidfd to reap it if it dies.
    g.tracker_process = open_pidfd(pid)
        .ok()
        .map(|pidfd| Child::new(pid, Some(pidfd), "resource-tracker".into(), false, Via::Direct));
    g.tracker = Some(fd.clone());
    // Tell the new tracker every name this process still tracks (none, unless a tracker
    // died or failed to start). Under the registry lock, so that no unregister of this
    // process overtakes the re-registration of its name. If the new tracker dies too, the
    // names are sent again at the next restart.
    for name in &g.tracked {
        if send_on(&fd, b'R', name).is_err() {
            break;
        }
    }
    // A dead tracker this process started is reaped even if an earlier restart failed.
    let replaced = (dead || old.is_some()).then(|| Replaced {
        old,
        new_pid: pid.as_raw_nonzero().get().unsigned_abs(),
        names: g.tracked.len(),
    });
    Ok((fd, replaced))
}

/// Warns about a replaced tracker and reaps the old one if this process is its parent.
fn report(replaced: Option<Replaced>) {
    let Some(r) = replaced else { return };
    let old_pid = r.old.as_ref().map(|c| c.pid.as_raw_nonzero().get());
    let old = old_pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    log::warn!(
        "mp: the resource tracker{old} is gone; started a new one (pid {}) and registered \
         again the {} shared-memory name(s) this process tracks",
        r.new_pid,
        r.names
    );
    if let Some(child) = r.old {
        // Its socket is closed, so it is exiting: reap it, not leave a zombie.
        let _ = child.wait(crate::os::time::deadline(Some(REAP_WAIT)));
    }
}

/// Sends one message on `fd`, retrying interruptions.
fn send_on(fd: &OwnedFd, op: u8, name: &str) -> std::result::Result<(), Errno> {
    let mut msg = Vec::with_capacity(name.len() + 1);
    msg.push(op);
    msg.extend_from_slice(name.as_bytes());
    loop {
        match rustix::net::send(fd.as_fd(), &msg, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Updates this process's set of tracked names and sends `op` for `name`; if the tracker is
/// gone, starts a new one (which hears of every tracked name) and sends once more.
fn send(op: u8, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(Error::io("tracking a name", std::io::ErrorKind::InvalidInput));
    }
    // The set changes before the message goes, in the same critical section that picks the
    // connection: a restart by another thread meanwhile tells the new tracker exactly the
    // names registered and not unregistered (a register sent twice is kept once).
    let first = {
        let mut g = global();
        let got = connection_locked(&mut g, Want::Any);
        if got.is_ok() {
            if op == b'R' {
                g.tracked.insert(name.to_owned());
            } else {
                g.tracked.remove(name);
            }
        }
        got
    };
    let failed = |e: Error| {
        if op == b'R' {
            global().tracked.remove(name);
        }
        e
    };
    let (fd, replaced) = first?;
    report(replaced);
    match send_on(&fd, op, name) {
        Ok(()) => return Ok(()),
        Err(e) if is_gone(e) => {}
        Err(e) => return Err(failed(Error::io("sending to the resource tracker", e))),
    }
    let again = connection_locked(&mut global(), Want::Not(&fd));
    let (fd, replaced) = again.map_err(failed)?;
    report(replaced);
    send_on(&fd, op, name).map_err(|e| failed(Error::io("sending to the resource tracker", e)))
}

/// Registers a named shared-memory segment (its `shm_open` name, with the leading `/`): if
/// it still exists when the last process of this program exits, the tracker unlinks it.
pub fn register_shm(name: &str) -> Result<()> {
    send(b'R', name)
}

/// Withdraws a name registered with [`register_shm`], after the segment was unlinked.
pub fn unregister_shm(name: &str) -> Result<()> {
    send(b'U', name)
}

/// Starts the tree's tracker before the first child starts, so that every child shares it:
/// a segment a child creates then outlives the child and is unlinked only when the whole
/// tree is gone. A tracker that died is replaced first, so that the child gets a live one.
/// A tracker that cannot start is logged, not fatal: only leak clean-up is lost.
pub(crate) fn ensure_running() {
    let got = connection_locked(&mut global(), Want::Alive);
    match got {
        Ok((_, replaced)) => report(replaced),
        Err(e) => log::warn!("mp: cannot start the resource tracker: {e}"),
    }
}

/// The tracker's connection for a child's bootstrap, if this process has one.
pub(crate) fn inherited() -> Option<Arc<OwnedFd>> {
    global().tracker.clone()
}

/// The pid of the tracker this process uses, if this process started it (the tracker is then
/// its child); `None` if it has none or shares one a parent started. For tests that kill
/// the tracker.
#[doc(hidden)]
pub fn tracker_pid() -> Option<u32> {
    let g = global();
    g.tracker.as_ref()?;
    g.tracker_process.as_ref().map(|c| c.pid.as_raw_nonzero().get().unsigned_abs())
}

/// The tracker process: collect names until every client is gone, then unlink the rest.
pub(crate) fn serve() -> i32 {
    let sock = match bootstrap::helper_socket() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut names: HashSet<String> = HashSet::new();
    let mut buf = [0u8; MAX_NAME + 2];
    loop {
        let n = match rustix::net::recv(&sock, &mut buf, RecvFlags::empty()) {
            Ok((0, _)) => break,
            Ok((n, _)) => n.min(buf.len()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        };
        let Some((&op, rest)) = buf[..n].split_first() else { continue };
        let Ok(name) = std::str::from_utf8(rest) else { continue };
        match op {
            b'R' => {
                names.insert(name.to_owned());
            }
            b'U' => {
                names.remove(name);
            }
            _ => {}
        }
    }
    // CPython's tracker warns whatever the logging set-up; so does this one (on stderr, as no
    // logger is installed in this process).
    crate::state::global().me.name = Some("ResourceTracker".to_owned());
    let mut unlinked: Vec<String> =
        names.into_iter().filter(|name| rustix::shm::unlink(name.as_str()).is_ok()).collect();
    if !unlinked.is_empty() {
        unlinked.sort();
        crate::logging::warn_anyway(
            "mp_process::tracker",
            format_args!(
                "mp: the resource tracker: there appear to be {} leaked shared_memory objects \
                 to clean up at shutdown; unlinked {}",
                unlinked.len(),
                unlinked.join(", ")
            ),
        );
    }
    0
}
