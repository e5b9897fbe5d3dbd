//! CPython's framing of a `multiprocessing.connection.Connection` on a socket, for the
//! connections of [`Listener`](crate::Listener) and [`Client`](crate::Client): a 4-byte
//! big-endian signed length, then the payload; a payload longer than `i32::MAX` bytes is
//! announced by a length of −1 followed by an 8-byte big-endian unsigned length. No
//! descriptors travel beside the bytes. A Python program reads these frames with
//! `recv_bytes` and writes them with `send_bytes`.

use std::io::IoSlice;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use mp_process::os;
use mp_process::wire::WireError;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

/// The longest payload a 4-byte header announces.
const SHORT_MAX: u64 = 0x7fff_ffff;

/// The payload buffer reserved before bytes arrive, at most; it grows (doubling) as they
/// arrive, so that a false announcement cannot make a receiver reserve much memory.
const RECV_CHUNK: usize = 1024 * 1024;

/// The header announcing a payload of `len` bytes, and how many of its bytes are used.
fn header(len: usize) -> ([u8; 12], usize) {
    let mut out = [0u8; 12];
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if len <= SHORT_MAX {
        // `len` fits in 31 bits here.
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        (out, 4)
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..].copy_from_slice(&len.to_be_bytes());
        (out, 12)
    }
}

/// Appends `payload` as one frame to `out`.
pub(crate) fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    let (head, head_len) = header(payload.len());
    out.extend_from_slice(head.get(..head_len).unwrap_or(&[]));
    out.extend_from_slice(payload);
}

/// Sends `payload` as one frame: header and payload in one vectored write (partial writes
/// are continued; a closed peer is `EPIPE`, never a signal). The caller checked the size.
pub(crate) fn send(sock: BorrowedFd<'_>, payload: &[u8]) -> Result<(), WireError> {
    let (head, head_len) = header(payload.len());
    write_all(sock, head.get(..head_len).unwrap_or(&[]), payload)
}

/// Sends bytes already framed (by [`frame_into`]).
pub(crate) fn send_raw(sock: BorrowedFd<'_>, framed: &[u8]) -> Result<(), WireError> {
    write_all(sock, framed, &[])
}

/// Writes `head` then `payload` whole, in as few vectored writes as the socket takes.
fn write_all(sock: BorrowedFd<'_>, head: &[u8], payload: &[u8]) -> Result<(), WireError> {
    let head_len = head.len();
    let total = head_len.saturating_add(payload.len());
    let mut sent = 0usize;
    while sent < total {
        let head_rest = head.get(sent..).unwrap_or(&[]);
        let payload_rest = payload.get(sent.saturating_sub(head_len)..).unwrap_or(&[]);
        let iov = [IoSlice::new(head_rest), IoSlice::new(payload_rest)];
        match os::fds::send(sock, &iov, &[], SendFlags::NOSIGNAL) {
            Ok(0) => {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "socket accepted no bytes of the frame",
                )));
            }
            Ok(n) => sent += n,
            Err(e) => return Err(WireError::Io(e.into())),
        }
    }
    Ok(())
}

/// What one read found.
enum Read {
    /// This many bytes.
    Bytes(usize),
    /// End of file.
    Eof,
}

/// Reads into `buf` once, waiting no later than `deadline` (`None`: as long as it takes).
/// With a deadline (the handshake, whose peer answers at once), it first looks without
/// blocking for the process's spin budget.
fn read_some(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<Read, WireError> {
    if let (Some(deadline), Some(budget)) = (deadline, crate::lane::spin_budget()) {
        let until = (Instant::now() + budget).min(deadline);
        loop {
            match rustix::net::recv(sock, &mut *buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return Ok(Read::Eof),
                Ok((n, _)) => return Ok(Read::Bytes(n)),
                Err(Errno::INTR | Errno::AGAIN) if !crate::lane::passed(until) => {
                    std::hint::spin_loop();
                }
                Err(Errno::INTR | Errno::AGAIN) => break,
                Err(e) => return Err(io(e)),
            }
        }
    }
    loop {
        if deadline.is_some() && !os::poll::readable(sock, deadline).map_err(io)? {
            return Err(WireError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer sent nothing before the deadline",
            )));
        }
        let flags = if deadline.is_some() { RecvFlags::DONTWAIT } else { RecvFlags::empty() };
        match rustix::net::recv(sock, &mut *buf, flags) {
            Ok((0, _)) => return Ok(Read::Eof),
            Ok((n, _)) => return Ok(Read::Bytes(n)),
            Err(Errno::INTR | Errno::AGAIN) => {}
            Err(e) => return Err(io(e)),
        }
    }
}

