//! Bad input and misuse: corrupt, truncated and oversized frames written raw into the socket,
//! messages of the wrong type, size limits, closed connections, forged connections, threads
//! sharing a connection, and a proptest feeding random and mutated bytes to the receive path.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use mp_process::fdpass::{self, serde_fd};
use mp_process::wire::WireError;
use mp_queue::{Connection, Error, pipe};
use proptest::prelude::*;
use rustix::net::SendFlags;
use serde::{Deserialize, Serialize};

/// Writes `bytes` into `conn`'s socket directly, bypassing the framing.
fn write_raw(conn: &Connection, bytes: &[u8]) {
    let mut sent = 0;
    while sent < bytes.len() {
        sent += rustix::net::send(conn.as_fd(), &bytes[sent..], SendFlags::NOSIGNAL).unwrap();
    }
}

/// A frame header: payload length and descriptor count.
fn header(len: u32, fds: u32) -> Vec<u8> {
    let mut h = len.to_le_bytes().to_vec();
    h.extend_from_slice(&fds.to_le_bytes());
    h
}

#[test]
fn an_oversized_announcement_is_refused_and_breaks_the_connection() {
    let (a, b) = pipe(true).unwrap();
    write_raw(&a, &header(0x7fff_ffff, 0));
    assert!(matches!(
        b.recv::<u8>(),
        Err(Error::Wire(WireError::Oversized { len: 0x7fff_ffff, .. }))
    ));
    assert!(matches!(b.recv::<u8>(), Err(Error::Broken)));
    assert!(matches!(b.recv_bytes(None), Err(Error::Broken)));
    assert!(matches!(b.poll(), Err(Error::Broken)));
    // Sending still works on the broken connection's other direction.
    b.send(&5u8).unwrap();
    assert_eq!(a.recv::<u8>().unwrap(), 5);
}

#[test]
fn a_payload_that_does_not_decode_is_an_error_and_the_connection_goes_on() {
    let (a, b) = pipe(true).unwrap();
    let mut frame = header(3, 0);
    frame.extend_from_slice(&[0xff, 0xff, 0xff]);
    write_raw(&a, &frame);
    assert!(matches!(b.recv::<String>(), Err(Error::Wire(WireError::Decode(_)))));
    // A message of another type than asked for.
    a.send(&u64::MAX).unwrap();
    assert!(matches!(b.recv::<bool>(), Err(Error::Wire(_))));
    a.send(&vec![1u8, 2]).unwrap();
    assert!(matches!(b.recv::<u8>(), Err(Error::Wire(WireError::TrailingBytes { extra: 2 }))));
    // The stream is still in step.
    a.send("fine").unwrap();
    assert_eq!(b.recv::<String>().unwrap(), "fine");
}

#[test]
fn announced_descriptors_that_never_came() {
    let (a, b) = pipe(true).unwrap();
    write_raw(&a, &header(0, 2));
    assert!(matches!(
        b.recv_bytes(None),
        Err(Error::Wire(WireError::FdCountMismatch { announced: 2, received: 0 }))
    ));
    assert!(matches!(b.recv_bytes(None), Err(Error::Broken)));

    let (a, b) = pipe(true).unwrap();
    write_raw(&a, &header(0, 1000));
    assert!(matches!(b.recv::<()>(), Err(Error::Wire(WireError::TooManyFds { count: 1000, .. }))));
}

#[test]
fn truncated_frames() {
    for cut in [1usize, 7, 8, 12] {
        let (mut a, b) = pipe(true).unwrap();
        let mut frame = header(10, 0);
        frame.extend_from_slice(b"0123456789");
        write_raw(&a, &frame[..cut]);
        a.close();
        assert!(
            matches!(b.recv_bytes(None), Err(Error::Wire(WireError::Truncated { got, .. })) if got == cut),
            "cut at {cut}"
        );
        assert!(matches!(b.recv_bytes(None), Err(Error::Broken)));
    }
}

