//! `SharedMemory`: anonymous (memfd) and named (`/dev/shm`) segments, and how they cross
//! into other processes.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use mp_process::fdpass::{Kind, ObjectId, SharedObject, new_object_id};
use rustix::fs::{FileType, Mode};
use rustix::io::Errno;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::sys::{self, Mapping};

/// The prefix of generated names, as Python's `psm_`.
const NAME_PREFIX: &str = "psm_";

/// The prefix of the display name of an anonymous segment, which no `open` can find.
const ANON_PREFIX: &str = "memfd:";

/// The longest segment name, without the leading `/` that mp adds: `NAME_MAX` is 255 bytes
/// and includes that slash.
const MAX_NAME_LEN: usize = 254;

/// How many generated names `create_unique` tries before it gives up.
const UNIQUE_ATTEMPTS: usize = 64;

/// A block of memory shared between processes: Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// A segment is either *anonymous* ([`SharedMemory::new`]): a memfd, sealed so that it can
/// never grow or shrink, which exists only as long as some process maps it or holds its
/// descriptor; or *named* ([`SharedMemory::create`], [`SharedMemory::create_unique`]): a POSIX
/// shared memory object under `/dev/shm` that unrelated processes can attach by name with
/// [`SharedMemory::open`] until someone [`unlink`](SharedMemory::unlink)s it.
///
/// The bytes are accessed by bounds-checked copies ([`read`](SharedMemory::read),
/// [`write`](SharedMemory::write)), by atomics ([`atomic_u32`](SharedMemory::atomic_u32),
/// [`atomic_u64`](SharedMemory::atomic_u64)), or through the `unsafe` slice accessors whose
/// callers promise exclusive access. A new segment is filled with zeros.
///
/// A `SharedMemory` passes into a child as an argument of `mp_process::Process::new` or
/// inside a message sent with `mp_process::fdpass`: under the `fork` start method the child
/// inherits the mapping itself; otherwise the segment's descriptor crosses beside the bytes
/// (`SCM_RIGHTS`) with its name and size, and the receiver checks the descriptor (`fstat`; the
/// seals of an anonymous segment; for a named one, that its name opens that same object, so a
/// named segment unlinked before it arrives is refused, as in Python) before it maps it.
/// Held in an `Arc` (as [`RawValue`](crate::RawValue) and the others hold it), a segment
/// crosses as a shared object: mapped once per process however often it arrives.
///
/// ```
/// use mp_shm::SharedMemory;
///
/// # fn main() -> Result<(), mp_shm::Error> {
/// let shm = SharedMemory::new(4096)?;
/// shm.write(100, b"hello")?;
/// let mut buf = [0u8; 5];
/// shm.read(100, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok(())
/// # }
/// ```
pub struct SharedMemory {
    /// The mapping of the whole segment; unmapped on drop.
    map: Mapping,
    /// The memfd or shared memory object, kept to pass the segment on.
    fd: OwnedFd,
    /// The name without mp's leading `/`, or the display name of an anonymous segment.
    name: String,
    /// Whether the segment has a name under `/dev/shm`.
    named: bool,
    /// The identity mp gave the segment (see `mp_process::fdpass::SharedObject`).
    id: ObjectId,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size())
            .field("named", &self.named)
            .finish_non_exhaustive()
    }
}

