//! `ShareableList`: a fixed-length list of Python-like items in shared memory.
//!
//! The layout (all integers little-endian) is a header followed by the slots' data:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic, `MPSLIST1` |
//! | 8 | 8 | number of slots `n` |
//! | 16 + 16·i | 4 | capacity of slot `i` in bytes (a multiple of 8, at least 8) |
//! | 20 + 16·i | 4 | reserved, zero |
//! | 24 + 16·i | 8 | tag of slot `i`: the kind in the low 32 bits, the length of a `str` or `bytes` value in the high 32 bits |
//! | 16 + 16·n | … | the slots' data, one after the other, each `capacity` bytes |
//!
//! A `set` writes the data first and the tag last, in one 8-byte atomic store, so a reader
//! never sees a kind with another value's length. Nothing read back is trusted: the magic,
//! the count and the capacities are validated when a list is attached, and the magic, the
//! capacity, the kind, the length and the UTF-8 of a string on every read.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::shm::SharedMemory;

/// The magic number at the start of every list.
const MAGIC: [u8; 8] = *b"MPSLIST1";

/// The size of the fixed part of the header: magic and count.
const HEADER_LEN: usize = 16;

/// The size of one slot's entry in the header table.
const ENTRY_LEN: usize = 16;

/// The alignment of slot capacities, as Python's `_alignment`.
const ALIGNMENT: usize = 8;

/// The kind tags stored in the header.
const KIND_NONE: u32 = 0;
/// The tag of an `Item::Int`.
const KIND_INT: u32 = 1;
/// The tag of an `Item::Float`.
const KIND_FLOAT: u32 = 2;
/// The tag of an `Item::Bool`.
const KIND_BOOL: u32 = 3;
/// The tag of an `Item::Str`.
const KIND_STR: u32 = 4;
/// The tag of an `Item::Bytes`.
const KIND_BYTES: u32 = 5;

/// One item of a [`ShareableList`]: the Python types a `ShareableList` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// A 64-bit signed integer (Python's `int`, within `q` range).
    Int(i64),
    /// A 64-bit float (Python's `float`).
    Float(f64),
    /// A boolean (Python's `bool`).
    Bool(bool),
    /// A UTF-8 string (Python's `str`).
    Str(String),
    /// Bytes (Python's `bytes`).
    Bytes(Vec<u8>),
    /// No value (Python's `None`).
    None,
}

impl Item {
    /// The bytes this item needs in a slot.
    fn data_len(&self) -> usize {
        match self {
            Item::Str(s) => s.len(),
            Item::Bytes(b) => b.len(),
            Item::Int(_) | Item::Float(_) | Item::Bool(_) => 8,
            Item::None => 0,
        }
    }

    /// The capacity of a slot created for this item: 8 bytes, or for `str` and `bytes` the
    /// length rounded up to the next multiple of 8 above it, as Python computes it.
    fn initial_capacity(&self) -> Option<usize> {
        match self {
            Item::Str(_) | Item::Bytes(_) => {
                (self.data_len() / ALIGNMENT).checked_add(1)?.checked_mul(ALIGNMENT)
            }
            _ => Some(ALIGNMENT),
        }
    }
}

impl From<i64> for Item {
    fn from(v: i64) -> Self {
        Item::Int(v)
    }
}

impl From<f64> for Item {
    fn from(v: f64) -> Self {
        Item::Float(v)
    }
}

impl From<bool> for Item {
    fn from(v: bool) -> Self {
        Item::Bool(v)
    }
}

impl From<&str> for Item {
    fn from(v: &str) -> Self {
        Item::Str(v.to_owned())
    }
}

impl From<String> for Item {
    fn from(v: String) -> Self {
        Item::Str(v)
    }
}

