//! A started child as its parent tracks it: pid, pidfd and the cached exit status.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus};

use crate::os;
use crate::os::spin::SpinBackoff;
use crate::relay::Client;
use crate::{Error, Result};

/// Opens a pidfd for `pid`, turning "no such system call" into a clear error.
pub(crate) fn open_pidfd(pid: Pid) -> Result<OwnedFd> {
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|e| match e {
        Errno::NOSYS | Errno::PERM | Errno::ACCESS => Error::PidfdUnsupported(e.into()),
        e => Error::io("pidfd_open", e),
    })
}

/// The pidfd of `pid`, a child this process has just started. If it cannot be opened (the
/// process is out of descriptors), the child, which nothing could track, is killed and
/// reaped before the error is returned: no child outlives a failed start.
pub(crate) fn track_new_child(pid: Pid) -> Result<OwnedFd> {
    open_pidfd(pid).inspect_err(|_| {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    })
}

/// The exit code Python reports for a wait status: the exit status, or minus the signal.
pub(crate) fn exit_code_of(status: &WaitIdStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        -sig
    } else {
        // Neither exited nor killed cannot happen with WEXITED alone; report it as -1.
        -1
    }
}

/// How the parent learns a child's exit status.
pub(crate) enum Via {
    /// The child is ours: `waitid` on its pidfd.
    Direct,
    /// The forkserver is its parent and relays the status.
    Forkserver(Arc<Client>),
}

/// A started child.
pub(crate) struct Child {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub name: String,
    pub daemon: bool,
    status: Mutex<Option<i32>>,
    via: Via,
    abandoned: AtomicBool,
}

impl Child {
    pub fn new(pid: Pid, pidfd: OwnedFd, name: String, daemon: bool, via: Via) -> Self {
        Child {
            pid,
            pidfd,
            name,
            daemon,
            status: Mutex::new(None),
            via,
            abandoned: AtomicBool::new(false),
        }
    }

    /// The exit code, if known, reaping the child if it has exited. Never blocks, except for
    /// the moment a forkserver child's report takes to arrive once it has exited.
    pub fn poll_status(&self) -> Result<Option<i32>> {
        if let Some(code) = *self.status.lock() {
            return Ok(Some(code));
        }
        match &self.via {
            Via::Direct => {
                let mut status = self.status.lock();
                if status.is_some() {
                    return Ok(*status);
                }
                let got = rustix::process::waitid(
                    WaitId::PidFd(self.pidfd.as_fd()),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
                );
                *status = match got {
                    Ok(Some(s)) => Some(exit_code_of(&s)),
                    Ok(None) | Err(Errno::INTR) => None,
                    Err(e) => return Err(Error::io("waitid", e)),
                };
                Ok(*status)
            }
            Via::Forkserver(client) => {
                if !exited_by(self.pidfd.as_fd(), Some(Instant::now()))? {
                    return Ok(None);
                }
                // The child has exited; the server's report is on its way. The status lock
                // is not held while it comes.
                let code = client.exit_status(self.pid, None)?;
                let mut status = self.status.lock();
                if status.is_none() {
                    *status = code;
                }
                Ok(*status)
            }
        }
    }

    /// Waits for the child to exit, until `deadline` (`None`: for ever).
    pub fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        if let Some(code) = *self.status.lock() {
            return Ok(Some(code));
        }
        let mut first = true;
        loop {
            let exited = if std::mem::take(&mut first) {
                exited_by_spinning(self.pidfd.as_fd(), deadline)?
            } else {
                exited_by(self.pidfd.as_fd(), deadline)?
            };
            if !exited {
                return Ok(None);
            }
            let code = match &self.via {
                Via::Direct => self.poll_status()?,
                Via::Forkserver(client) => {
                    // Not under the status lock: the report may take a moment to arrive.
                    let code = client.exit_status(self.pid, deadline)?;
                    let mut status = self.status.lock();
                    if status.is_none() {
                        *status = code;
                    }
                    *status
                }
            };
            if code.is_some() || os::time::expired(deadline) {
                return Ok(code);
            }
        }
    }

    /// Whether the child is still running (it has not exited).
    pub fn is_alive(&self) -> bool {
        if self.status.lock().is_some() {
            return false;
        }
        !exited_by(self.pidfd.as_fd(), Some(Instant::now())).unwrap_or(true)
    }

    /// The exit code if it is already known.
    pub fn cached_status(&self) -> Option<i32> {
        *self.status.lock()
    }

    /// Sends `sig` through the pidfd; a child that already exited is left alone.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.status.lock().is_some() {
            return Ok(());
        }
        match rustix::process::pidfd_send_signal(self.pidfd.as_fd(), sig) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::io("pidfd_send_signal", e)),
        }
    }

    /// The pidfd, readable once the child has exited.
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Marks the child as dropped by its `Process`: the reaper owns it now.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    /// Whether the child's `Process` was dropped before it was joined.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Whether the forkserver, not this process, is the child's parent.
    pub fn via_forkserver(&self) -> Option<&Arc<Client>> {
        match &self.via {
            Via::Forkserver(c) => Some(c),
            Via::Direct => None,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Via::Forkserver(client) = &self.via {
            client.release(self.pid, self.status.get_mut().is_some());
        }
    }
}

