//! `mp-shm`: memory shared between processes, as Python's `multiprocessing.shared_memory` and
//! `multiprocessing.sharedctypes`.
//!
//! ```
//! use mp_process::Process;
//! use mp_shm::RawArray;
//!
//! fn fill(squares: RawArray<u64>) {
//!     for i in 0..squares.len() {
//!         squares.set(i, (i * i) as u64).unwrap();
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let _guard = mp_process::init()?;
//!     let squares = RawArray::<u64>::zeroed(5)?;
//!     let mut p = Process::new(fill, (squares.clone(),));
//!     p.start()?;
//!     assert_eq!(p.join()?, 0);
//!     assert_eq!(squares.to_vec(), vec![0, 1, 4, 9, 16]);
//!     Ok(())
//! }
//! ```
//!
//! # Segments
//! A [`SharedMemory`] is one block of shared memory, filled with zeros when created.
//! - **Anonymous** ([`SharedMemory::new`]): a memfd sealed against growing and shrinking. It
//!   has no entry in `/dev/shm` and vanishes when the last process holding it closes it, so
//!   it can never leak. Its [`name`](SharedMemory::name) is a display name (`memfd:psm_…`)
//!   that cannot be opened; its [`unlink`](SharedMemory::unlink) does nothing.
//! - **Named** ([`SharedMemory::create`], [`SharedMemory::create_unique`]): a POSIX shared
//!   memory object `/dev/shm/<name>` that any process, related or not, attaches with
//!   [`SharedMemory::open`], until someone calls [`unlink`](SharedMemory::unlink). The creator
//!   registers the name with `mp_process`'s tracker, a helper process shared by the whole
//!   process tree: if the tree ends without unlinking the segment (its creator was killed,
//!   say), the tracker unlinks it, as Python's resource tracker does.
//!
//! # Access
//! Other processes may write a segment at any moment, so `mp-shm` hands out no `&[u8]` or `&T`
//! over it. Access goes through bounds-checked copies ([`SharedMemory::read`],
//! [`SharedMemory::write`]), atomics ([`SharedMemory::atomic_u32`],
//! [`SharedMemory::atomic_u64`]), or the `unsafe` accessors [`SharedMemory::as_slice`] and
//! [`SharedMemory::as_mut_slice`], whose callers promise that nobody else touches the bytes
//! meanwhile. [`SharedMemory::as_ptr`] gives the base address for code that builds its own
//! process-shared structures (as `mp-sync` does).
//!
//! # Where the `unsafe` code is
//! The crate root denies `unsafe` code, and one item allows it: the `impl SharedMemory` block
//! of accessors in `shm.rs` (bounds-checked copies through raw pointers, atomics over the
//! mapping, and the two `unsafe` slice accessors, whose contracts are their `# Safety`
//! sections). `sys.rs`, the platform layer (memfds, seals, mappings), holds none; it hands out
//! the base address and length of a mapping, which only that block dereferences.
//!
//! # Plain-old-data values and arrays
//! [`RawValue<T>`] and [`RawArray<T>`] are Python's `RawValue` and `RawArray`: one `T` or a
//! fixed number of them in an anonymous segment, with no lock. `T` must be plain-old-data
//! ([`bytemuck::Pod`], re-exported as [`bytemuck`]): integers, floats, arrays of them, and
//! `#[repr(C)]` structs deriving `Pod`. A `String`, a pointer or a `bool` does not compile,
//! since another process could write any bit pattern. Values are copied in and out; an access
//! to a single 1, 2, 4 or 8-byte item is atomic.
//!
//! # ShareableList
//! [`ShareableList`] is Python's `ShareableList`: a fixed number of slots holding [`Item`]s
//! (`int`, `float`, `bool`, `str`, `bytes`, `None`), each slot with a capacity fixed when the
//! list is made. Every kind tag, length and string read back out of shared memory is
//! validated; bad content is [`Error::Corrupt`], never a panic or a read outside the segment.
//!
//! # Passing to other processes
//! Every type here is `Serialize` and `Deserialize` through `mp_process::fdpass`: it passes
//! into a child as an argument of `mp_process::Process::new`, and inside messages, under every
//! start method. Under `fork` the child simply inherits the mapping. Under `spawn` and
//! `forkserver`, and in messages, the segment's descriptor crosses beside the bytes
//! (`SCM_RIGHTS`) with its name and size; the receiver `fstat`s the descriptor before mapping
//! it (a regular file or memfd at least as large as declared) and checks that an anonymous
//! segment is sealed, so a forged or truncated segment is refused with an error instead of
//! faulting (`SIGBUS`) later. Serialising one of these types outside
//! `mp_process::fdpass::encode_with_fds` fails, since a descriptor cannot be written as bytes.
//!
//! # Errors
//! One [`Error`] type, with the variants a Python user knows: [`Error::InvalidSize`] and
//! [`Error::InvalidName`] (`ValueError`), [`Error::Exists`] (`FileExistsError`),
//! [`Error::NotFound`] (`FileNotFoundError`), [`Error::IndexOutOfRange`] (`IndexError`);
//! system errors are [`Error::Io`], chaining the `io::Error`.
//!
//! # Which handles are `Send` and `Sync`
//! | type | `Send` | `Sync` | why |
//! | --- | --- | --- | --- |
//! | [`SharedMemory`] | yes | yes | a mapping and a descriptor; every access is a copy, an atomic or `unsafe`. |
//! | [`RawValue`], [`RawArray`] | yes | yes | a shared segment; values are copied in and out. |
//! | [`ShareableList`] | yes | yes | a shared segment and its validated layout. |
//!
//! # Differences from Python's multiprocessing
//! - [`SharedMemory::new`] makes an anonymous, memfd-backed segment that needs no unlinking;
//!   Python's segments are always named. [`SharedMemory::create_unique`] is Python's
//!   `SharedMemory(create=True, size=n)`.
//! - Only the creator registers a named segment with the tracker; attaching by name does not
//!   (Python's `track` parameter, fixed to the creator).
//! - There is no `buf` memoryview: use copies, atomics or the `unsafe` slice accessors.
//!   [`SharedMemory::close`] consumes the handle, so no use after close can happen.
//! - A named segment cannot be sealed: a process that truncates `/dev/shm/<name>` makes the
//!   others fault when they touch the lost pages, as in Python. Anonymous segments are sealed.
//! - `RawValue` and `RawArray` take any `Pod` type instead of a type code, and refuse `bool`.
//! - `ShareableList` stores `str` capacities in UTF-8 bytes and keeps trailing NUL bytes; its
//!   layout is mp's own (see [`ShareableList`]).
#![deny(unsafe_code)]

mod error;
mod list;
mod raw;
mod shm;
mod sys;

pub use bytemuck;
pub use error::{Error, Result};
pub use list::{Item, ShareableList};
pub use raw::{RawArray, RawValue};
pub use shm::SharedMemory;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<SharedMemory>();
        assert_send_sync::<RawValue<u64>>();
        assert_send_sync::<RawArray<[u8; 3]>>();
        assert_send_sync::<ShareableList>();
        assert_send_sync::<Error>();
    }
}