/// An `Errno` as a wire error.
fn io(e: Errno) -> WireError {
    WireError::Io(e.into())
}

/// Fills `buf` whole; `Ok(false)` if the stream ended before its first byte (and `at_start`),
/// `Truncated` if it ended later.
fn read_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
    at_start: bool,
) -> Result<bool, WireError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match read_some(sock, rest, deadline)? {
            Read::Bytes(n) => got += n,
            Read::Eof if got == 0 && at_start => return Ok(false),
            Read::Eof => return Err(WireError::Truncated { expected: buf.len(), got }),
        }
    }
    Ok(true)
}

/// Receives one frame of at most `max` bytes, waiting no later than `deadline` for each
/// piece (`None`: blocking). `Ok(None)` at end of file before a frame. The announced length
/// is checked against `max` before any memory is reserved for the payload (an oversized
/// announcement is `Oversized`, and the stream is left inside the frame); the buffer grows
/// only as bytes arrive.
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    max: usize,
    deadline: Option<Instant>,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut short = [0u8; 4];
    if !read_exact(sock, &mut short, deadline, true)? {
        return Ok(None);
    }
    let announced = i32::from_be_bytes(short);
    let len: u64 = match announced {
        -1 => {
            let mut long = [0u8; 8];
            read_exact(sock, &mut long, deadline, false)?;
            u64::from_be_bytes(long)
        }
        n if n >= 0 => n.unsigned_abs().into(),
        n => {
            return Err(WireError::Refused(format!("a frame announced a negative length ({n})")));
        }
    };
    let len = match usize::try_from(len) {
        Ok(len) if len <= max => len,
        _ => return Err(WireError::Oversized { len, max }),
    };
    let mut payload = vec![0u8; len.min(RECV_CHUNK)];
    let mut filled = 0usize;
    while filled < len {
        if filled == payload.len() {
            let grown = payload.len().saturating_mul(2).clamp(RECV_CHUNK, len);
            payload.resize(grown, 0);
        }
        let Some(rest) = payload.get_mut(filled..) else { break };
        match read_some(sock, rest, deadline)? {
            Read::Bytes(n) => filled += n,
            Read::Eof => {
                let head = if announced == -1 { 12 } else { 4 };
                return Err(WireError::Truncated { expected: head + len, got: head + filled });
            }
        }
    }
    Ok(Some(payload))
}

/// The read-ahead buffer of a connection: a frame's header and a small payload (and often
/// the next frames) come in one system call.
const READ_AHEAD: usize = 16 * 1024;

/// Bytes read from a socket ahead of the frames that use them: a connection's receiver reads
/// up to [`READ_AHEAD`] bytes at a time and takes frames out of them; a payload larger than
/// that is read straight into its own buffer. A receive that finds nothing looks again
/// without blocking for its spin budget before it blocks, if the previous wait for bytes
/// ended within the budget (a peer in a tight exchange); after a longer wait it blocks at
/// once, until a wait ends within the budget again.
pub(crate) struct ReadAhead {
    /// The buffer, allocated on first use.
    buf: Vec<u8>,
    /// The first byte not yet taken.
    start: usize,
    /// The end of the bytes read.
    end: usize,
    /// Whether the last wait for bytes found them within the spin budget (or this is the
    /// first): then the next one spins; a peer that made it wait longer gets a blocking
    /// receive next time, so an idle or slow peer costs no spinning.
    quick: bool,
}

impl Default for ReadAhead {
    fn default() -> ReadAhead {
        ReadAhead { buf: Vec::new(), start: 0, end: 0, quick: true }
    }
}

