//! `mp-shm`: shared memory between processes. It will hold `SharedMemory` (memfd-backed anonymous segments and named segments under `/dev/shm`, tracked so a crashed creator leaks nothing), `RawValue` and `RawArray` for plain-old-data, and `ShareableList`.
//!
//! This crate is part of [`mp`], Python's `multiprocessing` rebuilt in Rust. It holds
//! nothing yet: the types listed above arrive with the issue that builds them, on top of
//! `mp-process`. Until then it deliberately exports no items, so that nothing pretends to work.
//!
//! [`mp`]: https://example.invalid/mp
#![forbid(unsafe_code)]
