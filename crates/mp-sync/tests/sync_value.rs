//! `Value` and `Array` across processes under the start method in `MP_START_METHOD`:
//! shared updates, owner death through a value guard, the borrow rules, and custom locks.

use std::time::Duration;

use mp_process::Process;
use mp_process::fdpass::PassFd;
use mp_sync::{Array, Error, Lock, LockError, RLock, Value};
use mp_testkit::lines::{Lines, say};
use mp_testkit::{die_now, pipe, release, wait_for_byte};

/// Seed 004: a child adds one to a shared value.
fn add_one(value: Value<i32>) -> Result<(), Error> {
    *value.lock()? += 1;
    Ok(())
}

#[test]
fn a_child_updates_a_shared_value() {
    let value = Value::new(0i32).unwrap();
    let mut p = Process::new(add_one, (value.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(value.get().unwrap(), 1);
}

/// Fills its own stripe of the array and adds to the shared total, both under the lock.
fn fill_stripe(array: Array<u64>, stripe: usize, width: usize) -> Result<(), Error> {
    for i in stripe * width..(stripe + 1) * width {
        array.set(i, i as u64 * 3)?;
    }
    let mut items = array.lock()?;
    let last = items.len() - 1;
    items[last] += 1;
    Ok(())
}

#[test]
fn children_fill_an_array() {
    const WIDTH: usize = 100;
    let array = Array::<u64>::zeroed(4 * WIDTH + 1).unwrap();
    assert_eq!(array.len(), 401);
    let mut children: Vec<Process> =
        (0..4).map(|s| Process::new(fill_stripe, (array.clone(), s, WIDTH))).collect();
    for c in &mut children {
        c.start().unwrap();
    }
    for c in &children {
        assert_eq!(c.join().unwrap(), 0);
    }
    let items = array.to_vec().unwrap();
    assert!(items[..4 * WIDTH].iter().enumerate().all(|(i, x)| *x == i as u64 * 3));
    assert_eq!(items[4 * WIDTH], 4);
    assert!(matches!(array.get(401), Err(Error::IndexOutOfRange { index: 401, len: 401 })));
    assert!(matches!(array.set(500, 1), Err(Error::IndexOutOfRange { .. })));
}

/// Writes half of the array under its lock, then dies holding it.
fn half_write_then_die(array: Array<u32>) {
    let mut items = array.lock().unwrap();
    let half = items.len() / 2;
    items[..half].fill(7);
    die_now();
}

#[test]
fn an_array_guard_reports_a_dead_writer() {
    let array = Array::new(&[0u32; 8]).unwrap();
    let mut p = Process::new(half_write_then_die, (array.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), -9);
    match array.lock() {
        Err(LockError::OwnerDied(mut items)) => {
            assert_eq!(&*items, &[7, 7, 7, 7, 0, 0, 0, 0], "the half-done write is visible");
            items.fill(0);
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(array.to_vec().unwrap(), [0; 8]);
}

#[test]
fn copies_report_a_dead_writer_once() {
    let value = Value::with_lock(5u16, Lock::new().unwrap()).unwrap();
    fn die_holding(value: Value<u16>) {
        let _guard = value.lock().unwrap();
        die_now();
    }
    let mut p = Process::new(die_holding, (value.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), -9);
    assert!(matches!(value.get(), Err(Error::OwnerDied)));
    assert_eq!(value.get().unwrap(), 5);
}

#[test]
fn guards_do_not_alias() {
    let value = Value::new([1.5f64, 2.5, 3.5]).unwrap();
    {
        let mut guard = value.lock().unwrap();
        guard[1] = 20.0;
        assert!(matches!(value.lock(), Err(LockError::Failed(Error::Borrowed))));
        assert!(matches!(value.get(), Err(Error::Borrowed)));
        assert!(matches!(value.set([0.0; 3]), Err(Error::Borrowed)));
        // Re-entering the RLock without a second guard is fine.
        let again = value.get_lock().acquire().unwrap();
        drop(again);
        assert_eq!(guard[1], 20.0);
    }
    assert_eq!(value.get().unwrap(), [1.5, 20.0, 3.5]);

    // An outer hold of the RLock through the lock itself, then a guard: Python's
    // `with v.get_lock(): v.value += 1`.
    let outer = value.get_lock().acquire().unwrap();
    value.lock().unwrap()[0] += 1.0;
    drop(outer);
    assert_eq!(value.get().unwrap()[0], 2.5);

    // With a plain Lock, a second acquisition by the holder is refused.
    let plain = Value::with_lock(0u8, Lock::new().unwrap()).unwrap();
    let guard = plain.lock().unwrap();
    assert!(matches!(plain.get(), Err(Error::AlreadyHeld)));
    drop(guard);
}

#[test]
fn values_can_share_one_lock() {
    let lock = RLock::new().unwrap();
    let a = Value::with_lock(1i64, lock.clone()).unwrap();
    let b = Value::with_lock(2i64, lock.clone()).unwrap();
    {
        let _both = lock.acquire().unwrap();
        let sum = a.get().unwrap() + b.get().unwrap();
        a.set(sum).unwrap();
        // One guard at a time through a shared lock.
        let guard = a.lock().unwrap();
        assert!(matches!(b.lock(), Err(LockError::Failed(Error::Borrowed))));
        drop(guard);
    }
    assert_eq!(a.get().unwrap(), 3);
    let other = std::thread::scope(|s| s.spawn(|| b.get()).join().unwrap());
    assert_eq!(other.unwrap(), 2);
}

/// Holds the value's lock until told to let go, then reports.
fn hold_value(value: Value<u32>, out: PassFd, go: PassFd) {
    let mut guard = value.lock().unwrap();
    *guard = 42;
    say(&out, "holding");
    wait_for_byte(&go);
    drop(guard);
}

#[test]
fn a_held_value_blocks_other_processes() {
    let value = Value::new(0u32).unwrap();
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut lines = Lines::new(r);
    let mut p = Process::new(hold_value, (value.clone(), PassFd(w), PassFd(go_r)));
    p.start().unwrap();
    assert_eq!(lines.next(), "holding");
    assert!(value.get_lock().acquire_timeout(Duration::from_millis(20)).unwrap().is_none());
    release(&go_w, 1);
    assert_eq!(value.get().unwrap(), 42);
    assert_eq!(p.join().unwrap(), 0);
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f32,
    y: f32,
    tag: u32,
}

fn move_point(point: Value<Point>) -> Result<(), Error> {
    let mut p = point.lock()?;
    p.x += 1.0;
    p.tag = 9;
    Ok(())
}

#[test]
fn a_repr_c_struct_value() {
    let point = Value::new(Point { x: 1.0, y: 2.0, tag: 0 }).unwrap();
    let mut p = Process::new(move_point, (point.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(point.get().unwrap(), Point { x: 2.0, y: 2.0, tag: 9 });
}
