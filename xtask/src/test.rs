//! `cargo xtask test`: every leg of the CI matrix in one go, with a summary line per leg.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::pattern::METHODS;
use crate::{cargo, examples, proc, secs};

/// How a leg ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The leg passed.
    Ok,
    /// The leg failed, for the given reason.
    Failed(String),
    /// The leg did not run, for the given reason.
    Skipped(String),
}

/// One leg that ran or was skipped.
struct Leg {
    name: String,
    status: Status,
    elapsed: Duration,
}

impl Leg {
    fn summary(&self) -> String {
        let time = secs(self.elapsed);
        match &self.status {
            Status::Ok => format!("leg {}: ok ({time})", self.name),
            Status::Failed(why) => format!("leg {}: FAILED ({why}; {time})", self.name),
            Status::Skipped(why) => format!("leg {}: skipped ({why})", self.name),
        }
    }
}

/// The legs so far.
#[derive(Default)]
struct Legs {
    legs: Vec<Leg>,
}

impl Legs {
    /// Runs one leg, prints its summary line and tells whether it passed.
    fn run(&mut self, name: &str, what: &str, leg: impl FnOnce() -> Status) -> bool {
        println!("\n==> leg {name}: {what}");
        let start = Instant::now();
        let status = leg();
        self.push(Leg { name: name.to_owned(), status, elapsed: start.elapsed() })
    }

    /// Runs a cargo command as one leg, with extra environment variables.
    fn cargo(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) -> bool {
        let what = format!(
            "{}cargo {}",
            env.iter().map(|(k, v)| format!("{k}={v} ")).collect::<String>(),
            args.join(" ")
        );
        self.run(name, &what, || {
            let mut cmd = cargo();
            cmd.args(args).envs(env.iter().copied()).stdin(Stdio::null());
            status_of(cmd)
        })
    }

    /// Records a leg that did not run.
    fn skip(&mut self, name: &str, why: &str) {
        self.push(Leg {
            name: name.to_owned(),
            status: Status::Skipped(why.to_owned()),
            elapsed: Duration::ZERO,
        });
    }

    fn push(&mut self, leg: Leg) -> bool {
        println!("{}", leg.summary());
        let ok = leg.status == Status::Ok;
        self.legs.push(leg);
        ok
    }
}

/// Runs `cmd` with its output going to ours, and turns its exit status into a leg status.
fn status_of(mut cmd: Command) -> Status {
    match cmd.status() {
        Ok(status) if status.success() => Status::Ok,
        Ok(status) => Status::Failed(proc::describe(status)),
        Err(error) => Status::Failed(format!("cannot run {:?}: {error}", cmd.get_program())),
    }
}

/// The options of `cargo xtask test`.
struct Options {
    quick: bool,
    /// `--mpi`: only the legs of `mp-mpi`.
    mpi_only: bool,
    methods: Vec<&'static str>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options { quick: false, mpi_only: false, methods: Vec::new() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let method = match arg.as_str() {
            "--quick" => {
                options.quick = true;
                continue;
            }
            "--mpi" => {
                options.mpi_only = true;
                continue;
            }
            "--method" => args.next().map(String::as_str).unwrap_or_default(),
            other => match other.strip_prefix("--method=") {
                Some(method) => method,
                None => bail!(
                    "unknown option `{other}` for `cargo xtask test` (see `cargo xtask help`)"
                ),
            },
        };
        match METHODS.iter().find(|m| **m == method) {
            Some(m) if !options.methods.contains(m) => options.methods.push(m),
            Some(_) => {}
            None => bail!("`--method` needs one of {}, got `{method}`", METHODS.join(", ")),
        }
    }
    if options.methods.is_empty() {
        options.methods = METHODS.to_vec();
    }
    Ok(options)
}

