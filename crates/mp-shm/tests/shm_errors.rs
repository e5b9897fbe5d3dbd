//! Python's errors, refused descriptors and corrupt lists.

use std::os::fd::OwnedFd;

use mp_process::fdpass::{PassFd, decode_with_fds, encode_with_fds};
use mp_shm::{Error, Item, RawArray, ShareableList, SharedMemory};
use mp_testkit::shm::{Cleanup, shm_exists, unique_name};
use rustix::fs::{MemfdFlags, SealFlags};
use serde::Serialize;

#[test]
fn size_zero_is_invalid() {
    assert!(matches!(SharedMemory::new(0), Err(Error::InvalidSize(0))));
    assert!(matches!(SharedMemory::create(&unique_name("zero"), 0), Err(Error::InvalidSize(0))));
    assert!(matches!(SharedMemory::create_unique(0), Err(Error::InvalidSize(0))));
    assert!(!shm_exists(&unique_name("zero")));
    let msg = SharedMemory::new(0).unwrap_err().to_string();
    assert!(msg.contains("positive number different from zero"), "{msg}");
}

#[test]
fn bad_names_are_invalid() {
    let long = "n".repeat(255);
    for name in ["a/b", "/leading", "trailing/", "nul\0inside", "", ".", "..", long.as_str()] {
        assert!(
            matches!(SharedMemory::create(name, 10), Err(Error::InvalidName(n)) if n == name),
            "{name:?}"
        );
        assert!(matches!(SharedMemory::open(name), Err(Error::InvalidName(_))), "{name:?}");
    }
}

#[test]
fn duplicate_absent_and_second_unlink() {
    let name = unique_name("dup");
    let _cleanup = Cleanup::one(&name);
    assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound(n)) if n == name));
    let shm = SharedMemory::create(&name, 4096).unwrap();
    assert_eq!(shm.name(), name);
    assert!(shm_exists(&name));
    assert!(matches!(SharedMemory::create(&name, 4096), Err(Error::Exists(n)) if n == name));
    let attached = SharedMemory::open(&name).unwrap();
    assert_eq!(attached.size(), 4096);
    shm.write(4000, b"bytes of the creator").unwrap();
    let mut buf = [0u8; 20];
    attached.read(4000, &mut buf).unwrap();
    assert_eq!(&buf, b"bytes of the creator");
    attached.unlink().unwrap();
    assert!(!shm_exists(&name));
    assert!(matches!(shm.unlink(), Err(Error::NotFound(n)) if n == name));
    assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound(_))));
    // The mappings outlive the name.
    shm.write(0, b"still mapped").unwrap();
    attached.close();
    shm.close();
    // The name is free again.
    let again = SharedMemory::create(&name, 10).unwrap();
    again.unlink().unwrap();
}

#[test]
fn anonymous_names_cannot_be_opened() {
    let shm = SharedMemory::new(100).unwrap();
    assert!(shm.name().starts_with("memfd:"));
    assert!(matches!(SharedMemory::open(shm.name()), Err(Error::NotFound(_))));
    // Unlinking an anonymous segment is a no-op: it vanishes with its last user.
    shm.unlink().unwrap();
    shm.unlink().unwrap();
}

#[test]
fn an_empty_named_segment_cannot_be_opened() {
    let name = unique_name("empty");
    let _cleanup = Cleanup::one(&name);
    let path = format!("/{name}");
    let fd = rustix::shm::open(
        path.as_str(),
        rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    assert!(matches!(SharedMemory::open(&name), Err(Error::InvalidSize(0))));
    drop(fd);
    rustix::shm::unlink(path.as_str()).unwrap();
}

/// The serialised shape of a `SharedMemory`, built by hand to forge its fields.
#[derive(Serialize)]
struct ForgedShm {
    fd: PassFd,
    name: String,
    size: u64,
    named: bool,
}

/// A memfd of `len` bytes, sealed as mp seals anonymous segments if `sealed`.
fn memfd(len: u64, sealed: bool) -> OwnedFd {
    let fd = rustix::fs::memfd_create("forged", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)
            .unwrap();
    }
    fd
}

