//! The one framing used on every byte stream in mp: postcard payloads behind a 4-byte length.
//!
//! A frame is a little-endian `u32` payload length followed by that many payload bytes.
//! Payloads are [postcard] encodings of serde values. The reader checks the announced
//! length against a caller-chosen maximum before it allocates anything, so a hostile or
//! corrupted peer cannot make it reserve more memory than the limit allows.
//!
//! Sockets that also carry file descriptors use the related 8-byte header of
//! [`crate::fdpass`], which shares [`WireError`] with this module.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The default upper bound on the payload of one frame: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// The size in bytes of the length header that precedes every frame's payload.
const HEADER_LEN: usize = 4;

/// Everything that can go wrong while encoding, decoding, sending or receiving frames.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    /// The underlying stream or socket failed.
    Io(io::Error),
    /// A payload, announced or actual, is larger than the allowed maximum.
    Oversized {
        /// The length of the payload in bytes.
        len: u64,
        /// The maximum the caller allowed.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    Truncated {
        /// How many bytes of the frame were needed up to the point of failure.
        expected: usize,
        /// How many bytes of the frame actually arrived.
        got: usize,
    },
    /// A value could not be serialised.
    Encode(postcard::Error),
    /// A value's `Serialize` implementation failed with a message of its own
    /// (`serde::ser::Error::custom`). postcard's error keeps no message, so the encoder
    /// serialises the value once more, into a serializer that keeps it
    /// ([`explain_serialize_failure`]); this is that message.
    EncodeCustom(String),
    /// A payload could not be deserialised into the requested type.
    Decode(postcard::Error),
    /// Decoding succeeded but left bytes of the payload unread.
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// More file descriptors were attached to one frame than a frame can carry.
    TooManyFds {
        /// How many descriptors were attached or announced.
        count: usize,
        /// The most one frame can carry.
        max: usize,
    },
    /// The descriptors received differ from the number the frame header announced,
    /// or the kernel had to drop some of them (`MSG_CTRUNC`).
    FdCountMismatch {
        /// How many descriptors the header announced.
        announced: usize,
        /// How many descriptors actually arrived.
        received: usize,
    },
    /// The kernel dropped descriptors of a frame (`MSG_CTRUNC`): the receiving process has
    /// too many open files (`RLIMIT_NOFILE`). The frame was read whole and dropped; the stream
    /// goes on with the next one.
    FdsDropped {
        /// How many descriptors the header announced.
        announced: usize,
        /// How many arrived.
        received: usize,
    },
    /// A decoded descriptor index refers to no received descriptor, or to one already taken.
    MissingFd {
        /// The index found in the payload.
        index: u32,
    },
    /// A value holding a file descriptor was serialised or deserialised outside
    /// `fdpass::encode_with_fds` or `fdpass::decode_with_fds`.
    NoFdContext,
    /// Something received was refused, for the reason given: a shared object of another kind
    /// than expected, one never defined, a descriptor of the wrong type, a damaged object
    /// table.
    Refused(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error on the wire: {e}"),
            Self::Oversized { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the maximum of {max} bytes")
            }
            Self::Truncated { expected, got } => {
                write!(f, "stream ended inside a frame: expected {expected} bytes but got {got}")
            }
            Self::Encode(e) => write!(f, "could not encode value: {e}"),
            Self::EncodeCustom(message) => write!(f, "could not encode value: {message}"),
            Self::Decode(e) => write!(f, "could not decode value: {e}"),
            Self::TrailingBytes { extra } => {
                write!(f, "decoded value left {extra} trailing bytes in the payload")
            }
            Self::TooManyFds { count, max } => write!(
                f,
                "{count} file descriptors attached to one frame, but at most {max} are allowed"
            ),
            Self::FdCountMismatch { announced, received } => write!(
                f,
                "frame announced {announced} file descriptors but {received} arrived \
                 (ancillary data missing or truncated)"
            ),
            Self::FdsDropped { announced, received } => write!(
                f,
                "the kernel dropped descriptors of a message ({received} of {announced} arrived): \
                 this process has too many open files"
            ),
            Self::MissingFd { index } => write!(
                f,
                "decoded file descriptor index {index} has no received descriptor \
                 (out of range or already taken)"
            ),
            Self::NoFdContext => f.write_str(
                "file descriptors can only be serialised or deserialised through mp's \
                 fd-carrying encoder (fdpass::encode_with_fds / fdpass::decode_with_fds)",
            ),
            Self::Refused(why) => write!(f, "refused what was received: {why}"),
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Encode(e) | Self::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<rustix::io::Errno> for WireError {
    fn from(e: rustix::io::Errno) -> Self {
        Self::Io(e.into())
    }
}

/// Serialises `value` to postcard bytes, without any frame header.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_stdvec(value).map_err(|e| encode_error(e, value))
}

