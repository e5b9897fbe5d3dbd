//! `cargo xtask bench`: runs the rows of [`crate::rows::ROWS`], every measurement in a fresh
//! process, alternating mp, CPython, the Rust peer and the floor (the `_loaded` rows beside one
//! CPU hog per core), prints one markdown table, and draws, saves or compares the run
//! (`plot.rs`, `report.rs`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::rows::{ROWS, Row};
use crate::table::{self, Results, Sample, Side};
use crate::{cargo, indented, plot, proc, report, root, target_dir};

/// How long one measurement may take before it is killed and counted as failed.
const TIME_LIMIT: Duration = Duration::from_secs(300);

/// The environment variable through which the programs learn the least timed work per run.
const MIN_TIME_VAR: &str = "MP_BENCH_MIN_TIME";

/// The options of `cargo xtask bench`.
#[derive(Debug)]
struct Options {
    rounds: usize,
    min_time: Option<String>,
    rows: Vec<Row>,
    /// `--plot FILE.svg`: where to draw the ratios.
    plot: Option<String>,
    /// `--json FILE`: where to write the numbers.
    json: Option<String>,
    /// `--compare OLD.json`: an earlier run's numbers to print the change against.
    compare: Option<String>,
    /// `--from-json FILE`: a run's numbers to report again instead of measuring.
    from_json: Option<String>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        rounds: 5,
        min_time: None,
        rows: Vec::new(),
        plot: None,
        json: None,
        compare: None,
        from_json: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                let n = args.next().context("`--rounds` needs a number")?;
                options.rounds = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("`--rounds` needs a positive number")?;
            }
            "--min-time" => {
                let t = args.next().context("`--min-time` needs a number of seconds")?;
                ensure!(
                    t.parse::<f64>().is_ok_and(|t| t > 0.0),
                    "`--min-time` needs a positive number of seconds"
                );
                options.min_time = Some(t.clone());
            }
            "--plot" => {
                options.plot = Some(args.next().context("`--plot` needs a file name")?.clone());
            }
            "--json" => {
                options.json = Some(args.next().context("`--json` needs a file name")?.clone());
            }
            "--from-json" => {
                let file = args.next().context("`--from-json` needs a `--json` file")?;
                options.from_json = Some(file.clone());
            }
            "--compare" => {
                let file = args.next().context("`--compare` needs an earlier run's JSON file")?;
                options.compare = Some(file.clone());
            }
            name if name.starts_with('-') => {
                bail!("unknown option `{name}` for `cargo xtask bench`")
            }
            name => match ROWS.iter().find(|r| r.name == name) {
                Some(row) => options.rows.push(*row),
                None => {
                    let known: Vec<&str> = ROWS.iter().map(|r| r.name).collect();
                    bail!("unknown row `{name}` (rows: {})", known.join(", "));
                }
            },
        }
    }
    if options.rows.is_empty() {
        options.rows = ROWS.to_vec();
    }
    Ok(options)
}

/// The four sides of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Mp,
    Cpython,
    Peer,
    Floor,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Mp => "mp",
            Which::Cpython => "CPython",
            Which::Peer => "peer",
            Which::Floor => "floor",
        }
    }
}

/// One CPU-bound busy loop per core (`mp-bench hog`), for the `_loaded` rows; killed on drop.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    /// Starts one hog per core and gives them a moment to be running.
    fn start(binary: &std::path::Path) -> Result<Hogs> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut hogs = Hogs(Vec::new());
        for _ in 0..cores {
            let child = Command::new(binary)
                .arg("hog")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start a CPU hog")?;
            hogs.0.push(child);
        }
        std::thread::sleep(HOG_SETTLE);
        Ok(hogs)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Our own children, by handle: a hog that already died only fails to be killed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long the hogs run before a loaded measurement starts.
const HOG_SETTLE: Duration = Duration::from_millis(100);

/// Parses the one `RESULT <value> <unit> <peak_rss_kib>` line of a run's standard output.
fn parse_result(stdout: &str) -> Result<Sample> {
    let results: Vec<&str> = stdout.lines().filter(|l| l.starts_with("RESULT ")).collect();
    ensure!(results.len() == 1, "expected one RESULT line on stdout, got {}", results.len());
    let fields: Vec<&str> = results[0].split_whitespace().collect();
    let [_, value, unit, rss] = fields.as_slice() else {
        bail!("expected `RESULT <value> <unit> <peak_rss_kib>`, got `{}`", results[0]);
    };
    let value: f64 = value.parse().with_context(|| format!("bad value `{value}`"))?;
    ensure!(value.is_finite() && value >= 0.0, "bad value `{value}`");
    let rss_kib = rss.parse().with_context(|| format!("bad peak RSS `{rss}`"))?;
    Ok(Sample { value, unit: (*unit).to_owned(), rss_kib })
}

