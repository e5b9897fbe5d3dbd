//! Seed 003, "Pool": a pool of four workers maps `square` over five numbers.

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let result = {
        let pool = mp::Pool::builder().processes(4).build()?;
        pool.map(square, [1, 2, 3, 4, 5])?
    };
    println!("{result:?}");
    Ok(())
}
