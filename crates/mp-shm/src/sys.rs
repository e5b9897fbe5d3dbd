//! The only `unsafe` code of `mp-shm`: memfds, mappings, and raw-pointer access to them.
//!
//! A [`Mapping`] is a `MAP_SHARED` mapping of a whole segment. Other processes may write
//! its bytes at any moment, so nothing here creates a Rust reference to them except the
//! atomics (which are made for concurrent access) and the two `unsafe` slice accessors,
//! whose callers promise that nobody else touches the bytes meanwhile. Every other access
//! copies between the mapping and private memory through raw pointers, after a bounds check.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Error, Result};
use crate::shm::SharedMemory;

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

/// A shared, read-write mapping of the first `len` bytes of a file.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The mapping; unmapped when dropped.
    raw: memmap2::MmapRaw,
    /// The number of bytes accesses may reach; at most the mapping's length.
    len: usize,
}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared and read-write.
    ///
    /// The caller has checked that the file holds at least `len` bytes, so that no access
    /// inside `len` can fault. `len` must not be 0.
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

    /// Checks that `len` bytes at `offset` lie inside the mapping.
    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size: self.len }),
        }
    }

    /// Checks that an atomic of `size` bytes and alignment `align` fits at `offset`.
    fn check_atomic(&self, offset: usize, size: usize, align: usize) -> Result<()> {
        self.check(offset, size)?;
        // The base is page-aligned, so the offset alone decides the alignment.
        if offset % align != 0 || (self.ptr() as usize) % align != 0 {
            return Err(Error::Misaligned { offset, align });
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping.
    ///
    /// A read of 1, 2, 4 or 8 bytes at an offset aligned for that size is one atomic load,
    /// so it never sees half of a concurrent aligned store of the same size.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check(offset, dst.len())?;
        // SAFETY: `offset + dst.len() <= self.len`, and the mapping is at least `self.len`
        // bytes long, so the offset pointer stays inside the mapping.
        let src = unsafe { self.ptr().add(offset) };
        macro_rules! atomic_load {
            ($atomic:ty) => {
                if (src as usize) % align_of::<$atomic>() == 0 {
                    // SAFETY: `src` is aligned for the atomic (checked just above) and points
                    // at `size_of::<$atomic>()` bytes inside the mapping, which stays mapped
                    // while `self` is borrowed; the reference lives only for this load.
                    // Other processes and threads may access these bytes concurrently: the
                    // access is atomic, and any value is a valid integer.
                    let value = unsafe { <$atomic>::from_ptr(src.cast()) }.load(Ordering::Acquire);
                    dst.copy_from_slice(&value.to_ne_bytes());
                    return Ok(());
                }
            };
        }
        match dst.len() {
            1 => atomic_load!(AtomicU8),
            2 => atomic_load!(AtomicU16),
            4 => atomic_load!(AtomicU32),
            8 => atomic_load!(AtomicU64),
            _ => {}
        }
        // SAFETY: `src` points at `dst.len()` readable bytes inside the live mapping (the
        // bounds check above), and `dst` is private memory of the caller, so the two ranges
        // cannot overlap. No reference to the shared bytes is created: if another process
        // writes them meanwhile, the copy may mix old and new bytes, which is a valid value
        // of `[u8]`.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the mapping at `offset`.
    ///
    /// A write of 1, 2, 4 or 8 bytes at an offset aligned for that size is one atomic store.
    pub(crate) fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check(offset, src.len())?;
        // SAFETY: `offset + src.len() <= self.len`, so the pointer stays inside the mapping.
        let dst = unsafe { self.ptr().add(offset) };
        macro_rules! atomic_store {
            ($atomic:ty, $int:ty) => {
                if (dst as usize) % align_of::<$atomic>() == 0 {
                    let mut bytes = [0u8; size_of::<$int>()];
                    bytes.copy_from_slice(src);
                    // SAFETY: `dst` is aligned for the atomic (checked just above) and points
                    // at `size_of::<$atomic>()` writable bytes inside the mapping, which stays
                    // mapped while `self` is borrowed; the reference lives only for this
                    // store, which is atomic with respect to concurrent accesses.
                    unsafe { <$atomic>::from_ptr(dst.cast()) }
                        .store(<$int>::from_ne_bytes(bytes), Ordering::Release);
                    return Ok(());
                }
            };
        }
        match src.len() {
            1 => atomic_store!(AtomicU8, u8),
            2 => atomic_store!(AtomicU16, u16),
            4 => atomic_store!(AtomicU32, u32),
            8 => atomic_store!(AtomicU64, u64),
            _ => {}
        }
        // SAFETY: `dst` points at `src.len()` writable bytes inside the live, read-write
        // mapping (the bounds check above), and `src` is the caller's private memory, so the
        // ranges cannot overlap. No reference to the shared bytes is created; a concurrent
        // writer in another process can only leave a mix of both writes, which is valid
        // `[u8]` content.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with zeros.
    pub(crate) fn zero(&self, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        // SAFETY: `len` bytes at `offset` lie inside the live, read-write mapping (checked
        // above); writing zero bytes through the raw pointer creates no reference.
        unsafe { std::ptr::write_bytes(self.ptr().add(offset), 0, len) };
        Ok(())
    }

    /// The `AtomicU32` at `offset`.
    pub(crate) fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        self.check_atomic(offset, size_of::<AtomicU32>(), align_of::<AtomicU32>())?;
        // SAFETY: the 4 bytes at `offset` are inside the mapping and aligned for `AtomicU32`
        // (checked above). The mapping lives as long as `self`, which the returned reference
        // borrows, so it stays valid for the reference's lifetime. Concurrent access from
        // other threads and processes is what atomics are for; any bit pattern is a valid
        // `u32`.
        Ok(unsafe { AtomicU32::from_ptr(self.ptr().add(offset).cast()) })
    }

    /// The `AtomicU64` at `offset`.
    pub(crate) fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.check_atomic(offset, size_of::<AtomicU64>(), align_of::<AtomicU64>())?;
        // SAFETY: the 8 bytes at `offset` are inside the mapping and aligned for `AtomicU64`
        // (checked above); the mapping outlives the returned reference, which borrows `self`;
        // atomics tolerate concurrent access and any bit pattern is a valid `u64`.
        Ok(unsafe { AtomicU64::from_ptr(self.ptr().add(offset).cast()) })
    }

    /// `count` consecutive `AtomicU64`s starting at `offset`.
    pub(crate) fn atomic_u64s(&self, offset: usize, count: usize) -> Result<&[AtomicU64]> {
        let bytes = count.checked_mul(size_of::<AtomicU64>()).ok_or(Error::OutOfRange {
            offset,
            len: usize::MAX,
            size: self.len,
        })?;
        self.check_atomic(offset, bytes, align_of::<AtomicU64>())?;
        // SAFETY: the `count * 8` bytes at `offset` are inside the mapping and aligned for
        // `AtomicU64` (checked above); the mapping outlives the returned slice, which borrows
        // `self`; atomics tolerate concurrent access and any bit pattern is a valid `u64`.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr().add(offset).cast::<AtomicU64>(), count) })
    }

    /// The whole mapping as a shared slice.
    ///
    /// # Safety
    /// While the slice lives, no thread or process may write the segment's bytes.
    pub(crate) unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `self.len` readable bytes that stay mapped while `self` is
        // borrowed; the caller promises that nobody writes them while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    /// The whole mapping as an exclusive slice.
    ///
    /// # Safety
    /// While the slice lives, no other thread or process may read or write the segment's
    /// bytes, and no other reference to them (from another accessor call) may exist.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the mapping is `self.len` readable and writable bytes that stay mapped
        // while `self` is borrowed; the caller promises exclusive access while the slice
        // lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

/// The `unsafe` accessors of [`SharedMemory`], kept here because only this module may hold
/// `unsafe` code.
impl SharedMemory {
    /// The whole segment as a byte slice, Python's `buf` for reading.
    ///
    /// # Safety
    /// While the slice lives, no thread of any process may write the segment (through another
    /// handle, a copy, an atomic, or a slice): a shared reference promises the bytes do not
    /// change. Typically the caller holds a lock that every writer takes.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller upholds the same contract `Mapping::as_slice` requires.
        unsafe { self.map.as_slice() }
    }

    /// The whole segment as a mutable byte slice, Python's `buf` for writing.
    ///
    /// # Safety
    /// While the slice lives, no other thread of any process may read or write the segment,
    /// and no other slice from this or another handle on it may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the caller upholds the same contract `Mapping::as_mut_slice` requires.
        unsafe { self.map.as_mut_slice() }
    }
}
