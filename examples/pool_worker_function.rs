//! Seed 004, "Using Pool of Workers": a pool of four workers squares `0..10`.

fn worker_function(x: u64) -> u64 {
    x * x
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let results = {
        let pool = mp::Pool::new(4)?;
        pool.map(worker_function, 0..10)?
    };
    println!("{results:?}");
    Ok(())
}