impl SharedMemory {
    /// Creates an anonymous segment of `size` bytes, filled with zeros.
    ///
    /// The segment is a memfd sealed against growing and shrinking, mapped shared. It has
    /// no name in `/dev/shm` and needs no unlinking: it disappears when the last process
    /// holding it closes it. Pass it to other processes as an argument or inside a message.
    ///
    /// Errors: [`Error::InvalidSize`] if `size` is 0 (or larger than a file can be);
    /// [`Error::Io`] if the kernel refuses the memfd or the mapping.
    pub fn new(size: usize) -> Result<SharedMemory> {
        let len = file_len(size)?;
        let label = format!("{NAME_PREFIX}{}", random_hex(8));
        let fd = sys::memfd(&label).map_err(|e| Error::io("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| Error::io("ftruncate", e))?;
        sys::seal(fd.as_fd()).map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        let map = Mapping::new(fd.as_fd(), size).map_err(|e| Error::io("mmap", e))?;
        let name = format!("{ANON_PREFIX}{label}");
        Ok(SharedMemory { map, fd, name, named: false, id: new_object_id() })
    }

    /// Creates a named segment of `size` bytes, filled with zeros: Python's
    /// `SharedMemory(name, create=True, size=size)`.
    ///
    /// `name` is given without a leading `/` (mp adds it, as Python does on Linux): the object
    /// appears as `/dev/shm/<name>`. Other processes attach it with [`SharedMemory::open`]. The
    /// segment outlives this handle until someone calls [`unlink`](SharedMemory::unlink);
    /// if this process tree ends without unlinking it (for example because the creator was
    /// killed), mp's tracker unlinks it, as Python's resource tracker does.
    ///
    /// Errors: [`Error::InvalidSize`] if `size` is 0; [`Error::InvalidName`] if the name is
    /// empty, `.`, `..`, longer than 254 bytes, or holds a NUL or a `/`; [`Error::Exists`] if
    /// a segment of that name exists; [`Error::Process`] if the tracker cannot record it (the
    /// segment is unlinked again); [`Error::Io`] otherwise.
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        let len = file_len(size)?;
        check_name(name)?;
        let path = shm_path(name);
        let fd = rustix::shm::open(
            path.as_str(),
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| match e {
            Errno::EXIST => Error::Exists(name.to_owned()),
            Errno::INVAL | Errno::NAMETOOLONG => Error::InvalidName(name.to_owned()),
            e => Error::io("shm_open", e),
        })?;
        // From here on the name exists: every failure unlinks it again.
        let undo = |err: Error| {
            if let Err(e) = rustix::shm::unlink(path.as_str()) {
                log::warn!("mp-shm: cannot unlink {path} after a failed create: {e}");
            }
            err
        };
        rustix::fs::ftruncate(&fd, len).map_err(|e| undo(Error::io("ftruncate", e)))?;
        let map = Mapping::new(fd.as_fd(), size).map_err(|e| undo(Error::io("mmap", e)))?;
        mp_process::tracker::register_shm(&path).map_err(|e| undo(Error::Process(e)))?;
        Ok(SharedMemory { map, fd, name: name.to_owned(), named: true, id: new_object_id() })
    }

    /// Creates a named segment of `size` bytes under a generated name `psm_<8 hex digits>`,
    /// as Python's `SharedMemory(create=True, size=size)` does; [`name`](SharedMemory::name)
    /// tells the name to give to [`SharedMemory::open`].
    ///
    /// Errors as [`SharedMemory::create`]; a name that happens to exist is replaced by
    /// another.
    pub fn create_unique(size: usize) -> Result<SharedMemory> {
        let mut last = None;
        for _ in 0..UNIQUE_ATTEMPTS {
            let name = format!("{NAME_PREFIX}{}", random_hex(8));
            match SharedMemory::create(&name, size) {
                Err(Error::Exists(name)) => last = Some(name),
                other => return other,
            }
        }
        Err(Error::Exists(last.unwrap_or_default()))
    }

    /// Attaches the named segment `name`: Python's `SharedMemory(name)`.
    ///
    /// The size is the segment's current size. Any process may attach, not only relatives of
    /// the creator. Attaching does not register the segment with the tracker: only its
    /// creator's process tree unlinks it on a crash.
    ///
    /// Errors: [`Error::InvalidName`] for a name [`SharedMemory::create`] would refuse;
    /// [`Error::NotFound`] if no segment has that name (it never existed, or was unlinked,
    /// or is the display name of an anonymous segment); [`Error::InvalidSize`] if the segment
    /// is empty (its creator has not sized it yet); [`Error::Io`] otherwise.
    pub fn open(name: &str) -> Result<SharedMemory> {
        check_name(name)?;
        let path = shm_path(name);
        let fd = rustix::shm::open(path.as_str(), rustix::shm::OFlags::RDWR, Mode::empty())
            .map_err(|e| match e {
                Errno::NOENT => Error::NotFound(name.to_owned()),
                Errno::INVAL | Errno::NAMETOOLONG => Error::InvalidName(name.to_owned()),
                e => Error::io("shm_open", e),
            })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat", e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(Error::InvalidSegment(format!("{path} is not a regular file")));
        }
        let size = u64::try_from(stat.st_size)
            .ok()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or(Error::InvalidSize(0))?;
        if size == 0 {
            return Err(Error::InvalidSize(0));
        }
        let map = Mapping::new(fd.as_fd(), size).map_err(|e| Error::io("mmap", e))?;
        Ok(SharedMemory { map, fd, name: name.to_owned(), named: true, id: new_object_id() })
    }

