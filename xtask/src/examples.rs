//! The examples leg: every `examples/<name>.rs` runs under a start method and its output is
//! checked against `examples/expected/<name>.txt` (the format is in that folder's README).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::pattern::{self, Expected};
use crate::test::Status;
use crate::{indented, proc, secs, target_dir};

/// How long one example may run before it is killed and fails.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// One example and its expected output.
pub struct Example {
    name: String,
    /// The expected-output file's path, relative to the root, for messages.
    expected_path: String,
    /// The parsed expected-output file, or why it could not be had.
    expected: Result<Expected, String>,
}

/// Lists the examples of the root package, `examples/*.rs`, by name, with their expected output.
pub fn list(root: &Path) -> Result<Vec<Example>> {
    let dir = root.join("examples");
    let mut names = Vec::new();
    if dir.is_dir() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    names.push(stem.to_owned());
                }
            }
        }
    }
    names.sort();
    warn_about_orphans(&dir.join("expected"), &names);
    Ok(names
        .into_iter()
        .map(|name| {
            let expected_path = format!("examples/expected/{name}.txt");
            let expected = match fs::read_to_string(root.join(&expected_path)) {
                Ok(text) => {
                    pattern::parse_expected(&text).map_err(|e| format!("bad {expected_path}: {e}"))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(format!("missing {expected_path}: every example needs one"))
                }
                Err(e) => Err(format!("cannot read {expected_path}: {e}")),
            };
            Example { name, expected_path, expected }
        })
        .collect())
}

/// Says which expected-output files have no example, as they are likely left over from a rename.
fn warn_about_orphans(expected_dir: &Path, names: &[String]) {
    let Ok(entries) = fs::read_dir(expected_dir) else { return };
    for path in entries.flatten().map(|e| e.path()) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "txt") && !names.iter().any(|n| n == stem) {
            println!("warning: {} has no example examples/{stem}.rs", path.display());
        }
    }
}

/// Runs every example under `method`, printing a line per case and details for each failure.
pub fn run_all(examples: &[Example], method: &str) -> Status {
    if examples.is_empty() {
        println!("no examples");
        return Status::Ok;
    }
    let bin_dir = target_dir().join("debug").join("examples");
    let mut failures = Vec::new();
    for example in examples {
        let case = format!("{} [{method}]", example.name);
        match run_one(example, method, &bin_dir) {
            Outcome::Passed(elapsed) => println!("example {case}: ok ({})", secs(elapsed)),
            Outcome::NotForMethod => {
                println!("example {case}: skipped (`#! methods` leaves it out)")
            }
            Outcome::Failed(report) => {
                println!("example {case}: FAILED\n{report}");
                failures.push(case);
            }
        }
    }
    if failures.is_empty() {
        Status::Ok
    } else {
        Status::Failed(format!(
            "{} of {} failed: {}",
            failures.len(),
            examples.len(),
            failures.join(", ")
        ))
    }
}

/// The end of one example under one start method.
enum Outcome {
    Passed(Duration),
    NotForMethod,
    Failed(String),
}

fn run_one(example: &Example, method: &str, bin_dir: &Path) -> Outcome {
    let expected = match &example.expected {
        Ok(expected) => expected,
        Err(why) => {
            return Outcome::Failed(format!("---- {} under {method}: {why}\n", example.name));
        }
    };
    if !expected.methods.iter().any(|m| m == method) {
        return Outcome::NotForMethod;
    }
    let binary: PathBuf = bin_dir.join(&example.name);
    let mut cmd = Command::new(&binary);
    cmd.env("MP_START_METHOD", method).current_dir(crate::root());
    let run = match proc::run_captured(&mut cmd, TIME_LIMIT) {
        Ok(run) => run,
        Err(e) => return Outcome::Failed(format!("---- {} under {method}: {e:#}\n", example.name)),
    };
    let stdout = run.stdout_text();
    let mut problems = Vec::new();
    if run.timed_out {
        problems.push(format!("timed out after {}, killed", secs(TIME_LIMIT)));
    } else if run.status.code() != Some(expected.exit_code) {
        problems.push(format!(
            "ended with {}, expected exit {}",
            proc::describe(run.status),
            expected.exit_code
        ));
    }
    if run.lingered {
        problems.push(
            "processes it left behind held its output open after it exited; they were killed"
                .to_owned(),
        );
    }
    if let Err(report) = pattern::compare(expected, &stdout) {
        problems.push(format!("the output differs:\n{}", indented(&report).trim_end()));
    }
    if problems.is_empty() {
        return Outcome::Passed(run.elapsed);
    }
    let patterns: String = expected.patterns.iter().map(|p| format!("{}\n", p.text())).collect();
    Outcome::Failed(format!(
        "---- {} under {method}:\n{}expected ({}{}):\n{}actual stdout:\n{}stderr:\n{}",
        example.name,
        problems.iter().map(|p| format!("{p}\n")).collect::<String>(),
        example.expected_path,
        if expected.unordered { ", in any order" } else { "" },
        indented(&patterns),
        indented(&stdout),
        indented(&run.stderr_text()),
    ))
}
