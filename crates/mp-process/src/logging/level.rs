//! The level [`log_to_stderr`](super::log_to_stderr) set in this process: the one value a
//! spawned or forkserver child inherits in its bootstrap message (`Boot::log`).

use std::sync::atomic::{AtomicU8, Ordering};

/// The levels of [`log_to_stderr`](super::log_to_stderr): the `log` crate's `LevelFilter`
/// (`Off`, `Error`, `Warn`, `Info`, `Debug`, `Trace`).
pub use log::LevelFilter;

/// 0 while `log_to_stderr` has not been called here; else 1 + the level (`LevelFilter as u8`).
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Records `level` as this process's stderr logging level.
pub(super) fn set(level: LevelFilter) {
    LEVEL.store(1 + level as u8, Ordering::Relaxed);
}

/// The level set here, if `log_to_stderr` was called.
pub(super) fn get() -> Option<LevelFilter> {
    decode(LEVEL.load(Ordering::Relaxed))
}

/// The level stored as `raw` (see [`inherited`]).
pub(super) fn decode(raw: u8) -> Option<LevelFilter> {
    Some(match raw {
        1 => LevelFilter::Off,
        2 => LevelFilter::Error,
        3 => LevelFilter::Warn,
        4 => LevelFilter::Info,
        5 => LevelFilter::Debug,
        6 => LevelFilter::Trace,
        _ => return None,
    })
}

/// What a child started by spawn or the forkserver inherits (`Boot::log`): `Some` if this
/// process logs to stderr.
pub(crate) fn inherited() -> Option<u8> {
    let raw = LEVEL.load(Ordering::Relaxed);
    (raw != 0).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_survives_the_bootstrap_encoding() {
        for level in LevelFilter::iter() {
            assert_eq!(decode(1 + level as u8), Some(level));
        }
        assert_eq!(decode(0), None);
        assert_eq!(decode(7), None);
    }
}