/// The [`WireError`] for a postcard encoding of `value` that failed with `error`: when the
/// value's own `Serialize` failed (postcard's `SerdeSerCustom`, which keeps no message), an
/// [`EncodeCustom`](WireError::EncodeCustom) with the message it gave, recovered by
/// [`explain_serialize_failure`]; otherwise `Encode(error)`.
///
/// Every encoder of mp turns its postcard errors into [`WireError`]s through this function,
/// so that a value that refuses to serialise says why, as CPython's pickling errors do.
pub fn encode_error<T: Serialize + ?Sized>(error: postcard::Error, value: &T) -> WireError {
    if matches!(error, postcard::Error::SerdeSerCustom) {
        if let Some(message) = explain_serialize_failure(value) {
            return WireError::EncodeCustom(message);
        }
    }
    WireError::Encode(error)
}

/// Serialises `value` into a serializer that writes nothing and whose error keeps the
/// message of `serde::ser::Error::custom`, and returns that message if serialisation fails.
///
/// For the failure path only: postcard's error type drops custom messages, so after a
/// failed encode the value is serialised once more to learn why. The serializer behaves as
/// postcard's does where a `Serialize` implementation can tell (it is not human-readable),
/// so the value takes the same path and fails at the same point. A `Serialize` with side
/// effects runs them twice; one that succeeds the second time gives `None`.
pub fn explain_serialize_failure<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(discard::Discard).err().map(|discard::Custom(message)| message)
}

/// The serializer of [`explain_serialize_failure`]: accepts everything, writes nothing, and
/// fails only with the custom errors of the value being serialised.
mod discard {
    use std::fmt;

    use serde::Serialize;
    use serde::ser::{self, Serializer};

    /// A custom serialisation error with its message.
    #[derive(Debug)]
    pub(super) struct Custom(pub(super) String);

    impl fmt::Display for Custom {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Custom {}

    impl ser::Error for Custom {
        fn custom<M: fmt::Display>(msg: M) -> Self {
            Custom(msg.to_string())
        }
    }

    /// The serializer, and each of its compound serializers.
    pub(super) struct Discard;

    type Done = Result<(), Custom>;

    impl Serializer for Discard {
        type Ok = ();
        type Error = Custom;
        type SerializeSeq = Discard;
        type SerializeTuple = Discard;
        type SerializeTupleStruct = Discard;
        type SerializeTupleVariant = Discard;
        type SerializeMap = Discard;
        type SerializeStruct = Discard;
        type SerializeStructVariant = Discard;

