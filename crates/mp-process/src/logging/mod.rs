//! Logging for programs without a logger: [`log_to_stderr`] (Python's
//! `multiprocessing.log_to_stderr`), and warnings that must be seen even then
//! ([`warn_anyway`]).
//!
//! Every crate of mp logs through the [`log`] facade, with targets that begin with the crate's
//! name (`mp_process::tracker`, `mp_pool`, `mp_manager`, ...), so a program with a logger
//! (`env_logger`, `tracing-log`, ...) filters them as it likes. A program without one calls
//! [`log_to_stderr`]; its children get the same setting under every start method (a forked
//! child inherits it with the memory, a spawned or forkserver child receives it in its
//! bootstrap message).

mod level;
mod stderr;

pub use level::LevelFilter;
pub(crate) use level::inherited;
pub(crate) use stderr::adopt;
pub use stderr::{is_mp_target, log_to_stderr, warn_anyway};
