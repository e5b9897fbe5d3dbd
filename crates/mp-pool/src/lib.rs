//! `mp-pool`: the process pool. It will hold `Pool` (`map`, `imap`, `apply_async`, ...) and `AsyncResult`, with workers that are replaced when they die.
//!
//! This crate is part of [`mp`], Python's `multiprocessing` rebuilt in Rust. It holds
//! nothing yet: the types listed above arrive with the issue that builds them, on top of
//! `mp-process`, `mp-sync` and `mp-queue`. Until then it deliberately exports no items, so that nothing pretends to work.
//!
//! [`mp`]: https://example.invalid/mp
#![forbid(unsafe_code)]