    /// Maps a descriptor received from another process, after checking it.
    ///
    /// The descriptor must be a regular file (a memfd or a shared memory object) at least
    /// `size` bytes long, so that no access inside `size` can fault. An anonymous segment must
    /// also be sealed against growing and shrinking, so that nobody can truncate it later; a
    /// named one must be the object its name opens (same device and inode), which its
    /// creator's tree tracks.
    fn from_received(
        fd: OwnedFd,
        name: String,
        size: u64,
        named: bool,
        id: ObjectId,
    ) -> Result<SharedMemory> {
        let size_usize = usize::try_from(size).map_err(|_| {
            Error::InvalidSegment(format!("declared size {size} does not fit in memory"))
        })?;
        if size_usize == 0 {
            return Err(Error::InvalidSegment("declared size is 0".into()));
        }
        if named {
            check_name(&name)?;
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat", e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(Error::InvalidSegment(format!(
                "the descriptor for {name:?} is not a regular file or memfd"
            )));
        }
        let actual = u64::try_from(stat.st_size).unwrap_or(0);
        if actual < size {
            return Err(Error::InvalidSegment(format!(
                "the segment {name:?} holds {actual} bytes but was sent as {size} bytes"
            )));
        }
        if named {
            let by_name = rustix::shm::open(
                shm_path(&name).as_str(),
                rustix::shm::OFlags::RDONLY,
                Mode::empty(),
            )
            .and_then(|f| rustix::fs::fstat(&f))
            .map_err(|e| {
                Error::InvalidSegment(format!(
                    "the named segment {name:?} cannot be opened to check the descriptor sent \
                     for it: {e}"
                ))
            })?;
            if (by_name.st_dev, by_name.st_ino) != (stat.st_dev, stat.st_ino) {
                return Err(Error::InvalidSegment(format!(
                    "the descriptor sent as the named segment {name:?} is another file"
                )));
            }
        } else {
            let sealed =
                sys::is_sealed(fd.as_fd()).map_err(|e| Error::io("fcntl(F_GET_SEALS)", e))?;
            if !sealed {
                return Err(Error::InvalidSegment(format!(
                    "the anonymous segment {name:?} is not sealed against resizing"
                )));
            }
        }
        let map = Mapping::new(fd.as_fd(), size_usize).map_err(|e| Error::io("mmap", e))?;
        Ok(SharedMemory { map, fd, name, named, id })
    }

    /// Opens a second handle on the same segment, with its own descriptor and mapping.
    ///
    /// Useful to keep a handle while moving another into `Process::new`.
    pub fn try_clone(&self) -> Result<SharedMemory> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        let map = Mapping::new(fd.as_fd(), self.size()).map_err(|e| Error::io("mmap", e))?;
        Ok(SharedMemory { map, fd, name: self.name.clone(), named: self.named, id: self.id })
    }

    /// The segment's name.
    ///
    /// For a named segment, the name given to [`create`](SharedMemory::create) or
    /// [`open`](SharedMemory::open) (without a leading `/`, as Python reports it). For an
    /// anonymous segment, a generated display name `memfd:psm_<hex>` (the memfd's label, seen
    /// in `/proc/<pid>/fd`): it identifies the segment in messages but cannot be opened by
    /// name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size of the segment in bytes: the size it was created with, or the size of a named
    /// segment when it was attached.
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// Whether the segment has a name under `/dev/shm` (it was made by
    /// [`create`](SharedMemory::create) or [`open`](SharedMemory::open)).
    pub fn is_named(&self) -> bool {
        self.named
    }

    /// The page-aligned base of the mapping, valid for [`size`](SharedMemory::size) bytes
    /// while `self` lives.
    ///
    /// Other processes may write these bytes at any moment: access them through raw
    /// pointers or atomics, not through references, unless every process agrees on a
    /// protocol (for example a lock) that excludes concurrent access.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr()
    }

    /// Unmaps the segment and closes its descriptor: Python's `close`.
    ///
    /// The segment itself lives on for other handles and processes, and a named segment stays
    /// in `/dev/shm` until it is unlinked. Dropping the handle does the same.
    pub fn close(self) {
        drop(self);
    }

    /// Removes the segment's name: Python's `unlink`.
    ///
    /// For a named segment, `/dev/shm/<name>` disappears at once; processes that have it
    /// mapped keep using it, and its memory is freed when the last one closes it. The name is
    /// also removed from the crash tracker. Call it once, from one process.
    ///
    /// For an anonymous segment there is no name to remove: `unlink` does nothing and returns
    /// `Ok(())`, because the segment already vanishes with its last user.
    ///
    /// Errors: [`Error::NotFound`] if the name is already gone (a second unlink).
    pub fn unlink(&self) -> Result<()> {
        if !self.named {
            return Ok(());
        }
        let path = shm_path(&self.name);
        rustix::shm::unlink(path.as_str()).map_err(|e| match e {
            Errno::NOENT => Error::NotFound(self.name.clone()),
            e => Error::io("shm_unlink", e),
        })?;
        if let Err(e) = mp_process::tracker::unregister_shm(&path) {
            log::warn!("mp-shm: cannot remove {path} from the tracker: {e}");
        }
        Ok(())
    }
}

