//! The reaper thread: a dropped `Process` whose child still runs is reaped here, so
//! dropping never blocks, never kills, and never leaves a zombie.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::child::Child;
use crate::state::{Reaper, global};

/// Hands `child`, whose `Process` was dropped before it was joined, to the reaper.
pub(crate) fn abandon(child: &Arc<Child>) {
    child.abandon();
    let mut g = global();
    if !g.children.iter().any(|c| Arc::ptr_eq(c, child)) {
        g.children.push(child.clone());
    }
    if g.reaper.is_none() {
        let Ok(efd) = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        else {
            log::warn!("mp: cannot create the reaper's eventfd; the child is reaped at exit");
            return;
        };
        let efd = Arc::new(efd);
        let thread_efd = efd.clone();
        let spawned = std::thread::Builder::new().name("mp-reaper".into()).spawn(move || {
            // Signals go to the program's threads: no handler runs here (see
            // `process::fork_now`, which counts on it).
            let _ = crate::os::process::block_signals();
            reap_forever(&thread_efd)
        });
        if spawned.is_err() {
            log::warn!("mp: cannot start the reaper thread; the child is reaped at exit");
            return;
        }
        g.reaper = Some(Reaper { efd });
    }
    if let Some(r) = &g.reaper {
        let _ = rustix::io::write(r.efd.as_fd(), &1u64.to_ne_bytes());
    }
}

fn reap_forever(efd: &OwnedFd) {
    loop {
        let watch: Vec<Arc<Child>> =
            global().children.iter().filter(|c| c.is_abandoned()).cloned().collect();
        let mut fds = Vec::with_capacity(watch.len() + 1);
        fds.push(PollFd::new(efd, PollFlags::IN));
        // A child whose pidfd cannot be opened (no descriptor left) is looked at again at the
        // next wake-up.
        let mut polled = Vec::with_capacity(watch.len());
        for c in &watch {
            if let Ok(fd) = c.pidfd() {
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                polled.push(c);
            }
        }
        if crate::os::poll::poll(&mut fds, None).is_err() {
            continue;
        }
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(efd, &mut buf);
        let ready: Vec<bool> = fds.iter().skip(1).map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut finished = Vec::new();
        for (c, ready) in polled.into_iter().zip(ready) {
            if !ready {
                continue;
            }
            if c.via_forkserver().is_some() {
                // The server reaps it; dropping the last handle releases its report.
                finished.push(c.pid);
            } else if let Ok(Some(_)) = c.poll_status() {
                finished.push(c.pid);
            }
        }
        if !finished.is_empty() {
            global().children.retain(|c| !(c.is_abandoned() && finished.contains(&c.pid)));
        }
    }
}
