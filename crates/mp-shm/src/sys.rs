//! The platform layer of `mp-shm`: memfds, their seals, and mappings. A port to another
//! system replaces this module and nothing else.
//!
//! It holds no `unsafe` code and imports nothing from the crate: its functions return
//! `io::Error`s, which the callers map. A [`Mapping`] hands out only its base address and
//! length; reading and writing the bytes behind them is `shm.rs`'s business.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

/// Creates a memfd named `name` (a label shown in `/proc/<pid>/fd`), close-on-exec and
/// open to sealing.
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?)
}

/// The seals every anonymous segment carries: it can neither grow nor shrink, and its seals
/// can no longer change.
pub(crate) const ANON_SEALS: SealFlags =
    SealFlags::GROW.union(SealFlags::SHRINK).union(SealFlags::SEAL);

/// The seals a received anonymous segment must carry so that nobody can truncate it under us.
pub(crate) const REQUIRED_SEALS: SealFlags = SealFlags::GROW.union(SealFlags::SHRINK);

/// Seals a new anonymous segment with [`ANON_SEALS`].
pub(crate) fn seal(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, ANON_SEALS)?)
}

/// Whether `fd` carries [`REQUIRED_SEALS`]. A file that cannot carry seals at all (`EINVAL`:
/// not a memfd) is not sealed.
pub(crate) fn is_sealed(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => Ok(seals.contains(REQUIRED_SEALS)),
        Err(Errno::INVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A shared, read-write mapping of the first `len` bytes of a file, unmapped when dropped.
///
/// Making one is safe: nothing is read or written. The bytes behind [`ptr`](Mapping::ptr)
/// stay mapped, readable and writable, for [`len`](Mapping::len) bytes while the `Mapping`
/// lives. An access past the end of the file (a named segment truncated by another process)
/// raises `SIGBUS`, which kills the process; callers check the size of a file before they map
/// it.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The mapping.
    raw: memmap2::MmapRaw,
    /// The number of bytes accesses may reach; at most the mapping's length.
    len: usize,
}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared and read-write.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        let raw = memmap2::MmapOptions::new().len(len).map_raw(fd.as_raw_fd())?;
        Ok(Mapping { raw, len })
    }

    /// The base of the mapping, page-aligned.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.raw.as_mut_ptr()
    }

    /// The number of accessible bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