/// The accessors of the segment's bytes: the one place of `mp-shm` that holds `unsafe` code.
///
/// Each access is bounds-checked against [`size`](SharedMemory::size) first. The mapping
/// (`sys::Mapping`) stays mapped, readable and writable, for `size` bytes while `self` lives,
/// and every reference handed out borrows `self`. Nothing here creates a Rust reference to the
/// shared bytes except the atomics (made for concurrent access) and the two `unsafe` slice
/// accessors, whose callers promise that nobody else touches the bytes meanwhile; every other
/// access copies between the mapping and private memory through raw pointers.
///
/// # Races
/// Other processes may write the bytes at any moment, and nothing can stop them. A copy that
/// races a write of the same bytes (by another process, or by another thread of this one
/// through another handle) reads or leaves some mix of old and new bytes, as the hardware
/// does: no reference is involved, and every byte pattern is a valid `[u8]`, so no invalid
/// value can arise. Rust's memory model does not describe such races between a copy and an
/// atomic or another copy (it would call them data races, as it calls mixed-size atomic
/// accesses); `mp-shm` relies on the hardware's behaviour there, as every process-shared
/// mapping does. Aligned single accesses of 1, 2, 4 or 8 bytes, and the atomic accessors, are
/// atomic instructions.
#[allow(unsafe_code)]
impl SharedMemory {
    /// Checks that `len` bytes at `offset` lie inside the segment.
    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size: self.size() }),
        }
    }

    /// Checks that an atomic of `size` bytes and alignment `align` fits at `offset`.
    fn check_atomic(&self, offset: usize, size: usize, align: usize) -> Result<()> {
        self.check(offset, size)?;
        // The base is page-aligned, so the offset alone decides the alignment.
        if offset % align != 0 || (self.map.ptr() as usize) % align != 0 {
            return Err(Error::Misaligned { offset, align });
        }
        Ok(())
    }

    /// The address `offset` bytes into the mapping, once `check` has passed for the access.
    fn at(&self, offset: usize) -> *mut u8 {
        // `wrapping_add` makes no claim; callers use the pointer only for the range they
        // checked, which lies inside the mapping.
        self.map.ptr().wrapping_add(offset)
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the segment into `buf`.
    ///
    /// A concurrent write by another process may leave `buf` with a mix of old and new
    /// bytes, except for a 1, 2, 4 or 8-byte access at an offset aligned to its size, which is
    /// a single atomic load. Errors: [`Error::OutOfRange`] if the range leaves the segment.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        let src = self.at(offset);
        macro_rules! atomic_load {
            ($atomic:ty) => {
                if (src as usize) % align_of::<$atomic>() == 0 {
                    // SAFETY: `AtomicN::from_ptr` asks for a pointer aligned for the atomic
                    // (checked just above) and valid for its size for the reference's lifetime
                    // (the bytes lie inside the mapping, `check` above, which stays mapped
                    // while `self` is borrowed; the reference lives only for this load); other
                    // accesses to these bytes are atomics or copies (see "Races" above). Any
                    // bit pattern is an integer.
                    let value = unsafe { <$atomic>::from_ptr(src.cast()) }.load(Ordering::Acquire);
                    buf.copy_from_slice(&value.to_ne_bytes());
                    return Ok(());
                }
            };
        }
        match buf.len() {
            1 => atomic_load!(AtomicU8),
            2 => atomic_load!(AtomicU16),
            4 => atomic_load!(AtomicU32),
            8 => atomic_load!(AtomicU64),
            _ => {}
        }
        // SAFETY: `copy_nonoverlapping` asks for a source valid for reads of `buf.len()` bytes
        // (they lie inside the live mapping: `check` above), a destination valid for writes of
        // as many (`buf`, an exclusive reference), both aligned for `u8`, and no overlap (`buf`
        // is an exclusive reference: the only references into the mapping are atomics and the
        // slices of the `unsafe` accessors, which this call cannot hold exclusively while they
        // live). A racing writer leaves a mix of old and new bytes (see "Races" above).
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// A 1, 2, 4 or 8-byte write at an offset aligned to its size is a single atomic store.
    /// Errors: [`Error::OutOfRange`] if the range leaves the segment.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        let dst = self.at(offset);
        macro_rules! atomic_store {
            ($atomic:ty, $int:ty) => {
                if (dst as usize) % align_of::<$atomic>() == 0 {
                    let mut bytes = [0u8; size_of::<$int>()];
                    bytes.copy_from_slice(data);
                    // SAFETY: as in `read`: `dst` is aligned for the atomic (checked just
                    // above) and its bytes lie inside the mapping (`check`), which stays mapped
                    // while `self` is borrowed; the reference lives only for this store.
                    unsafe { <$atomic>::from_ptr(dst.cast()) }
                        .store(<$int>::from_ne_bytes(bytes), Ordering::Release);
                    return Ok(());
                }
            };
        }
        match data.len() {
            1 => atomic_store!(AtomicU8, u8),
            2 => atomic_store!(AtomicU16, u16),
            4 => atomic_store!(AtomicU32, u32),
            8 => atomic_store!(AtomicU64, u64),
            _ => {}
        }
        // SAFETY: `copy_nonoverlapping` asks for a source valid for reads of `data.len()`
        // bytes (`data`, a reference), a destination valid for writes of as many (inside the
        // live, read-write mapping: `check` above), `u8` alignment, and no overlap: a `&[u8]`
        // into the mapping can only come from the `unsafe` slice accessors, whose contract
        // forbids writing the segment while their slice lives. No reference to the shared
        // bytes is created (see "Races" above).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Fills `len` bytes starting at `offset` with zeros.
    ///
    /// Errors: [`Error::OutOfRange`] if the range leaves the segment.
    pub fn zero(&self, offset: usize, len: usize) -> Result<()> {
        self.check(offset, len)?;
        // SAFETY: `write_bytes` asks for a destination valid for writes of `len` bytes, aligned
        // for `u8`: they lie inside the live, read-write mapping (`check` above). No reference
        // to the shared bytes is created.
        unsafe { std::ptr::write_bytes(self.at(offset), 0, len) };
        Ok(())
    }

    /// The `AtomicU32` at `offset`, for counters and futex words shared between processes.
    ///
    /// Errors: [`Error::OutOfRange`] if the 4 bytes leave the segment,
    /// [`Error::Misaligned`] if `offset` is not a multiple of 4.
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        self.check_atomic(offset, size_of::<AtomicU32>(), align_of::<AtomicU32>())?;
        // SAFETY: `AtomicU32::from_ptr` asks for a pointer aligned for `AtomicU32` (checked
        // above) and valid for the returned lifetime: the 4 bytes lie inside the mapping
        // (checked above), which lives as long as `self`, which the reference borrows. Other
        // accesses are atomics or copies (see "Races" above); any bit pattern is a `u32`.
        Ok(unsafe { AtomicU32::from_ptr(self.at(offset).cast()) })
    }

    /// The `AtomicU64` at `offset`.
    ///
    /// Errors: [`Error::OutOfRange`] if the 8 bytes leave the segment,
    /// [`Error::Misaligned`] if `offset` is not a multiple of 8.
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.check_atomic(offset, size_of::<AtomicU64>(), align_of::<AtomicU64>())?;
        // SAFETY: as in `atomic_u32`, for the 8 bytes at `offset`, aligned for `AtomicU64`.
        Ok(unsafe { AtomicU64::from_ptr(self.at(offset).cast()) })
    }

    /// `count` consecutive `AtomicU64`s starting at `offset`: a region of the segment read and
    /// written a word at a time (a log, a table of counters).
    ///
    /// Errors: [`Error::OutOfRange`] if the words leave the segment, [`Error::Misaligned`]
    /// if `offset` is not a multiple of 8.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = mp_shm::SharedMemory::new(64)?;
    /// let words = shm.atomic_u64s(16, 4)?;
    /// words[3].store(7, Ordering::Relaxed);
    /// assert_eq!(shm.atomic_u64(40)?.load(Ordering::Relaxed), 7);
    /// assert!(shm.atomic_u64s(16, 7).is_err());
    /// # Ok::<(), mp_shm::Error>(())
    /// ```
    pub fn atomic_u64s(&self, offset: usize, count: usize) -> Result<&[AtomicU64]> {
        let bytes = count.checked_mul(size_of::<AtomicU64>()).ok_or(Error::OutOfRange {
            offset,
            len: usize::MAX,
            size: self.size(),
        })?;
        self.check_atomic(offset, bytes, align_of::<AtomicU64>())?;
        // SAFETY: `slice::from_raw_parts` asks for a non-null pointer aligned for `AtomicU64`
        // (the mapping's base is not null, and the offset is aligned: checked above), valid
        // for reads of `count * 8` bytes for the returned lifetime (inside the mapping, checked
        // above, which lives as long as `self`, which the slice borrows), initialised values
        // (any bit pattern is a `u64`), a total size of at most `isize::MAX` (it fits in the
        // mapping), and no mutation except through interior mutability: atomics, or copies
        // (see "Races" above).
        Ok(unsafe { std::slice::from_raw_parts(self.at(offset).cast::<AtomicU64>(), count) })
    }

    /// The whole segment as a byte slice, Python's `buf` for reading.
    ///
    /// # Safety
    /// While the slice lives, no thread of any process, this one included, may write the
    /// segment (through any handle: a copy, an atomic, or a mutable slice): a shared reference
    /// promises the bytes do not change. Typically the caller holds a lock that every writer
    /// takes.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `slice::from_raw_parts` asks for a non-null pointer (a mapping's base) valid
        // for reads of `size` bytes for the returned lifetime (the mapping holds `size` bytes
        // and lives as long as `self`, which the slice borrows), initialised bytes (file
        // contents), at most `isize::MAX` bytes (a mapping), and no mutation while the slice
        // lives: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.map.ptr(), self.size()) }
    }

    /// The whole segment as a mutable byte slice, Python's `buf` for writing.
    ///
    /// # Safety
    /// While the slice lives, the segment's bytes are reached only through it: no other thread
    /// of any process may read or write them, this thread may not reach them otherwise (a copy,
    /// an atomic), and no other slice from this or another handle on the segment may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: `slice::from_raw_parts_mut` asks what `from_raw_parts` does (see
        // `as_slice`; the mapping is also writable) and that nothing else accesses the bytes
        // while the slice lives: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr(), self.size()) }
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The serialised shape of a [`SharedMemory`]: the descriptor (an index into the out-of-band
/// list), the name, the size and whether it is named, in this order.
#[derive(Deserialize)]
#[serde(rename = "SharedMemory")]
struct Wire {
    /// The segment's descriptor.
    #[serde(with = "mp_process::fdpass::serde_fd")]
    fd: OwnedFd,
    /// The name or display name.
    name: String,
    /// The size the sender mapped.
    size: u64,
    /// Whether the segment is named.
    named: bool,
}

/// Serialises the segment's descriptor (duplicated out of band by
/// `mp_process::fdpass::encode_with_fds`), name, size and kind. Outside mp's fd-carrying
/// encoder this fails, since a descriptor cannot be written as bytes.
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SharedMemory", 4)?;
        st.serialize_field("fd", &mp_process::fdpass::FdRef(&self.fd))?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("size", &(self.size() as u64))?;
        st.serialize_field("named", &self.named)?;
        st.end()
    }
}

