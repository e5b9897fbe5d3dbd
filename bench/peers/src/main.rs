//! `mp-bench-peers`: the Rust peers' side of `cargo xtask bench`, one measurement per process.
//!
//! `mp-bench-peers <row>` does the row's work with the best Rust peer of `mp` for it
//! (procspawn for process start and its pool, ipc-channel for messages) and prints exactly one
//! line, `RESULT <value> <unit> <peak_rss_kib>`, as `mp-bench` and `bench.py` do. A row that
//! ends in `_loaded` is the same work (the xtask runs the CPU hogs beside it). It is timed by
//! the same code as the mp side (`bench/src/measure.rs`, included by path). No `mp` crate
//! depends on this one, and it depends on none of them.

#[allow(dead_code, reason = "shared with mp-bench, which uses all of it")]
#[path = "../../src/measure.rs"]
mod measure;

use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use ipc_channel::ipc;

use crate::measure::seconds_per_op;

fn main() -> ExitCode {
    // procspawn's children are this binary again: they must be diverted before anything else.
    procspawn::init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mp-bench-peers: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A row's result: the per-operation figure and its unit, in ASCII (`us` for µs).
struct Figure {
    value: f64,
    unit: &'static str,
}

/// A row's function.
type RowFn = fn() -> Result<Figure>;

/// Every row that has a peer, by name.
const ROWS: &[(&str, RowFn)] = &[
    ("spawn_fork", procspawn_start_join),
    ("spawn_spawn", procspawn_start_join),
    ("pool_apply_async", procspawn_pool_apply_async),
    ("queue_small", ipc_queue_small),
    ("queue_1mib", ipc_queue_1mib),
    ("pipe_pingpong", ipc_pingpong),
];

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = ROWS.iter().map(|(n, _)| *n).collect();
    let [row] = args.as_slice() else {
        bail!("usage: mp-bench-peers <row> (rows: {}, and each with _loaded)", names.join(", "));
    };
    let base = row.strip_suffix("_loaded").unwrap_or(row);
    let Some((_, f)) = ROWS.iter().find(|(n, _)| *n == base) else {
        bail!("no peer for row `{row}` (rows: {})", names.join(", "));
    };
    let figure = f()?;
    measure::report(figure.value, figure.unit)
}

/// An error of a peer crate (their error types differ from version to version) as text.
fn peer_error(what: &str, error: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("{what}: {error:?}")
}

/// The child's work in the start rows: nothing.
fn noop(_: ()) {}

/// spawn_fork / spawn_spawn: `procspawn::spawn` of a function that does nothing, then `join`,
/// in µs per child. procspawn always starts its children by re-executing the program.
fn procspawn_start_join() -> Result<Figure> {
    let once = || -> Result<()> {
        procspawn::spawn((), noop).join().map_err(|e| peer_error("procspawn join", e))
    };
    once()?;
    let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| once()))?;
    Ok(Figure { value: seconds * 1e6, unit: "us/child" })
}

/// The task of the pool row.
fn square(x: u64) -> u64 {
    x * x
}

/// How many tasks procspawn's pool may have outstanding: it opens channels per task and fails
/// with "Too many open files" at about 20,000.
const WINDOW: u64 = 1_000;

/// pool_apply_async: `spawn(square, i)` on a procspawn `Pool` of 2, then every `join`, in
/// tasks/s; submitted in windows of [`WINDOW`] tasks.
fn procspawn_pool_apply_async() -> Result<Figure> {
    let pool = procspawn::Pool::new(2).map_err(|e| peer_error("procspawn Pool::new", e))?;
    let seconds = seconds_per_op(|n| {
        let mut done = 0;
        while done < n {
            let window = WINDOW.min(n - done);
            let handles: Vec<_> = (done..done + window).map(|i| pool.spawn(i, square)).collect();
            for (i, h) in (done..).zip(handles) {
                let got = h.join().map_err(|e| peer_error("procspawn join", e))?;
                ensure!(got == square(i), "a wrong result");
            }
            done += window;
        }
        Ok(())
    })?;
    pool.shutdown();
    Ok(Figure { value: 1.0 / seconds, unit: "tasks/s" })
}

