//! The rows: one function per row, which runs the row's mp side or its floor.
//!
//! Adding a row takes a function here with its entry in [`ROWS`], an entry in the xtask's row
//! table (`xtask/src/table.rs`) and a function in `bench/python/bench.py`.

use anyhow::{Context, Result, bail, ensure};

use crate::floor;
use crate::measure::seconds_per_op;

/// The side of a row to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The work done through `mp`.
    Mp,
    /// The same work done through libc directly.
    Floor,
}

/// A row's result: the per-operation figure and its unit, in ASCII (`us` for µs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// The per-operation figure.
    pub value: f64,
    /// The unit of `value`.
    pub unit: &'static str,
}

impl Figure {
    /// Microseconds per child, from seconds per child.
    fn micros_per_child(seconds: f64) -> Figure {
        Figure { value: seconds * 1e6, unit: "us/child" }
    }
}

/// A row's function.
type RowFn = fn(Side) -> Result<Figure>;

/// Every row, by name.
const ROWS: &[(&str, RowFn)] = &[
    ("spawn_fork", spawn_fork),
    ("spawn_forkserver", spawn_forkserver),
    ("spawn_spawn", spawn_spawn),
];

/// The names of the rows.
pub fn names() -> Vec<&'static str> {
    ROWS.iter().map(|(name, _)| *name).collect()
}

/// Runs `side` of the row called `name`.
pub fn run(name: &str, side: Side) -> Result<Figure> {
    match ROWS.iter().find(|(n, _)| *n == name) {
        Some((_, row)) => row(side),
        None => bail!("unknown row `{name}` (rows: {})", names().join(", ")),
    }
}

/// The child's target: it does nothing.
fn noop() {}

/// Starts and joins a child that does nothing, with `method`, in µs per child. One child is
/// started before the timing, which for forkserver also starts the server.
fn mp_start_join(method: &str) -> Result<Figure> {
    let ctx = mp::get_context(method).with_context(|| format!("get_context({method:?})"))?;
    let start_join = || -> Result<()> {
        let mut p = ctx.process(noop, ());
        p.start().context("start")?;
        let code = p.join().context("join")?;
        ensure!(code == 0, "the child exited with {code}");
        Ok(())
    };
    start_join()?;
    let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| start_join()))?;
    Ok(Figure::micros_per_child(seconds))
}

/// The fork floor, in µs per child: `fork`, `_exit(0)` in the child, `waitpid`.
fn fork_floor() -> Result<Figure> {
    let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| floor::fork_exit_wait()))?;
    Ok(Figure::micros_per_child(seconds))
}

/// spawn_fork: start + join a child that does nothing, fork start method.
fn spawn_fork(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => mp_start_join("fork"),
        Side::Floor => fork_floor(),
    }
}

/// spawn_forkserver: the same with the forkserver start method; the floor is the fork floor.
fn spawn_forkserver(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => mp_start_join("forkserver"),
        Side::Floor => fork_floor(),
    }
}

/// spawn_spawn: the same with the spawn start method; the floor is `posix_spawn` of this binary
/// as `mp-bench exit-now`, which returns at the start of `main`.
fn spawn_spawn(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => mp_start_join("spawn"),
        Side::Floor => {
            let exec = floor::ExecSelf::new()?;
            exec.run_once()?;
            let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| exec.run_once()))?;
            Ok(Figure::micros_per_child(seconds))
        }
    }
}
