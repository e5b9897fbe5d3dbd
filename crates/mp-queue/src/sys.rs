//! The platform layer of `mp-queue`, beyond what it uses from `mp_process::os` (socket pairs,
//! polls, descriptor passing, doorbells): the mirrored ring mapping and the descriptor a
//! closed connection lends out. A port to another Unix replaces this file and nothing else.

use std::ffi::c_void;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64};

use mp_process::os;
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{Error, Result};
use crate::header::{Header, header_len};

/// The descriptor of closed connections: one end of a socket pair whose other end is closed,
/// so it always polls readable and hung up, and reads end of file.
static CLOSED: OnceLock<OwnedFd> = OnceLock::new();

/// Returns the process's descriptor for closed connections, making it on first use.
pub(crate) fn closed_fd() -> Result<&'static OwnedFd> {
    if let Some(fd) = CLOSED.get() {
        return Ok(fd);
    }
    let (ours, peer) = os::socket::stream_pair().map_err(|e| Error::io("socketpair", e))?;
    drop(peer);
    // Two threads may race here; the loser's socket is simply dropped.
    Ok(CLOSED.get_or_init(|| ours))
}

/// A queue segment mapped as its header followed by its ring mapped twice in a row, so that a
/// record that wraps around the ring's end is still one contiguous slice.
///
/// The mapping lives as long as this value; the memfd behind it stays open in the handle.
pub(crate) struct Mirror {
    /// The start of the reservation: the header.
    base: NonNull<u8>,
    /// The length of the header region.
    header_len: usize,
    /// The ring's size.
    capacity: usize,
}

// SAFETY: `Mirror` is a pointer to a shared mapping that it owns; every access through it is
// either an atomic (the header) or governed by the queue's locking protocol (the ring), which
// holds across threads as across processes.
unsafe impl Send for Mirror {}
// SAFETY: as for `Send`: shared access goes through atomics or the queue's locks.
unsafe impl Sync for Mirror {}