/// Forks a child that runs `child` and leaves with `_exit` (status 0 if it returned `Ok`).
/// The channels the child uses were made before, so both processes hold them.
fn fork_child(child: impl FnOnce() -> Result<()>) -> Result<libc::pid_t> {
    // SAFETY: this program has no other thread when it forks (procspawn's pool is not used in
    // these rows); the child only uses its channels and leaves with `_exit`, never returning
    // into the parent's frames.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            let ok = child().is_ok();
            // SAFETY: ends the child at once, running none of the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => Ok(pid),
    }
}

/// Waits for the child `pid` and checks that it exited with status 0.
fn wait_ok(pid: libc::pid_t) -> Result<()> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live, writable local; waitpid writes only there.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if got == -1 && error.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(error).context("waitpid");
    }
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child ended with wait status {status:#x}"
    );
    Ok(())
}

/// queue_small: a forked producer is told n on a control channel and sends n small integers
/// on an `ipc::channel::<u64>()`; the parent receives them, in msgs/s.
fn ipc_queue_small() -> Result<Figure> {
    let (control_tx, control_rx) = ipc::channel::<u64>().context("ipc::channel")?;
    let (items_tx, items_rx) = ipc::channel::<u64>().context("ipc::channel")?;
    let pid = fork_child(|| {
        loop {
            let n = control_rx.recv().map_err(|e| peer_error("recv", e))?;
            if n == 0 {
                return Ok(());
            }
            for i in 0..n {
                items_tx.send(i & 0xff).map_err(|e| peer_error("send", e))?;
            }
        }
    })?;
    let seconds = seconds_per_op(|n| {
        control_tx.send(n).map_err(|e| peer_error("send", e))?;
        for i in 0..n {
            let got = items_rx.recv().map_err(|e| peer_error("recv", e))?;
            ensure!(got == i & 0xff, "an item out of order");
        }
        Ok(())
    })?;
    control_tx.send(0).map_err(|e| peer_error("send", e))?;
    wait_ok(pid)?;
    Ok(Figure { value: 1.0 / seconds, unit: "msgs/s" })
}

/// The size of a queue_1mib message.
const MIB: usize = 1 << 20;

/// queue_1mib: the same with 1 MiB messages on an `ipc::bytes_channel()`, in GB/s.
fn ipc_queue_1mib() -> Result<Figure> {
    let (control_tx, control_rx) = ipc::channel::<u64>().context("ipc::channel")?;
    let (items_tx, items_rx) = ipc::bytes_channel().context("ipc::bytes_channel")?;
    let pid = fork_child(|| {
        let msg = vec![5u8; MIB];
        loop {
            let n = control_rx.recv().map_err(|e| peer_error("recv", e))?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                items_tx.send(&msg).map_err(|e| peer_error("send", e))?;
            }
        }
    })?;
    let seconds = seconds_per_op(|n| {
        control_tx.send(n).map_err(|e| peer_error("send", e))?;
        for _ in 0..n {
            let got = items_rx.recv().map_err(|e| peer_error("recv", e))?;
            ensure!(got.len() == MIB, "a short message");
        }
        Ok(())
    })?;
    control_tx.send(0).map_err(|e| peer_error("send", e))?;
    wait_ok(pid)?;
    Ok(Figure { value: MIB as f64 / seconds / 1e9, unit: "GB/s" })
}

/// The size of a ping.
const PING_SIZE: usize = 64;

/// pipe_pingpong: round trips of a 64-byte message through two `ipc::bytes_channel()`s between
/// the parent and a forked child that sends every message back (until an empty one), in µs.
fn ipc_pingpong() -> Result<Figure> {
    let (ping_tx, ping_rx) = ipc::bytes_channel().context("ipc::bytes_channel")?;
    let (pong_tx, pong_rx) = ipc::bytes_channel().context("ipc::bytes_channel")?;
    let pid = fork_child(|| {
        loop {
            let msg = ping_rx.recv().map_err(|e| peer_error("recv", e))?;
            if msg.is_empty() {
                return Ok(());
            }
            pong_tx.send(&msg).map_err(|e| peer_error("send", e))?;
        }
    })?;
    let msg = [7u8; PING_SIZE];
    let seconds = seconds_per_op(|n| {
        for _ in 0..n {
            ping_tx.send(&msg).map_err(|e| peer_error("send", e))?;
            let got = pong_rx.recv().map_err(|e| peer_error("recv", e))?;
            ensure!(got.len() == PING_SIZE, "a short reply");
        }
        Ok(())
    })?;
    ping_tx.send(&[]).map_err(|e| peer_error("send", e))?;
    wait_ok(pid)?;
    Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
}