#[test]
fn the_maximum_message_size_holds_on_both_sides() {
    let (a, b) = pipe(true).unwrap();
    let a = a.with_max_message_size(16);
    assert_eq!(a.max_message_size(), 16);
    a.send_bytes(&[0; 16], 0, None).unwrap();
    assert!(matches!(
        a.send_bytes(&[0; 17], 0, None),
        Err(Error::Wire(WireError::Oversized { len: 17, max: 16 }))
    ));
    assert!(matches!(a.send(&[7u8; 20]), Err(Error::Wire(WireError::Oversized { .. }))));
    // Nothing of the refused messages was sent.
    assert_eq!(b.recv_bytes(None).unwrap().len(), 16);
    assert!(!b.poll().unwrap());

    let mut b = b;
    b.set_max_message_size(8);
    a.send_bytes(&[1; 9], 0, None).unwrap();
    assert!(matches!(
        b.recv_bytes(None),
        Err(Error::Wire(WireError::Oversized { len: 9, max: 8 }))
    ));
    assert!(matches!(b.recv_bytes(None), Err(Error::Broken)));
}

/// `recv_bytes_into_vec` refuses a message over the receiver's maximum as `recv_bytes` does,
/// and leaves the vector as it was.
#[test]
fn recv_bytes_into_vec_refuses_an_oversized_message_and_keeps_the_vector() {
    let (a, mut b) = pipe(true).unwrap();
    b.set_max_message_size(8);
    a.send_bytes(&[1; 8], 0, None).unwrap();
    a.send_bytes(&[2; 9], 0, None).unwrap();
    let mut buf = Vec::new();
    assert_eq!(b.recv_bytes_into_vec(&mut buf).unwrap(), 8);
    assert_eq!(buf, [1; 8]);
    assert!(matches!(
        b.recv_bytes_into_vec(&mut buf),
        Err(Error::Wire(WireError::Oversized { len: 9, max: 8 }))
    ));
    assert_eq!(buf, [1; 8]);
    assert!(matches!(b.recv_bytes_into_vec(&mut buf), Err(Error::Broken)));
}

#[test]
fn send_bytes_checks_offset_and_size() {
    let (a, b) = pipe(true).unwrap();
    let buf = b"0123456789";
    assert!(matches!(
        a.send_bytes(buf, 11, None),
        Err(Error::OutOfRange { offset: 11, len: None, size: 10 })
    ));
    assert!(matches!(
        a.send_bytes(buf, 5, Some(6)),
        Err(Error::OutOfRange { offset: 5, len: Some(6), size: 10 })
    ));
    assert!(matches!(a.send_bytes(buf, usize::MAX, Some(2)), Err(Error::OutOfRange { .. })));
    assert!(matches!(a.send_bytes(buf, 2, Some(usize::MAX)), Err(Error::OutOfRange { .. })));
    a.send_bytes(buf, 10, None).unwrap();
    a.send_bytes(buf, 10, Some(0)).unwrap();
    a.send_bytes(buf, 0, Some(10)).unwrap();
    assert_eq!(b.recv_bytes(None).unwrap(), b"");
    assert_eq!(b.recv_bytes(None).unwrap(), b"");
    assert_eq!(b.recv_bytes(None).unwrap(), buf);
}

#[test]
fn a_closed_connection_refuses_everything() {
    let (mut a, b) = pipe(true).unwrap();
    assert!(!a.closed());
    a.close();
    a.close();
    assert!(a.closed());
    assert!(matches!(a.send(&1u8), Err(Error::Closed)));
    assert!(matches!(a.send_bytes(b"", 0, None), Err(Error::Closed)));
    assert!(matches!(a.recv::<u8>(), Err(Error::Closed)));
    assert!(matches!(a.recv_bytes(None), Err(Error::Closed)));
    assert!(matches!(a.recv_bytes_into(&mut [], 0), Err(Error::Closed)));
    assert!(matches!(a.poll_timeout(Duration::MAX), Err(Error::Closed)));
    assert!(fdpass::encode_with_fds(&a).is_err(), "a closed connection cannot be sent");
    // The other end sees end of file.
    assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
}

