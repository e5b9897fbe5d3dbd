//! File descriptors carried out of band (`SCM_RIGHTS`) beside framed bytes on Unix sockets.
//!
//! Two layers live here:
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
//!
//! After any receive error other than a clean end of stream, the stream position is
//! unspecified and the socket should be closed.

use std::cell::Cell;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::WireError;

/// The most descriptors one frame may carry; this is the kernel's `SCM_MAX_FD`.
pub const MAX_FDS_PER_FRAME: usize = 253;

/// The size in bytes of the frame header: payload length and descriptor count.
const HEADER_LEN: usize = 8;

/// The size of the ancillary buffer needed for a full frame's worth of descriptors.
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_FRAME));

/// Payloads up to this size are read into a zeroed buffer with `recv`; larger ones without
/// zero-filling, through a duplicate of the socket.
const SMALL_PAYLOAD: usize = 64 * 1024;

/// The payload buffer reserved before any byte arrives, at most; it grows (doubling) as bytes
/// arrive, so that a false announcement cannot make a receiver reserve much memory.
const RECV_CHUNK: usize = 1024 * 1024;

/// Builds the 8-byte header, checking the payload length and the descriptor count.
fn frame_header(len: usize, fd_count: usize, max: usize) -> Result<[u8; HEADER_LEN], WireError> {
    if fd_count > MAX_FDS_PER_FRAME {
        return Err(WireError::TooManyFds { count: fd_count, max: MAX_FDS_PER_FRAME });
    }
    let oversized = || WireError::Oversized { len: u64::try_from(len).unwrap_or(u64::MAX), max };
    if len > max {
        return Err(oversized());
    }
    let len32 = u32::try_from(len).map_err(|_| oversized())?;
    // The count is at most `MAX_FDS_PER_FRAME`, so it always fits.
    let count32 = u32::try_from(fd_count).unwrap_or(u32::MAX);
    let mut header = [0u8; HEADER_LEN];
    let (len_part, count_part) = header.split_at_mut(4);
    len_part.copy_from_slice(&len32.to_le_bytes());
    count_part.copy_from_slice(&count32.to_le_bytes());
    Ok(header)
}

/// Sends one frame holding `payload` and `fds` over the stream socket `sock`.
///
/// The descriptors are attached as `SCM_RIGHTS` to the first `sendmsg`, which also
/// carries the header; the header and payload go out as one vectored write, so a
/// small frame costs one system call. Partial writes are continued without
/// ancillary data, interruptions are retried, and `MSG_NOSIGNAL` turns a closed peer
/// into an `EPIPE` error instead of a signal. The caller keeps its descriptors; the
/// receiver gets duplicates.
///
/// Fails with `TooManyFds` above [`MAX_FDS_PER_FRAME`] descriptors and with
/// `Oversized` if the payload is longer than `max` or than `u32::MAX`.
pub fn send_frame(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
    max: usize,
) -> Result<(), WireError> {
    let header = frame_header(payload.len(), fds.len(), max)?;
    let total = HEADER_LEN.saturating_add(payload.len());

    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut with_fds = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !with_fds.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(WireError::TooManyFds { count: fds.len(), max: MAX_FDS_PER_FRAME });
    }
    let mut no_fds = SendAncillaryBuffer::default();

    let mut sent = 0usize;
    while sent < total {
        let header_rest = header.get(sent..).unwrap_or(&[]);
        let payload_rest = payload.get(sent.saturating_sub(HEADER_LEN)..).unwrap_or(&[]);
        let iov = [IoSlice::new(header_rest), IoSlice::new(payload_rest)];
        let control = if sent == 0 { &mut with_fds } else { &mut no_fds };
        match rustix::net::sendmsg(sock, &iov, control, SendFlags::NOSIGNAL) {
            Ok(0) => {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "socket accepted no bytes of the frame",
                )));
            }
            Ok(n) => sent += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives one frame from the stream socket `sock`, with the descriptors that rode
