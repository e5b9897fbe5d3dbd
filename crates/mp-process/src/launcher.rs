//! The launcher thread: daemonic children are forked from a thread that lives as long as
//! the process, because `PR_SET_PDEATHSIG` fires when the *thread* that forked exits.

use std::sync::mpsc;

use crate::state::{Job, Launcher, global};
use crate::{Error, Result};

/// Whether the calling thread is the main thread, which lives as long as the process.
pub(crate) fn on_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}

/// Runs `f` on the launcher thread (started on first use) and returns its result.
pub(crate) fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let (done_tx, done_rx) = mpsc::sync_channel::<R>(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(f());
    });
    {
        let mut g = global();
        if g.launcher.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("mp-launcher".into())
                .spawn(move || {
                    // Signals go to the program's threads: no handler of the program's
                    // runs on mp's own.
                    let _ = crate::os::process::block_signals();
                    for job in rx {
                        job();
                    }
                })
                .map_err(|e| Error::io("starting the mp launcher thread", e))?;
            g.launcher = Some(Launcher { tx });
        }
        let launcher = g.launcher.as_ref().ok_or(Error::NotStarted)?;
        launcher
            .tx
            .send(job)
            .map_err(|_| Error::io("the mp launcher thread", std::io::ErrorKind::BrokenPipe))?;
    }
    done_rx.recv().map_err(|_| Error::io("the mp launcher thread", std::io::ErrorKind::BrokenPipe))
}
