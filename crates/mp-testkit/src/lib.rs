//! `mp-testkit`: the helpers every test suite of `mp` shares, in one place. Each crate of the
//! workspace (and the umbrella crate's `tests/`) lists it under `[dev-dependencies]`; it is
//! never a dependency of a library, and it is not published.
//!
//! ```
//! use mp_process::Process;
//! use mp_process::fdpass::PassFd;
//! use mp_testkit::lines::{Lines, say};
//! use mp_testkit::{pass, pipe, release, wait_for_byte};
//!
//! /// Reports, waits for the go byte, reports again.
//! fn child(out: PassFd, go: PassFd) {
//!     say(&out, "waiting");
//!     wait_for_byte(&go);
//!     say(&out, "released");
//! }
//!
//! let (out_r, out_w) = pipe();
//! let (go_r, go_w) = pipe();
//! let mut p = Process::new(child, (pass(&out_w), pass(&go_r)));
//! p.start().unwrap();
//! let mut lines = Lines::new(out_r);
//! assert_eq!(lines.next(), "waiting");
//! release(&go_w, 1);
//! assert_eq!(lines.next(), "released");
//! assert_eq!(p.join().unwrap(), 0);
//! ```
//!
//! # What it holds
//! - Pipes between a test and its children ([`pipe`], [`pass`], [`wait_for_byte`],
//!   [`release`], [`send_text`], [`read_all`], [`read_exact`]), and two ways for children to
//!   report through them: a byte per report ([`bytes`]) or a line per report ([`lines`]).
//! - Processes: [`eventually`] (a condition polled with a bound, where the kernel offers no
//!   event to wait for), [`exits_within`], [`alive`], [`kill`], [`die_now`] (the failpoint of
//!   tests that kill a process at a chosen step), [`children`], [`open_fds`], [`method`],
//!   [`asleep_in_futex`] (a thread of this process queued on a futex).
//! - Named shared memory: [`shm`] (unique names, probes of `/dev/shm`, a clean-up guard).
//! - A child that serves requests on a connection: [`server`].
//! - A real Python peer: [`python`] (an interpreter of a given version, a script run).
//!
//! # Rules the helpers keep
//! Children are started by the tests themselves, under the start method of the run
//! (`MP_START_METHOD`); under `spawn` and `forkserver` they re-run the test binary and are
//! diverted before `main` by `mp-process`'s entry hook, which this crate's dependency on
//! `mp-process` links into every test binary. No helper sleeps to let something happen: a
//! test waits on a pipe, and polls only where nothing can be waited on. Under `fork` a child
//! inherits every descriptor, so nothing here waits for a pipe's end of file: children are
//! released by a byte ([`release`]).
#![deny(missing_docs)]

pub mod bytes;
pub mod lines;
mod pipes;
mod procs;
pub mod python;
pub mod server;
pub mod shm;

pub use pipes::{pass, pipe, read_all, read_exact, release, send_text, wait_for_byte};
pub use procs::{
    alive, asleep, asleep_in_futex, children, die_now, eventually, exits_within, kill, method,
    open_fds,
};
