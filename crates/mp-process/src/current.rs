//! This process and its relatives: `current_process`, `parent_process`, `active_children`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::state::global;
use crate::util::poll_readable;

/// A snapshot of what mp knows about the calling process (Python's `current_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
    daemon: bool,
    identity: Vec<u32>,
}

impl ProcessInfo {
    /// The process name: `MainProcess`, `Process-N`, `Process-N:M` for a grandchild, or the
    /// name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is daemonic.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The chain of child counters from the main process (empty for the main process).
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }
}

fn pid_u32(pid: rustix::process::Pid) -> u32 {
    pid.as_raw_nonzero().get().unsigned_abs()
}

/// The calling process.
pub fn current_process() -> ProcessInfo {
    let g = global();
    ProcessInfo {
        name: g.name(),
        pid: pid_u32(rustix::process::getpid()),
        daemon: g.me.daemon,
        identity: g.me.identity.clone(),
    }
}

/// The process that started this one, as Python's `parent_process()`; `None` in the main
/// process.
#[derive(Debug, Clone)]
pub struct ParentProcess {
    pid: i32,
    name: String,
    pidfd: Option<Arc<OwnedFd>>,
}

impl ParentProcess {
    pub(crate) fn new(pid: i32, name: String, pidfd: Option<Arc<OwnedFd>>) -> Self {
        ParentProcess { pid, name, pidfd }
    }

    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        match &self.pidfd {
            Some(fd) => !poll_readable(fd.as_fd(), Some(Duration::ZERO)).unwrap_or(true),
            None => false,
        }
    }

    /// Waits until the parent exits (Python's `join()`). A parent this process cannot watch
    /// (no pidfd) counts as gone.
    ///
    /// Errors: [`Error::Io`](crate::Error::Io) if polling its pidfd fails.
    pub fn join(&self) -> Result<()> {
        self.wait_exit(None).map(drop)
    }

    /// Waits at most `timeout` for the parent to exit (Python's `join(timeout)`): `Ok(true)`
    /// if it did, `Ok(false)` if it still runs after at least `timeout`. A zero timeout only
    /// looks; a timeout too large to represent waits for ever.
    ///
    /// Errors: as [`join`](ParentProcess::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_exit(crate::process::forever_if_huge(timeout))
    }

    /// Whether the parent exits within `timeout` (`None`: for ever).
    fn wait_exit(&self, timeout: Option<Duration>) -> Result<bool> {
        match &self.pidfd {
            Some(fd) => poll_readable(fd.as_fd(), timeout),
            None => Ok(true),
        }
    }

    /// A pidfd of the parent, readable once it has exited (Python's `sentinel`).
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }
}

/// The parent of the calling process, or `None` in the main process.
pub fn parent_process() -> Option<ParentProcess> {
    global().parent.clone()
}

/// A live child, as listed by [`active_children`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's pid.
    pub pid: u32,
    /// The child's name.
    pub name: String,
    /// Whether the child is daemonic.
    pub daemon: bool,
}

/// The children of this process that are still running. As in Python, this reaps (joins)
/// every child that has already exited.
pub fn active_children() -> Vec<ChildInfo> {
    let children = global().children.clone();
    let mut live = Vec::new();
    let mut done = Vec::new();
    for c in &children {
        match c.poll_status() {
            Ok(None) => {
                live.push(ChildInfo { pid: pid_u32(c.pid), name: c.name.clone(), daemon: c.daemon })
            }
            _ => done.push(c.pid),
        }
    }
    if !done.is_empty() {
        global().children.retain(|c| !done.contains(&c.pid));
    }
    live
}

/// Python's exit function, run when the `init` guard ends and when a child's target
/// returns: terminate the daemonic children that are still running, then join every child.
pub(crate) fn exit_function() {
    let children = global().children.clone();
    for c in &children {
        if c.daemon && c.is_alive() {
            let _ = c.signal(rustix::process::Signal::TERM);
        }
    }
    for c in &children {
        let _ = c.wait(None);
    }
    global().children.clear();
}