impl From<&[u8]> for Item {
    fn from(v: &[u8]) -> Self {
        Item::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Item {
    fn from(v: Vec<u8>) -> Self {
        Item::Bytes(v)
    }
}

impl<T: Into<Item>> From<Option<T>> for Item {
    /// `None` becomes [`Item::None`].
    fn from(v: Option<T>) -> Self {
        v.map_or(Item::None, Into::into)
    }
}

/// Where one slot lives, as validated when the list was attached.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The offset of the slot's data in the segment.
    offset: usize,
    /// The slot's capacity in bytes.
    capacity: usize,
}

/// A fixed-length list of `int`, `float`, `bool`, `str`, `bytes` and `None` items in shared
/// memory: Python's `multiprocessing.shared_memory.ShareableList`.
///
/// Each slot has a fixed capacity chosen at creation: 8 bytes for a number, a bool or
/// `None`; for a `str` or `bytes` its length in bytes rounded up to the next multiple of 8
/// above it (so `"abc"` gets 8 bytes and an 8-byte string 16), as Python does. A slot may later
/// hold an item of any kind that fits: a longer `str` or `bytes` is refused with
/// [`Error::TooLong`].
///
/// Every read validates what it finds in shared memory (kind tags, lengths, offsets, UTF-8)
/// and reports bad content as [`Error::Corrupt`]; nothing another process writes into the
/// segment can make a read panic or leave the segment. Without a lock, a read racing a
/// write of the same slot may see a mix of both (or, for a string, `Corrupt`).
///
/// Clones share the same memory. A `ShareableList` passes into a child as a `Process`
/// argument or inside a message, under every start method.
///
/// ```
/// use mp_shm::{Item, ShareableList};
///
/// # fn main() -> Result<(), mp_shm::Error> {
/// let list = ShareableList::new(&[Item::from("howdy"), 42i64.into(), Item::None])?;
/// list.set(1, Item::Float(0.5))?;
/// list.set(0, Item::from("hi"))?;
/// assert_eq!(list.get(0)?, Item::from("hi"));
/// assert!(matches!(list.set(0, Item::from("much too long")), Err(mp_shm::Error::TooLong { .. })));
/// assert_eq!(list.to_vec()?, vec![Item::from("hi"), Item::Float(0.5), Item::None]);
/// # Ok(())
/// # }
/// ```
///
/// # Differences from Python's multiprocessing
/// - A `str` slot's capacity counts UTF-8 bytes, not characters, and the exact length of
///   each `str` and `bytes` value is stored, so values with trailing NUL bytes come back
///   whole (Python strips them).
/// - [`count`](ShareableList::count) and [`index`](ShareableList::index) compare items by
///   kind and value: `Int(1)`, `Float(1.0)` and `Bool(true)` are different items, unlike in
///   Python. [`index`](ShareableList::index) returns `None` where Python raises `ValueError`.
/// - [`new`](ShareableList::new) makes an anonymous segment; Python's
///   `ShareableList(sequence)` makes a named one, which is
///   [`create`](ShareableList::create) here.
/// - The byte layout is mp's own, not Python's `struct` format.
#[derive(Clone)]
pub struct ShareableList {
    /// The segment holding the header and the data.
    shm: Arc<SharedMemory>,
    /// The slots, validated when the list was attached.
    slots: Arc<[Slot]>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new anonymous segment.
    ///
    /// Errors: [`Error::InvalidSize`] if the list is too large to lay out; [`Error::Io`] if
    /// the segment cannot be created.
    pub fn new(items: &[Item]) -> Result<ShareableList> {
        let (slots, size) = layout(items)?;
        let shm = SharedMemory::new(size)?;
        fill(&shm, &slots, items)?;
        Ok(ShareableList { shm: Arc::new(shm), slots: slots.into() })
    }

    /// Creates a list holding `items` in a new named segment `name`, which other processes
    /// attach with [`ShareableList::open`]: Python's `ShareableList(sequence, name=name)`.
    /// Unlink it with `list.shm().unlink()` when done.
    ///
    /// Errors as [`SharedMemory::create`].
    pub fn create(name: &str, items: &[Item]) -> Result<ShareableList> {
        let (slots, size) = layout(items)?;
        let shm = SharedMemory::create(name, size)?;
        if let Err(e) = fill(&shm, &slots, items) {
            // The list never became usable: take its name away again.
            let _ = shm.unlink();
            return Err(e);
        }
        Ok(ShareableList { shm: Arc::new(shm), slots: slots.into() })
    }