impl ReadAhead {
    /// Whether no byte is waiting in the buffer.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The bytes waiting.
    fn waiting(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    /// Reads until at least `need` (at most [`READ_AHEAD`]) bytes are waiting. `Ok(false)` if
    /// the stream ends first.
    fn fill_to(
        &mut self,
        sock: BorrowedFd<'_>,
        need: usize,
        spin: Option<Duration>,
    ) -> Result<bool, WireError> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; READ_AHEAD];
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end >= need {
            return Ok(true);
        }
        let started = spin.map(|budget| (Instant::now(), budget));
        let mut spin = started.filter(|_| self.quick).map(|(at, budget)| at + budget);
        while self.end < need {
            let Some(room) = self.buf.get_mut(self.end..) else { break };
            // While the budget lasts, look without blocking (a reply that comes within a few
            // µs is taken without a wake-up); then block.
            if let Some(until) = spin {
                match rustix::net::recv(sock, &mut *room, RecvFlags::DONTWAIT) {
                    Ok((0, _)) => return Ok(false),
                    Ok((n, _)) => self.end += n,
                    Err(Errno::AGAIN | Errno::INTR) if !crate::lane::passed(until) => {
                        std::hint::spin_loop();
                    }
                    Err(Errno::AGAIN | Errno::INTR) => spin = None,
                    Err(e) => return Err(io(e)),
                }
                continue;
            }
            match read_some(sock, room, None)? {
                Read::Bytes(n) => self.end += n,
                Read::Eof => return Ok(false),
            }
        }
        if let Some((at, budget)) = started {
            self.quick = at.elapsed() <= budget;
        }
        Ok(true)
    }

    /// Takes `n` waiting bytes (the caller checked that they are there).
    fn take(&mut self, n: usize) -> &[u8] {
        let from = self.start;
        self.start = (self.start + n).min(self.end);
        self.buf.get(from..self.start).unwrap_or(&[])
    }

    /// Receives one frame of at most `max` bytes (blocking): as [`recv`], reading ahead, and
    /// looking for `spin` without blocking before each blocking read.
    pub(crate) fn recv(
        &mut self,
        sock: BorrowedFd<'_>,
        max: usize,
        spin: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, WireError> {
        let truncated = |expected: usize, got: usize| WireError::Truncated { expected, got };
        if !self.fill_to(sock, 4, spin)? {
            return match self.waiting().len() {
                0 => Ok(None),
                got => Err(truncated(4, got)),
            };
        }
        let short: [u8; 4] =
            self.waiting().get(..4).and_then(|h| h.try_into().ok()).unwrap_or_default();
        let announced = i32::from_be_bytes(short);
        let (head, len) = match announced {
            -1 => {
                if !self.fill_to(sock, 12, spin)? {
                    return Err(truncated(12, self.waiting().len()));
                }
                let long: [u8; 8] =
                    self.waiting().get(4..12).and_then(|h| h.try_into().ok()).unwrap_or_default();
                (12, u64::from_be_bytes(long))
            }
            n if n >= 0 => (4, u64::from(n.unsigned_abs())),
            n => {
                return Err(WireError::Refused(format!(
                    "a frame announced a negative length ({n})"
                )));
            }
        };
        let len = match usize::try_from(len) {
            Ok(len) if len <= max => len,
            _ => return Err(WireError::Oversized { len, max }),
        };
        self.take(head);
        if head + len <= READ_AHEAD {
            if !self.fill_to(sock, len, spin)? {
                return Err(truncated(head + len, head + self.waiting().len()));
            }
            return Ok(Some(self.take(len).to_vec()));
        }
        // A large payload: what is waiting, then the rest straight from the socket.
        let mut payload = self.take(len).to_vec();
        let mut filled = payload.len();
        payload.resize(len.min(filled.max(RECV_CHUNK)), 0);
        while filled < len {
            if filled == payload.len() {
                let grown = payload.len().saturating_mul(2).clamp(RECV_CHUNK, len);
                payload.resize(grown, 0);
            }
            let Some(rest) = payload.get_mut(filled..) else { break };
            match read_some(sock, rest, None)? {
                Read::Bytes(n) => filled += n,
                Read::Eof => return Err(truncated(head + len, head + filled)),
            }
        }
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn headers_are_cpythons() {
        let (h, n) = header(5);
        assert_eq!(&h[..n], &[0, 0, 0, 5]);
        let (h, n) = header(0x8000_0000);
        assert_eq!(&h[..n], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
    }

    #[test]
    fn frames_round_trip_and_bad_input_is_an_error() {
        let (a, b) = os::socket::stream_pair().unwrap();
        send(a.as_fd(), b"hello").unwrap();
        send(a.as_fd(), b"").unwrap();
        assert_eq!(recv(b.as_fd(), 100, None).unwrap().unwrap(), b"hello");
        assert_eq!(recv(b.as_fd(), 100, None).unwrap().unwrap(), b"");
        // Oversized: refused before reading the payload.
        send(a.as_fd(), &[1; 50]).unwrap();
        assert!(matches!(
            recv(b.as_fd(), 10, None),
            Err(WireError::Oversized { len: 50, max: 10 })
        ));
        // A negative length other than -1.
        let (a, b) = os::socket::stream_pair().unwrap();
        rustix::net::send(&a, &(-2i32).to_be_bytes(), SendFlags::empty()).unwrap();
        assert!(matches!(recv(b.as_fd(), 10, None), Err(WireError::Refused(_))));
        // A long header announcing more than fits.
        let (a, b) = os::socket::stream_pair().unwrap();
        let mut long = (-1i32).to_be_bytes().to_vec();
        long.extend_from_slice(&u64::MAX.to_be_bytes());
        rustix::net::send(&a, &long, SendFlags::empty()).unwrap();
        assert!(matches!(recv(b.as_fd(), 10, None), Err(WireError::Oversized { .. })));
        // Truncated: the peer closes inside the payload.
        let (a, b) = os::socket::stream_pair().unwrap();
        rustix::net::send(&a, &[0, 0, 0, 9, 1, 2], SendFlags::empty()).unwrap();
        drop(a);
        assert!(matches!(
            recv(b.as_fd(), 10, None),
            Err(WireError::Truncated { expected: 13, got: 6 })
        ));
        // End of file between frames.
        let (a, b) = os::socket::stream_pair().unwrap();
        drop(a);
        assert!(recv(b.as_fd(), 10, None).unwrap().is_none());
    }

    #[test]
    fn reading_ahead_gives_the_same_frames() {
        let (a, b) = os::socket::stream_pair().unwrap();
        let big = vec![3u8; 100_000];
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..50u8 {
                    send(a.as_fd(), &[i; 7]).unwrap();
                    send(a.as_fd(), b"").unwrap();
                    if i % 10 == 0 {
                        send(a.as_fd(), &big).unwrap();
                    }
                }
                drop(a);
            });
            let mut reader = ReadAhead::default();
            let spin = Some(Duration::from_micros(5));
            for i in 0..50u8 {
                assert_eq!(reader.recv(b.as_fd(), 1 << 20, spin).unwrap().unwrap(), [i; 7]);
                assert_eq!(reader.recv(b.as_fd(), 1 << 20, None).unwrap().unwrap(), b"");
                if i % 10 == 0 {
                    assert_eq!(reader.recv(b.as_fd(), 1 << 20, spin).unwrap().unwrap(), big);
                }
            }
            assert!(reader.recv(b.as_fd(), 1 << 20, None).unwrap().is_none());
        });
        // Truncated inside a header and inside a payload.
        for bytes in [&[0u8, 0][..], &[0, 0, 0, 9, 1, 2][..]] {
            let (a, b) = os::socket::stream_pair().unwrap();
            rustix::net::send(&a, bytes, SendFlags::empty()).unwrap();
            drop(a);
            let got = ReadAhead::default().recv(b.as_fd(), 100, None);
            assert!(matches!(got, Err(WireError::Truncated { .. })), "{got:?}");
        }
    }

    #[test]
    fn a_deadline_bounds_a_stalled_peer() {
        let (a, b) = os::socket::stream_pair().unwrap();
        rustix::net::send(&a, &[0, 0], SendFlags::empty()).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        match recv(b.as_fd(), 10, Some(deadline)) {
            Err(WireError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
    }
}
