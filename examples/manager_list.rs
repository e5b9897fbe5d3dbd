//! Seed 003, "Manager": five processes each write one item of a list the manager holds, and
//! the parent prints it, as Python's `with Manager() as manager:` program does.
//!
//! The list is a proxy: cloning it into each `Process` costs nothing, and each write is one
//! round trip to the manager's process. `Display` prints the list as Python prints it.

fn update_shared_list(shared_list: mp::ListProxy<u64>, index: u64) -> Result<(), mp::ManagerError> {
    shared_list.set(index as isize, index * index)
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let manager = mp::Manager::start()?;
    let my_list = manager.list([0u64, 0, 0, 0, 0])?;
    let mut processes: Vec<mp::Process> =
        (0..5).map(|i| mp::Process::new(update_shared_list, (my_list.clone(), i))).collect();
    for process in &mut processes {
        process.start()?;
    }
    for process in &processes {
        process.join()?;
    }
    println!("Updated shared list: {my_list}");
    Ok(())
}
