//! Fuzzes the decoders of shared objects: the self-contained form (value, object table,
//! footer) and frames of definitions, with real descriptors of every kind beside the bytes.
#![no_main]

use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use mp::process::fdpass::{ObjectCache, decode_in, decode_with_fds};
use mp::shm::RawValue;
use mp::{Event, Lock, Queue};

/// A descriptor of the kind `k` picks.
fn descriptor(k: u8) -> Option<OwnedFd> {
    match k % 6 {
        0 => {
            let shm = mp::shm::SharedMemory::new(1 << 16).ok()?;
            std::os::fd::AsFd::as_fd(&shm).try_clone_to_owned().ok()
        }
        1 => {
            let fd = rustix::fs::memfd_create("fuzz", rustix::fs::MemfdFlags::CLOEXEC).ok()?;
            rustix::fs::ftruncate(&fd, 1 << 16).ok()?;
            Some(fd)
        }
        2 => rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).ok(),
        3 => rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .ok()
        .map(|(a, _)| a),
        4 => rustix::pipe::pipe().ok().map(|(r, _)| r),
        _ => rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .ok()
        .map(|(a, _)| a),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n % 9).min(rest.len());
    let (kinds, bytes) = rest.split_at(n);
    let fds = || kinds.iter().filter_map(|&k| descriptor(k)).collect::<Vec<_>>();
    let _ = decode_with_fds::<Queue<u64>>(bytes, fds());
    let _ = decode_with_fds::<(Lock, RawValue<u64>)>(bytes, fds());
    let _ = decode_with_fds::<Vec<Event>>(bytes, fds());
    let _ = decode_with_fds::<mp::Connection>(bytes, fds());
    let mut cache = ObjectCache::default();
    if cache.admit_frame(bytes, fds()).is_ok() {
        let mut scope: Vec<u64> = bytes.iter().take(4).map(|&b| u64::from(b)).collect();
        let _ = decode_in::<(Queue<u64>, Lock)>(&[0, 1], Vec::new(), &mut scope, &mut cache);
    }
});
