//! The parent of a child process, as the child sees it: its pid, name, and a pidfd to watch
//! it by.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::child::exited_by;
use crate::os;

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
            Some(fd) => !exited_by(fd.as_fd(), Some(std::time::Instant::now())).unwrap_or(true),
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
        self.wait_exit(os::time::deadline(Some(timeout)))
    }

    /// Whether the parent exits by `deadline` (`None`: for ever).
    fn wait_exit(&self, deadline: Option<std::time::Instant>) -> Result<bool> {
        match &self.pidfd {
            Some(fd) => exited_by(fd.as_fd(), deadline),
            None => Ok(true),
        }
    }

    /// A pidfd of the parent, readable once it has exited (Python's `sentinel`).
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }
}
