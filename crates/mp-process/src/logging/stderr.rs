//! The stderr logger of [`log_to_stderr`]: `[LEVEL/ProcessName] message`, one line per
//! record, written whole.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};

use log::{Level, Log, Metadata, Record};

use super::level::{self, LevelFilter};
use crate::state::GLOBAL;

/// Whether mp's stderr logger is the one the `log` facade calls.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// This process's name, cached with the pid it is for (a forked child's differs).
static NAME: Mutex<Option<(i32, String)>> = Mutex::new(None);

/// Logs mp's records to stderr at `level` and above, in this process and in every child it
/// starts afterwards, under every start method (Python's `multiprocessing.log_to_stderr`):
/// each record is one line, `[LEVEL/ProcessName] message` (`[WARNING/ForkPoolWorker-2] ...`),
/// written with one `write` so that lines of several processes do not mix.
///
/// mp's records are those whose target is `mp` or begins with `mp::` or `mp_` (every crate's
/// records: see [`is_mp_target`]); a program may log its own into the same stream with
/// `log::info!(target: "mp", ...)`, as a Python program uses `multiprocessing.get_logger()`.
/// Calling it again changes the level; [`LevelFilter::Off`] silences it.
///
/// It installs a logger for the `log` facade (and sets `log::max_level`), which a process can
/// have only one of: it returns false, and does nothing, if the program has installed another
/// logger (which receives mp's records anyway). A spawned or forkserver child, which starts
/// before `main` and so without the program's logger, logs to stderr if its parent did.
///
/// ```
/// mp_process::log_to_stderr(mp_process::logging::LevelFilter::Info);
/// log::info!(target: "mp", "hello"); // stderr: [INFO/MainProcess] hello
/// ```
///
/// # Differences from Python's multiprocessing
/// Python returns the `multiprocessing` logger; here the `log` facade is the logger, and the
/// return value says whether mp's stderr logger is the one installed.
pub fn log_to_stderr(level: LevelFilter) -> bool {
    if !INSTALLED.load(Ordering::Acquire) {
        if log::set_logger(&StderrLogger).is_err() {
            return false;
        }
        INSTALLED.store(true, Ordering::Release);
    }
    level::set(level);
    log::set_max_level(level);
    true
}

/// In a spawned or forkserver child: takes on the parent's setting (`Boot::log`, made by
/// [`inherited`](super::inherited)).
pub(crate) fn adopt(raw: Option<u8>) {
    if let Some(level) = raw.and_then(level::decode) {
        log_to_stderr(level);
    }
}

/// Whether a record's target is one of mp's: `mp`, `mp::...`, or a crate's `mp_...`
/// (`mp_process::tracker`, `mp_pool`, `mp_manager`, ...).
pub fn is_mp_target(target: &str) -> bool {
    target == "mp" || target.starts_with("mp::") || target.starts_with("mp_")
}

/// A warning that must be seen (CPython prints these whatever the logging set-up: the
/// resource tracker's leaked shared memory): through the `log` facade if a logger is
/// installed, else on stderr, as [`log_to_stderr`] formats it.
pub fn warn_anyway(target: &str, args: std::fmt::Arguments<'_>) {
    let probe = Metadata::builder().level(Level::Error).target(target).build();
    if log::logger().enabled(&probe) {
        log::warn!(target: target, "{args}");
    } else {
        write_line(Level::Warn, &args);
    }
}

/// Python's names for the levels (`TRACE` has none there).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Writes one record as one line.
fn write_line(level: Level, args: &std::fmt::Arguments<'_>) {
    let line = format!("[{}/{}] {}\n", level_name(level), process_name(), args);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// This process's name (`MainProcess`, `Process-1`, `SpawnPoolWorker-3`, ...). The registry's
/// lock is only tried, never waited for: a record may be logged while this thread holds it.
fn process_name() -> String {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    // Locks here are tried, not waited for: a forked child may have inherited one held.
    if let Ok(cached) = NAME.try_lock() {
        if let Some((p, name)) = cached.as_ref() {
            if *p == pid {
                return name.clone();
            }
        }
    }
    for _ in 0..64 {
        let name = match GLOBAL.try_lock() {
            Ok(g) => g.name(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().name(),
            Err(TryLockError::WouldBlock) => {
                std::thread::yield_now();
                continue;
            }
        };
        if let Ok(mut cached) = NAME.try_lock() {
            *cached = Some((pid, name.clone()));
        }
        return name;
    }
    format!("pid {pid}")
}

/// The logger [`log_to_stderr`] installs.
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_mp_target(metadata.target()) && level::get().is_some_and(|l| metadata.level() <= l)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            write_line(record.level(), record.args());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_mp_and_its_crates_are_mp_targets() {
        for t in ["mp", "mp::pool", "mp_process::tracker", "mp_pool", "mp_manager"] {
            assert!(is_mp_target(t), "{t}");
        }
        for t in ["mpx", "my_crate", "", "m"] {
            assert!(!is_mp_target(t), "{t}");
        }
    }
}
