//! `RawValue` and `RawArray`: plain-old-data in shared memory, without a lock, as Python's
//! `multiprocessing.sharedctypes.RawValue` and `RawArray`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::shm::SharedMemory;

/// The number of bytes to allocate for `bytes` bytes of data: a segment cannot be empty, so
/// zero-sized data still gets one byte.
fn segment_len(bytes: usize) -> usize {
    bytes.max(1)
}

/// Views a slice of plain-old-data as bytes; zero-sized types have no bytes.
fn slice_bytes<T: Pod>(items: &[T]) -> &[u8] {
    bytemuck::try_cast_slice(items).unwrap_or(&[])
}

/// Views a mutable slice of plain-old-data as bytes; zero-sized types have no bytes.
fn slice_bytes_mut<T: Pod>(items: &mut [T]) -> &mut [u8] {
    bytemuck::try_cast_slice_mut(items).unwrap_or(&mut [])
}

/// A value of plain-old-data type `T` in shared memory, without a lock: Python's
/// `multiprocessing.sharedctypes.RawValue`.
///
/// `T` is any [`bytemuck::Pod`] type: integers, floats, arrays of those, and `#[repr(C)]`
/// structs deriving `Pod` (no padding, every bit pattern valid). The value is only ever
/// copied in and out ([`get`](RawValue::get), [`set`](RawValue::set)); no reference into the
/// shared memory is handed out. For a `T` of 1, 2, 4 or 8 bytes each copy is a single atomic
/// load or store, so a reader never sees half a write; larger values may be torn by a
/// concurrent writer, as in Python. Use a lock (`mp-sync`'s `Value`) for read-modify-write.
///
/// Clones share the same memory. A `RawValue` passes into a child as a `Process` argument or
/// inside a message, under every start method.
///
/// ```
/// use mp_shm::RawValue;
///
/// # fn main() -> Result<(), mp_shm::Error> {
/// let counter = RawValue::new(41u64)?;
/// let same = counter.clone();
/// same.set(same.get() + 1);
/// assert_eq!(counter.get(), 42);
/// # Ok(())
/// # }
/// ```
///
/// A `#[repr(C)]` struct works when it derives `Pod`:
///
/// ```
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
///
/// # fn main() -> Result<(), mp_shm::Error> {
/// let p = mp_shm::RawValue::new(Point { x: 1.0, y: 2.0 })?;
/// p.set(Point { x: 3.0, ..p.get() });
/// assert_eq!((p.get().x, p.get().y), (3.0, 2.0));
/// # Ok(())
/// # }
/// ```
///
/// Types that are not plain-old-data do not compile. A `String` owns heap memory:
///
/// ```compile_fail,E0277
/// let v = mp_shm::RawValue::new(String::from("no"));
/// ```
///
/// A pointer means nothing in another process:
///
/// ```compile_fail,E0277
/// let x = 5u8;
/// let v = mp_shm::RawValue::new(&x as *const u8);
/// ```
///
/// A `bool` has invalid bit patterns (any byte but 0 and 1), which another process could
/// write:
///
/// ```compile_fail,E0277
/// let v = mp_shm::RawValue::new(true);
/// ```
pub struct RawValue<T: Pod + Send + Sync> {
    /// The segment holding the value at offset 0.
    shm: Arc<SharedMemory>,
    /// The type of the value.
    _type: PhantomData<T>,
}

impl<T: Pod + Send + Sync> RawValue<T> {
    /// Puts `value` into a new anonymous segment.
    ///
    /// Errors: [`Error::Io`] if the segment cannot be created.
    pub fn new(value: T) -> Result<RawValue<T>> {
        let shm = SharedMemory::new(segment_len(size_of::<T>()))?;
        shm.write(0, bytemuck::bytes_of(&value))?;
        Ok(RawValue { shm: Arc::new(shm), _type: PhantomData })
    }

