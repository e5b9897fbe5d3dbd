//! The self-contained form: a value's bytes, then the table of the objects it refers to and
//! the descriptors beside them, then an 8-byte footer (the table's length and a magic). A
//! value with no descriptor and no object is plain postcard. Used by pipes, queue messages,
//! a child's arguments and a pool's results; and values as frames (`send_value`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};

use super::context::{decode_from, encode_in_sink, take_in, whole};
use super::frame::{recv_frame, send_frame};
use super::objects;
use super::table::{ObjectCache, ObjectList, TableWire};
use crate::wire::WireError;

/// The last four bytes of a value in the self-contained form.
pub(super) const TRAILER_MAGIC: [u8; 4] = *b"mpO1";

/// The size of the footer of the self-contained form: the table's length and the magic.
const FOOTER_LEN: usize = 8;

/// A value followed by the object table of the self-contained form.
struct Packed<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Packed<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        // postcard writes a tuple's elements back to back, and a `u8` as one byte.
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(self.0)?;
        // A value with no descriptor and no object is plain postcard: the table is there
        // exactly when descriptors travel (every object definition holds one).
        let Some(table) = objects::seal_table().map_err(S::Error::custom)? else {
            return t.end();
        };
        let len = u32::try_from(table.len())
            .map_err(|_| S::Error::custom("the object table is larger than 4 GiB"))?;
        t.serialize_element(&RawBytes(&table))?;
        let mut footer = [0u8; FOOTER_LEN];
        let (len_part, magic_part) = footer.split_at_mut(4);
        len_part.copy_from_slice(&len.to_le_bytes());
        magic_part.copy_from_slice(&TRAILER_MAGIC);
        t.serialize_element(&footer)?;
        t.end()
    }
}

/// Bytes written as they are, without a length (as a tuple of `u8`).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

/// Serialises `value` with postcard in the self-contained form (see the module docs), moving
/// every descriptor it holds out of band and defining every shared object it refers to.
///
/// Returns the bytes and duplicates (close-on-exec) of the descriptors; the value keeps its
/// own. Calls may nest: each has its own lists. A descriptor or shared object met outside
/// this module's encoders is an error. The number of descriptors is not limited here;
/// [`send_frame`](super::send_frame) enforces [`MAX_FDS_PER_FRAME`](super::MAX_FDS_PER_FRAME).
pub fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>), WireError> {
    encode_with_flavor(value, postcard::ser_flavors::AllocVec::new())
}

/// [`encode_with_fds`] into any postcard storage flavor: `Size` to learn the encoded length,
/// `Slice` to encode straight into a caller's buffer (such as shared memory).
///
/// Returns the flavor's output and the out-of-band descriptors. A `Slice` too small for the
/// value fails with `Encode(SerializeBufferFull)`.
pub fn encode_with_flavor<T, F>(
    value: &T,
    flavor: F,
) -> Result<(F::Output, Vec<OwnedFd>), WireError>
where
    T: Serialize + ?Sized,
    F: postcard::ser_flavors::Flavor,
{
    let (out, fds, _) = encode_in_sink(&Packed(value), flavor, ObjectList::default())?;
    Ok((out, fds))
}

/// Splits a value in the self-contained form into its bytes and its object table.
fn split_trailer(bytes: &[u8]) -> Result<(&[u8], TableWire), WireError> {
    let damaged = |what: &str| WireError::Refused(format!("the message's object table is {what}"));
    let (rest, footer) = bytes
        .split_at_checked(bytes.len().checked_sub(FOOTER_LEN).ok_or_else(|| damaged("missing"))?)
        .ok_or_else(|| damaged("missing"))?;
    let (len_part, magic) = footer.split_at(4);
    if magic != TRAILER_MAGIC {
        return Err(damaged("missing (no footer)"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(len_part);
    let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
    let at = rest.len().checked_sub(len).ok_or_else(|| damaged("longer than the message"))?;
    let (value, table) = rest.split_at(at);
    let table: TableWire = match postcard::take_from_bytes(table) {
        Ok((table, [])) => table,
        Ok(_) | Err(_) => return Err(damaged("damaged")),
    };
    Ok((value, table))
}

/// Deserialises a value in the self-contained form (see [`encode_with_fds`]), giving it
/// descriptors from `fds` and rebuilding the shared objects the table defines. Without
/// descriptors, the bytes are plain postcard.
///
/// Index `i` in the bytes takes `fds[i]`; an index out of range or taken twice fails
/// with `MissingFd`. Trailing bytes fail with `TrailingBytes`; descriptors the table does not
/// account for, with `FdCountMismatch`. Descriptors and objects the value did not take are
/// closed before this function returns; an object a process already has is not mapped a
/// second time (see [`SharedObject`](super::SharedObject)).
pub fn decode_with_fds<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, WireError> {
    if fds.is_empty() {
        // Plain postcard, decoded in a context so that a descriptor or object index in the
        // bytes is a precise error.
        let taken = take_in(bytes, fds, &mut Vec::new(), &mut ObjectCache::default())?;
        return whole(taken, bytes.len());
    }
    let (value, table) = split_trailer(bytes)?;
    let received = fds.len();
    let value_fds = usize::try_from(table.value_fds).unwrap_or(usize::MAX);
    if value_fds > received {
        return Err(WireError::FdCountMismatch { announced: value_fds, received });
    }
    let mut fds = fds.into_iter();
    let own: Vec<Option<OwnedFd>> = fds.by_ref().take(value_fds).map(Some).collect();
    let mut cache = ObjectCache::default();
    let rest: Vec<OwnedFd> = fds.collect();
    cache.admit(table.releases, table.defs, rest)?;
    let mut scope = table.scope;
    let (taken, _unused) = decode_from(value, own, &mut scope, &mut cache, 0)?;
    whole(taken, value.len())
}

/// Sends `value`, with any descriptors it holds, as one frame over `sock`.
pub fn send_value<T: Serialize + ?Sized>(
    sock: BorrowedFd<'_>,
    value: &T,
    max: usize,
) -> Result<(), WireError> {
    let (bytes, fds) = encode_with_fds(value)?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    send_frame(sock, &bytes, &borrowed, max)
}

/// Receives one value sent by [`send_value`], with its descriptors.
///
/// Returns `Ok(None)` on a clean end of stream before the frame.
pub fn recv_value<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
    max: usize,
) -> Result<Option<T>, WireError> {
    match recv_frame(sock, max)? {
        Some((bytes, fds)) => decode_with_fds(&bytes, fds).map(Some),
        None => Ok(None),
    }
}
