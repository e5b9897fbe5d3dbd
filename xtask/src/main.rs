//! `cargo xtask`: the project's automation, `test` (the whole CI matrix), `bench` and
//! `lint-imports`.

mod bench;
mod examples;
mod imports;
mod mpi;
mod pattern;
mod plot;
mod proc;
mod report;
mod rows;
mod table;
mod test;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--quick] [--method <m>]... [--mpi]
        Runs every leg of the CI matrix: fmt, clippy (every target, which turns the test-only
        `failpoints` features on, then the libraries and binaries alone, without them), doc
        tests, the build, nextest under each start method (fork, spawn, forkserver), the
        examples under each start method, and the legs of mp-mpi (clippy, its tests under
        mpirun, its example), which are skipped with what to install when MPI or libclang is
        missing.
        --quick       skips fmt, clippy and the doc tests
        --method <m>  runs the nextest and example legs for this start method only (repeatable)
        --mpi         runs the legs of mp-mpi only
  bench [--rounds <n>] [--min-time <seconds>] [--plot <file.svg>] [--json <file>]
        [--compare <old.json>] [--from-json <file>] [<row>...]
        Builds mp-bench and mp-bench-peers in release mode and runs the benchmark rows (all
        of them by default), alternating mp, CPython, the Rust peer and the floor (the
        `_loaded` rows beside one CPU hog per core), then prints one markdown table.
        --rounds <n>           runs of each side per row (default 5)
        --min-time <seconds>   the least timed work per run (default 0.5)
        --plot <file.svg>      draws the ratios per row (log scale, targets marked)
        --json <file>          writes the table's numbers, for a later --compare
        --compare <old.json>   prints the change per row against an earlier --json file
        --from-json <file>     measures nothing: reports the run of that --json file again
                               (table, --plot, --compare)
  lint-imports
        Reads every crate's sources (crates/* and the root crate) and reports each import
        cycle between their modules (files), with one import per member and its file:line,
        and every dependency between crates that breaks the layering
        mp-process < mp-shm < mp-sync < mp-queue < mp-pool < mp-manager < mp-mpi < mp (mp-testkit is
        for [dev-dependencies] only). Exits non-zero if it reports anything.
  help  Prints this text.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match command {
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "lint-imports" => imports::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(true)
        }
        other => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root, the folder above this crate's own.
pub fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// A `cargo` command run in the workspace root, with the cargo that started this program.
pub fn cargo() -> Command {
    let mut cmd =
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(root());
    cmd
}

/// The target directory cargo builds into, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    let configured = ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|name| std::env::var_os(name).filter(|v| !v.is_empty()));
    match configured {
        // Cargo takes a relative directory from where it runs, which is the root here.
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Formats a duration in seconds with one decimal, such as `12.3 s`.
pub fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// Writes `text` with every line indented by four spaces, or `(nothing)` if it is empty.
pub fn indented(text: &str) -> String {
    if text.is_empty() {
        return "    (nothing)\n".to_owned();
    }
    text.lines().map(|line| format!("    {line}\n")).collect()
}