    /// Takes `shm` as the home of a value of type `T` at offset 0, keeping its current bytes.
    ///
    /// Errors: [`Error::OutOfRange`] if the segment is smaller than a `T`.
    pub fn from_shm(shm: SharedMemory) -> Result<RawValue<T>> {
        if shm.size() < size_of::<T>() {
            return Err(Error::OutOfRange { offset: 0, len: size_of::<T>(), size: shm.size() });
        }
        Ok(RawValue { shm: Arc::new(shm), _type: PhantomData })
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        let mut value = T::zeroed();
        // The segment holds at least a `T` (checked when `self` was made), so this cannot
        // fail; were it to, the zero value is returned.
        let read = self.shm.read(0, bytemuck::bytes_of_mut(&mut value));
        debug_assert!(read.is_ok(), "a RawValue's segment is smaller than its type");
        value
    }

    /// Stores `value`.
    pub fn set(&self, value: T) {
        let written = self.shm.write(0, bytemuck::bytes_of(&value));
        debug_assert!(written.is_ok(), "a RawValue's segment is smaller than its type");
    }

    /// The segment holding the value.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }
}

impl<T: Pod + Send + Sync> Clone for RawValue<T> {
    /// Another handle on the same value.
    fn clone(&self) -> Self {
        RawValue { shm: Arc::clone(&self.shm), _type: PhantomData }
    }
}

impl<T: Pod + Send + Sync + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

/// The serialised shape of a [`RawValue`] or [`RawArray`]: the segment (a shared object),
/// the number of items, the size of one item and the item type's name (checked against the
/// receiver's type).
#[derive(Deserialize)]
struct RawWire {
    /// The segment.
    #[serde(with = "mp_process::fdpass::serde_object")]
    shm: Arc<SharedMemory>,
    /// The number of items: 1 for a value.
    len: u64,
    /// The size of one item in bytes.
    item_size: u64,
    /// `std::any::type_name` of the item type.
    item_type: String,
}

/// Serialises the segment, the item count, the item size and the item type.
fn serialize_raw<T, S: Serializer>(
    s: S,
    name: &'static str,
    shm: &Arc<SharedMemory>,
    len: usize,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    struct Segment<'a>(&'a Arc<SharedMemory>);
    impl Serialize for Segment<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            mp_process::fdpass::serialize_object(self.0, s)
        }
    }
    let mut st = s.serialize_struct(name, 4)?;
    st.serialize_field("shm", &Segment(shm))?;
    st.serialize_field("len", &(len as u64))?;
    st.serialize_field("item_size", &(size_of::<T>() as u64))?;
    st.serialize_field("item_type", std::any::type_name::<T>())?;
    st.end()
}

/// Checks a received segment for `len` items of `T`, returning the item count.
fn check_received<T>(wire: &RawWire) -> Result<usize> {
    let expected = std::any::type_name::<T>();
    if wire.item_type != expected || wire.item_size != size_of::<T>() as u64 {
        return Err(Error::InvalidSegment(format!(
            "items of type {} ({} bytes) were sent where {expected} ({} bytes) was expected",
            wire.item_type,
            wire.item_size,
            size_of::<T>()
        )));
    }
    let len = usize::try_from(wire.len).ok();
    match len.and_then(|len| len.checked_mul(size_of::<T>()).map(|bytes| (len, bytes))) {
        Some((len, bytes)) if bytes <= wire.shm.size() => Ok(len),
        _ => Err(Error::InvalidSegment(format!(
            "{} items of {} bytes do not fit in a segment of {} bytes",
            wire.len,
            size_of::<T>(),
            wire.shm.size()
        ))),
    }
}

impl<T: Pod + Send + Sync> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_raw::<T, S>(s, "RawValue", &self.shm, 1)
    }
}

/// Receives a value, checking that the segment holds a `T` before any access.
impl<'de, T: Pod + Send + Sync> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = RawWire::deserialize(d)?;
        match check_received::<T>(&wire) {
            Ok(1) => Ok(RawValue { shm: wire.shm, _type: PhantomData }),
            Ok(n) => Err(mp_process::fdpass::refuse(format!("a RawValue was sent with {n} items"))),
            Err(e) => Err(crate::shm::refused("RawValue", e)),
        }
    }
}

