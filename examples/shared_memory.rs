//! Python's `SharedMemoryManager`: the manager hands out a named `SharedMemory` and a
//! `ShareableList` (real segments, not proxies), worker processes fill them, the parent prints
//! them; shutting the manager down unlinks both segments.

use std::path::Path;

use mp::manager::SharedMemoryManager;
use mp::{Item, ShareableList, SharedMemory};

fn worker(shm: SharedMemory, list: ShareableList, index: usize) -> Result<(), mp::ShmError> {
    shm.write(index, &[(index * index) as u8])?;
    list.set(index, Item::Int(index as i64 * 10))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _guard = mp::init()?;
    let mut smm = SharedMemoryManager::start()?;
    let shm = smm.shared_memory(5)?;
    let list = smm.shareable_list(&vec![Item::None; 5])?;
    println!("Segments tracked: {}", smm.list_segments()?.len());

    let mut processes = Vec::new();
    for index in 0..5 {
        let mut p = mp::Process::new(worker, (shm.try_clone()?, list.clone(), index));
        p.start()?;
        processes.push(p);
    }
    for p in &processes {
        p.join()?;
    }

    let mut bytes = [0u8; 5];
    shm.read(0, &mut bytes)?;
    println!("SharedMemory: {bytes:?}");
    let items: Vec<String> = list
        .to_vec()?
        .into_iter()
        .map(|item| match item {
            Item::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    println!("ShareableList: [{}]", items.join(", "));

    let names = [shm.name().to_string(), list.shm().name().to_string()];
    smm.shutdown()?;
    let gone = names.iter().all(|name| !Path::new("/dev/shm").join(name).exists());
    println!("Unlinked at shutdown: {gone}");
    Ok(())
}
