//! Every shared type passes into a child as a `Process` argument under the start method
//! `MP_START_METHOD` chooses; the child writes, the parent sees the bytes.

use mp_process::Process;
use mp_shm::{Error, Item, RawArray, RawValue, ShareableList, SharedMemory};
use mp_testkit::shm::{Cleanup, shm_exists, unique_name};

/// Runs `target` with `args` in a child and checks that it exits with 0.
fn run<F, Args>(target: F, args: Args)
where
    F: mp_process::Target<Args>,
    Args: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let mut p = Process::new(target, args);
    p.start().expect("start");
    assert_eq!(p.join().expect("join"), 0, "the child failed");
}

fn fill_anonymous(shm: SharedMemory, expected_size: usize) {
    assert_eq!(shm.size(), expected_size);
    assert!(!shm.is_named());
    let mut buf = [0u8; 6];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"parent");
    shm.write(4096, b"written by the child").unwrap();
    shm.atomic_u64(8192).unwrap().fetch_add(5, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn anonymous_segment_as_argument() {
    let shm = SharedMemory::new(3 * 4096).unwrap();
    shm.write(0, b"parent").unwrap();
    shm.atomic_u64(8192).unwrap().store(37, std::sync::atomic::Ordering::SeqCst);
    run(fill_anonymous, (shm.try_clone().unwrap(), 3 * 4096));
    let mut buf = [0u8; 20];
    shm.read(4096, &mut buf).unwrap();
    assert_eq!(&buf, b"written by the child");
    assert_eq!(shm.atomic_u64(8192).unwrap().load(std::sync::atomic::Ordering::SeqCst), 42);
}

fn write_and_unlink_named(shm: SharedMemory, name: String) {
    assert!(shm.is_named());
    assert_eq!(shm.name(), name);
    shm.write(1, b"child").unwrap();
    // The child may unlink what its parent created; the parent's second unlink then fails.
    shm.unlink().unwrap();
}

#[test]
fn named_segment_as_argument() {
    let name = unique_name("arg");
    let _cleanup = Cleanup::one(&name);
    let shm = SharedMemory::create(&name, 100).unwrap();
    assert!(shm_exists(&name));
    run(write_and_unlink_named, (shm.try_clone().unwrap(), name.clone()));
    let mut buf = [0u8; 6];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"\0child");
    assert!(!shm_exists(&name));
    assert!(matches!(shm.unlink(), Err(Error::NotFound(n)) if n == name));
}

fn attach_by_name(name: String) {
    let shm = SharedMemory::open(&name).unwrap();
    assert_eq!(shm.size(), 5000);
    let mut buf = [0u8; 7];
    shm.read(4990, &mut buf).unwrap();
    assert_eq!(&buf, b"creator");
    shm.write(0, b"attached").unwrap();
}

#[test]
fn named_segment_attached_by_name_in_a_child() {
    let shm = SharedMemory::create_unique(5000).unwrap();
    let _cleanup = Cleanup::one(shm.name());
    assert!(shm.name().starts_with("psm_"));
    shm.write(4990, b"creator").unwrap();
    run(attach_by_name, (shm.name().to_owned(),));
    let mut buf = [0u8; 8];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"attached");
    shm.unlink().unwrap();
    assert!(!shm_exists(shm.name()));
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Stats {
    count: u32,
    flags: [u8; 4],
    mean: f64,
}

fn bump_values(counter: RawValue<i64>, stats: RawValue<Stats>) {
    counter.set(counter.get() * 2);
    let mut s = stats.get();
    s.count += 1;
    s.flags[3] = 9;
    s.mean = 0.25;
    stats.set(s);
}

#[test]
fn raw_values_as_arguments() {
    let counter = RawValue::new(21i64).unwrap();
    let stats = RawValue::new(Stats { count: 1, flags: [1, 2, 3, 4], mean: 0.0 }).unwrap();
    run(bump_values, (counter.clone(), stats.clone()));
    assert_eq!(counter.get(), 42);
    assert_eq!(stats.get(), Stats { count: 2, flags: [1, 2, 3, 9], mean: 0.25 });
}

fn square_all(numbers: RawArray<f64>, bytes: RawArray<[u8; 3]>) {
    let mut v = numbers.to_vec();
    for x in &mut v {
        *x *= *x;
    }
    numbers.write_from(&v).unwrap();
    bytes.set(1, *b"xyz").unwrap();
}

#[test]
fn raw_arrays_as_arguments() {
    let numbers = RawArray::new(&[1.0, 2.0, 3.0, 4.5]).unwrap();
    let bytes = RawArray::<[u8; 3]>::zeroed(2).unwrap();
    run(square_all, (numbers.clone(), bytes.clone()));
    assert_eq!(numbers.to_vec(), vec![1.0, 4.0, 9.0, 20.25]);
    assert_eq!(bytes.to_vec(), vec![[0; 3], *b"xyz"]);
}

fn edit_list(list: ShareableList) {
    assert_eq!(list.get(0).unwrap(), Item::from("howdy"));
    list.set(0, Item::from("HOWDY!")).unwrap();
    list.set(1, Item::Int(list.len() as i64)).unwrap();
    list.set(2, Item::None).unwrap();
    assert!(matches!(list.set(0, Item::from("too long a string")), Err(Error::TooLong { .. })));
}

#[test]
fn shareable_list_as_argument() {
    let list = ShareableList::new(&["howdy".into(), Item::Float(1.5), Item::Bool(true)]).unwrap();
    run(edit_list, (list.clone(),));
    assert_eq!(list.to_vec().unwrap(), vec![Item::from("HOWDY!"), Item::Int(3), Item::None]);
}

fn open_list(name: String) {
    let list = ShareableList::open(&name).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![Item::Bytes(b"abc".to_vec()), Item::Int(-1)]);
    list.set(1, Item::Float(-0.5)).unwrap();
}

#[test]
fn named_shareable_list_opened_in_a_child() {
    let name = unique_name("list");
    let _cleanup = Cleanup::one(&name);
    let list = ShareableList::create(&name, &[b"abc".to_vec().into(), (-1i64).into()]).unwrap();
    assert!(matches!(
        ShareableList::create(&name, &[]),
        Err(Error::Exists(n)) if n == name
    ));
    run(open_list, (name.clone(),));
    assert_eq!(list.get(1).unwrap(), Item::Float(-0.5));
    list.shm().unlink().unwrap();
    assert!(matches!(ShareableList::open(&name), Err(Error::NotFound(_))));
}

fn grandchild_writes(value: RawValue<u32>) {
    value.set(value.get() + 1);
}

fn child_passes_on(value: RawValue<u32>) {
    value.set(value.get() + 1);
    let mut p = Process::new(grandchild_writes, (value.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn values_pass_on_to_grandchildren() {
    let value = RawValue::new(40u32).unwrap();
    run(child_passes_on, (value.clone(),));
    assert_eq!(value.get(), 42);
}
