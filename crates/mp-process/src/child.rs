//! A started child as its parent tracks it: pid, pidfd and the cached exit status.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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
    /// The child is ours: `waitid` on its pid (or its pidfd once one is open).
    Direct,
    /// The forkserver is its parent and relays the status.
    Forkserver(Arc<Client>),
}

/// A started child.
///
/// A child of this process keeps its pid until this process reaps it (which happens only
/// here, under the status lock), so until then its pid names it as surely as a pidfd would:
/// an untimed wait, a status poll and a signal go by pid, and a pidfd is opened only when
/// something needs a descriptor (a wait with a deadline, a sentinel, the reaper). Opening
/// one costs a start and join as much as a tenth of its time on a virtual machine. A
/// forkserver's child comes with the pidfd the server sent.
pub(crate) struct Child {
    pub pid: Pid,
    pidfd: OnceLock<OwnedFd>,
    pub name: String,
    pub daemon: bool,
    status: Mutex<Option<i32>>,
    via: Via,
    abandoned: AtomicBool,
}

impl Child {
    /// A child known by `pid`, with its pidfd if one is open already (a forkserver's child
    /// must come with one).
    pub fn new(pid: Pid, pidfd: Option<OwnedFd>, name: String, daemon: bool, via: Via) -> Self {
        Child {
            pid,
            pidfd: pidfd.map_or_else(OnceLock::new, OnceLock::from),
            name,
            daemon,
            status: Mutex::new(None),
            via,
            abandoned: AtomicBool::new(false),
        }
    }