/// How long a wait for a child looks at its pidfd without sleeping, at the default spin limit
/// ([`os::spin::budget`]), before it sleeps in `poll`. A child that does little (a short task,
/// or one that fails at once) is then joined without the wake-up of a sleeping parent: on a
/// virtual machine an idle CPU's wake-up costs tens of µs, a fifth of a whole start and join.
const JOIN_SPIN: Duration = Duration::from_micros(100);

/// Whether the waits for children of this process spin, learnt from those before: a process
/// whose children run long stops spinning after the first spin that ran out (one wait in up
/// to [`os::spin::MAX_SKIP`] spins then).
static JOINS: SpinBackoff = SpinBackoff::new();

/// As [`exited_by`], looking at the pidfd without sleeping for the join spin first
/// ([`JOIN_SPIN`]) if spinning paid lately and `deadline` is not sooner than the spin's end.
fn exited_by_spinning(pidfd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool> {
    exited_after_spin(&JOINS, os::spin::budget(JOIN_SPIN), pidfd, deadline)
}

/// [`exited_by_spinning`] with its policy and spin (`None`: no spin) given.
fn exited_after_spin(
    policy: &SpinBackoff,
    spin: Option<Duration>,
    pidfd: BorrowedFd<'_>,
    deadline: Option<Instant>,
) -> Result<bool> {
    let start = Instant::now();
    let spin_end = spin.and_then(|b| start.checked_add(b));
    if let Some(end) = spin_end
        && deadline.is_none_or(|d| d >= end)
        && policy.next_spins()
    {
        loop {
            if exited_by(pidfd, Some(Instant::now()))? {
                policy.spun(true);
                return Ok(true);
            }
            if Instant::now() >= end {
                policy.spun(false);
                break;
            }
            std::hint::spin_loop();
        }
    }
    exited_by(pidfd, deadline)
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable) by `deadline`.
pub(crate) fn exited_by(pidfd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool> {
    os::poll::readable(pidfd, deadline).map_err(|e| Error::io("poll", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::pipe::{PipeFlags, pipe_with};

    /// A forked child that exits once a byte arrives on the pipe whose write end is returned,
    /// with its pidfd.
    fn held_child() -> (OwnedFd, OwnedFd) {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).unwrap();
        let pid = os::process::fork_child(&mut || {
            let _ = rustix::io::read(&r, &mut [0u8; 1]);
            0
        })
        .unwrap();
        (open_pidfd(pid).unwrap(), w)
    }

    fn release_and_reap(pidfd: &OwnedFd, go: &OwnedFd) {
        assert_eq!(rustix::io::write(go, b"!").unwrap(), 1);
        let got = rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED);
        assert_eq!(got.unwrap().map(|s| exit_code_of(&s)), Some(0));
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn a_spin_that_runs_out_makes_the_next_wait_sleep_at_once() {
        let policy = SpinBackoff::new();
        let (pidfd, go) = held_child();
        let deadline = Instant::now() + Duration::from_millis(20);
        let spin = Some(Duration::from_micros(100));
        assert!(!exited_after_spin(&policy, spin, pidfd.as_fd(), Some(deadline)).unwrap());
        assert!(!policy.next_spins(), "the spin ran out: the next wait must not spin");
        release_and_reap(&pidfd, &go);
    }

    #[test]
    fn an_exit_seen_within_the_spin_keeps_the_spinning() {
        let policy = SpinBackoff::new();
        let (pidfd, go) = held_child();
        assert_eq!(rustix::io::write(&go, b"!").unwrap(), 1);
        // A spin far longer than the child takes to exit once released.
        assert!(exited_after_spin(&policy, Some(LONG), pidfd.as_fd(), None).unwrap());
        assert!(policy.next_spins());
        let got = rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED);
        assert_eq!(got.unwrap().map(|s| exit_code_of(&s)), Some(0));
    }

    #[test]
    fn no_spin_before_a_deadline_sooner_than_its_end_or_without_one() {
        let policy = SpinBackoff::new();
        let (pidfd, go) = held_child();
        for spin in [Some(LONG), None] {
            let deadline = Instant::now() + Duration::from_millis(10);
            assert!(!exited_after_spin(&policy, spin, pidfd.as_fd(), Some(deadline)).unwrap());
            assert!(Instant::now() >= deadline, "the wait ended before its deadline");
        }
        // Neither wait spun, so neither could lose a spin.
        assert!(policy.next_spins());
        release_and_reap(&pidfd, &go);
    }
}
