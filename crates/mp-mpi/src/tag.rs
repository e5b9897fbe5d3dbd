//! Message tags between a pool and its workers (on communicators of this crate alone).

use std::ffi::c_int;

/// Pool to worker: the tree key and the executable's fingerprint.
pub(crate) const HELLO: c_int = 1;

/// Worker to pool: the answer to [`HELLO`] or [`INIT`]: ready (or why not).
pub(crate) const READY: c_int = 2;

/// Pool to worker: the pool's initializer (empty for none).
pub(crate) const INIT: c_int = 7;

/// Pool to worker: a batch of tasks.
pub(crate) const BATCH: c_int = 3;

/// Worker to pool: a batch's results.
pub(crate) const RESULTS: c_int = 4;

/// Pool to worker: the pool ended (a spawned worker exits; a world's waits for the next).
pub(crate) const END: c_int = 5;

/// Rank 0 to a world's worker: the program ends; finalize and exit.
pub(crate) const QUIT: c_int = 6;
