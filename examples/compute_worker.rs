//! Seed 002, "Creating a process": a worker that does some computation in parallel.
//!
//! The tutorial's worker computes and prints nothing; this one sums a range in the child
//! and reports through its exit code, which the parent prints.

fn worker(n: u64) {
    let sum: u64 = (1..=n).map(std::hint::black_box).sum();
    // A child reports a small result through its exit status: 0 when the sum is right.
    std::process::exit(if sum == n * (n + 1) / 2 { 0 } else { 1 });
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let mut p = mp::Process::new(worker, (1_000_000u64,));
    p.start()?;
    let code = p.join()?;
    println!("worker {} finished with exit code {code}", p.name());
    Ok(())
}