    /// The raw number of the pidfd, if one is open.
    pub fn raw_pidfd(&self) -> Option<std::os::fd::RawFd> {
        self.pidfd.get().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// The child's pidfd, opened now if it is not yet. A child that was reaped already has
    /// none to open: it gets [`exited_sentinel`], which always polls readable.
    pub fn pidfd(&self) -> Result<BorrowedFd<'_>> {
        if let Some(fd) = self.pidfd.get() {
            return Ok(fd.as_fd());
        }
        let status = self.status.lock();
        if let Some(fd) = self.pidfd.get() {
            return Ok(fd.as_fd());
        }
        if status.is_some() {
            return exited_sentinel();
        }
        // Unreaped, so the pid is still this child's (the status lock keeps `poll_status` from
        // reaping meanwhile), unless something else in the process reaped it behind mp's back:
        // the pidfd must then name a process that is not our child, which `waitid` refuses.
        let fd = open_pidfd(self.pid)?;
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        rustix::process::waitid(WaitId::PidFd(fd.as_fd()), opts)
            .map_err(|e| Error::io("waitid", e))?;
        let _ = self.pidfd.set(fd);
        drop(status);
        self.pidfd.get().map(|fd| fd.as_fd()).ok_or(Error::io("pidfd", Errno::BADF))
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
                    WaitId::Pid(self.pid),
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
                if !exited_by(self.pidfd()?, Some(Instant::now()))? {
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

    /// Whether this process's own child has exited, without reaping it: at once if
    /// `block` is false, else once it has (waiting by pid, see [`Child`]).
    fn direct_exited(&self, block: bool) -> Result<bool> {
        let mut opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
        if !block {
            opts |= WaitIdOptions::NOHANG;
        }
        loop {
            match rustix::process::waitid(WaitId::Pid(self.pid), opts) {
                Ok(got) => return Ok(got.is_some()),
                Err(Errno::INTR) => {}
                // Reaped meanwhile by another thread's `poll_status`: its status is known.
                Err(Errno::CHILD) if self.status.lock().is_some() => return Ok(true),
                Err(e) => return Err(Error::io("waitid", e)),
            }
        }
    }

    /// Waits for the child to exit, until `deadline` (`None`: for ever).
    pub fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        if let Some(code) = *self.status.lock() {
            return Ok(Some(code));
        }
        if deadline.is_none() && matches!(self.via, Via::Direct) {
            let mut exited = |d: Option<Instant>| self.direct_exited(d.is_none());
            loop {
                if exited_after_spin(&JOINS, os::spin::budget(JOIN_SPIN), None, &mut exited)?
                    && let Some(code) = self.poll_status()?
                {
                    return Ok(Some(code));
                }
            }
        }
        let mut first = true;
        loop {
            let pidfd = self.pidfd()?;
            let exited = if std::mem::take(&mut first) {
                let mut exited = |d: Option<Instant>| exited_by(pidfd, d);
                exited_after_spin(&JOINS, os::spin::budget(JOIN_SPIN), deadline, &mut exited)?
            } else {
                exited_by(pidfd, deadline)?
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
        match &self.via {
            Via::Direct => !self.direct_exited(false).unwrap_or(true),
            Via::Forkserver(_) => match self.pidfd() {
                Ok(fd) => !exited_by(fd, Some(Instant::now())).unwrap_or(true),
                Err(_) => false,
            },
        }
    }

    /// The exit code if it is already known.
    pub fn cached_status(&self) -> Option<i32> {
        *self.status.lock()
    }

    /// Sends `sig`; a child that already exited is left alone. A child of this process
    /// without a pidfd is signalled by pid under the status lock, so it cannot be reaped (and
    /// its pid handed to another process) meanwhile.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let status = self.status.lock();
        if status.is_some() {
            return Ok(());
        }
        let sent = match self.pidfd.get() {
            Some(fd) => rustix::process::pidfd_send_signal(fd.as_fd(), sig),
            None => rustix::process::kill_process(self.pid, sig),
        };
        drop(status);
        match sent {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::io("kill", e)),
        }
    }

    /// A descriptor that polls readable once the child has exited: its pidfd (see
    /// [`Child::pidfd`]).
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        self.pidfd()
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

/// The sentinel of a child reaped before anything asked for its pidfd: an eventfd holding
/// a count, which always polls readable, opened once per process.
fn exited_sentinel() -> Result<BorrowedFd<'static>> {
    static EXITED: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = EXITED.get() {
        return Ok(fd.as_fd());
    }
    let fd = rustix::event::eventfd(1, rustix::event::EventfdFlags::CLOEXEC)
        .map_err(|e| Error::io("eventfd", e))?;
    let _ = EXITED.set(fd);
    EXITED.get().map(|fd| fd.as_fd()).ok_or(Error::io("eventfd", Errno::BADF))
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

/// Whether the child has exited by `deadline`, asking `exited` (`exited(Some(now))` looks
/// without sleeping, `exited(deadline)` waits), which first looks without sleeping for `spin`
/// (`None`: no spin) if `policy` says spinning paid lately and `deadline` is not sooner than
/// the spin's end.
fn exited_after_spin(
    policy: &SpinBackoff,
    spin: Option<Duration>,
    deadline: Option<Instant>,
    exited: &mut dyn FnMut(Option<Instant>) -> Result<bool>,
) -> Result<bool> {
    let start = Instant::now();
    let spin_end = spin.and_then(|b| start.checked_add(b));
    if let Some(end) = spin_end
        && deadline.is_none_or(|d| d >= end)
        && policy.next_spins()
    {
        loop {
            if exited(Some(Instant::now()))? {
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
    exited(deadline)
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

    /// [`exited_after_spin`] on a pidfd.
    fn spin_on(
        policy: &SpinBackoff,
        spin: Option<Duration>,
        pidfd: &OwnedFd,
        deadline: Option<Instant>,
    ) -> bool {
        let mut exited = |d: Option<Instant>| exited_by(pidfd.as_fd(), d);
        exited_after_spin(policy, spin, deadline, &mut exited).unwrap()
    }

    #[test]
    fn a_spin_that_runs_out_makes_the_next_wait_sleep_at_once() {
        let policy = SpinBackoff::new();
        let (pidfd, go) = held_child();
        let deadline = Instant::now() + Duration::from_millis(20);
        let spin = Some(Duration::from_micros(100));
        assert!(!spin_on(&policy, spin, &pidfd, Some(deadline)));
        assert!(!policy.next_spins(), "the spin ran out: the next wait must not spin");
        release_and_reap(&pidfd, &go);
    }

    #[test]
    fn an_exit_seen_within_the_spin_keeps_the_spinning() {
        let policy = SpinBackoff::new();
        let (pidfd, go) = held_child();
        assert_eq!(rustix::io::write(&go, b"!").unwrap(), 1);
        // A spin far longer than the child takes to exit once released.
        assert!(spin_on(&policy, Some(LONG), &pidfd, None));
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
            assert!(!spin_on(&policy, spin, &pidfd, Some(deadline)));
            assert!(Instant::now() >= deadline, "the wait ended before its deadline");
        }
        // Neither wait spun, so neither could lose a spin.
        assert!(policy.next_spins());
        release_and_reap(&pidfd, &go);
    }
}