        fn serialize_bool(self, _: bool) -> Done {
            Ok(())
        }
        fn serialize_i8(self, _: i8) -> Done {
            Ok(())
        }
        fn serialize_i16(self, _: i16) -> Done {
            Ok(())
        }
        fn serialize_i32(self, _: i32) -> Done {
            Ok(())
        }
        fn serialize_i64(self, _: i64) -> Done {
            Ok(())
        }
        fn serialize_i128(self, _: i128) -> Done {
            Ok(())
        }
        fn serialize_u8(self, _: u8) -> Done {
            Ok(())
        }
        fn serialize_u16(self, _: u16) -> Done {
            Ok(())
        }
        fn serialize_u32(self, _: u32) -> Done {
            Ok(())
        }
        fn serialize_u64(self, _: u64) -> Done {
            Ok(())
        }
        fn serialize_u128(self, _: u128) -> Done {
            Ok(())
        }
        fn serialize_f32(self, _: f32) -> Done {
            Ok(())
        }
        fn serialize_f64(self, _: f64) -> Done {
            Ok(())
        }
        fn serialize_char(self, _: char) -> Done {
            Ok(())
        }
        fn serialize_str(self, _: &str) -> Done {
            Ok(())
        }
        fn serialize_bytes(self, _: &[u8]) -> Done {
            Ok(())
        }
        fn serialize_none(self) -> Done {
            Ok(())
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
            value.serialize(Discard)
        }
        fn serialize_unit(self) -> Done {
            Ok(())
        }
        fn serialize_unit_struct(self, _: &'static str) -> Done {
            Ok(())
        }
        fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Done {
            Ok(())
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            value: &T,
        ) -> Done {
            value.serialize(Discard)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            value: &T,
        ) -> Done {
            value.serialize(Discard)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn serialize_tuple(self, _: usize) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Discard, Custom> {
            Ok(Discard)
        }
        fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Done {
            Ok(())
        }
        fn is_human_readable(&self) -> bool {
            // As postcard: values that serialise differently for humans take postcard's path.
            false
        }
    }

    /// The compound serializers whose elements are values alone: each element is discarded.
    macro_rules! discard_elements {
        ($($trait:ident :: $method:ident),*) => {$(
            impl ser::$trait for Discard {
                type Ok = ();
                type Error = Custom;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
                    value.serialize(Discard)
                }
                fn end(self) -> Done {
                    Ok(())
                }
            }
        )*};
    }

    discard_elements!(
        SerializeSeq::serialize_element,
        SerializeTuple::serialize_element,
        SerializeTupleStruct::serialize_field,
        SerializeTupleVariant::serialize_field
    );

    impl ser::SerializeMap for Discard {
        type Ok = ();
        type Error = Custom;
        fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
            key.serialize(Discard)
        }
        fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
            value.serialize(Discard)
        }
        fn end(self) -> Done {
            Ok(())
        }
    }

    /// The compound serializers whose fields are named: each field is discarded.
    macro_rules! discard_fields {
        ($($trait:ident),*) => {$(
            impl ser::$trait for Discard {
                type Ok = ();
                type Error = Custom;
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    _: &'static str,
                    value: &T,
                ) -> Done {
                    value.serialize(Discard)
                }
                fn end(self) -> Done {
                    Ok(())
                }
            }
        )*};
    }

    discard_fields!(SerializeStruct, SerializeStructVariant);
}

/// Deserialises a value from postcard bytes, failing if any bytes are left unread.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(WireError::Decode)?;
    if rest.is_empty() { Ok(value) } else { Err(WireError::TrailingBytes { extra: rest.len() }) }
}

/// Returns the 4-byte header for a payload of `len` bytes, or `Oversized`.
fn header_for(len: usize, max: usize) -> Result<[u8; HEADER_LEN], WireError> {
    let oversized = || WireError::Oversized { len: u64::try_from(len).unwrap_or(u64::MAX), max };
    if len > max {
        return Err(oversized());
    }
    let len32 = u32::try_from(len).map_err(|_| oversized())?;
    Ok(len32.to_le_bytes())
}