fn decode_forged(fd: OwnedFd, size: u64, named: bool) -> Result<SharedMemory, String> {
    let forged = ForgedShm { fd: PassFd(fd), name: "forged".into(), size, named };
    let (bytes, fds) = encode_with_fds(&forged).unwrap();
    decode_with_fds::<SharedMemory>(&bytes, fds).map_err(|e| e.to_string())
}

#[test]
fn too_small_descriptors_are_refused_before_mapping() {
    // One page sent as two pages would fault (SIGBUS) on the second page if it were mapped.
    assert!(decode_forged(memfd(4096, true), 8192, false).is_err());
    assert!(decode_forged(memfd(4096, true), u64::MAX, false).is_err());
    assert!(decode_forged(memfd(4096, true), 4097, true).is_err());
    // A memfd not sealed against shrinking is refused: someone could truncate it later.
    assert!(decode_forged(memfd(4096, false), 4096, false).is_err());
    // A pipe is not memory, so it is refused.
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert!(decode_forged(r, 1, false).is_err());
    // The honest shape is accepted, also for a size below the file's.
    let ok = decode_forged(memfd(4096, true), 4096, false).unwrap();
    assert_eq!(ok.size(), 4096);
    ok.write(4095, &[1]).unwrap();
    let ok = decode_forged(memfd(4096, true), 10, false).unwrap();
    assert!(ok.write(10, &[1]).is_err());
}

/// The serialised shape of a `RawArray`, with a forged length.
#[derive(Serialize)]
struct ForgedArray<'a> {
    #[serde(with = "mp_process::fdpass::serde_object")]
    shm: &'a std::sync::Arc<SharedMemory>,
    len: u64,
    item_size: u64,
    item_type: &'a str,
}

#[test]
fn arrays_longer_than_their_segment_are_refused() {
    let shm = std::sync::Arc::new(SharedMemory::new(4096).unwrap());
    let forged = ForgedArray { shm: &shm, len: 1025, item_size: 4, item_type: "u32" };
    let (bytes, fds) = encode_with_fds(&forged).unwrap();
    assert!(decode_with_fds::<RawArray<u32>>(&bytes, fds).is_err());
    let forged = ForgedArray { shm: &shm, len: 1024, item_size: 4, item_type: "u32" };
    let (bytes, fds) = encode_with_fds(&forged).unwrap();
    let array = decode_with_fds::<RawArray<u32>>(&bytes, fds).unwrap();
    assert_eq!(array.len(), 1024);
}

#[test]
fn corrupt_list_headers_are_errors() {
    let list = ShareableList::new(&[Item::from("abc"), Item::Int(7), Item::Bool(true)]).unwrap();
    assert_eq!(list.get(0).unwrap(), Item::from("abc"));
    // Write garbage over the whole slot table through the raw accessor.
    {
        // SAFETY: no other thread or process uses this segment while the slice lives.
        let bytes = unsafe { list.shm().as_mut_slice() };
        for (i, b) in bytes.iter_mut().enumerate().skip(16).take(48) {
            *b = (i as u8).wrapping_mul(37) | 0x80;
        }
    }
    for i in 0..3 {
        assert!(matches!(list.get(i), Err(Error::Corrupt(_))), "slot {i}");
    }
    assert!(matches!(list.to_vec(), Err(Error::Corrupt(_))));
    assert!(matches!(list.count(&Item::None), Err(Error::Corrupt(_))));
    // A fresh attach refuses the garbage capacities too.
    assert!(matches!(
        ShareableList::from_shm(list.shm().try_clone().unwrap()),
        Err(Error::Corrupt(_))
    ));
    // Garbage in the magic number is corrupt too.
    let list = ShareableList::new(&[Item::None]).unwrap();
    list.shm().write(0, b"\xde\xad\xbe\xef").unwrap();
    assert!(matches!(list.get(0), Err(Error::Corrupt(_))));
    // A segment that never held a list cannot be attached.
    assert!(matches!(
        ShareableList::from_shm(SharedMemory::new(4096).unwrap()),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn a_corrupt_list_is_refused_when_received() {
    let list = ShareableList::new(&[Item::Int(1)]).unwrap();
    list.shm().write(8, &u64::MAX.to_le_bytes()).unwrap();
    let (bytes, fds) = encode_with_fds(&list).unwrap();
    assert!(decode_with_fds::<ShareableList>(&bytes, fds).is_err());
}
