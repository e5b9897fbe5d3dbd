//! `Bytes`: a byte buffer that serialises as one byte string.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `Vec<u8>` that serialises as one byte string, for raw data in queue items and messages.
///
/// serde encodes a `Vec<u8>` one element at a time (a loop over the bytes on both sides);
/// `Bytes` is written and read with one copy, as Python's `bytes` objects cross a `Queue`. It
/// dereferences to the `Vec<u8>` and converts to and from it.
///
/// ```
/// use mp_queue::{Bytes, Queue};
///
/// let q = Queue::new()?;
/// q.put(Bytes::from(vec![0u8; 1 << 20]))?;
/// let got: Bytes = q.get()?;
/// assert_eq!(got.len(), 1 << 20);
/// let v: Vec<u8> = got.into();
/// assert!(v.iter().all(|&b| b == 0));
/// # Ok::<(), mp_queue::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The buffer.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Deref for Bytes {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Bytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Bytes(v.to_vec())
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(b: Bytes) -> Self {
        b.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// Accepts a byte string, or a sequence of bytes from formats without byte strings.
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // Reserve no more than a bounded amount from an untrusted size hint.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_encode_as_one_byte_string() {
        let b = Bytes(vec![1, 2, 3]);
        let encoded = postcard::to_stdvec(&b).unwrap();
        assert_eq!(encoded, [3, 1, 2, 3]);
        assert_eq!(encoded, postcard::to_stdvec(&vec![1u8, 2, 3]).unwrap(), "same as Vec<u8>");
        let back: Bytes = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(back, b);
        assert!(postcard::from_bytes::<Bytes>(&[5, 1]).is_err(), "truncated");
    }
}