/// along with it.
///
/// Returns `Ok(None)` if the peer closed the stream cleanly before the first header
/// byte, and `Truncated` if the stream ends inside a frame. Received descriptors are
/// owned (and close-on-exec) from the moment they arrive, so every error path closes
/// them. The ancillary data must match the header's count exactly: missing or
/// kernel-truncated descriptors (`MSG_CTRUNC`) give `FdCountMismatch`, and a count
/// above [`MAX_FDS_PER_FRAME`] gives `TooManyFds`. The announced length is checked
/// against `max` before the payload buffer is allocated, and the buffer grows only as
/// bytes arrive.
// The tuple return type is the documented API, so the complexity lint is waived here.
#[allow(clippy::type_complexity)]
pub fn recv_frame(
    sock: BorrowedFd<'_>,
    max: usize,
) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>, WireError> {
    match recv_frame_inner(sock, max, true)? {
        Received::Frame(payload, fds) => Ok(Some((payload, fds))),
        Received::Eof | Received::WouldBlock => Ok(None),
    }
}

/// What [`try_recv_frame`] found.
#[derive(Debug)]
pub enum Received {
    /// A whole frame: its payload and descriptors.
    Frame(Vec<u8>, Vec<OwnedFd>),
    /// The peer closed the stream before the first header byte.
    Eof,
    /// No byte of a frame has arrived yet.
    WouldBlock,
}

/// As [`recv_frame`], but returns [`Received::WouldBlock`] at once if no byte of the next
/// frame has arrived; once the first byte is there, it waits for the rest of the frame. For
/// receivers that poll for a while before they sleep: the look and the read of the header
/// are one system call.
pub fn try_recv_frame(sock: BorrowedFd<'_>, max: usize) -> Result<Received, WireError> {
    recv_frame_inner(sock, max, false)
}

/// [`recv_frame`] and [`try_recv_frame`]: `wait` says whether to block for the first byte.
fn recv_frame_inner(sock: BorrowedFd<'_>, max: usize, wait: bool) -> Result<Received, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0usize;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut ctrunc = false;
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];

    while got < HEADER_LEN {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let Some(rest) = header.get_mut(got..) else {
            break;
        };
        let mut iov = [IoSliceMut::new(rest)];
        let flags = if got == 0 && !wait {
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
        } else {
            RecvFlags::CMSG_CLOEXEC
        };
        let msg = match rustix::net::recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if got == 0 && !wait => return Ok(Received::WouldBlock),
            Err(e) => return Err(e.into()),
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            ctrunc = true;
        }
        if msg.bytes == 0 {
            if got == 0 && fds.is_empty() && !ctrunc {
                return Ok(Received::Eof);
            }
            return Err(WireError::Truncated { expected: HEADER_LEN, got });
        }
        got += msg.bytes;
    }

    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let announced_len = u32::from_le_bytes([l0, l1, l2, l3]);
    let announced_fds = usize::try_from(u32::from_le_bytes([c0, c1, c2, c3])).unwrap_or(usize::MAX);

    if ctrunc {
        return Err(WireError::FdCountMismatch { announced: announced_fds, received: fds.len() });
    }
    if announced_fds > MAX_FDS_PER_FRAME {
        return Err(WireError::TooManyFds { count: announced_fds, max: MAX_FDS_PER_FRAME });
    }
    if announced_fds != fds.len() {
        return Err(WireError::FdCountMismatch { announced: announced_fds, received: fds.len() });
    }
    let len = match usize::try_from(announced_len) {
        Ok(len) if len <= max => len,
        _ => {
            return Err(WireError::Oversized { len: u64::from(announced_len), max });
        }
    };

    // A small payload is read into a zeroed buffer; a large one straight into the vector's
    // spare capacity (no zero-filling), at most `len` bytes, growing it as bytes arrive: from
    // RECV_CHUNK, doubling. `read_to_end` on a `File` retries interrupted reads and stops at
    // `len` (the `take`) or end of file.
    let mut payload: Vec<u8>;
    if len <= SMALL_PAYLOAD {
        payload = vec![0u8; len];
        let mut filled = 0;
        while let Some(rest) = payload.get_mut(filled..).filter(|r| !r.is_empty()) {
            match rustix::net::recv(sock, rest, RecvFlags::empty()) {
                Ok((0, _)) => break,
                Ok((n, _)) => filled += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        payload.truncate(filled);
    } else {
        payload = Vec::with_capacity(len.min(RECV_CHUNK));
        let file = std::fs::File::from(sock.try_clone_to_owned()?);
        let expected = u64::try_from(len).unwrap_or(u64::MAX);
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, expected), &mut payload)?;
    }
    if payload.len() < len {
        return Err(WireError::Truncated {
            expected: HEADER_LEN.saturating_add(len),
            got: HEADER_LEN.saturating_add(payload.len()),
        });
    }
    Ok(Received::Frame(payload, fds))
}