/// Runs one measurement; a failure is printed and gives `None`.
fn measure(mut cmd: Command, label: &str) -> Option<Sample> {
    let outcome = proc::run_captured(&mut cmd, TIME_LIMIT).and_then(|run| {
        if run.timed_out {
            bail!(
                "timed out after {} s\nstderr:\n{}",
                TIME_LIMIT.as_secs(),
                indented(&run.stderr_text())
            );
        }
        if !run.status.success() {
            bail!(
                "ended with {}\nstderr:\n{}",
                proc::describe(run.status),
                indented(&run.stderr_text())
            );
        }
        if run.lingered {
            eprintln!(
                "warning: {label}: processes it left behind held its output open; they were killed"
            );
        }
        parse_result(&run.stdout_text())
            .with_context(|| format!("stdout:\n{}", indented(&run.stdout_text())))
    });
    match outcome {
        Ok(sample) => Some(sample),
        Err(error) => {
            eprintln!("error: {label}: {error:#}");
            None
        }
    }
}

/// Whether `python3` runs.
fn have_python() -> bool {
    let mut cmd = Command::new("python3");
    cmd.arg("--version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

/// Whether `python3` can import mpi4py (the CPython side of the MPI rows).
fn have_mpi4py() -> bool {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import mpi4py.futures"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

/// Builds mp-bench, runs the rows and prints the table; returns whether every run succeeded.
pub fn run(args: &[String]) -> Result<bool> {
    let options = parse_options(args)?;
    // Read the earlier run first, so that a wrong name fails before the long run.
    let earlier = match &options.compare {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?)
        }
        None => None,
    };
    if let Some(path) = &options.from_json {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let (all, rounds) = report::read_results(&text)?;
        report_run(&options, &all, rounds, earlier.as_deref())?;
        return Ok(true);
    }
    let mut build = cargo();
    build.args(["build", "--release", "-p", "mp-bench"]).stdin(Stdio::null());
    let status = build.status().context("cannot run cargo")?;
    ensure!(
        status.success(),
        "`cargo build --release -p mp-bench` failed ({})",
        proc::describe(status)
    );
    let binary: PathBuf = target_dir().join("release").join("mp-bench");
    let peers_binary: PathBuf = target_dir().join("release").join("mp-bench-peers");
    // The peers are dev-only and optional: if they do not build, their column says "—".
    let mut build_peers = cargo();
    build_peers.args(["build", "--release", "-p", "mp-bench-peers"]).stdin(Stdio::null());
    let peers = match build_peers.status() {
        Ok(status) if status.success() => true,
        outcome => {
            eprintln!("warning: mp-bench-peers did not build ({outcome:?}): no peer column");
            false
        }
    };
    // The MPI rows need MPI (and their CPython side mpi4py): without it they are left out.
    let wants_mpi = options.rows.iter().any(|r| r.mpi);
    let mpi_binary: PathBuf = target_dir().join("release").join("examples").join("mpi_bench");
    let mpi = wants_mpi && {
        match crate::mpi::missing() {
            Some(why) => {
                eprintln!("warning: the MPI rows are left out: {why}");
                false
            }
            None => {
                let mut build = cargo();
                build.args(["build", "--release", "-p", "mp-mpi", "--example", "mpi_bench"]);
                let built = build.stdin(Stdio::null()).status().is_ok_and(|s| s.success());
                if !built {
                    eprintln!(
                        "warning: mp-mpi's mpi_bench did not build: the MPI rows are left out"
                    );
                }
                built
            }
        }
    };
    let mpi4py = mpi && have_mpi4py();
    if mpi && !mpi4py {
        eprintln!("warning: python3 cannot import mpi4py: the MPI rows have no CPython column");
    }
    let script = root().join("bench").join("python").join("bench.py");
    let python = have_python();
    if !python {
        eprintln!("warning: python3 is missing: the CPython column says so");
    }

    let command = |row: &Row, which: Which| -> Command {
        let mut cmd = match which {
            Which::Cpython => {
                let mut cmd = Command::new("python3");
                cmd.arg(&script).arg(row.name);
                cmd
            }
            Which::Peer => {
                let mut cmd = Command::new(&peers_binary);
                cmd.arg(row.name);
                cmd
            }
            Which::Mp if row.mpi => {
                let mut cmd = Command::new(&mpi_binary);
                cmd.arg(row.name);
                cmd
            }
            Which::Mp | Which::Floor => {
                let mut cmd = Command::new(&binary);
                cmd.args([row.name, if which == Which::Mp { "mp" } else { "floor" }]);
                cmd
            }
        };
        cmd.current_dir(root()).env_remove("MP_START_METHOD");
        if let Some(min_time) = &options.min_time {
            cmd.env(MIN_TIME_VAR, min_time);
        }
        cmd
    };

    let mut all = Vec::new();
    let mut ok = true;
    for row in options.rows.iter().filter(|r| mpi || !r.mpi) {
        // The floor right after mp: the ratio most targets judge then comes from two runs a
        // second apart, seldom in two of the machine's phases (see bench/README.md).
        let mut sides: Vec<Which> = vec![Which::Mp];
        sides.extend(row.floor.then_some(Which::Floor));
        let cpython = python && row.no_cpython.is_none() && (mpi4py || !row.mpi);
        sides.extend(cpython.then_some(Which::Cpython));
        sides.extend((peers && row.peer.is_some()).then_some(Which::Peer));
        let mut runs: Vec<Vec<Option<Sample>>> = vec![Vec::new(); 4];
        for round in 1..=options.rounds {
            let mut line = format!("{} round {round}/{}:", row.name, options.rounds);
            for &which in &sides {
                let label = format!("{} {} (round {round})", row.name, which.name());
                let hogs = if row.loaded { Some(Hogs::start(&binary)?) } else { None };
                let sample = measure(command(row, which), &label);
                drop(hogs);
                match &sample {
                    Some(s) => line.push_str(&format!(
                        " {} {} {};",
                        which.name(),
                        table::number(s.value),
                        s.unit
                    )),
                    None => line.push_str(&format!(" {} error;", which.name())),
                }
                ok &= sample.is_some();
                runs[which as usize].push(sample);
            }
            eprintln!("{}", line.trim_end_matches(';'));
        }
        let side = |which: Which, absent: &'static str| {
            if sides.contains(&which) {
                Side::from_runs(&runs[which as usize])
            } else {
                Side::Absent(absent)
            }
        };
        all.push(Results {
            row: *row,
            mp: side(Which::Mp, "—"),
            cpython: side(
                Which::Cpython,
                row.no_cpython.unwrap_or(if row.mpi && python {
                    "no mpi4py"
                } else {
                    "no python3"
                }),
            ),
            peer: side(Which::Peer, "—"),
            floor: side(Which::Floor, "—"),
        });
    }
    report_run(&options, &all, options.rounds, earlier.as_deref())?;
    Ok(ok)
}

