//! `mp-sync`: process-shared synchronisation. It will hold `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Condition` and `Barrier` built on robust futexes in shared memory, and the synchronised `Value` and `Array`.
//!
//! This crate is part of [`mp`], Python's `multiprocessing` rebuilt in Rust. It holds
//! nothing yet: the types listed above arrive with the issue that builds them, on top of
//! `mp-process` and `mp-shm`. Until then it deliberately exports no items, so that nothing pretends to work.
//!
//! [`mp`]: https://example.invalid/mp
#![forbid(unsafe_code)]
