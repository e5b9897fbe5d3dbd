//! Failpoints for the crash tests (feature `failpoints`, which only the tests enable): arm one
//! and this process SIGKILLs itself when it reaches that step of a queue `put` or `get`. A
//! build without the feature has neither this module nor the checks at the steps
//! (the crate's `failpoint!` macro expands to nothing).

use std::sync::atomic::{AtomicU32, Ordering};

/// Which operation a failpoint is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A `put`. Steps: 1 lock taken; 2 message encoded into the ring; 3 descriptors sent;
    /// 4 message published (`tail` stored), its hint not yet written; 5 hint written (lock
    /// still held).
    Put = 1,
    /// A `get`. Steps: 1 lock taken; 2 message decoded; 3 message consumed (lock still
    /// held, descriptors still on the side channel); 4 descriptors removed.
    Get = 2,
}

/// The armed failpoint: `op * 256 + step`, 0 for none.
static ARMED: AtomicU32 = AtomicU32::new(0);

/// Arms a failpoint: this process SIGKILLs itself when it reaches `step` of `op`. Step 0
/// disarms.
pub fn arm(op: Op, step: u32) {
    let value = if step == 0 { 0 } else { (op as u32) * 256 + step.min(255) };
    ARMED.store(value, Ordering::Relaxed);
}

/// Dies here if the failpoint `op`/`step` is armed.
#[inline]
pub(crate) fn hit(op: Op, step: u32) {
    let armed = ARMED.load(Ordering::Relaxed);
    if armed != 0 && armed == (op as u32) * 256 + step {
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        loop {
            std::thread::park();
        }
    }
}
