//! The benchmark rows and their targets: the one table to extend when a row is added.
//!
//! Adding a row takes one entry in [`ROWS`], a function in `bench/src/rows.rs` (the mp side and
//! the floor) and one in `bench/python/bench.py` (the CPython side, unless CPython cannot do
//! the work: [`row_without_cpython`]), and one in `bench/peers/src/main.rs` if a Rust peer
//! does the work ([`Row::with_peer`]). A `_loaded` row ([`Row::on_loaded_machine`]) is its base
//! row's work on each side, with a blocking floor of its own in `mp-bench`. The workloads and targets are those of BENCHMARKS.md in
//! the shared folder.

use Better::*;
use Target::*;

/// Which way a row's figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// A cost, such as µs per child: lower is better.
    Lower,
    /// A rate, such as msgs/s: higher is better.
    Higher,
}

/// A goal for the mp figure of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Within this factor of the floor: mp ≤ k × floor for a cost, mp ≥ k × floor for a rate.
    Floor(f64),
    /// At least this speed-up over CPython.
    Cpython(f64),
    /// This value or better, in the row's unit.
    Value(f64),
    /// At least this speed-up over the row's Rust peer.
    Peer(f64),
}

/// A benchmark row.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The row's name, as `mp-bench`, `bench.py` and `mp-bench-peers` know it.
    pub name: &'static str,
    /// Which way the figure is better.
    pub better: Better,
    /// Whether the row has a floor side.
    pub floor: bool,
    /// Why the row has no CPython side, if it has none (the table prints this instead).
    pub no_cpython: Option<&'static str>,
    /// The Rust peer that `mp-bench-peers <row>` runs, if the row has one.
    pub peer: Option<&'static str>,
    /// Whether every side runs with one CPU-bound hog process per core beside it.
    pub loaded: bool,
    /// Whether the row is the MPI pool's: its mp side is `mp-mpi`'s example `mpi_bench`, its
    /// CPython side mpi4py's, and it runs only where MPI is installed.
    pub mpi: bool,
    /// The goals; the row passes when it meets all of them.
    pub targets: &'static [Target],
}

/// A row: name, direction, whether `mp-bench <row> floor` exists, and the targets.
pub const fn row(
    name: &'static str,
    better: Better,
    floor: bool,
    targets: &'static [Target],
) -> Row {
    Row { name, better, floor, no_cpython: None, peer: None, loaded: false, mpi: false, targets }
}

/// [`row`] for a row that CPython cannot run: the table prints `why` in its CPython column.
pub const fn row_without_cpython(
    name: &'static str,
    better: Better,
    floor: bool,
    why: &'static str,
    targets: &'static [Target],
) -> Row {
    Row {
        name,
        better,
        floor,
        no_cpython: Some(why),
        peer: None,
        loaded: false,
        mpi: false,
        targets,
    }
}

impl Row {
    /// The row with a peer side: `mp-bench-peers <row>`, with the peer crate's name.
    pub const fn with_peer(self, peer: &'static str) -> Row {
        Row { peer: Some(peer), ..self }
    }

    /// The row run on a loaded machine: every side with one CPU hog per core beside it.
    pub const fn on_loaded_machine(self) -> Row {
        Row { loaded: true, ..self }
    }

    /// The row of the pool on MPI (see [`Row::mpi`]).
    pub const fn on_mpi(self) -> Row {
        Row { mpi: true, ..self }
    }
}

/// The ratio to the blocking floor that a rate must reach under load (1.2× the floor's time).
const LOADED_RATE: f64 = 1.0 / 1.2;

