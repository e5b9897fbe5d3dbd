//! `SharedMemoryManager` (Python's `multiprocessing.managers.SharedMemoryManager`): segments
//! made in the client, filled by child processes under the start method `MP_START_METHOD`
//! chooses, tracked by the manager and unlinked when it stops.

use mp_manager::SharedMemoryManager;
use mp_process::Process;
use mp_shm::{Item, ShareableList, SharedMemory};
use mp_testkit::shm::{Cleanup, shm_exists};

fn run<F, Args>(target: F, args: Args)
where
    F: mp_process::Target<Args>,
    Args: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(target, args);
    p.start().expect("start");
    assert_eq!(p.join().expect("join"), 0, "the child failed");
}

fn fill(shm: SharedMemory, list: ShareableList, worker: u8) {
    shm.write(usize::from(worker), &[worker + 1]).unwrap();
    list.set(usize::from(worker), Item::Int(i64::from(worker) * 10)).unwrap();
}

#[test]
fn segments_filled_by_children_are_unlinked_at_shutdown() {
    let mut smm = SharedMemoryManager::start().unwrap();
    let shm = smm.shared_memory(16).unwrap();
    let list = smm.shareable_list(&vec![Item::Int(-1); 4]).unwrap();
    let names = [shm.name().to_string(), list.shm().name().to_string()];
    let _cleanup = Cleanup(names.to_vec());
    assert!(shm.is_named() && list.shm().is_named());
    assert_ne!(names[0], names[1]);
    assert!(names.iter().all(|n| shm_exists(n)));
    assert_eq!(smm.list_segments().unwrap(), names);

    for worker in 0..4u8 {
        run(fill, (shm.try_clone().unwrap(), list.clone(), worker));
    }
    let mut bytes = [0u8; 4];
    shm.read(0, &mut bytes).unwrap();
    assert_eq!(bytes, [1, 2, 3, 4]);
    assert_eq!(list.to_vec().unwrap(), [0, 10, 20, 30].map(Item::Int));

    smm.shutdown().unwrap();
    for name in &names {
        assert!(!shm_exists(name), "{name} is still in /dev/shm");
    }
    // The mappings stay usable.
    assert_eq!(list.get(3).unwrap(), Item::Int(30));
    // A second shutdown does nothing.
    smm.shutdown().unwrap();
}

#[test]
fn dropping_the_manager_unlinks_its_segments() {
    let smm = SharedMemoryManager::start().unwrap();
    let shm = smm.shared_memory(100).unwrap();
    let name = shm.name().to_string();
    let _cleanup = Cleanup::one(&name);
    assert!(shm_exists(&name));
    drop(smm);
    assert!(!shm_exists(&name));
}

#[test]
fn a_released_segment_is_unlinked_at_once() {
    let smm = SharedMemoryManager::start().unwrap();
    let a = smm.shared_memory(10).unwrap();
    let b = smm.shared_memory(10).unwrap();
    let _cleanup = Cleanup(vec![a.name().to_string(), b.name().to_string()]);
    smm.release_segment(a.name()).unwrap();
    assert!(!shm_exists(a.name()));
    assert!(shm_exists(b.name()));
    assert_eq!(smm.list_segments().unwrap(), [b.name()]);
    let err = smm.release_segment(a.name()).unwrap_err();
    assert!(err.is_remote("ValueError"), "{err}");
}

#[test]
fn a_segment_unlinked_by_its_user_is_no_trouble_at_shutdown() {
    let mut smm = SharedMemoryManager::start().unwrap();
    let shm = smm.shared_memory(10).unwrap();
    let _cleanup = Cleanup::one(shm.name());
    shm.unlink().unwrap();
    smm.shutdown().unwrap();
    assert!(!shm_exists(shm.name()));
}

#[test]
fn an_empty_segment_is_refused() {
    let smm = SharedMemoryManager::start().unwrap();
    let err = smm.shared_memory(0).unwrap_err();
    assert!(matches!(err, mp_manager::Error::SharedMemory(mp_shm::Error::InvalidSize(0))), "{err}");
    assert!(smm.list_segments().unwrap().is_empty());
}

#[test]
fn it_is_a_manager_too() {
    let smm = SharedMemoryManager::start().unwrap();
    let squares = smm.list(vec![0u64, 1, 4]).unwrap();
    squares.append(9).unwrap();
    assert_eq!(squares.to_vec().unwrap(), [0, 1, 4, 9]);
}