/// Receives a segment: the descriptor is `fstat`ed (a regular file at least as large as the
/// declared size) and checked (the seals of an anonymous segment; for a named one, that it is
/// the object of that name) before it is mapped.
impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let Wire { fd, name, size, named } = Wire::deserialize(d)?;
        SharedMemory::from_received(fd, name, size, named, new_object_id())
            .map_err(|e| refused("SharedMemory", e))
    }
}

/// A segment crosses as a shared object when it is held in an `Arc` (by [`RawValue`],
/// [`RawArray`], [`ShareableList`], and the types of the crates above): defined once per
/// message, or once per pool worker, and mapped once per process.
///
/// [`RawValue`]: crate::RawValue
/// [`RawArray`]: crate::RawArray
/// [`ShareableList`]: crate::ShareableList
// SAFETY: the kind `mp_shm::SharedMemory` is this type's alone, and `rebuild` makes a segment
// only from what `describe` writes, checking it first (an anonymous segment's seals and size,
// a named one's name against the descriptor's device and inode).
#[allow(unsafe_code)]
unsafe impl SharedObject for SharedMemory {
    const KIND: Kind = Kind::new("mp_shm::SharedMemory");

    fn object_id(&self) -> ObjectId {
        self.id
    }

    fn describe<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.serialize(s)
    }

    fn rebuild<'de, D: Deserializer<'de>>(
        id: ObjectId,
        d: D,
    ) -> std::result::Result<Self, D::Error> {
        let Wire { fd, name, size, named } = Wire::deserialize(d)?;
        SharedMemory::from_received(fd, name, size, named, id)
            .map_err(|e| refused("SharedMemory", e))
    }
}

