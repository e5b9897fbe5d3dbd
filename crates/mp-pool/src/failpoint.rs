//! Failpoints for the tests of worker deaths (feature `failpoints`, which only the tests
//! enable): a worker armed with a step and a count SIGKILLs itself the `n`th time it reaches
//! that step of its protocol. The pool arms every worker it starts through the worker's boot
//! message ([`Builder::failpoint`](crate::Builder::failpoint)). A build without the feature
//! has neither this module nor the checks at the steps (the crate's `failpoint!` macro
//! expands to nothing).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Where a worker kills itself (SIGKILL), for tests of a death at that step of its protocol
/// (see [`Builder::failpoint`](crate::Builder::failpoint)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailStep {
    /// Right after its `n`th result was journaled, before the next task starts.
    Journaled,
    /// At its `n`th send of results, before sending.
    BeforeSend,
    /// At its `n`th send of results, after sending, before emptying its journal.
    AfterSend,
    /// Right after its `n`th frame (a batch of chunks, or definitions of shared objects)
    /// arrived, before any task of it starts.
    Received,
}

/// The armed step, as `1 + FailStep as u8`; 0 for none.
static ARMED: AtomicU8 = AtomicU8::new(0);
/// The armed count.
static ARMED_AT: AtomicU64 = AtomicU64::new(0);
/// How many times this process reached each step.
static REACHED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Arms this worker's failpoint (or none): it SIGKILLs itself the `n`th time it reaches
/// `step`.
pub(crate) fn arm(failpoint: Option<(FailStep, u64)>) {
    let (step, n) = failpoint.map_or((0, 0), |(step, n)| (1 + step as u8, n));
    ARMED_AT.store(n, Ordering::Relaxed);
    ARMED.store(step, Ordering::Relaxed);
}

/// Counts a time this worker reached `step`, and dies here if that is the armed one.
#[inline]
pub(crate) fn hit(step: FailStep) {
    let reached = REACHED[step as usize].fetch_add(1, Ordering::Relaxed) + 1;
    if ARMED.load(Ordering::Relaxed) == 1 + step as u8
        && ARMED_AT.load(Ordering::Relaxed) == reached
    {
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        loop {
            std::thread::park();
        }
    }
}
