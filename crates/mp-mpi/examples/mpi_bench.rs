//! The mp side of the MPI rows of `cargo xtask bench` (`mpi_pool_map_small`,
//! `mpi_pool_apply_async`): a pool of 2 spawned MPI workers, timed as every row is
//! (`bench/src/measure.rs`). Prints one `RESULT <value> <unit> <peak_rss_kib>` line.
//!
//! ```text
//! cargo build --release -p mp-mpi --example mpi_bench
//! ./target/release/examples/mpi_bench mpi_pool_map_small
//! ```

#[path = "../../../bench/src/measure.rs"]
#[allow(dead_code)]
mod measure;

use anyhow::{Context, Result, bail, ensure};

/// The task of the rows.
fn square(x: u64) -> u64 {
    x * x
}

/// The tasks of one timed group of `mpi_pool_apply_async`.
const MPI_GROUP: u64 = 1000;

/// The length of one map (as `pool_map_small`'s).
const MAP_LEN: u64 = 100_000;

fn main() -> Result<()> {
    // A world's other ranks serve here (spawned workers never reach `main`).
    let mpi = mp_mpi::init().context("mp_mpi::init")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [row] = args.as_slice() else {
        bail!("usage: mpi_bench <mpi_pool_map_small|mpi_pool_apply_async>");
    };
    let pool = mpi.spawn_pool(2).context("spawn 2 workers")?;
    let (value, unit) = match row.as_str() {
        // map(square, 0..100_000) with the default chunksize, in tasks/s.
        "mpi_pool_map_small" => {
            let seconds = measure::seconds_per_op(|n| {
                for _ in 0..n {
                    let got = pool.map(square, 0..MAP_LEN)?;
                    ensure!(got.len() as u64 == MAP_LEN, "a short result");
                }
                Ok(())
            })?;
            (MAP_LEN as f64 / seconds, "tasks/s")
        }
        // apply_async(square, i) for groups of 1,000 tasks, then every get, in tasks/s (the
        // groups of the CPython side, mpi4py's: bench.py's MPI_GROUP).
        "mpi_pool_apply_async" => {
            let seconds = measure::seconds_per_op(|n| {
                let results = (0..n * MPI_GROUP)
                    .map(|i| pool.apply_async(square, (i,)))
                    .collect::<Result<Vec<_>, _>>()?;
                for (i, r) in results.into_iter().enumerate() {
                    ensure!(r.get()? == square(i as u64), "a wrong result");
                }
                Ok(())
            })?;
            (MPI_GROUP as f64 / seconds, "tasks/s")
        }
        other => bail!("unknown row `{other}`"),
    };
    pool.close()?;
    pool.join()?;
    drop(pool);
    measure::report(value, unit)
}