/// What the current thread is doing with descriptors met during (de)serialisation.
enum Mode {
    /// No fd-carrying encode or decode is in progress.
    Idle,
    /// Encoding: serialised descriptors are duplicated into this list.
    Sink(Vec<OwnedFd>),
    /// Decoding: deserialised indices take their descriptor from this list.
    Source(Vec<Option<OwnedFd>>),
}

/// The per-thread state of the fd-carrying encoder and decoder.
struct Context {
    /// Whether descriptors are being collected, handed out, or neither.
    mode: Mode,
    /// The precise error behind the last serde custom error raised in this context,
    /// kept because postcard's error type drops custom messages.
    failure: Option<WireError>,
}

impl Context {
    /// A context in which no descriptor may be serialised or deserialised.
    const fn idle() -> Self {
        Self { mode: Mode::Idle, failure: None }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::idle()
    }
}

thread_local! {
    static CONTEXT: Cell<Context> = const { Cell::new(Context::idle()) };
}

/// Runs `f` on this thread's context, or returns `None` if the thread-local storage
/// is already gone (during thread teardown).
fn with_context<R>(f: impl FnOnce(&mut Context) -> R) -> Option<R> {
    CONTEXT
        .try_with(|cell| {
            let mut ctx = cell.take();
            let result = f(&mut ctx);
            cell.set(ctx);
            result
        })
        .ok()
}

/// Installs a context for the duration of one encode or decode and puts the previous
/// one back afterwards, also when the call fails or unwinds, so nesting is safe.
struct ContextGuard {
    /// The context that was active before this guard installed its own.
    previous: Option<Context>,
}

impl ContextGuard {
    /// Makes `ctx` the current thread's context.
    fn install(ctx: Context) -> Result<Self, WireError> {
        let previous =
            CONTEXT.try_with(|cell| cell.replace(ctx)).map_err(|_| WireError::NoFdContext)?;
        Ok(Self { previous: Some(previous) })
    }

    /// Restores the previous context and returns the one this guard installed.
    fn finish(mut self) -> Context {
        let previous = self.previous.take().unwrap_or_default();
        CONTEXT.try_with(|cell| cell.replace(previous)).unwrap_or_default()
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            // The replaced context is dropped here, closing any descriptors it held.
            let _ = CONTEXT.try_with(|cell| cell.replace(previous));
        }
    }
}

/// Records `err` as the reason for a serde failure in the active context and
/// returns its message for the serde custom error.
fn fail(ctx: &mut Context, err: WireError) -> String {
    let message = err.to_string();
    if !matches!(ctx.mode, Mode::Idle) {
        ctx.failure = Some(err);
    }
    message
}

/// Duplicates `fd` into the active sink and returns its index there.
fn stash_fd(fd: BorrowedFd<'_>) -> Result<u32, String> {
    with_context(|ctx| {
        let result = match &mut ctx.mode {
            Mode::Sink(sink) => match u32::try_from(sink.len()) {
                Ok(index) => match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
                    Ok(dup) => {
                        sink.push(dup);
                        Ok(index)
                    }
                    Err(e) => Err(WireError::from(e)),
                },
                Err(_) => Err(WireError::TooManyFds { count: sink.len(), max: MAX_FDS_PER_FRAME }),
            },
            Mode::Idle | Mode::Source(_) => Err(WireError::NoFdContext),
        };
        result.map_err(|err| fail(ctx, err))
    })
    .unwrap_or_else(|| Err(WireError::NoFdContext.to_string()))
}

