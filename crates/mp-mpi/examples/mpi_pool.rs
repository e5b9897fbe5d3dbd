//! The pool on MPI: squares on spawned workers (a singleton, or `mpirun -n 1`), or on the
//! other ranks of a static world (`mpirun -n 3`).
//!
//! ```text
//! cargo build --release -p mp-mpi --example mpi_pool
//! ./target/release/examples/mpi_pool                      # spawns 2 workers
//! mpirun --allow-run-as-root --oversubscribe -n 3 ./target/release/examples/mpi_pool
//! ```

fn square(x: u64) -> u64 {
    x * x
}

fn where_am_i(i: u32) -> (u32, String) {
    (i, rustix::system::uname().nodename().to_string_lossy().into_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Under `mpirun -n 3`, ranks 1 and 2 serve here and never return (spawned workers never
    // reach `main`: an entry hook serves them before).
    let mpi = mp_mpi::init()?;
    let pool = mpi.pool(Some(2))?;
    println!("workers: {}", pool.processes());
    let squares = pool.map(square, 0..10)?;
    println!("squares: {squares:?}");
    let total: u64 = pool.map(square, 0..100_000)?.iter().sum();
    println!("sum of 100,000 squares: {total}");
    let mut hosts: Vec<String> = pool.map(where_am_i, 0..8)?.into_iter().map(|(_, h)| h).collect();
    hosts.sort();
    hosts.dedup();
    println!("hosts: {}", hosts.len());
    pool.close()?;
    pool.join()?;
    Ok(())
}
