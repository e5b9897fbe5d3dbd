//! Seed 001, "Using a Pool of Processes": a pool of four workers squares four numbers.

fn square(n: u64) -> u64 {
    n * n
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    // Create a pool with 4 worker processes; it is terminated at the end of the block.
    let results = {
        let pool = mp::Pool::new(4)?;
        let numbers = [1, 2, 3, 4];
        pool.map(square, numbers)?
    };

    println!("{results:?}");
    Ok(())
}