/// Takes descriptor `index` out of the active source.
fn take_fd(index: u32) -> Result<OwnedFd, String> {
    with_context(|ctx| {
        let result = match &mut ctx.mode {
            Mode::Source(source) => usize::try_from(index)
                .ok()
                .and_then(|i| source.get_mut(i))
                .and_then(Option::take)
                .ok_or(WireError::MissingFd { index }),
            Mode::Idle | Mode::Sink(_) => Err(WireError::NoFdContext),
        };
        result.map_err(|err| fail(ctx, err))
    })
    .unwrap_or_else(|| Err(WireError::NoFdContext.to_string()))
}

/// Serde adapters for `OwnedFd` fields, for use as
/// `#[serde(with = "mp_process::fdpass::serde_fd")]`.
///
/// Inside [`encode_with_fds`] a descriptor is duplicated into
/// the out-of-band list and serialised as its `u32` index; inside
/// [`decode_with_fds`] the index takes the matching received
/// descriptor. Anywhere else both functions return a serde error saying that
/// descriptors can only cross through mp's fd-carrying encoder.
pub mod serde_fd {
    use std::os::fd::{AsFd, OwnedFd};

    use serde::{Deserialize, Deserializer, Serializer, de, ser};

    /// Serialises `fd` as its index in the active fd sink.
    pub fn serialize<S: Serializer>(fd: &OwnedFd, s: S) -> Result<S::Ok, S::Error> {
        let index = super::stash_fd(fd.as_fd()).map_err(<S::Error as ser::Error>::custom)?;
        s.serialize_u32(index)
    }

    /// Deserialises an index and takes the matching descriptor from the active fd source.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
        let index = u32::deserialize(d)?;
        super::take_fd(index).map_err(<D::Error as de::Error>::custom)
    }
}

/// Serialises `value` with postcard, moving every descriptor it holds out of band.
///
/// Returns the bytes and duplicates (close-on-exec) of the descriptors, in the order
/// their indices appear in the bytes; the value keeps its own descriptors. Calls may
/// nest: each has its own list. A descriptor met outside this function is an error.
/// The number of descriptors is not limited here; [`send_frame`] enforces
/// [`MAX_FDS_PER_FRAME`].
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
    let guard = ContextGuard::install(Context { mode: Mode::Sink(Vec::new()), failure: None })?;
    // A failure is explained inside the context, so that the value's descriptors serialise
    // again and the replay stops where the encode did.
    let result = postcard::serialize_with_flavor(value, flavor)
        .map_err(|e| crate::wire::encode_error(e, value));
    let ctx = guard.finish();
    match result {
        Ok(out) => match ctx.mode {
            Mode::Sink(fds) => Ok((out, fds)),
            Mode::Idle | Mode::Source(_) => Ok((out, Vec::new())),
        },
        Err(e) => Err(ctx.failure.unwrap_or(e)),
    }
}

/// Deserialises a value from postcard `bytes`, giving it descriptors from `fds`.
///
/// Index `i` in the bytes takes `fds[i]`; an index out of range or taken twice fails
/// with `MissingFd`. Trailing bytes fail with `TrailingBytes`. Descriptors that the
/// value did not take are closed before this function returns.
pub fn decode_with_fds<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, WireError> {
    let guard = ContextGuard::install(Context {
        mode: Mode::Source(fds.into_iter().map(Some).collect()),
        failure: None,
    })?;
    let result = postcard::take_from_bytes::<T>(bytes);
    let ctx = guard.finish();
    match result {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(WireError::TrailingBytes { extra: rest.len() }),
        Err(e) => Err(ctx.failure.unwrap_or(WireError::Decode(e))),
    }
}

/// A borrowed descriptor that serialises through [`serde_fd`]: for `Serialize`
/// implementations that send a descriptor they keep (the value stays usable; the receiver
/// gets a duplicate).
#[derive(Debug, Clone, Copy)]
pub struct FdRef<'a>(pub &'a OwnedFd);