/// Refuses a received `what` for `err`: the serde error, whose reason the caller's
/// `WireError::Refused` keeps.
pub(crate) fn refused<E: serde::de::Error>(what: &str, err: Error) -> E {
    mp_process::fdpass::refuse(format!("a received {what} was refused: {err}"))
}

/// Checks a size for a new segment and converts it to a file length.
fn file_len(size: usize) -> Result<u64> {
    if size == 0 {
        return Err(Error::InvalidSize(0));
    }
    match u64::try_from(size) {
        Ok(len) if len <= i64::MAX as u64 => Ok(len),
        _ => Err(Error::InvalidSize(size)),
    }
}

/// Checks a segment name as Python's rules and `shm_open` require: 1 to 254 bytes, no NUL, no
/// `/`, and neither `.` nor `..`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name.contains(['\0', '/'])
        || name == "."
        || name == "..";
    if bad { Err(Error::InvalidName(name.to_owned())) } else { Ok(()) }
}

/// The `shm_open` name of `name`: with the leading `/`.
fn shm_path(name: &str) -> String {
    format!("/{name}")
}

/// `digits` random lowercase hexadecimal digits.
pub(crate) fn random_hex(digits: usize) -> String {
    let mut bytes = vec![0u8; digits.div_ceil(2)];
    if fill_random(&mut bytes).is_err() {
        fallback_random(&mut bytes);
    }
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(digits);
    out
}

