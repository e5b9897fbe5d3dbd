//! Raw frames: a payload plus up to [`MAX_FDS_PER_FRAME`] descriptors over an `AF_UNIX`
//! `SOCK_STREAM` socket. The header is a little-endian `u32` payload length and a little-endian
//! `u32` descriptor count; the descriptors ride as `SCM_RIGHTS` on the `sendmsg` that carries
//! the header.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use crate::os::fds;
use crate::wire::WireError;

/// The most descriptors one frame may carry; this is the kernel's `SCM_MAX_FD`.
pub const MAX_FDS_PER_FRAME: usize = fds::MAX_FDS;

/// The size in bytes of the frame header: payload length and descriptor count.
const HEADER_LEN: usize = 8;

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

    let mut sent = 0usize;
    while sent < total {
        let header_rest = header.get(sent..).unwrap_or(&[]);
        let payload_rest = payload.get(sent.saturating_sub(HEADER_LEN)..).unwrap_or(&[]);
        let iov = [IoSlice::new(header_rest), IoSlice::new(payload_rest)];
        let with = if sent == 0 { fds } else { &[] };
        match fds::send(sock, &iov, with, SendFlags::NOSIGNAL) {
            Ok(0) => {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "socket accepted no bytes of the frame",
                )));
            }
            Ok(n) => sent += n,
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
/// them. The ancillary data must match the header's count exactly: descriptors the kernel
/// dropped because this process has too many open files (`MSG_CTRUNC`) give `FdsDropped`,
/// others missing or extra `FdCountMismatch`, and a count above [`MAX_FDS_PER_FRAME`]
/// `TooManyFds`; in each case the frame's payload is read and dropped, so the stream stays
/// in step and the next call receives the next frame. The announced length is checked
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
    while got < HEADER_LEN {
        let Some(rest) = header.get_mut(got..) else {
            break;
        };
        let mut iov = [IoSliceMut::new(rest)];
        let flags = if got == 0 && !wait { RecvFlags::DONTWAIT } else { RecvFlags::empty() };
        let msg = match fds::recv(sock, &mut iov, flags) {
            Ok(msg) => msg,
            Err(Errno::AGAIN) if got == 0 && !wait => return Ok(Received::WouldBlock),
            Err(e) => return Err(e.into()),
        };
        fds.extend(msg.fds);
        ctrunc |= msg.fds_dropped;
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

    // A descriptor error leaves the frame's payload to read: it is read (and dropped) below,
    // so that the stream stays in step with its frames.
    let fd_error = if ctrunc {
        // The kernel dropped descriptors it could not install: this process is out of them.
        Some(WireError::FdsDropped { announced: announced_fds, received: fds.len() })
    } else if announced_fds > MAX_FDS_PER_FRAME {
        Some(WireError::TooManyFds { count: announced_fds, max: MAX_FDS_PER_FRAME })
    } else if announced_fds != fds.len() {
        Some(WireError::FdCountMismatch { announced: announced_fds, received: fds.len() })
    } else {
        None
    };
    drop(if fd_error.is_some() { std::mem::take(&mut fds) } else { Vec::new() });
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
    if let Some(e) = fd_error {
        return Err(e);
    }
    Ok(Received::Frame(payload, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use serde::Deserialize;
    use std::fs::File;
    use std::io::{Read, Write};

    /// The environment variable that tells `child_helper` which descriptor is its socket.
    const CHILD_ENV: &str = "MP_FDPASS_TEST_CHILD_SOCK";

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
            .unwrap()
    }

    use super::super::context::tests::{Holder, check_pipe, pipe};
    use crate::fdpass::{PassFd, recv_value, send_value};
    use serde::Serialize;
    use std::os::fd::AsFd;

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
    fn descriptors_the_kernel_drops_lose_one_frame_and_the_stream_goes_on() {
        // Issue 10: a frame whose descriptors did not fit (MSG_CTRUNC, out of descriptors) was
        // left half read, and every later frame read as garbage.
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let (a, b) = pair();
        let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
        let writers: Vec<BorrowedFd<'_>> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
        send_frame(a.as_fd(), b"with three", &writers, 1024).unwrap();
        send_frame(a.as_fd(), b"next", &[], 1024).unwrap();
        // No room for a single descriptor more in this process (a test has its own).
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let before = getrlimit(Resource::Nofile);
        setrlimit(Resource::Nofile, Rlimit { current: Some(open - 1), maximum: before.maximum })
            .unwrap();
        let first = recv_frame(b.as_fd(), 1024);
        setrlimit(Resource::Nofile, before).unwrap();
        match first {
            Err(e @ WireError::FdsDropped { announced: 3, .. }) => {
                assert!(e.to_string().contains("too many open files"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let (next, fds) = recv_frame(b.as_fd(), 1024).unwrap().unwrap();
        assert_eq!((next.as_slice(), fds.len()), (&b"next"[..], 0));
        // And descriptors arrive again once there is room.
        send_frame(a.as_fd(), b"again", &writers, 1024).unwrap();
        let (again, fds) = recv_frame(b.as_fd(), 1024).unwrap().unwrap();
        assert_eq!((again.as_slice(), fds.len()), (&b"again"[..], 3));
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
        fds::send(a.as_fd(), &[IoSlice::new(&header)], &[writer.as_fd()], SendFlags::NOSIGNAL)
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