/// A fixed-length array of plain-old-data `T` in shared memory, without a lock: Python's
/// `multiprocessing.sharedctypes.RawArray`.
///
/// Items are copied in and out ([`get`](RawArray::get), [`set`](RawArray::set),
/// [`read_into`](RawArray::read_into), [`write_from`](RawArray::write_from),
/// [`to_vec`](RawArray::to_vec)); no reference into the shared memory is handed out. A
/// single-item access of a 1, 2, 4 or 8-byte `T` is atomic; bulk copies are not, and may
/// interleave with a concurrent writer item by item or byte by byte, as in Python.
///
/// Clones share the same memory. A `RawArray` passes into a child as a `Process` argument
/// or inside a message, under every start method; the receiver checks that the segment is
/// large enough for the length it was sent with.
///
/// ```
/// use mp_shm::RawArray;
///
/// # fn main() -> Result<(), mp_shm::Error> {
/// let a = RawArray::new(&[1i32, 2, 3])?;
/// a.set(1, 20)?;
/// assert_eq!(a.get(1), Some(20));
/// assert_eq!(a.get(3), None);
/// assert_eq!(a.to_vec(), vec![1, 20, 3]);
/// # Ok(())
/// # }
/// ```
pub struct RawArray<T: Pod + Send + Sync> {
    /// The segment holding the items from offset 0.
    shm: Arc<SharedMemory>,
    /// The number of items.
    len: usize,
    /// The type of the items.
    _type: PhantomData<T>,
}

impl<T: Pod + Send + Sync> RawArray<T> {
    /// Copies `items` into a new anonymous segment.
    ///
    /// Errors: [`Error::InvalidSize`] if the array's size overflows; [`Error::Io`] if the
    /// segment cannot be created.
    pub fn new(items: &[T]) -> Result<RawArray<T>> {
        let array = RawArray::zeroed(items.len())?;
        array.shm.write(0, slice_bytes(items))?;
        Ok(array)
    }