impl Mirror {
    /// Maps the `header_len() + capacity` bytes of the segment `fd` from byte `start` (a
    /// multiple of the page size; the caller checked that the file is that long), with
    /// `capacity` a non-zero multiple of the page size.
    pub(crate) fn map(fd: BorrowedFd<'_>, start: u64, capacity: usize) -> Result<Mirror> {
        let header_len = header_len();
        let page = rustix::param::page_size();
        if capacity == 0 || capacity % page != 0 {
            return Err(Error::io("map a queue ring", Errno::INVAL));
        }
        let total = capacity
            .checked_mul(2)
            .and_then(|c| c.checked_add(header_len))
            .ok_or_else(|| Error::io("map a queue ring", Errno::NOMEM))?;
        // SAFETY: a fresh anonymous reservation at an address the kernel chooses: it replaces
        // no existing mapping. It is only address space (PROT_NONE) until the fixed mappings
        // below replace it piece by piece.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| Error::io("mmap (reserve a queue ring)", e))?;
        let Some(base) = NonNull::new(base.cast::<u8>()) else {
            return Err(Error::io("mmap (reserve a queue ring)", Errno::NOMEM));
        };
        let mirror = Mirror { base, header_len, capacity };
        // The pieces: the header, the ring, and the ring again right after it.
        let pieces = [(0, header_len), (header_len, capacity), (header_len + capacity, capacity)];
        for (at, len) in pieces {
            let offset = if at == 0 { start } else { start + header_len as u64 };
            // SAFETY: `at..at + len` lies inside the reservation made above, which this
            // `Mirror` owns and nothing else uses: MAP_FIXED replaces only our own PROT_NONE
            // pages (or, for none of them, pages of an earlier piece). The file is at least
            // `start + header_len + capacity` bytes long (checked by the caller), so no access
            // to the mapping can fault on a missing page.
            let mapped = unsafe {
                rustix::mm::mmap(
                    mirror.base.as_ptr().add(at).cast::<c_void>(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED | MapFlags::FIXED,
                    fd,
                    offset,
                )
            };
            if let Err(e) = mapped {
                // `mirror` unmaps the whole reservation when it is dropped here.
                return Err(Error::io("mmap (a queue ring)", e));
            }
        }
        Ok(mirror)
    }

    /// The header.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the header region is mapped read-write for as long as `self` lives, is page
        // aligned (so aligned for `Header`) and at least `size_of::<Header>()` long; `Header`
        // is made of atomics only, valid for every bit pattern and meant for shared access.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    /// The ring's size.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The `len` bytes of the ring starting at byte position `pos` (taken modulo the
    /// capacity), as one slice even when they wrap around the ring's end.
    ///
    /// # Safety
    /// `len <= capacity`, and for the lifetime of the slice no thread or process writes these
    /// bytes: the caller holds the consumer lock and the bytes lie between the published head
    /// and tail, which producers never write.
    pub(crate) unsafe fn bytes(&self, pos: u32, len: usize) -> &[u8] {
        let start = self.header_len + (pos as usize & (self.capacity - 1));
        // SAFETY: `start + len <= header_len + 2 * capacity`, inside the mapping; nobody
        // writes the bytes while the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) }
    }

    /// The `len` bytes of the ring starting at byte position `pos`, writable.
    ///
    /// # Safety
    /// `len <= capacity`, and for the lifetime of the slice no other thread or process reads
    /// or writes these bytes: the caller holds the producer lock and the bytes lie in the free
    /// part of the ring (from the published tail up to the published head plus the capacity),
    /// which consumers never read and other producers cannot write without that lock.
    #[allow(clippy::mut_from_ref, reason = "exclusivity comes from the queue's producer lock")]
    pub(crate) unsafe fn bytes_mut(&self, pos: u32, len: usize) -> &mut [u8] {
        let start = self.header_len + (pos as usize & (self.capacity - 1));
        // SAFETY: inside the mapping as above; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) }
    }
}

impl Mirror {
    /// The 4 bytes of the ring at byte position `pos`, as an atomic word (a futex word too).
    ///
    /// # Safety
    /// `pos` is a multiple of 4, and while the reference lives every access to these bytes, by
    /// any thread or process, is a 4-byte atomic (or ordered before or after by the ring's
    /// protocol).
    pub(crate) unsafe fn word(&self, pos: u32) -> &AtomicU32 {
        let start = self.header_len + (pos as usize & (self.capacity - 1));
        // SAFETY: `start + 4 <= header_len + capacity`, inside the mapping, and 4-aligned (the
        // mapping and the header region are page aligned, `pos` a multiple of 4); an
        // `AtomicU32` is valid for every bit pattern; the accesses are atomic by the caller's
        // contract.
        unsafe { &*self.base.as_ptr().add(start).cast::<AtomicU32>() }
    }
}

impl Mirror {
    /// The 8 bytes of the ring at byte position `pos`, as an atomic word.
    ///
    /// # Safety
    /// `pos` is a multiple of 8, and while the reference lives every access to these bytes, by
    /// any thread or process, is an 8-byte atomic (or ordered before or after by the ring's
    /// protocol).
    pub(crate) unsafe fn word64(&self, pos: u32) -> &AtomicU64 {
        let start = self.header_len + (pos as usize & (self.capacity - 1));
        // SAFETY: `start + 8 <= header_len + capacity`, inside the mapping, and 8-aligned (the
        // mapping and the header region are page aligned, `pos` a multiple of 8); an
        // `AtomicU64` is valid for every bit pattern; the accesses are atomic by the caller's
        // contract.
        unsafe { &*self.base.as_ptr().add(start).cast::<AtomicU64>() }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let total = self.header_len + 2 * self.capacity;
        // SAFETY: the reservation was made by `map` with this length and is owned by `self`;
        // no reference into it outlives `self` (they all borrow it).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), total) };
    }
}
