//! Seed 004, the notebook cell that maps over a list and then closes the pool: `close` stops
//! new work, `join` waits for the workers to exit.

fn worker_function(x: u64) -> u64 {
    x * x
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let l: Vec<u64> = (0..10).collect(); // [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]

    let pool = mp::Pool::new(4)?;
    let results = pool.map(worker_function, l)?;
    pool.close()?;
    pool.join()?;

    println!("{results:?}");
    Ok(())
}