#[test]
fn connections_cross_only_through_the_fd_encoder() {
    let (a, _b) = pipe(true).unwrap();
    assert!(postcard::to_stdvec(&a).is_err());
    let (bytes, fds) = fdpass::encode_with_fds(&a).unwrap();
    assert_eq!(fds.len(), 6, "the socket, the pipe's lanes, the end's two locks (two each)");
    let back: Connection = fdpass::decode_with_fds(&bytes, fds).unwrap();
    assert!(back.readable() && back.writable());
    assert!(postcard::from_bytes::<Connection>(&bytes).is_err());
}

/// A forged connection: any descriptor, any lanes, any locks (`pipe: None` claims a
/// connection of a `Listener` or `Client`).
#[derive(Serialize, Deserialize)]
struct Forged {
    #[serde(with = "serde_fd")]
    fd: OwnedFd,
    pipe: Option<ForgedPipe>,
    max_message: u64,
}

/// A forged pipe end's lanes and locks.
#[derive(Serialize, Deserialize)]
struct ForgedPipe {
    lanes: mp_shm::SharedMemory,
    lane_in: u8,
    send_lock: Option<mp_sync::Lock>,
    recv_lock: Option<mp_sync::Lock>,
}

#[test]
fn forged_connections_are_refused() {
    // Real lanes, taken from a real connection's encoding.
    let real_lanes = || {
        let (a, _b) = pipe(true).unwrap();
        let (bytes, fds) = fdpass::encode_with_fds(&a).unwrap();
        fdpass::decode_with_fds::<Forged>(&bytes, fds).unwrap().pipe.unwrap().lanes
    };
    let forge = |fd: OwnedFd, lanes, readable: bool, writable: bool| {
        let lock = |present: bool| present.then(|| mp_sync::Lock::new().unwrap());
        let (recv_lock, send_lock) = (lock(readable), lock(writable));
        let pipe = ForgedPipe { lanes, lane_in: 0, send_lock, recv_lock };
        let forged = Forged { fd, pipe: Some(pipe), max_message: 1024 };
        let (bytes, fds) = fdpass::encode_with_fds(&forged).unwrap();
        fdpass::decode_with_fds::<Connection>(&bytes, fds)
    };
    let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    assert!(forge(r, real_lanes(), true, true).is_err(), "a pipe is not a socket");
    let (udp, _) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert!(forge(udp, real_lanes(), true, true).is_err(), "a datagram socket is not a stream");
    let (s, _) = pipe(true).unwrap();
    let fd = rustix::io::fcntl_dupfd_cloexec(&s, 0).unwrap();
    assert!(forge(fd, real_lanes(), false, false).is_err(), "neither readable nor writable");
    let fd = rustix::io::fcntl_dupfd_cloexec(&s, 0).unwrap();
    let small = mp_shm::SharedMemory::new(4096).unwrap();
    assert!(forge(fd, small, true, true).is_err(), "lanes of the wrong size");
    let fd = rustix::io::fcntl_dupfd_cloexec(&s, 0).unwrap();
    let size = real_lanes().size();
    let blank = mp_shm::SharedMemory::new(size).unwrap();
    assert!(forge(fd, blank, true, true).is_err(), "a segment that holds no lanes");
    let fd = rustix::io::fcntl_dupfd_cloexec(&s, 0).unwrap();
    let conn = forge(fd, real_lanes(), true, false).unwrap();
    assert_eq!(conn.max_message_size(), 1024);
    assert!(!conn.writable());
    // A socket connection: a pipe or a datagram socket is refused, a stream socket taken.
    let socket = |fd: OwnedFd| {
        let (bytes, fds) =
            fdpass::encode_with_fds(&Forged { fd, pipe: None, max_message: 10 }).unwrap();
        fdpass::decode_with_fds::<Connection>(&bytes, fds)
    };
    let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    assert!(socket(r).is_err(), "a pipe is not a socket");
    let (udp, _) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert!(socket(udp).is_err(), "a datagram socket is not a stream");
    let fd = rustix::io::fcntl_dupfd_cloexec(&s, 0).unwrap();
    let conn = socket(fd).unwrap();
    assert!(conn.is_socket() && conn.readable() && conn.writable());
    assert_eq!(conn.max_message_size(), 10);
}

