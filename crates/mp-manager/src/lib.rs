//! `mp-manager`: managers. It will hold `Manager` and its proxies (`dict`, `list`, `Namespace`, ...), served by a manager process.
//!
//! This crate is part of [`mp`], Python's `multiprocessing` rebuilt in Rust. It holds
//! nothing yet: the types listed above arrive with the issue that builds them, on top of
//! `mp-process`, `mp-sync`, `mp-queue` and `mp-pool`. Until then it deliberately exports no items, so that nothing pretends to work.
//!
//! [`mp`]: https://example.invalid/mp
#![forbid(unsafe_code)]
