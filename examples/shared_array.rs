//! Shared memory `Array` (Python's `multiprocessing.Array`): two workers fill halves of one
//! array of squares, under its lock; the parent prints it.

fn fill(array: mp::Array<i32>, start: usize, end: usize) -> Result<(), mp::sync::Error> {
    let mut items = array.lock()?;
    for i in start..end {
        items[i] = (i * i) as i32;
    }
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let array = mp::Array::<i32>::zeroed(10)?;
    let half = array.len() / 2;
    let mut processes = vec![
        mp::Process::new(fill, (array.clone(), 0, half)),
        mp::Process::new(fill, (array.clone(), half, array.len())),
    ];
    for p in &mut processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }
    println!("Shared array: {:?}", array.to_vec()?);
    Ok(())
}