impl Serialize for FdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_fd::serialize(self.0, s)
    }
}

/// A file descriptor to hand to another process inside a serialised value.
///
/// It serialises through [`serde_fd`], so it only crosses through
/// [`encode_with_fds`] / [`decode_with_fds`] (and [`send_value`] / [`recv_value`]).
#[derive(Debug)]
pub struct PassFd(pub OwnedFd);

impl PassFd {
    /// Returns the descriptor.
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for PassFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<OwnedFd> for PassFd {
    fn from(fd: OwnedFd) -> Self {
        Self(fd)
    }
}

impl From<PassFd> for OwnedFd {
    fn from(fd: PassFd) -> Self {
        fd.0
    }
}

impl Serialize for PassFd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_fd::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PassFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_fd::deserialize(d).map(Self)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use rustix::pipe::{PipeFlags, pipe_with};
    use std::fs::File;
    use std::io::{Read, Write};

    /// The environment variable that tells `child_helper` which descriptor is its socket.
    const CHILD_ENV: &str = "MP_FDPASS_TEST_CHILD_SOCK";

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
            .unwrap()
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        pipe_with(PipeFlags::CLOEXEC).unwrap()
    }

    /// Writes `data` to a received pipe write end and checks it arrives at `reader`.
    fn check_pipe(writer: OwnedFd, reader: &OwnedFd, data: &[u8]) {
        File::from(writer).write_all(data).unwrap();
        let mut buf = vec![0u8; data.len()];
        rustix::io::read(reader, &mut buf[..]).unwrap();
        assert_eq!(buf, data);
    }

    #[test]
    fn frames_with_0_1_3_fds() {
        let (a, b) = pair();
        for count in [0usize, 1, 3] {
            let pipes: Vec<_> = (0..count).map(|_| pipe()).collect();
            let writers: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
            let payload = format!("frame with {count} fds");
            send_frame(a.as_fd(), payload.as_bytes(), &writers, 1024).unwrap();
            let (got, fds) = recv_frame(b.as_fd(), 1024).unwrap().unwrap();
            assert_eq!(got, payload.as_bytes());
            assert_eq!(fds.len(), count);
            for (i, (fd, (reader, _))) in fds.into_iter().zip(&pipes).enumerate() {
                check_pipe(fd, reader, format!("pipe {i}").as_bytes());
            }
        }
    }

    #[test]
    fn try_recv_frame_does_not_wait_for_a_first_byte() {
        let (a, b) = pair();
        assert!(matches!(try_recv_frame(b.as_fd(), 1 << 20).unwrap(), Received::WouldBlock));
        // Small and large payloads (the two read paths), and an empty one.
        for len in [0usize, 5, 64 * 1024, 64 * 1024 + 1, 300_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let sender = std::thread::scope(|s| {
                let h = s.spawn(|| send_frame(a.as_fd(), &payload, &[], 1 << 20));
                let got = loop {
                    match try_recv_frame(b.as_fd(), 1 << 20).unwrap() {
                        Received::Frame(got, fds) => {
                            assert!(fds.is_empty());
                            break got;
                        }
                        Received::WouldBlock => std::thread::yield_now(),
                        Received::Eof => panic!("end of file"),
                    }
                };
                assert_eq!(got, payload, "{len} bytes");
                h.join().unwrap()
            });
            sender.unwrap();
        }
        drop(a);
        assert!(matches!(try_recv_frame(b.as_fd(), 1024).unwrap(), Received::Eof));
    }

    #[test]
    fn a_large_payload_cut_short_is_truncated() {
        let (a, b) = pair();
        let mut header = 100_000u32.to_le_bytes().to_vec();
        header.extend_from_slice(&0u32.to_le_bytes());
        let mut a = File::from(a);
        a.write_all(&header).unwrap();
        a.write_all(&[1u8; 70_000]).unwrap();
        drop(a);
        match recv_frame(b.as_fd(), 1 << 20) {
            Err(WireError::Truncated { expected, got }) => {
                assert_eq!((expected, got), (100_008, 70_008));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frame_with_max_fds() {
        let (a, b) = pair();
        let (reader, writer) = pipe();
        let fds = vec![writer.as_fd(); MAX_FDS_PER_FRAME];
        send_frame(a.as_fd(), b"many", &fds, 1024).unwrap();
        let (payload, received) = recv_frame(b.as_fd(), 1024).unwrap().unwrap();
        assert_eq!(payload, b"many");
        assert_eq!(received.len(), MAX_FDS_PER_FRAME);
        for fd in received {
            File::from(fd).write_all(b"x").unwrap();
        }
        drop(writer);
        let mut all = Vec::new();
        File::from(reader).read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), MAX_FDS_PER_FRAME);
    }

    #[test]
    fn too_many_fds_on_send() {
        let (a, _b) = pair();
        let (_reader, writer) = pipe();
        let fds = vec![writer.as_fd(); MAX_FDS_PER_FRAME + 1];
        assert!(matches!(
            send_frame(a.as_fd(), b"", &fds, 1024),
            Err(WireError::TooManyFds { count: 254, max: 253 })
        ));
    }

    #[test]
    fn empty_payload_frames() {
        let (a, b) = pair();
        let (reader, writer) = pipe();
        send_frame(a.as_fd(), b"", &[], 0).unwrap();
        send_frame(a.as_fd(), b"", &[writer.as_fd()], 0).unwrap();
        let (p, fds) = recv_frame(b.as_fd(), 0).unwrap().unwrap();
        assert!(p.is_empty() && fds.is_empty());
        let (p, mut fds) = recv_frame(b.as_fd(), 0).unwrap().unwrap();
        assert!(p.is_empty());
        check_pipe(fds.pop().unwrap(), &reader, b"ok");
        drop(a);
        assert!(recv_frame(b.as_fd(), 0).unwrap().is_none());
    }

    #[test]
    fn large_payload_across_partial_writes() {
        let (a, b) = pair();
        let (reader, writer) = pipe();
        let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let sender = std::thread::spawn(move || {
            send_frame(a.as_fd(), &payload, &[writer.as_fd()], 8 << 20).unwrap();
            send_frame(a.as_fd(), b"next", &[], 8 << 20).unwrap();
        });
        let (got, mut fds) = recv_frame(b.as_fd(), 8 << 20).unwrap().unwrap();
        assert_eq!(got, expected);
        assert_eq!(fds.len(), 1);
        let (next, none) = recv_frame(b.as_fd(), 8 << 20).unwrap().unwrap();
        assert_eq!(next, b"next");
        assert!(none.is_empty());
        sender.join().unwrap();
        check_pipe(fds.pop().unwrap(), &reader, b"big");
    }

    fn raw_header(len: u32, count: u32) -> Vec<u8> {
        let mut h = len.to_le_bytes().to_vec();
        h.extend_from_slice(&count.to_le_bytes());
        h
    }

    #[test]
    fn truncated_stream() {
        for partial in [3usize, 8, 50] {
            let (a, b) = pair();
            let mut bytes = raw_header(100, 0);
            bytes.resize(partial, 7);
            rustix::net::send(&a, &bytes, SendFlags::NOSIGNAL).unwrap();
            drop(a);
            match recv_frame(b.as_fd(), 1024) {
                Err(WireError::Truncated { got, .. }) => assert_eq!(got, partial),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_announcement() {
        let (a, b) = pair();
        rustix::net::send(&a, &raw_header(u32::MAX, 0), SendFlags::NOSIGNAL).unwrap();
        assert!(matches!(
            recv_frame(b.as_fd(), 1024),
            Err(WireError::Oversized { len, max: 1024 }) if len == u64::from(u32::MAX)
        ));
        assert!(matches!(
            send_frame(a.as_fd(), &[0; 1025], &[], 1024),
            Err(WireError::Oversized { len: 1025, max: 1024 })
        ));
    }

    #[test]
    fn fd_count_mismatch() {
        let (a, b) = pair();
        rustix::net::send(&a, &raw_header(0, 2), SendFlags::NOSIGNAL).unwrap();
        assert!(matches!(
            recv_frame(b.as_fd(), 1024),
            Err(WireError::FdCountMismatch { announced: 2, received: 0 })
        ));

        // Descriptors the header does not announce are refused and closed.
        let (a, b) = pair();
        let (reader, writer) = pipe();
        let header = raw_header(0, 0);
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [writer.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(&a, &[IoSlice::new(&header)], &mut control, SendFlags::NOSIGNAL)
            .unwrap();
        assert!(matches!(
            recv_frame(b.as_fd(), 1024),
            Err(WireError::FdCountMismatch { announced: 0, received: 1 })
        ));
        drop(writer);
        // Every write end is closed now, so the pipe reads end of file at once.
        let mut rest = Vec::new();
        File::from(reader).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn too_many_fds_announced() {
        let (a, b) = pair();
        rustix::net::send(&a, &raw_header(0, 254), SendFlags::NOSIGNAL).unwrap();
        assert!(matches!(
            recv_frame(b.as_fd(), 1024),
            Err(WireError::TooManyFds { count: 254, .. })
        ));
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Holder {
        name: String,
        a: PassFd,
        b: Vec<PassFd>,
    }

    #[test]
    fn encode_decode_with_fds_roundtrip() {
        let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
        let dup = |fd: &OwnedFd| PassFd(rustix::io::fcntl_dupfd_cloexec(fd, 0).unwrap());
        let value = Holder {
            name: "holder".into(),
            a: dup(&pipes[0].1),
            b: vec![dup(&pipes[1].1), dup(&pipes[2].1)],
        };
        let (bytes, fds) = encode_with_fds(&value).unwrap();
        assert_eq!(fds.len(), 3);
        drop(value);
        let back: Holder = decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(back.name, "holder");
        check_pipe(back.a.into_inner(), &pipes[0].0, b"a");
        for (i, fd) in back.b.into_iter().enumerate() {
            check_pipe(fd.into_inner(), &pipes[i + 1].0, b"b");
        }
    }

    #[test]
    fn forged_indices_are_errors() {
        let (_r, w) = pipe();
        let (bytes, fds) = encode_with_fds(&PassFd(w)).unwrap();
        assert!(matches!(
            decode_with_fds::<PassFd>(&bytes, Vec::new()),
            Err(WireError::MissingFd { index: 0 })
        ));
        let forged = crate::wire::encode(&(0u32, 0u32)).unwrap();
        assert!(matches!(
            decode_with_fds::<(PassFd, PassFd)>(&forged, fds),
            Err(WireError::MissingFd { index: 0 })
        ));
        let forged = crate::wire::encode(&u32::MAX).unwrap();
        assert!(matches!(
            decode_with_fds::<PassFd>(&forged, Vec::new()),
            Err(WireError::MissingFd { index: u32::MAX })
        ));
        let (_r, w) = pipe();
        let (mut bytes, fds) = encode_with_fds(&PassFd(w)).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_with_fds::<PassFd>(&bytes, fds),
            Err(WireError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn fds_outside_the_context_are_errors() {
        let (_r, w) = pipe();
        let fd = PassFd(w);
        assert!(postcard::to_stdvec(&fd).is_err());
        assert!(crate::wire::encode(&fd).is_err());
        assert!(postcard::from_bytes::<PassFd>(&[0]).is_err());
        assert!(crate::wire::decode::<PassFd>(&[0]).is_err());

        // A format that keeps custom messages shows why.
        use serde::de::IntoDeserializer;
        let d: serde::de::value::U32Deserializer<serde::de::value::Error> =
            0u32.into_deserializer();
        let err = serde_fd::deserialize(d).unwrap_err();
        assert!(err.to_string().contains("fd-carrying encoder"), "{err}");

        // The contexts were restored: encoding works again afterwards.
        assert_eq!(encode_with_fds(&fd).unwrap().1.len(), 1);
        assert!(postcard::to_stdvec(&fd).is_err());
    }

    /// A value whose serialisation nests a second fd-carrying encode.
    struct Nested {
        inner: PassFd,
        outer: PassFd,
    }

    impl Serialize for Nested {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let (bytes, fds) = encode_with_fds(&self.inner).map_err(S::Error::custom)?;
            let mut t = s.serialize_tuple(3)?;
            t.serialize_element(&bytes)?;
            t.serialize_element(&fds.len())?;
            t.serialize_element(&self.outer)?;
            t.end()
        }
    }

    #[test]
    fn nested_encodes_keep_their_own_fds() {
        let (_r1, w1) = pipe();
        let (_r2, w2) = pipe();
        let value = Nested { inner: PassFd(w1), outer: PassFd(w2) };
        let (bytes, fds) = encode_with_fds(&value).unwrap();
        assert_eq!(fds.len(), 1);
        let (inner_bytes, inner_count, outer): (Vec<u8>, usize, PassFd) =
            decode_with_fds(&bytes, fds).unwrap();
        assert_eq!(inner_count, 1);
        assert_eq!(inner_bytes, vec![0]);
        drop(outer);
    }

    #[test]
    fn send_and_recv_values() {
        let (a, b) = pair();
        let (reader, writer) = pipe();
        let value = Holder { name: "over the socket".into(), a: PassFd(writer), b: Vec::new() };
        send_value(a.as_fd(), &value, 4096).unwrap();
        send_value(a.as_fd(), "plain", 4096).unwrap();
        drop(value);
        let got: Holder = recv_value(b.as_fd(), 4096).unwrap().unwrap();
        assert_eq!(got.name, "over the socket");
        assert!(got.b.is_empty());
        check_pipe(got.a.into_inner(), &reader, b"hi");
        let plain: String = recv_value(b.as_fd(), 4096).unwrap().unwrap();
        assert_eq!(plain, "plain");
        drop(a);
        assert!(recv_value::<String>(b.as_fd(), 4096).unwrap().is_none());
    }

    /// The job the parent test sends to the running child process.
    #[derive(Serialize, Deserialize)]
    struct Job {
        text: String,
        out: PassFd,
    }

    /// The child half of `fd_reaches_a_running_process`; a no-op unless run as that child.
    ///
    /// The socket arrives as the child's standard input, because turning an inherited
    /// descriptor number into a descriptor takes `unsafe`, which this crate forbids.
    #[test]
    #[ignore = "helper run only as a child process by fd_reaches_a_running_process"]
    fn child_helper() {
        let Ok(fd_number) = std::env::var(CHILD_ENV) else {
            return;
        };
        assert_eq!(fd_number, "0", "the socket is expected on standard input");
        let stdin = std::io::stdin();
        let sock = stdin.as_fd();
        send_value(sock, "ready", 4096).unwrap();
        let job: Job = recv_value(sock, 4096).unwrap().unwrap();
        let mut out = File::from(job.out.into_inner());
        write!(out, "child {} got: {}", std::process::id(), job.text).unwrap();
    }

    #[test]
    fn fd_reaches_a_running_process() {
        let (ours, theirs) = pair();
        // A duplicate made for the child: the spawn installs it as the child's
        // standard input, and `dup2` there leaves it without close-on-exec.
        let for_child = rustix::io::fcntl_dupfd_cloexec(&theirs, 0).unwrap();
        drop(theirs);
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let test_name = format!("{module}::child_helper");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test_name.as_str(), "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, "0")
            .stdin(std::process::Stdio::from(for_child))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();

        // Wait until the child is running and listening before handing it the pipe.
        let ready: Option<String> = recv_value(ours.as_fd(), 4096).unwrap();
        assert_eq!(ready.as_deref(), Some("ready"));
        let (reader, writer) = pipe();
        let job = Job { text: "hello through SCM_RIGHTS".into(), out: PassFd(writer) };
        send_value(ours.as_fd(), &job, 4096).unwrap();
        drop(job);

        let mut message = String::new();
        File::from(reader).read_to_string(&mut message).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("1 passed"), "child ran no test: {stdout}");
        assert!(message.ends_with("got: hello through SCM_RIGHTS"), "{message:?}");
        assert!(!message.contains(&format!("child {} ", std::process::id())));
    }
}