/// Serialises `value` into one complete frame (header and payload) in a single buffer.
///
/// The payload is encoded directly after a placeholder header, which is then patched
/// with the real length, so the bytes are never copied a second time.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Vec<u8>, WireError> {
    let buf = vec![0u8; HEADER_LEN];
    let mut buf = postcard::to_extend(value, buf).map_err(|e| encode_error(e, value))?;
    let payload_len = buf.len().saturating_sub(HEADER_LEN);
    let header = header_for(payload_len, max)?;
    if let Some(slot) = buf.get_mut(..HEADER_LEN) {
        slot.copy_from_slice(&header);
    }
    Ok(buf)
}

/// Writes one frame carrying `payload` to `w`.
///
/// Fails with `Oversized` if the payload is longer than `max` or than `u32::MAX`.
/// The header and payload are written with `write_all`, which retries interruptions.
pub fn write_frame<W: Write>(w: &mut W, payload: &[u8], max: usize) -> Result<(), WireError> {
    let header = header_for(payload.len(), max)?;
    w.write_all(&header)?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads into `buf` until it is full or the stream ends, retrying interruptions.
///
/// Returns how many bytes were read; fewer than `buf.len()` means end of stream.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one frame from `r` and returns its payload.
///
/// Returns `Ok(None)` if the stream ends cleanly before the first header byte, and
/// `Truncated` if it ends anywhere inside a frame. The announced length is checked
/// against `max` before any memory is reserved for the payload, and the buffer only
/// grows as bytes actually arrive.
pub fn read_frame<R: Read>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(WireError::Truncated { expected: HEADER_LEN, got });
    }
    let announced = u32::from_le_bytes(header);
    let len = match usize::try_from(announced) {
        Ok(len) if len <= max => len,
        _ => {
            return Err(WireError::Oversized { len: u64::from(announced), max });
        }
    };
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    r.by_ref().take(u64::from(announced)).read_to_end(&mut payload)?;
    if payload.len() < len {
        return Err(WireError::Truncated {
            expected: HEADER_LEN.saturating_add(len),
            got: HEADER_LEN.saturating_add(payload.len()),
        });
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::io::Cursor;

    /// A non-recursive message type used by the round-trip and fuzz tests.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping,
        Text(String),
        Blob(Vec<u8>),
        Pair { a: u64, b: i32 },
        Opt(Option<(u8, String)>),
        List(Vec<u32>),
        Float(f64),
    }

    fn roundtrip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        let frame = encode_frame(value, DEFAULT_MAX_FRAME).unwrap();
        let mut cursor = Cursor::new(frame.clone());
        let payload = read_frame(&mut cursor, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(payload, encode(value).unwrap());
        assert_eq!(&decode::<T>(&payload).unwrap(), value);
        assert!(read_frame(&mut cursor, DEFAULT_MAX_FRAME).unwrap().is_none());

        let mut written = Vec::new();
        write_frame(&mut written, &payload, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(written, frame);
    }

    #[test]
    fn roundtrips_of_several_types() {
        roundtrip(&());
        roundtrip(&0u8);
        roundtrip(&u64::MAX);
        roundtrip(&-5i64);
        roundtrip(&String::from("hello, wire"));
        roundtrip(&vec![1u32, 2, 3]);
        roundtrip(&(1u8, String::from("x"), Some(2.5f64)));
        roundtrip(&Msg::Ping);
        roundtrip(&Msg::Pair { a: 7, b: -7 });
        roundtrip(&Msg::Opt(Some((3, "three".into()))));
        roundtrip(&Msg::Blob(vec![0xAB; 100_000]));
    }

    #[test]
    fn empty_payload_is_a_real_frame() {
        let frame = encode_frame(&(), 16).unwrap();
        assert_eq!(frame, vec![0, 0, 0, 0]);
        let mut cursor = Cursor::new(frame);
        assert_eq!(read_frame(&mut cursor, 16).unwrap(), Some(Vec::new()));
        assert_eq!(read_frame(&mut cursor, 16).unwrap(), None);
    }

    #[test]
    fn several_frames_in_a_row() {
        let mut stream = Vec::new();
        for i in 0..10u32 {
            write_frame(&mut stream, &encode(&i).unwrap(), 64).unwrap();
        }
        let mut cursor = Cursor::new(stream);
        for i in 0..10u32 {
            let payload = read_frame(&mut cursor, 64).unwrap().unwrap();
            assert_eq!(decode::<u32>(&payload).unwrap(), i);
        }
        assert!(read_frame(&mut cursor, 64).unwrap().is_none());
    }

    #[test]
    fn truncation_at_every_offset() {
        let frame = encode_frame(&Msg::Text("truncate me".into()), 1024).unwrap();
        for cut in 0..frame.len() {
            let mut cursor = Cursor::new(&frame[..cut]);
            match read_frame(&mut cursor, 1024) {
                Ok(None) => assert_eq!(cut, 0),
                Err(WireError::Truncated { expected, got }) => {
                    assert!(cut > 0);
                    assert_eq!(got, cut);
                    assert!(expected > got);
                }
                other => panic!("cut at {cut}: unexpected {other:?}"),
            }
        }
        let mut cursor = Cursor::new(&frame[..]);
        assert!(read_frame(&mut cursor, 1024).unwrap().is_some());
    }

    #[test]
    fn oversized_announcement_is_rejected_before_allocating() {
        // Only the header is present: if the reader trusted the length it would
        // either try to reserve 4 GiB or report truncation, not `Oversized`.
        let header = u32::MAX.to_le_bytes();
        let mut cursor = Cursor::new(header);
        match read_frame(&mut cursor, DEFAULT_MAX_FRAME) {
            Err(WireError::Oversized { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, DEFAULT_MAX_FRAME);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut cursor = Cursor::new(11u32.to_le_bytes());
        assert!(matches!(
            read_frame(&mut cursor, 10),
            Err(WireError::Oversized { len: 11, max: 10 })
        ));
    }

    #[test]
    fn oversized_on_write() {
        let mut out = Vec::new();
        assert!(matches!(
            write_frame(&mut out, &[0u8; 11], 10),
            Err(WireError::Oversized { len: 11, max: 10 })
        ));
        assert!(out.is_empty());
        assert!(matches!(
            encode_frame(&"0123456789ab", 10),
            Err(WireError::Oversized { len: 13, max: 10 })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&7u32).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(decode::<u32>(&bytes), Err(WireError::TrailingBytes { extra: 3 })));
    }

    #[test]
    fn errors_display_and_chain() {
        let e = WireError::from(io::Error::other("boom"));
        assert!(e.to_string().contains("boom"));
        assert!(std::error::Error::source(&e).is_some());
        let e = WireError::from(rustix::io::Errno::PIPE);
        assert!(matches!(e, WireError::Io(_)));
        let e = decode::<String>(&[5, b'a']).unwrap_err();
        assert!(matches!(e, WireError::Decode(_)));
        assert!(std::error::Error::source(&e).is_some());
        assert!(WireError::NoFdContext.to_string().contains("fd-carrying"));
    }

    /// Serialises as a string unless it holds `None`: then fails with a custom message.
    #[derive(Debug)]
    struct Refuses(Option<&'static str>);

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Some(text) => s.serialize_str(text),
                None => Err(serde::ser::Error::custom("Refuses(None) does not serialise")),
            }
        }
    }

    /// Every compound form serde has, with a value that fails deep inside.
    #[derive(Serialize)]
    enum Deep {
        Struct { ok: Refuses, list: Vec<Option<(u128, Refuses)>> },
        Map(std::collections::BTreeMap<u8, Vec<Refuses>>),
    }

    #[test]
    fn custom_serialise_messages_are_kept() {
        let message = "Refuses(None) does not serialise";
        assert_eq!(explain_serialize_failure(&Refuses(Some("fine"))), None);
        assert_eq!(explain_serialize_failure(&Refuses(None)).as_deref(), Some(message));
        let deep = Deep::Struct {
            ok: Refuses(Some("a")),
            list: vec![Some((u128::MAX, Refuses(Some("b")))), None, Some((1, Refuses(None)))],
        };
        assert_eq!(explain_serialize_failure(&deep).as_deref(), Some(message));
        let map = Deep::Map([(1, vec![Refuses(Some("c"))]), (2, vec![Refuses(None)])].into());
        assert_eq!(explain_serialize_failure(&map).as_deref(), Some(message));

        // Both encoders say why, where postcard alone says "Serde Serialization Error".
        assert!(postcard::to_stdvec(&deep).unwrap_err().to_string().contains("Serde"));
        let e = encode(&deep).unwrap_err();
        assert!(matches!(&e, WireError::EncodeCustom(m) if m == message), "{e:?}");
        assert!(e.to_string().contains(message), "{e}");
        let e = encode_frame(&map, DEFAULT_MAX_FRAME).unwrap_err();
        assert!(e.to_string().contains(message), "{e}");
        // Other postcard errors stay as they are, unexplained.
        let e = encode_error(postcard::Error::SerializeBufferFull, &deep);
        assert!(matches!(e, WireError::Encode(postcard::Error::SerializeBufferFull)));
        // A value that serialises on the second try has nothing to explain.
        let e = encode_error(postcard::Error::SerdeSerCustom, &Refuses(Some("x")));
        assert!(matches!(e, WireError::Encode(postcard::Error::SerdeSerCustom)));
    }

    /// A reader that fails with `Interrupted` before every successful read.
    struct Interrupting<R> {
        inner: R,
        flip: bool,
    }

    impl<R: Read> Read for Interrupting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.flip = !self.flip;
            if self.flip {
                return Err(ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(1);
            self.inner.read(&mut buf[..n])
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let frame = encode_frame(&Msg::List(vec![1, 2, 3]), 64).unwrap();
        let mut r = Interrupting { inner: Cursor::new(frame), flip: false };
        let payload = read_frame(&mut r, 64).unwrap().unwrap();
        assert_eq!(decode::<Msg>(&payload).unwrap(), Msg::List(vec![1, 2, 3]));
        assert!(read_frame(&mut r, 64).unwrap().is_none());
    }

    fn msg_strategy() -> impl Strategy<Value = Msg> {
        prop_oneof![
            Just(Msg::Ping),
            ".{0,20}".prop_map(Msg::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Msg::Blob),
            (any::<u64>(), any::<i32>()).prop_map(|(a, b)| Msg::Pair { a, b }),
            proptest::option::of((any::<u8>(), ".{0,8}")).prop_map(Msg::Opt),
            proptest::collection::vec(any::<u32>(), 0..16).prop_map(Msg::List),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Msg::Float),
        ]
    }

    /// Feeds arbitrary bytes through the whole receive path; only errors may come out.
    fn read_and_decode(bytes: &[u8]) {
        let mut cursor = Cursor::new(bytes);
        while let Ok(Some(payload)) = read_frame(&mut cursor, 4096) {
            let _ = decode::<Msg>(&payload);
        }
        let _ = decode::<Msg>(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            read_and_decode(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(
            msg in msg_strategy(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut frame = encode_frame(&msg, 4096).unwrap();
            let len = frame.len();
            for (at, byte) in flips {
                frame[at % len] ^= byte;
            }
            frame.truncate(cut % (len + 1));
            read_and_decode(&frame);
        }

        #[test]
        fn valid_frames_roundtrip(msg in msg_strategy()) {
            let frame = encode_frame(&msg, 4096).unwrap();
            let mut cursor = Cursor::new(frame);
            let payload = read_frame(&mut cursor, 4096).unwrap().unwrap();
            prop_assert_eq!(decode::<Msg>(&payload).unwrap(), msg);
        }
    }
}
