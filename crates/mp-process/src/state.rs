//! The per-process registry: who this process is, its parent, its children, and mp's own
//! helper threads. One lock guards it all; a fork holds it so the child inherits it unlocked.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::boot::ChildIdentity;
use crate::child::Child;
use crate::method::StartMethod;
use crate::parent::ParentProcess;
use crate::relay::Client;

/// Who this process is.
pub(crate) struct Me {
    /// `None` until a child names it; the main process is `MainProcess`.
    pub name: Option<String>,
    /// Python's `_identity`: the chain of child counters from the main process.
    pub identity: Vec<u32>,
    pub daemon: bool,
    /// The counter that numbers this process's children (`Process-N`).
    pub counter: u32,
}

/// Everything mp knows about this process, behind [`GLOBAL`].
pub(crate) struct Global {
    pub method: Option<StartMethod>,
    pub me: Me,
    pub parent: Option<ParentProcess>,
    pub children: Vec<Arc<Child>>,
    /// A pidfd of this process, inherited by forked children as their parent's.
    pub self_pidfd: Option<Arc<OwnedFd>>,
    pub forkserver: Option<Arc<Client>>,
    /// The connection to the tree's resource tracker; shared with forked children.
    pub tracker: Option<Arc<OwnedFd>>,
    /// The tracker process, if this process started it: its parent, which reaps it if it
    /// dies and is replaced.
    pub tracker_process: Option<Child>,
    /// The names this process registered with the tracker and has not unregistered, told
    /// again to a tracker that replaces a dead one.
    pub tracked: BTreeSet<String>,
    pub launcher: Option<Launcher>,
    /// The authentication key (`authkey.rs`), made on first use in the main process.
    pub authkey: Option<crate::authkey::AuthKey>,
    pub reaper: Option<Reaper>,
}

/// The registry of this process. A `std` mutex, not a `parking_lot` one: a forked child
/// unlocks the copy it inherits, and a futex unlock touches nothing but the lock word, while
/// `parking_lot`'s slow path goes through a global table other threads may hold locked.
pub(crate) static GLOBAL: Mutex<Global> = Mutex::new(Global {
    method: None,
    me: Me { name: None, identity: Vec::new(), daemon: false, counter: 0 },
    parent: None,
    children: Vec::new(),
    self_pidfd: None,
    forkserver: None,
    tracker: None,
    tracker_process: None,
    tracked: BTreeSet::new(),
    launcher: None,
    authkey: None,
    reaper: None,
});

impl Global {
    /// This process's name.
    pub fn name(&self) -> String {
        self.me.name.clone().unwrap_or_else(|| "MainProcess".to_owned())
    }

    /// A pidfd of this process, opened once.
    pub fn self_pidfd(&mut self) -> crate::Result<Arc<OwnedFd>> {
        if let Some(fd) = &self.self_pidfd {
            return Ok(fd.clone());
        }
        let fd = Arc::new(crate::child::open_pidfd(rustix::process::getpid())?);
        self.self_pidfd = Some(fd.clone());
        Ok(fd)
    }

    /// The number of threads mp itself runs in this process.
    pub fn own_threads(&self) -> usize {
        usize::from(self.launcher.is_some()) + usize::from(self.reaper.is_some())
    }

    /// Turns the registry inherited by a forked child into the child's own: the parent's
    /// children, helper threads and forkserver connection are not the child's, and its start
    /// method is the one it was started with (`fork`), not the parent's default, as in Python.
    pub fn become_forked_child(&mut self, child: ChildIdentity) {
        self.method = Some(child.method);
        let parent_pidfd = self.self_pidfd.take();
        self.parent = Some(ParentProcess::new(child.parent_pid, child.parent_name, parent_pidfd));
        // Under fork the registry already holds the parent's key as it was at the fork (its
        // lock is held across it): that is the child's. Remaking it would only cost the child
        // copies of the heap pages it writes, and so would freeing (or comparing, with libc
        // text the child has not mapped yet) the copy it was handed.
        if self.authkey.is_none() {
            self.authkey = Some(crate::authkey::AuthKey::new(child.authkey.0));
        } else {
            std::mem::forget(child.authkey);
        }
        self.me = Me {
            name: Some(child.name),
            identity: child.identity,
            daemon: child.daemon,
            counter: 0,
        };
        // The siblings' handles stay with whoever holds them; they are not this child's.
        self.children.clear();
        // The tracker connection is shared; the tracker process and the names registered
        // are the parent's (a tracker this child starts must not unlink the parent's names).
        if let Some(tracker) = self.tracker_process.take() {
            // Forgotten rather than dropped (freeing it would copy the heap pages it lies on
            // into the child), and its pidfd closed.
            let fd = tracker.raw_pidfd();
            std::mem::forget(tracker);
            if let Some(fd) = fd {
                // SAFETY: the handle owned its pidfd and was just forgotten; the tracker is
                // the parent's, and nothing else in this child knows that descriptor.
                #[allow(unsafe_code)]
                unsafe {
                    crate::os::process::close_forgotten(fd)
                };
            }
        }
        // Cleared only if there is something to clear: running the set's destructor for
        // nothing would cost the child a page of code.
        if !self.tracked.is_empty() {
            self.tracked.clear();
        }
        if let Some(client) = self.forkserver.take() {
            let fd = client.raw_fd();
            std::mem::forget(client);
            // SAFETY: `close_forgotten` needs `fd` open, its owner forgotten and nothing left
            // to use it: the client owns its socket and was just forgotten, and its other
            // owners are threads of the parent, which do not exist in this forked child.
            #[allow(unsafe_code)]
            unsafe {
                crate::os::process::close_forgotten(fd)
            };
        }
        if let Some(l) = self.launcher.take() {
            std::mem::forget(l);
        }
        if let Some(r) = self.reaper.take() {
            let fd = r.raw_fd();
            std::mem::forget(r);
            // SAFETY: as above: the reaper owns its eventfd with the reaper thread, which does
            // not exist in this forked child, and was just forgotten.
            #[allow(unsafe_code)]
            unsafe {
                crate::os::process::close_forgotten(fd)
            };
        }
    }
}

/// Locks the registry. Code under this lock never panics, so poisoning cannot happen in
/// practice; a poisoned lock is taken as it is.
pub(crate) fn global() -> MutexGuard<'static, Global> {
    GLOBAL.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The handle of the launcher thread.
pub(crate) struct Launcher {
    pub tx: std::sync::mpsc::Sender<Job>,
}

/// The handle of the reaper thread: an eventfd that wakes it.
pub(crate) struct Reaper {
    pub efd: Arc<OwnedFd>,
}

impl Reaper {
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self.efd)
    }
}
