//! `mp-bench`: one benchmark measurement per process, for `cargo xtask bench`.
//!
//! `mp-bench <row> <side>` runs one row on one side, `mp` or `floor`, and prints exactly one line
//! on stdout, `RESULT <value> <unit> <peak_rss_kib>`: the per-operation figure and the peak
//! resident set of this process (`VmHWM`). `mp-bench exit-now` returns at once: the exec floor
//! starts it. `mp-bench hog` spins for ever: the CPU load of the `_loaded` rows. The rows are in `rows.rs`; the CPython side is `bench/python/bench.py`.

mod connection_rows;
mod floor;
mod manager_rows;
mod measure;
mod pool_rows;
mod queue_rows;
mod rows;
mod shm_rows;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    // This must stay the very first thing: the exec floor times starting this binary and ending it.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "exit-now") {
        return ExitCode::SUCCESS;
    }
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "hog") {
        hog();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mp-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // Every side starts the same way, so that both run at the same resident size.
    let _guard = mp::init().context("mp::init")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [row, side] = args.as_slice() else {
        bail!("usage: mp-bench <row> <mp|floor> (rows: {})", rows::names().join(", "));
    };
    let side = match side.as_str() {
        "mp" => rows::Side::Mp,
        "floor" => rows::Side::Floor,
        other => bail!("unknown side `{other}`: mp or floor"),
    };
    let figure = rows::run(row, side)?;
    measure::report(figure.value, figure.unit)
}

/// A CPU-bound busy loop that never ends: `cargo xtask bench` runs one per core beside the
/// `_loaded` rows and kills them after each measurement.
fn hog() -> ! {
    let mut x = 1u64;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = std::hint::black_box(x);
    }
}