/// Every benchmark row, in the order of the table.
pub const ROWS: &[Row] = &[
    row("spawn_fork", Lower, true, &[Floor(1.5)]).with_peer("procspawn"),
    row("spawn_forkserver", Lower, true, &[Floor(3.0)]),
    row("spawn_spawn", Lower, true, &[Floor(3.0)]).with_peer("procspawn"),
    row("lock_counter", Higher, true, &[Floor(0.9)]),
    row("lock_uncontended", Lower, true, &[Floor(1.0)]),
    // The floor spins on two shared atomics; the blocking path has its own row.
    row("pipe_pingpong", Lower, true, &[Floor(3.0)]).with_peer("ipc-channel"),
    row("pipe_pingpong_blocking", Lower, true, &[Floor(1.2)]),
    row("pipe_bulk", Higher, true, &[Floor(0.9)]),
    row("shm_fill", Higher, true, &[Floor(0.9)]),
    row("event_pingpong", Lower, true, &[Value(2.0)]),
    row("event_pingpong_blocking", Lower, true, &[Floor(1.2)]),
    row("queue_small", Higher, false, &[Value(10_000_000.0), Peer(10.0)]).with_peer("ipc-channel"),
    row("queue_1mib", Higher, true, &[Floor(1.0)]).with_peer("ipc-channel"),
    row("pool_apply_async", Higher, false, &[Cpython(20.0), Peer(10.0)]).with_peer("procspawn"),
    row("pool_apply_latency", Lower, false, &[]),
    row("pool_map_small", Higher, false, &[Cpython(5.0)]),
    // The floor is the same map without the objects (pool_map_small's work): within 3x.
    row_without_cpython("pool_map_with_objects", Higher, true, "refuses", &[Floor(1.0 / 3.0)]),
    row("pool_imap_chunked", Higher, false, &[]),
    row("pool_cpu_speedup", Higher, true, &[Floor(0.95)]),
    // The same with a consumer blocked on a queue in the parent, which the tasks feed.
    row("pool_cpu_speedup_consumer", Higher, true, &[Floor(0.95)]),
    row("manager_dict", Higher, false, &[Cpython(20.0)]),
    // A remote client of a manager served on TCP loopback (CPython: a connected SyncManager).
    // `Manager::connect` finds the manager on this host and moves to shared memory.
    row("manager_dict_tcp", Higher, false, &[Cpython(5.0)]),
    // The same client with the same-host shortcut off: every call over TCP, as from another
    // host. Reported, no target; the floor is a blocking 64-byte TCP round trip per operation.
    row("manager_dict_tcp_wire", Higher, true, &[]),
    row("manager_dict_blocking", Lower, true, &[Floor(1.2)]),
    row("manager_dict_4clients", Higher, false, &[Cpython(10.0)]),
    row("manager_proxy_create", Higher, false, &[Cpython(50.0)]),
    // CPython's side is its per-item loop (`for x in l`, a round trip per item).
    row("manager_list_iterate", Higher, false, &[Cpython(100.0)]),
    // Reported, no target: the manager process's memory per 1,000 live dict proxies.
    row("manager_memory", Lower, false, &[]),
    // Listener/Client, 64-byte round trips (a blocking socket round trip is the floor) and
    // connect + mutual authentication (TCP connect + accept + close is the floor).
    row("connection_rtt_unix", Lower, true, &[Floor(1.2)]),
    row("connection_rtt_tcp", Lower, true, &[Floor(1.2)]),
    row("connection_connect_auth_tcp", Lower, true, &[Floor(2.0)]),
    // A loaded machine: one CPU hog per core beside every side. The floors are the blocking
    // ones (futex round trip; blocking AF_UNIX round trip per manager operation; small
    // messages written and read one by one on an AF_UNIX socket pair for the queue).
    row("queue_small_loaded", Higher, true, &[Cpython(1.0), Floor(LOADED_RATE)])
        .with_peer("ipc-channel")
        .on_loaded_machine(),
    row("pipe_pingpong_loaded", Lower, true, &[Cpython(1.0), Floor(1.2)])
        .with_peer("ipc-channel")
        .on_loaded_machine(),
    row("event_pingpong_loaded", Lower, true, &[Cpython(1.0), Floor(1.2)]).on_loaded_machine(),
    row("manager_dict_loaded", Higher, true, &[Cpython(1.0), Floor(LOADED_RATE)])
        .on_loaded_machine(),
    row("pool_apply_async_loaded", Higher, false, &[Cpython(1.0)])
        .with_peer("procspawn")
        .on_loaded_machine(),
    // The pool on MPI (mp-mpi, 2 spawned workers) beside mpi4py.futures' MPIPoolExecutor (its
    // CPython column); run only where MPI is installed. mp::Pool's figures for the same work
    // are the rows pool_map_small and pool_apply_async.
    row("mpi_pool_map_small", Higher, false, &[Cpython(5.0)]).on_mpi(),
    row("mpi_pool_apply_async", Higher, false, &[Cpython(5.0)]).on_mpi(),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_names_are_unique() {
        for (i, a) in ROWS.iter().enumerate() {
            assert!(ROWS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
        }
    }

    #[test]
    fn targets_fit_the_sides() {
        for row in ROWS {
            let needs_floor = row.targets.iter().any(|t| matches!(t, Floor(_)));
            assert!(row.floor || !needs_floor, "{} has a floor target but no floor", row.name);
            assert!(row.better == Lower || row.better == Higher);
            assert!(
                row.targets
                    .iter()
                    .all(|t| matches!(t, Floor(k) | Cpython(k) | Value(k) | Peer(k) if *k > 0.0))
            );
            let needs_peer = row.targets.iter().any(|t| matches!(t, Peer(_)));
            assert!(
                row.peer.is_some() || !needs_peer,
                "{} has a peer target but no peer",
                row.name
            );
            assert_eq!(row.loaded, row.name.ends_with("_loaded"), "{}", row.name);
        }
    }
}
