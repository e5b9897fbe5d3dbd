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
//! and exits.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::net::{RecvFlags, SendFlags, SocketType};

use crate::state::global;
use crate::{Error, Result, bootstrap};

/// The environment variable that marks the tracker process; its value is its socket's fd.
pub(crate) const TRACKER_ENV: &str = "MP_TRACKER_FD";

/// The longest name the tracker accepts (`NAME_MAX`).
const MAX_NAME: usize = 255;

/// The connection of this process to the tree's tracker, starting the tracker on first use.
fn connection() -> Result<Arc<OwnedFd>> {
    let mut g = global();
    if let Some(fd) = &g.tracker {
        return Ok(fd.clone());
    }
    let mine = bootstrap::spawn_helper(
        TRACKER_ENV,
        SocketType::SEQPACKET,
        "starting the resource tracker",
    )?;
    let fd = Arc::new(mine);
    g.tracker = Some(fd.clone());
    Ok(fd)
}

fn send(op: u8, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(Error::io("tracking a name", std::io::ErrorKind::InvalidInput));
    }
    let fd = connection()?;
    let mut msg = Vec::with_capacity(name.len() + 1);
    msg.push(op);
    msg.extend_from_slice(name.as_bytes());
    loop {
        match rustix::net::send(fd.as_fd(), &msg, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::io("sending to the resource tracker", e)),
        }
    }
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
/// tree is gone. A tracker that cannot start is logged, not fatal: only leak clean-up is lost.
pub(crate) fn ensure_running() {
    if let Err(e) = connection() {
        log::warn!("mp: cannot start the resource tracker: {e}");
    }
}

/// The tracker's connection for a child's bootstrap, if this process has one.
pub(crate) fn inherited() -> Option<Arc<OwnedFd>> {
    global().tracker.clone()
}

/// The tracker process: collect names until every client is gone, then unlink the rest.
pub(crate) fn serve() -> i32 {
    let sock = match bootstrap::helper_socket() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut names: Vec<String> = Vec::new();
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
            b'R' => names.push(name.to_owned()),
            b'U' => {
                if let Some(i) = names.iter().position(|n| n == name) {
                    names.swap_remove(i);
                }
            }
            _ => {}
        }
    }
    for name in names {
        match rustix::shm::unlink(name.as_str()) {
            Ok(()) => log::warn!("mp: the resource tracker unlinked leaked shared memory {name}"),
            Err(_) => continue,
        }
    }
    0
}