/// Fills `buf` from the kernel's random source.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Fills `buf` from the standard library's randomly keyed hasher, for kernels without
/// `getrandom`.
fn fallback_random(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::Ordering;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for chunk in buf.chunks_mut(8) {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let bytes = h.finish().to_ne_bytes();
        let n = chunk.len();
        chunk.copy_from_slice(bytes.get(..n).unwrap_or(&bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "/a", "a\0b", &"x".repeat(255)] {
            assert!(matches!(check_name(bad), Err(Error::InvalidName(_))), "{bad:?}");
        }
        for good in ["a", "psm_0123abcd", &"x".repeat(254), "with space", "é"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn random_names_are_hex() {
        let a = random_hex(8);
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let mut fallback = [0u8; 12];
        fallback_random(&mut fallback);
        assert_eq!(random_hex(3).len(), 3);
    }

    #[test]
    fn anonymous_segments_are_zeroed_and_sealed() {
        let shm = SharedMemory::new(10_000).unwrap();
        assert_eq!(shm.size(), 10_000);
        assert!(shm.name().starts_with("memfd:psm_"));
        assert!(!shm.is_named());
        assert_eq!(shm.as_ptr() as usize % 4096, 0);
        let mut buf = vec![1u8; 10_000];
        shm.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let seals = rustix::fs::fcntl_get_seals(&shm).unwrap();
        assert!(seals.contains(sys::ANON_SEALS));
        assert!(rustix::fs::ftruncate(&shm, 1).is_err());
        assert!(rustix::fs::ftruncate(&shm, 1 << 20).is_err());
        shm.unlink().unwrap();
        shm.close();
    }

    #[test]
    fn size_zero_is_refused() {
        assert!(matches!(SharedMemory::new(0), Err(Error::InvalidSize(0))));
        assert!(matches!(SharedMemory::create("never", 0), Err(Error::InvalidSize(0))));
        assert!(matches!(SharedMemory::new(usize::MAX), Err(Error::InvalidSize(_))));
    }

    #[test]
    fn bounds_and_alignment() {
        let shm = SharedMemory::new(64).unwrap();
        shm.write(60, &[1, 2, 3, 4]).unwrap();
        assert!(matches!(shm.write(61, &[0; 4]), Err(Error::OutOfRange { .. })));
        assert!(matches!(shm.read(usize::MAX, &mut [0; 2]), Err(Error::OutOfRange { .. })));
        assert!(matches!(shm.zero(0, 65), Err(Error::OutOfRange { .. })));
        shm.read(64, &mut []).unwrap();
        assert!(matches!(shm.atomic_u32(2), Err(Error::Misaligned { offset: 2, align: 4 })));
        assert!(matches!(shm.atomic_u32(64), Err(Error::OutOfRange { .. })));
        assert!(matches!(shm.atomic_u64(60), Err(Error::OutOfRange { .. })));
        assert!(matches!(shm.atomic_u64(4), Err(Error::Misaligned { .. })));
        let a = shm.atomic_u32(60).unwrap();
        assert_eq!(a.load(std::sync::atomic::Ordering::SeqCst), u32::from_ne_bytes([1, 2, 3, 4]));
        shm.atomic_u64(8).unwrap().store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        let mut odd = [0u8; 3];
        shm.read(8, &mut odd).unwrap();
        assert_eq!(odd, [0xff; 3]);
        for len in [1usize, 2, 3, 4, 5, 8, 9] {
            let data: Vec<u8> = (1..=len as u8).collect();
            for offset in [0usize, 1, 16, 17] {
                shm.write(offset, &data).unwrap();
                let mut back = vec![0u8; len];
                shm.read(offset, &mut back).unwrap();
                assert_eq!(back, data);
            }
        }
        shm.zero(0, 64).unwrap();
        let mut all = [1u8; 64];
        shm.read(0, &mut all).unwrap();
        assert_eq!(all, [0u8; 64]);
    }

    #[test]
    fn clones_share_the_bytes() {
        let a = SharedMemory::new(100).unwrap();
        let b = a.try_clone().unwrap();
        a.write(3, b"xyz").unwrap();
        let mut buf = [0u8; 3];
        b.read(3, &mut buf).unwrap();
        assert_eq!(&buf, b"xyz");
        assert_eq!(b.name(), a.name());
        assert_ne!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn serde_outside_fd_context_fails() {
        let shm = SharedMemory::new(8).unwrap();
        assert!(mp_process::wire::encode(&shm).is_err());
    }

    #[test]
    fn serde_roundtrip_in_process() {
        let shm = SharedMemory::new(4096).unwrap();
        shm.write(0, b"serde").unwrap();
        let (bytes, fds) = mp_process::fdpass::encode_with_fds(&shm).unwrap();
        let back: SharedMemory = mp_process::fdpass::decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.size(), 4096);
        assert_eq!(back.name(), shm.name());
        let mut buf = [0u8; 5];
        back.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"serde");
        back.write(0, b"S").unwrap();
        shm.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"Serde");
    }

    #[test]
    fn received_descriptors_are_checked() {
        // A pipe is no regular file.
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(matches!(
            SharedMemory::from_received(r, "x".into(), 8, false, 1),
            Err(Error::InvalidSegment(_))
        ));
        // An unsealed memfd could be truncated under us.
        let fd = sys::memfd("unsealed").unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(matches!(
            SharedMemory::from_received(fd, "x".into(), 4096, false, 1),
            Err(Error::InvalidSegment(_))
        ));
        // A sealed memfd smaller than declared.
        let shm = SharedMemory::new(4096).unwrap();
        let dup = rustix::io::fcntl_dupfd_cloexec(&shm, 0).unwrap();
        assert!(matches!(
            SharedMemory::from_received(dup, "x".into(), 8192, false, 1),
            Err(Error::InvalidSegment(_))
        ));
        let dup = rustix::io::fcntl_dupfd_cloexec(&shm, 0).unwrap();
        assert!(matches!(
            SharedMemory::from_received(dup, "x".into(), 0, false, 1),
            Err(Error::InvalidSegment(_))
        ));
        let dup = rustix::io::fcntl_dupfd_cloexec(&shm, 0).unwrap();
        assert!(matches!(
            SharedMemory::from_received(dup, "a/b".into(), 8, true, 1),
            Err(Error::InvalidName(_))
        ));
        let dup = rustix::io::fcntl_dupfd_cloexec(&shm, 0).unwrap();
        let smaller = SharedMemory::from_received(dup, "x".into(), 100, false, 1).unwrap();
        assert_eq!(smaller.size(), 100);
    }

    #[test]
    fn a_descriptor_sent_as_a_named_segment_must_be_that_segment() {
        // Issue 10: an unsealed memfd marked "named" skipped the seal check; truncating it
        // later killed the receiver with SIGBUS.
        let named = SharedMemory::create_unique(4096).unwrap();
        let unsealed = sys::memfd("forged").unwrap();
        rustix::fs::ftruncate(&unsealed, 4096).unwrap();
        match SharedMemory::from_received(unsealed, named.name().into(), 4096, true, 1) {
            Err(Error::InvalidSegment(why)) => assert!(why.contains("another file"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Another named segment's descriptor under this name.
        let other = SharedMemory::create_unique(4096).unwrap();
        let dup = rustix::io::fcntl_dupfd_cloexec(&other, 0).unwrap();
        assert!(matches!(
            SharedMemory::from_received(dup, named.name().into(), 4096, true, 1),
            Err(Error::InvalidSegment(_))
        ));
        // A name that does not exist (any more) cannot vouch for a descriptor.
        let dup = rustix::io::fcntl_dupfd_cloexec(&other, 0).unwrap();
        let name = other.name().to_owned();
        other.unlink().unwrap();
        match SharedMemory::from_received(dup, name, 4096, true, 1) {
            Err(Error::InvalidSegment(why)) => assert!(why.contains("cannot be opened"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The real one is accepted.
        let dup = rustix::io::fcntl_dupfd_cloexec(&named, 0).unwrap();
        let ok = SharedMemory::from_received(dup, named.name().into(), 4096, true, 1).unwrap();
        assert_eq!(ok.size(), 4096);
        named.unlink().unwrap();
    }
}