/// Whether `cargo nextest` can run.
fn have_nextest() -> bool {
    let mut cmd = cargo();
    cmd.args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

/// Runs the legs; returns whether all of them passed.
pub fn run(args: &[String]) -> Result<bool> {
    let options = parse_options(args)?;
    let start = Instant::now();
    let mut legs = Legs::default();
    if options.mpi_only {
        mpi_legs(&mut legs);
        return Ok(summary(&legs, start));
    }

    if options.quick {
        println!("--quick: skipping fmt, clippy and the doc tests");
    } else {
        legs.cargo("fmt", &["fmt", "--all", "--check"], &[]);
        // Every target: building the tests turns on the `failpoints` features of mp-queue and
        // mp-pool (their dev-dependencies on themselves), so this checks the code with them.
        legs.cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "mp-mpi",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        );
        // The libraries and binaries alone, with the features of a release build: without the
        // failpoints.
        legs.cargo(
            "clippy[lib]",
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "mp-mpi",
                "--lib",
                "--bins",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        );
        legs.cargo("doc", &["test", "--doc", "--workspace", "--exclude", "mp-mpi"], &[]);
        // No module import cycles in any crate, and crates depend only on crates below them.
        legs.run("lint-imports", "the import graph of every crate", crate::imports::leg);
    }

    // The tests are built once here, and the legs after it reuse the build.
    let built = if have_nextest() {
        legs.cargo(
            "build",
            &["nextest", "run", "--workspace", "--exclude", "mp-mpi", "--no-run"],
            &[],
        )
    } else {
        let why =
            "cargo-nextest is missing: install it with `cargo install cargo-nextest --locked`";
        legs.run("build", "cargo nextest run --workspace --no-run", || {
            Status::Failed(why.to_owned())
        })
    };
    // CI gets the `ci` profile of .config/nextest.toml, which repeats the failures at the end.
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let profile: &[&str] = if in_ci { &["--profile", "ci"] } else { &[] };
    for method in &options.methods {
        let name = format!("nextest[{method}]");
        if built {
            let mut args =
                vec!["nextest", "run", "--workspace", "--exclude", "mp-mpi", "--no-fail-fast"];
            args.extend_from_slice(profile);
            legs.cargo(&name, &args, &[("MP_START_METHOD", method)]);
        } else {
            legs.skip(&name, "the build failed");
        }
    }

    // The same dev profile and the same workspace-wide features as the tests: nothing is rebuilt
    // but the examples themselves.
    let examples_built = legs.cargo(
        "examples-build",
        &["build", "--workspace", "--exclude", "mp-mpi", "--examples"],
        &[],
    );
    let found = examples::list(&crate::root());
    for method in &options.methods {
        let name = format!("examples[{method}]");
        match &found {
            _ if !examples_built => legs.skip(&name, "the examples did not build"),
            Ok(found) => {
                legs.run(&name, &format!("each example with MP_START_METHOD={method}"), || {
                    examples::run_all(found, method)
                });
            }
            Err(error) => {
                legs.run(&name, "listing the examples", || Status::Failed(format!("{error:#}")));
            }
        }
    }

    mpi_legs(&mut legs);
    Ok(summary(&legs, start))
}

/// Prints the summary of the legs; whether all of them passed.
fn summary(legs: &Legs, start: Instant) -> bool {
    println!("\n==> summary");
    for leg in &legs.legs {
        println!("{}", leg.summary());
    }
    let count = |f: fn(&Status) -> bool| legs.legs.iter().filter(|l| f(&l.status)).count();
    let passed = count(|s| matches!(s, Status::Ok));
    let failed = count(|s| matches!(s, Status::Failed(_)));
    let skipped = count(|s| matches!(s, Status::Skipped(_)));
    println!("total time: {}", secs(start.elapsed()));
    println!("legs: {passed} passed, {failed} failed, {skipped} skipped");
    failed == 0
}

/// The legs of `mp-mpi` (the pool on MPI): clippy, its tests under `mpirun`, and its example
/// run three ways. Skipped, loudly, when MPI or libclang is missing.
fn mpi_legs(legs: &mut Legs) {
    let names = ["mpi[clippy]", "mpi[test]", "mpi[example]"];
    if let Some(why) = crate::mpi::missing() {
        println!("\n==> MPI legs skipped: {why}");
        for name in names {
            legs.skip(name, &why);
        }
        return;
    }
    let clippy = legs.cargo(
        names[0],
        &[
            "clippy",
            "-p",
            "mp-mpi",
            "-p",
            "mp",
            "--features",
            "mp/mpi",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    );
    if !clippy {
        legs.skip(names[1], "mp-mpi did not pass clippy");
        legs.skip(names[2], "mp-mpi did not pass clippy");
        return;
    }
    legs.cargo(names[1], &["test", "-p", "mp-mpi"], &[]);
    legs.run(
        names[2],
        "the example mpi_pool: as a singleton, under mpirun -n 1 and -n 3",
        crate::mpi::example,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_default_to_every_method() {
        let o = parse_options(&[]).unwrap();
        assert!(!o.quick);
        assert_eq!(o.methods, METHODS);
    }

    #[test]
    fn options_select_methods() {
        let o = parse_options(&args(&[
            "--quick",
            "--method",
            "spawn",
            "--method=fork",
            "--method",
            "spawn",
        ]))
        .unwrap();
        assert!(o.quick);
        assert!(!o.mpi_only);
        assert_eq!(o.methods, ["spawn", "fork"]);
        assert!(parse_options(&args(&["--mpi"])).unwrap().mpi_only);
        assert!(parse_options(&args(&["--method", "vfork"])).is_err());
        assert!(parse_options(&args(&["--method"])).is_err());
        assert!(parse_options(&args(&["--fast"])).is_err());
    }

    #[test]
    fn summary_lines_say_the_outcome() {
        let leg =
            |status| Leg { name: "fmt".into(), status, elapsed: Duration::from_millis(12_340) };
        assert_eq!(leg(Status::Ok).summary(), "leg fmt: ok (12.3 s)");
        assert_eq!(
            leg(Status::Failed("exit 1".into())).summary(),
            "leg fmt: FAILED (exit 1; 12.3 s)"
        );
        assert_eq!(
            leg(Status::Skipped("no build".into())).summary(),
            "leg fmt: skipped (no build)"
        );
    }
}