/// Prints the table and does what `--json`, `--plot` and `--compare` ask.
fn report_run(
    options: &Options,
    all: &[Results],
    rounds: usize,
    earlier: Option<&str>,
) -> Result<()> {
    println!("\n{}", table::render(all, rounds));
    if let Some(path) = &options.json {
        report::write_json(path, all, rounds)?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = &options.plot {
        let title = format!("cargo xtask bench: mp's ratios, medians of {rounds} rounds' ratios");
        plot::write_svg(path, all, &title)?;
        eprintln!("drew {path}");
    }
    if let Some(text) = earlier {
        println!("{}", report::compare(text, all)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_result_line() {
        let s = parse_result("warming up\nRESULT 412.5 us/child 3200\n").unwrap();
        assert_eq!(s, Sample { value: 412.5, unit: "us/child".into(), rss_kib: 3200 });
        assert!(parse_result("").is_err());
        assert!(parse_result("RESULT 1 us 2\nRESULT 1 us 2\n").is_err());
        assert!(parse_result("RESULT 1 us\n").is_err());
        assert!(parse_result("RESULT x us 2\n").is_err());
        assert!(parse_result("RESULT 1 us 2.5\n").is_err());
        assert!(parse_result("RESULT nan us 2\n").is_err());
    }

    #[test]
    fn options_pick_rows() {
        let args: Vec<String> =
            ["--rounds", "3", "spawn_spawn"].iter().map(|s| (*s).to_owned()).collect();
        let o = parse_options(&args).unwrap();
        assert_eq!(o.rounds, 3);
        assert_eq!(o.rows.len(), 1);
        assert_eq!(o.rows[0].name, "spawn_spawn");
        assert_eq!(parse_options(&[]).unwrap().rows.len(), ROWS.len());
        assert!(parse_options(&["nope".to_owned()]).is_err());
        assert!(parse_options(&["--rounds".to_owned(), "0".to_owned()]).is_err());
        assert!(parse_options(&["--min-time".to_owned(), "-1".to_owned()]).is_err());
        let args: Vec<String> = ["--plot", "a.svg", "--json", "a.json", "--compare", "old.json"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let o = parse_options(&args).unwrap();
        assert_eq!(o.plot.as_deref(), Some("a.svg"));
        assert_eq!(o.json.as_deref(), Some("a.json"));
        assert_eq!(o.compare.as_deref(), Some("old.json"));
        assert!(parse_options(&["--plot".to_owned()]).is_err());
    }
}