#[test]
fn threads_sharing_a_connection_never_interleave_frames() {
    const THREADS: u8 = 4;
    const EACH: u32 = 100;
    const SIZE: usize = 100_000;
    let (a, b) = pipe(true).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let a = &a;
            s.spawn(move || {
                for i in 0..EACH {
                    let mut msg = vec![t; SIZE];
                    msg[..4].copy_from_slice(&i.to_le_bytes());
                    a.send_bytes(&msg, 0, None).unwrap();
                }
            });
        }
        let mut next = [0u32; THREADS as usize];
        for _ in 0..u32::from(THREADS) * EACH {
            let msg = b.recv_bytes(None).unwrap();
            assert_eq!(msg.len(), SIZE);
            let t = msg[SIZE - 1];
            assert!(msg[4..].iter().all(|&x| x == t), "a torn message");
            let i = u32::from_le_bytes(msg[..4].try_into().unwrap());
            assert_eq!(i, next[t as usize], "thread {t}'s messages out of order");
            next[t as usize] += 1;
        }
    });
    assert!(!b.poll().unwrap());
}

/// A message type for the fuzz tests (not recursive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Unit,
    Num(u64, i32),
    Text(String),
    Blob(Vec<u8>),
    Pair(Option<(u8, String)>, f64),
}

/// Encodes `msgs` as a stream of frames, as a connection would send them.
fn stream_of(msgs: &[Msg]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let payload = postcard::to_stdvec(m).unwrap();
        out.extend_from_slice(&header(payload.len() as u32, 0));
        out.extend_from_slice(&payload);
    }
    out
}

/// Feeds `bytes` to a connection whose peer then closes, and receives until end of file or
/// a broken stream: every outcome is a value, and the loop ends.
fn receive_all(bytes: &[u8], mode: u8) -> Vec<Result<Msg, String>> {
    let (mut a, b) = pipe(true).unwrap();
    let b = b.with_max_message_size(4096);
    write_raw(&a, bytes);
    a.close();
    let mut out = Vec::new();
    // Each message takes at least 8 bytes, so this bounds the loop.
    for _ in 0..=bytes.len() / 8 + 1 {
        let result = match mode % 3 {
            0 => b.recv::<Msg>(),
            1 => b.recv_bytes(Some(64)).map(Msg::Blob),
            _ => {
                let mut buf = [0u8; 32];
                b.recv_bytes_into(&mut buf, 3).map(|n| Msg::Blob(buf[3..3 + n].to_vec()))
            }
        };
        match result {
            Err(Error::Eof | Error::Broken) => return out,
            other => out.push(other.map_err(|e| e.to_string())),
        }
    }
    panic!("the receive loop did not end: {out:?}");
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        Just(Msg::Unit),
        (any::<u64>(), any::<i32>()).prop_map(|(a, b)| Msg::Num(a, b)),
        ".{0,20}".prop_map(Msg::Text),
        proptest::collection::vec(any::<u8>(), 0..50).prop_map(Msg::Blob),
        (proptest::option::of((any::<u8>(), ".{0,5}")), any::<f64>())
            .prop_map(|(o, f)| Msg::Pair(o, f)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), mode in 0u8..3) {
        receive_all(&bytes, mode);
    }

    #[test]
    fn valid_streams_decode(msgs in proptest::collection::vec(msg(), 0..10)) {
        let got = receive_all(&stream_of(&msgs), 0);
        let expected: Vec<Result<Msg, String>> = msgs.into_iter().map(Ok).collect();
        // NaN is not equal to itself: compare the encodings.
        prop_assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    }

    #[test]
    fn mutated_streams_never_panic(
        msgs in proptest::collection::vec(msg(), 1..10),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        mode in 0u8..3,
    ) {
        let mut bytes = stream_of(&msgs);
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        let keep = bytes.len() - cut % (bytes.len() / 4 + 1);
        bytes.truncate(keep);
        receive_all(&bytes, mode);
    }
}
