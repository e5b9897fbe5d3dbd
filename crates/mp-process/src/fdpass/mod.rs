//! File descriptors and shared objects carried out of band (`SCM_RIGHTS`) beside framed bytes
//! on Unix sockets.
//!
//! Three layers live here:
//!
//! * Raw frames: [`send_frame`] and [`recv_frame`] move a payload plus up to
//!   [`MAX_FDS_PER_FRAME`] descriptors over an `AF_UNIX` `SOCK_STREAM` socket. The
//!   frame header is a little-endian `u32` payload length followed by a little-endian
//!   `u32` descriptor count; the descriptors ride as `SCM_RIGHTS` ancillary data on
//!   the same `sendmsg` that carries the header.
//! * An fd-carrying serialisation context: [`encode_with_fds`] and
//!   [`decode_with_fds`] let serde values that hold descriptors (fields marked
//!   `#[serde(with = "mp_process::fdpass::serde_fd")]`, or [`PassFd`]) be encoded with
//!   postcard. Each descriptor is replaced in the bytes by its index into a side list
//!   of descriptors, which travels out of band. [`send_value`] and [`recv_value`]
//!   combine both layers.
//! * Shared objects ([`SharedObject`]: queues, locks, shared memory): an object crosses as an
//!   index into the value's scope of object identities, and its definition travels once per
//!   message, or once per receiver on channels that keep a cache ([`PeerObjects`],
//!   [`ObjectCache`]); a process keeps one handle per object. The `objects` module's docs
//!   say how.
//!
//! After any receive error other than a clean end of stream, the stream position is
//! unspecified and the socket should be closed; [`recv_frame`] consumes a frame whose
//! descriptors the kernel had to drop (`MSG_CTRUNC`, out of descriptors) whole, so that
//! stream stays in step.

pub mod check;
mod codec;
mod context;
mod frame;
mod objects;
mod table;

pub use codec::{decode_with_fds, encode_with_fds, encode_with_flavor, recv_value, send_value};
pub use context::{
    DecodeSession, EncodeSession, FdRef, PassFd, decode_in, encode_with_objects, refuse, serde_fd,
    take_in,
};
pub use frame::{MAX_FDS_PER_FRAME, Received, recv_frame, send_frame, try_recv_frame};
pub(crate) use objects::hold_for_fork;
pub use objects::{PeerObjects, deserialize_object, serde_object, serialize_object};
pub use table::{
    IdHasher, Kind, MAX_CACHED, MAX_DEPTH, ObjectCache, ObjectId, ObjectList, SharedObject,
    fingerprint, new_object_id,
};