    /// Attaches the list in the named segment `name`: Python's `ShareableList(name=name)`.
    ///
    /// Errors as [`SharedMemory::open`], and [`Error::Corrupt`] if the segment does not hold
    /// a valid list.
    pub fn open(name: &str) -> Result<ShareableList> {
        ShareableList::from_shm(SharedMemory::open(name)?)
    }

    /// The list held by `shm` (as [`RawValue::from_shm`](crate::RawValue::from_shm)), validating
    /// its header.
    ///
    /// Errors: [`Error::Corrupt`] if the magic, the count or a capacity is invalid or the
    /// slots do not fit in the segment.
    pub fn from_shm(shm: SharedMemory) -> Result<ShareableList> {
        ShareableList::attach_shared(Arc::new(shm))
    }

    /// [`ShareableList::from_shm`] for a segment already shared (received as an object).
    fn attach_shared(shm: Arc<SharedMemory>) -> Result<ShareableList> {
        let mut magic = [0u8; 8];
        shm.read(0, &mut magic).map_err(|_| corrupt("the segment is too small for a header"))?;
        if magic != MAGIC {
            return Err(corrupt("bad magic number"));
        }
        let count = read_u64(&shm, 8).map_err(|_| corrupt("the segment is too small"))?;
        let count = usize::try_from(count).map_err(|_| corrupt("impossible slot count"))?;
        let data_start = count
            .checked_mul(ENTRY_LEN)
            .and_then(|t| t.checked_add(HEADER_LEN))
            .filter(|&end| end <= shm.size())
            .ok_or_else(|| corrupt(format!("{count} slots do not fit in the segment")))?;
        let mut slots = Vec::with_capacity(count);
        let mut offset = data_start;
        for i in 0..count {
            let capacity = read_u32(&shm, entry(i))
                .map_err(|_| corrupt("the slot table leaves the segment"))?
                as usize;
            if capacity < ALIGNMENT || capacity % ALIGNMENT != 0 {
                return Err(corrupt(format!("slot {i} has an invalid capacity {capacity}")));
            }
            let end = offset
                .checked_add(capacity)
                .filter(|&end| end <= shm.size())
                .ok_or_else(|| corrupt(format!("slot {i} leaves the segment")))?;
            slots.push(Slot { offset, capacity });
            offset = end;
        }
        Ok(ShareableList { shm, slots: slots.into() })
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The capacity in bytes of slot `index`: the longest `str` or `bytes` it can hold.
    pub fn capacity(&self, index: usize) -> Result<usize> {
        Ok(self.slot(index)?.capacity)
    }

    /// The segment holding the list.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// The slot at `index`, or `IndexOutOfRange`.
    fn slot(&self, index: usize) -> Result<Slot> {
        self.slots.get(index).copied().ok_or(Error::IndexOutOfRange { index, len: self.len() })
    }

    /// Checks that the header still starts with the magic number and that slot `index` still
    /// has the capacity it was attached with.
    fn check_header(&self, index: usize, slot: Slot) -> Result<()> {
        let mut magic = [0u8; 8];
        self.shm.read(0, &mut magic)?;
        if magic != MAGIC {
            return Err(corrupt("bad magic number"));
        }
        let capacity = read_u32(&self.shm, entry(index))? as usize;
        if capacity != slot.capacity {
            return Err(corrupt(format!(
                "slot {index} changed capacity from {} to {capacity}",
                slot.capacity
            )));
        }
        Ok(())
    }

    /// A copy of item `index` (Python's `list[index]`).
    ///
    /// Errors: [`Error::IndexOutOfRange`] past the end; [`Error::Corrupt`] if the slot holds
    /// an unknown kind, a length beyond its capacity, a bool other than 0 or 1, or a string
    /// that is not UTF-8.
    pub fn get(&self, index: usize) -> Result<Item> {
        let slot = self.slot(index)?;
        self.check_header(index, slot)?;
        let tag = read_u64(&self.shm, entry(index).saturating_add(8))?;
        let kind = (tag & 0xffff_ffff) as u32;
        let len = (tag >> 32) as usize;
        let word = || read_u64(&self.shm, slot.offset);
        let item = match kind {
            KIND_NONE => Item::None,
            KIND_INT => Item::Int(word()? as i64),
            KIND_FLOAT => Item::Float(f64::from_bits(word()?)),
            KIND_BOOL => match word()? {
                0 => Item::Bool(false),
                1 => Item::Bool(true),
                other => return Err(corrupt(format!("slot {index} holds a bool of {other}"))),
            },
            KIND_STR | KIND_BYTES => {
                if len > slot.capacity {
                    return Err(corrupt(format!(
                        "slot {index} claims {len} bytes but holds at most {}",
                        slot.capacity
                    )));
                }
                let mut bytes = vec![0u8; len];
                self.shm.read(slot.offset, &mut bytes)?;
                if kind == KIND_BYTES {
                    Item::Bytes(bytes)
                } else {
                    Item::Str(String::from_utf8(bytes).map_err(|_| {
                        corrupt(format!("slot {index} holds a string that is not UTF-8"))
                    })?)
                }
            }
            other => return Err(corrupt(format!("slot {index} has an unknown kind {other}"))),
        };
        Ok(item)
    }

    /// Stores `item` as item `index` (Python's `list[index] = item`).
    ///
    /// The kind of a slot may change, as in Python, as long as the new item fits in the
    /// slot's capacity.
    ///
    /// Errors: [`Error::IndexOutOfRange`] past the end; [`Error::TooLong`] if a `str` or
    /// `bytes` value is longer than the slot's capacity; [`Error::Corrupt`] if the header was
    /// overwritten.
    pub fn set(&self, index: usize, item: Item) -> Result<()> {
        let slot = self.slot(index)?;
        store(&self.shm, index, slot, &item)
    }

    /// Copies of all items, in order.
    ///
    /// Errors: [`Error::Corrupt`] if any slot is invalid.
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// The number of items equal to `item` (Python's `count`).
    ///
    /// Errors: [`Error::Corrupt`] if any slot is invalid.
    pub fn count(&self, item: &Item) -> Result<usize> {
        let mut n = 0;
        for i in 0..self.len() {
            if self.get(i)? == *item {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The position of the first item equal to `item`, or `None` if there is none (Python's
    /// `index`, which raises `ValueError` instead).
    ///
    /// Errors: [`Error::Corrupt`] if a slot before the match is invalid.
    pub fn index(&self, item: &Item) -> Result<Option<usize>> {
        for i in 0..self.len() {
            if self.get(i)? == *item {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for i in 0..self.len() {
            match self.get(i) {
                Ok(item) => list.entry(&item),
                Err(_) => list.entry(&format_args!("<corrupt>")),
            };
        }
        list.finish()?;
        write!(f, " in {:?}", self.shm)
    }
}

/// Serialises the list's segment.
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Segment<'a>(&'a Arc<SharedMemory>);
        impl Serialize for Segment<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                mp_process::fdpass::serialize_object(self.0, s)
            }
        }
        let mut st = s.serialize_struct("ShareableList", 1)?;
        st.serialize_field("shm", &Segment(&self.shm))?;
        st.end()
    }
}

/// The serialised shape of a [`ShareableList`].
#[derive(Deserialize)]
#[serde(rename = "ShareableList")]
struct ListWire {
    /// The segment (a shared object).
    #[serde(with = "mp_process::fdpass::serde_object")]
    shm: Arc<SharedMemory>,
}

/// Receives a list, validating its header before any access.
impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let ListWire { shm } = ListWire::deserialize(d)?;
        ShareableList::attach_shared(shm).map_err(|e| crate::shm::refused("ShareableList", e))
    }
}

/// Writes the header and the items into a fresh segment; the magic goes last, so that the
/// list is valid only once it is complete.
fn fill(shm: &SharedMemory, slots: &[Slot], items: &[Item]) -> Result<()> {
    shm.write(8, &(slots.len() as u64).to_le_bytes())?;
    for (i, (slot, item)) in slots.iter().zip(items).enumerate() {
        shm.write(entry(i), &(slot.capacity as u32).to_le_bytes())?;
        store(shm, i, *slot, item)?;
    }
    shm.write(0, &MAGIC)
}

/// Stores `item` in slot `index`: the data first, then the tag in one atomic store.
fn store(shm: &SharedMemory, index: usize, slot: Slot, item: &Item) -> Result<()> {
    let len = item.data_len();
    if len > slot.capacity {
        return Err(Error::TooLong { len, capacity: slot.capacity });
    }
    let kind = match item {
        Item::None => KIND_NONE,
        Item::Int(v) => {
            shm.write(slot.offset, &v.to_le_bytes())?;
            KIND_INT
        }
        Item::Float(v) => {
            shm.write(slot.offset, &v.to_bits().to_le_bytes())?;
            KIND_FLOAT
        }
        Item::Bool(v) => {
            shm.write(slot.offset, &u64::from(*v).to_le_bytes())?;
            KIND_BOOL
        }
        Item::Str(text) => {
            write_padded(shm, slot, text.as_bytes())?;
            KIND_STR
        }
        Item::Bytes(bytes) => {
            write_padded(shm, slot, bytes)?;
            KIND_BYTES
        }
    };
    let stored_len = if matches!(kind, KIND_STR | KIND_BYTES) { len as u64 } else { 0 };
    // The length is at most the capacity, which fits in a `u32` (checked by `layout` and
    // `attach`), so it fits in the tag's high half.
    let tag = u64::from(kind) | (stored_len << 32);
    shm.write(entry(index).saturating_add(8), &tag.to_le_bytes())
}

/// Writes `data` at the start of `slot` and zeros the rest of it.
fn write_padded(shm: &SharedMemory, slot: Slot, data: &[u8]) -> Result<()> {
    shm.write(slot.offset, data)?;
    shm.zero(slot.offset.saturating_add(data.len()), slot.capacity.saturating_sub(data.len()))
}

/// The offset of slot `i`'s entry in the header table.
fn entry(i: usize) -> usize {
    HEADER_LEN.saturating_add(i.saturating_mul(ENTRY_LEN))
}

/// Lays out slots for `items`: their offsets and capacities, and the segment's size.
fn layout(items: &[Item]) -> Result<(Vec<Slot>, usize)> {
    let too_big = || Error::InvalidSize(usize::MAX);
    let mut offset = items.len().checked_mul(ENTRY_LEN).and_then(|t| t.checked_add(HEADER_LEN));
    let mut slots = Vec::with_capacity(items.len());
    for item in items {
        let start = offset.ok_or_else(too_big)?;
        let capacity = item.initial_capacity().ok_or_else(too_big)?;
        if u32::try_from(capacity).is_err() {
            return Err(Error::TooLong { len: item.data_len(), capacity: u32::MAX as usize });
        }
        slots.push(Slot { offset: start, capacity });
        offset = start.checked_add(capacity);
    }
    Ok((slots, offset.ok_or_else(too_big)?))
}

/// Reads a little-endian `u32` at `offset`.
fn read_u32(shm: &SharedMemory, offset: usize) -> Result<u32> {
    let mut b = [0u8; 4];
    shm.read(offset, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a little-endian `u64` at `offset`.
fn read_u64(shm: &SharedMemory, offset: usize) -> Result<u64> {
    let mut b = [0u8; 8];
    shm.read(offset, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A [`Error::Corrupt`] with `why`.
fn corrupt(why: impl Into<String>) -> Error {
    Error::Corrupt(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Item> {
        vec![
            Item::Int(-7),
            Item::Float(2.5),
            Item::Bool(true),
            Item::Str("héllo".into()),
            Item::Bytes(b"\0\x01bytes\0".to_vec()),
            Item::None,
            Item::Str(String::new()),
        ]
    }

    #[test]
    fn roundtrip_and_capacities() {
        let items = sample();
        let list = ShareableList::new(&items).unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(list.to_vec().unwrap(), items);
        // "héllo" is 6 bytes: 8; the 9 bytes of the bytes item: 16; the empty string: 8.
        let caps: Vec<usize> = (0..7).map(|i| list.capacity(i).unwrap()).collect();
        assert_eq!(caps, vec![8, 8, 8, 8, 16, 8, 8]);
        let eight = ShareableList::new(&[Item::from("12345678")]).unwrap();
        assert_eq!(eight.capacity(0).unwrap(), 16);
        assert!(matches!(list.capacity(7), Err(Error::IndexOutOfRange { index: 7, len: 7 })));
    }

    #[test]
    fn kinds_change_within_capacity() {
        let list = ShareableList::new(&sample()).unwrap();
        list.set(0, Item::from("8 bytes!")).unwrap();
        assert_eq!(list.get(0).unwrap(), Item::from("8 bytes!"));
        assert!(matches!(
            list.set(0, Item::from("9 bytes!!")),
            Err(Error::TooLong { len: 9, capacity: 8 })
        ));
        list.set(4, Item::Int(5)).unwrap();
        assert_eq!(list.get(4).unwrap(), Item::Int(5));
        list.set(4, Item::Bytes(vec![9; 16])).unwrap();
        assert_eq!(list.get(4).unwrap(), Item::Bytes(vec![9; 16]));
        list.set(3, Item::None).unwrap();
        assert_eq!(list.get(3).unwrap(), Item::None);
        list.set(5, Item::Bool(false)).unwrap();
        assert_eq!(list.get(5).unwrap(), Item::Bool(false));
        assert!(matches!(list.set(7, Item::None), Err(Error::IndexOutOfRange { .. })));
        assert!(matches!(list.get(99), Err(Error::IndexOutOfRange { .. })));
    }

    #[test]
    fn count_and_index() {
        let list =
            ShareableList::new(&[1i64.into(), "a".into(), 1i64.into(), 1.0f64.into()]).unwrap();
        assert_eq!(list.count(&Item::Int(1)).unwrap(), 2);
        assert_eq!(list.count(&Item::Bool(true)).unwrap(), 0);
        assert_eq!(list.index(&Item::from("a")).unwrap(), Some(1));
        assert_eq!(list.index(&Item::from("b")).unwrap(), None);
        assert_eq!(list.index(&Item::Float(1.0)).unwrap(), Some(3));
        let empty = ShareableList::new(&[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.to_vec().unwrap(), vec![]);
        assert_eq!(Item::from(None::<i64>), Item::None);
        assert_eq!(Item::from(Some(true)), Item::Bool(true));
        assert!(format!("{list:?}").starts_with("[Int(1), Str(\"a\")"));
    }

    /// Writes `bytes` at `offset` of the list's segment.
    fn poke(list: &ShareableList, offset: usize, bytes: &[u8]) {
        list.shm().write(offset, bytes).unwrap();
    }

    #[test]
    fn corrupt_tags_are_errors() {
        let list = ShareableList::new(&sample()).unwrap();
        let tag = |i: usize| entry(i) + 8;
        // An unknown kind is corrupt.
        poke(&list, tag(0), &99u64.to_le_bytes());
        assert!(matches!(list.get(0), Err(Error::Corrupt(_))));
        // So is a string longer than its slot.
        poke(&list, tag(3), &(u64::from(KIND_STR) | (9 << 32)).to_le_bytes());
        assert!(matches!(list.get(3), Err(Error::Corrupt(_))));
        poke(&list, tag(3), &(u64::from(KIND_STR) | (u64::MAX << 32)).to_le_bytes());
        assert!(matches!(list.get(3), Err(Error::Corrupt(_))));
        // So is a string that is not UTF-8.
        poke(&list, list.slots[3].offset, &[0xff, 0xfe]);
        poke(&list, tag(3), &(u64::from(KIND_STR) | (2 << 32)).to_le_bytes());
        assert!(matches!(list.get(3), Err(Error::Corrupt(_))));
        // So is a bool that is neither 0 nor 1.
        poke(&list, list.slots[2].offset, &[2]);
        assert!(matches!(list.get(2), Err(Error::Corrupt(_))));
        // So is a capacity that changed since the list was attached.
        poke(&list, entry(1), &4096u32.to_le_bytes());
        assert!(matches!(list.get(1), Err(Error::Corrupt(_))));
        // The other slots are still fine.
        assert_eq!(list.get(5).unwrap(), Item::None);
        // A bad magic makes every access fail.
        poke(&list, 0, b"garbage!");
        assert!(matches!(list.get(5), Err(Error::Corrupt(_))));
        assert!(matches!(list.to_vec(), Err(Error::Corrupt(_))));
        assert!(format!("{list:?}").contains("<corrupt>"));
    }

    #[test]
    fn corrupt_headers_are_refused_on_attach() {
        let list = ShareableList::new(&sample()).unwrap();
        let clone = || list.shm().try_clone().unwrap();
        ShareableList::from_shm(clone()).unwrap();
        // Counts whose slot table cannot fit are refused.
        for count in [8u64, 1 << 40, u64::MAX, u64::MAX / 16] {
            poke(&list, 8, &count.to_le_bytes());
            assert!(matches!(ShareableList::from_shm(clone()), Err(Error::Corrupt(_))), "{count}");
        }
        poke(&list, 8, &7u64.to_le_bytes());
        // So are capacities that are zero, not multiples of 8, or too large.
        for cap in [0u32, 3, u32::MAX, 4096] {
            poke(&list, entry(6), &cap.to_le_bytes());
            assert!(matches!(ShareableList::from_shm(clone()), Err(Error::Corrupt(_))), "{cap}");
        }
        poke(&list, entry(6), &8u32.to_le_bytes());
        ShareableList::from_shm(clone()).unwrap();
        poke(&list, 0, &[0; 8]);
        assert!(matches!(ShareableList::from_shm(clone()), Err(Error::Corrupt(_))));
        // So is a segment too small for a header.
        let tiny = SharedMemory::new(4).unwrap();
        assert!(matches!(ShareableList::from_shm(tiny), Err(Error::Corrupt(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever bytes a segment holds, attaching and reading never panic.
        #[test]
        fn garbage_never_panics(
            header in proptest::collection::vec(any::<u8>(), 0..200),
            count in 0u64..12,
        ) {
            let shm = SharedMemory::new(256).unwrap();
            shm.write(0, &MAGIC).unwrap();
            shm.write(8, &count.to_le_bytes()).unwrap();
            shm.write(16, &header).unwrap();
            if let Ok(list) = ShareableList::from_shm(shm) {
                for i in 0..list.len() {
                    let _ = list.get(i);
                }
                let _ = list.to_vec();
            }
        }

        /// Items round-trip through their slots.
        #[test]
        fn items_roundtrip(ints in proptest::collection::vec(any::<i64>(), 0..5), s in ".{0,20}") {
            let mut items: Vec<Item> = ints.into_iter().map(Item::Int).collect();
            items.push(Item::Str(s.clone()));
            items.push(Item::Bytes(s.into_bytes()));
            let list = ShareableList::new(&items).unwrap();
            prop_assert_eq!(list.to_vec().unwrap(), items);
        }
    }
}