    /// A new array of `len` items whose bytes are all zero (Python's `RawArray(typecode,
    /// size)`).
    ///
    /// Errors: [`Error::InvalidSize`] if the array's size overflows; [`Error::Io`] if the
    /// segment cannot be created.
    pub fn zeroed(len: usize) -> Result<RawArray<T>> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or(Error::InvalidSize(usize::MAX))?;
        let shm = SharedMemory::new(segment_len(bytes))?;
        Ok(RawArray { shm: Arc::new(shm), len, _type: PhantomData })
    }

    /// Takes `shm` as the home of `len` items of `T` from offset 0, keeping its bytes.
    ///
    /// Errors: [`Error::OutOfRange`] if the segment is too small for `len` items.
    pub fn from_shm(shm: SharedMemory, len: usize) -> Result<RawArray<T>> {
        match len.checked_mul(size_of::<T>()) {
            Some(bytes) if bytes <= shm.size() => {
                Ok(RawArray { shm: Arc::new(shm), len, _type: PhantomData })
            }
            _ => Err(Error::OutOfRange {
                offset: 0,
                len: len.saturating_mul(size_of::<T>()),
                size: shm.size(),
            }),
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of item `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let mut value = T::zeroed();
        let offset = index.checked_mul(size_of::<T>())?;
        self.shm.read(offset, bytemuck::bytes_of_mut(&mut value)).ok()?;
        Some(value)
    }

    /// Stores `value` as item `index`.
    ///
    /// Errors: [`Error::IndexOutOfRange`] past the end.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        if index >= self.len {
            return Err(Error::IndexOutOfRange { index, len: self.len });
        }
        let offset = index
            .checked_mul(size_of::<T>())
            .ok_or(Error::IndexOutOfRange { index, len: self.len })?;
        self.shm.write(offset, bytemuck::bytes_of(&value))
    }

    /// Copies every item into `out`, which must have the array's length.
    ///
    /// Errors: [`Error::LengthMismatch`] if `out.len()` differs from the array's length.
    pub fn read_into(&self, out: &mut [T]) -> Result<()> {
        if out.len() != self.len {
            return Err(Error::LengthMismatch { expected: self.len, got: out.len() });
        }
        self.shm.read(0, slice_bytes_mut(out))
    }

    /// Copies `items` over the whole array (Python's `a[:] = items`).
    ///
    /// Errors: [`Error::LengthMismatch`] if `items.len()` differs from the array's length.
    pub fn write_from(&self, items: &[T]) -> Result<()> {
        if items.len() != self.len {
            return Err(Error::LengthMismatch { expected: self.len, got: items.len() });
        }
        self.shm.write(0, slice_bytes(items))
    }

    /// A copy of every item.
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zeroed(); self.len];
        let read = self.read_into(&mut out);
        debug_assert!(read.is_ok(), "a RawArray's segment is smaller than its length");
        out
    }

    /// The segment holding the items.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }
}

impl<T: Pod + Send + Sync> Clone for RawArray<T> {
    /// Another handle on the same array.
    fn clone(&self) -> Self {
        RawArray { shm: Arc::clone(&self.shm), len: self.len, _type: PhantomData }
    }
}

impl<T: Pod + Send + Sync> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .field("shm", &self.shm)
            .finish()
    }
}

impl<T: Pod + Send + Sync> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_raw::<T, S>(s, "RawArray", &self.shm, self.len)
    }
}

/// Receives an array, checking that the segment holds the declared number of items before
/// any access.
impl<'de, T: Pod + Send + Sync> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = RawWire::deserialize(d)?;
        let len = check_received::<T>(&wire).map_err(|e| crate::shm::refused("RawArray", e))?;
        Ok(RawArray { shm: wire.shm, len, _type: PhantomData })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp_process::fdpass::{decode_with_fds, encode_with_fds};

    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Triple {
        a: u32,
        b: u32,
        c: [u8; 8],
    }

    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Empty;

    #[test]
    fn values_of_many_sizes() {
        let v = RawValue::new(7u8).unwrap();
        v.set(9);
        assert_eq!(v.get(), 9);
        let v = RawValue::new(-1i16).unwrap();
        assert_eq!(v.get(), -1);
        let v = RawValue::new(1.5f64).unwrap();
        v.set(2.5);
        assert_eq!(v.clone().get(), 2.5);
        let t = Triple { a: 1, b: 2, c: *b"abcdefgh" };
        let v = RawValue::new(t).unwrap();
        assert_eq!(v.get(), t);
        assert_eq!(format!("{v:?}"), format!("RawValue({t:?})"));
        let v = RawValue::new([3u8; 3]).unwrap();
        assert_eq!(v.get(), [3, 3, 3]);
        let v = RawValue::new(Empty).unwrap();
        v.set(Empty);
        assert_eq!(v.get(), Empty);
        let v = RawValue::new(u128::MAX).unwrap();
        assert_eq!(v.get(), u128::MAX);
    }

    #[test]
    fn arrays() {
        let a = RawArray::<u16>::zeroed(5).unwrap();
        assert_eq!(a.to_vec(), vec![0; 5]);
        a.write_from(&[1, 2, 3, 4, 5]).unwrap();
        assert!(matches!(a.write_from(&[1]), Err(Error::LengthMismatch { expected: 5, got: 1 })));
        let mut out = [0u16; 4];
        assert!(matches!(a.read_into(&mut out), Err(Error::LengthMismatch { .. })));
        let mut out = [0u16; 5];
        a.read_into(&mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5]);
        assert!(matches!(a.set(5, 0), Err(Error::IndexOutOfRange { index: 5, len: 5 })));
        assert_eq!(a.get(usize::MAX), None);
        let b = a.clone();
        b.set(4, 50).unwrap();
        assert_eq!(a.get(4), Some(50));
        assert_eq!(a.len(), 5);
        assert!(!a.is_empty());

        let empty = RawArray::<f32>::new(&[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.to_vec(), Vec::<f32>::new());
        let zst = RawArray::new(&[Empty, Empty]).unwrap();
        assert_eq!(zst.to_vec(), vec![Empty, Empty]);
        assert_eq!(zst.get(1), Some(Empty));
        assert_eq!(zst.get(2), None);
        assert!(RawArray::<u64>::zeroed(usize::MAX).is_err());
    }

    #[test]
    fn from_shm_checks_the_size() {
        let shm = SharedMemory::new(8).unwrap();
        assert!(RawValue::<u128>::from_shm(shm).is_err());
        let shm = SharedMemory::new(8).unwrap();
        assert!(RawArray::<u32>::from_shm(shm, 3).is_err());
        let shm = SharedMemory::new(8).unwrap();
        assert!(RawArray::<u32>::from_shm(shm, usize::MAX).is_err());
        let shm = SharedMemory::new(8).unwrap();
        shm.write(0, &7u32.to_ne_bytes()).unwrap();
        let a = RawArray::<u32>::from_shm(shm, 2).unwrap();
        assert_eq!(a.to_vec(), vec![7, 0]);
        let v = RawValue::<u32>::from_shm(a.shm().try_clone().unwrap()).unwrap();
        assert_eq!(v.get(), 7);
    }

    #[test]
    fn serde_checks_type_and_length() {
        let a = RawArray::new(&[1u32, 2, 3]).unwrap();
        let (bytes, fds) = encode_with_fds(&a).unwrap();
        let back: RawArray<u32> = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.to_vec(), vec![1, 2, 3]);
        back.set(0, 10).unwrap();
        assert_eq!(a.get(0), Some(10));

        // The wrong item type is refused.
        let (bytes, fds) = encode_with_fds(&a).unwrap();
        assert!(decode_with_fds::<RawArray<u64>>(&bytes, fds).is_err());
        // An array is not a value.
        let (bytes, fds) = encode_with_fds(&a).unwrap();
        assert!(decode_with_fds::<RawValue<u32>>(&bytes, fds).is_err());

        let v = RawValue::new(5i64).unwrap();
        let (bytes, fds) = encode_with_fds(&v).unwrap();
        let back: RawValue<i64> = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.get(), 5);
    }

    /// The serialised shape of a `RawArray`, with a length the segment cannot hold.
    #[derive(Serialize)]
    struct Forged<'a> {
        #[serde(with = "mp_process::fdpass::serde_object")]
        shm: &'a Arc<SharedMemory>,
        len: u64,
        item_size: u64,
        item_type: &'a str,
    }

    #[test]
    fn forged_lengths_and_types_are_refused() {
        let shm = Arc::new(SharedMemory::new(16).unwrap());
        for len in [5u64, u64::MAX, u64::MAX / 4 + 1] {
            let forged = Forged { shm: &shm, len, item_size: 4, item_type: "u32" };
            let (bytes, fds) = encode_with_fds(&forged).unwrap();
            assert!(decode_with_fds::<RawArray<u32>>(&bytes, fds).is_err(), "{len}");
        }
        // The item type is named: an `f32` is not a `u32`, though both have four bytes.
        let forged = Forged { shm: &shm, len: 4, item_size: 4, item_type: "f32" };
        let (bytes, fds) = encode_with_fds(&forged).unwrap();
        match decode_with_fds::<RawArray<u32>>(&bytes, fds) {
            Err(mp_process::wire::WireError::Refused(why)) => {
                assert!(why.contains("items of type f32 (4 bytes) were sent where u32"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let forged = Forged { shm: &shm, len: 4, item_size: 4, item_type: "u32" };
        let (bytes, fds) = encode_with_fds(&forged).unwrap();
        let ok: RawArray<u32> = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(ok.len(), 4);
    }
}
