//! `mp-queue`: pipes, connections and queues between processes. It will hold `pipe`, `Connection`, `wait`, `Queue`, `SimpleQueue` and `JoinableQueue`.
//!
//! This crate is part of [`mp`], Python's `multiprocessing` rebuilt in Rust. It holds
//! nothing yet: the types listed above arrive with the issue that builds them, on top of
//! `mp-process`, `mp-shm` and `mp-sync`. Until then it deliberately exports no items, so that nothing pretends to work.
//!
//! [`mp`]: https://example.invalid/mp
#![forbid(unsafe_code)]
