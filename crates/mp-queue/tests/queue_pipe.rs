//! Pipes between processes: typed and raw messages both ways, boundaries, large messages,
//! `recv_bytes_into`, `maxlength`, `poll`, end of file, one-way pipes, and connections passed
//! inside messages to a running child. Every test talks to a real child started under the
//! suite's start method.

use std::time::{Duration, Instant};

use mp_process::Process;
use mp_queue::{Connection, Error, pipe};
use mp_testkit::server::{Reply, Req, Server};

#[test]
fn typed_values_round_trip_both_ways() {
    let server = Server::start();
    assert_eq!(server.ask(&Req::Sum(vec![1, 2, 3, -10])), Reply::Sum(-4));
    assert_eq!(server.ask(&Req::Sum(Vec::new())), Reply::Sum(0));
    assert_eq!(server.ask(&Req::Upper("héllo wörld".into())), Reply::Text("HÉLLO WÖRLD".into()));
    assert_eq!(server.ask(&Req::Reverse(vec![1, 2, 3])), Reply::Bytes(vec![3, 2, 1]));
    server.stop();
}

#[test]
fn bytes_round_trip_both_ways() {
    let server = Server::start();
    server.conn.send(&Req::EchoBytes(3)).unwrap();
    let messages: [&[u8]; 3] = [b"first", &[0, 255, 7, 0], b"third message"];
    for m in messages {
        server.conn.send_bytes(m, 0, None).unwrap();
    }
    for m in messages {
        assert_eq!(server.conn.recv_bytes(None).unwrap(), m);
    }
    // Offsets and sizes select the bytes sent.
    server.conn.send(&Req::EchoBytes(2)).unwrap();
    server.conn.send_bytes(b"0123456789", 3, Some(4)).unwrap();
    server.conn.send_bytes(b"0123456789", 7, None).unwrap();
    assert_eq!(server.conn.recv_bytes(None).unwrap(), b"3456");
    assert_eq!(server.conn.recv_bytes(None).unwrap(), b"789");
    server.stop();
}

#[test]
fn empty_messages_are_messages() {
    let server = Server::start();
    server.conn.send(&Req::EchoBytes(4)).unwrap();
    for m in [&b""[..], b"", b"x", b""] {
        server.conn.send_bytes(m, 0, None).unwrap();
    }
    let lens: Vec<usize> = (0..4).map(|_| server.conn.recv_bytes(None).unwrap().len()).collect();
    assert_eq!(lens, [0, 0, 1, 0]);
    // A typed `()` is an empty message too, and an empty vector one byte.
    server.conn.send(&Req::EchoBytes(2)).unwrap();
    server.conn.send(&()).unwrap();
    server.conn.send(&Vec::<u8>::new()).unwrap();
    server.conn.recv::<()>().unwrap();
    assert!(server.conn.recv::<Vec<u8>>().unwrap().is_empty());
    server.stop();
}

#[test]
fn many_small_messages_keep_their_boundaries() {
    const N: u32 = 20_000;
    let server = Server::start();
    let conn = &server.conn;
    conn.send(&Req::EchoBytes(N)).unwrap();
    let message = |i: u32| -> Vec<u8> { (0..i % 37).map(|j| (i + j) as u8).collect() };
    // One thread sends while this one receives, so neither side's socket buffer fills up.
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                conn.send_bytes(&message(i), 0, None).unwrap();
            }
        });
        for i in 0..N {
            assert_eq!(conn.recv_bytes(None).unwrap(), message(i), "message {i}");
        }
    });
    server.stop();
}

#[test]
fn sixteen_mib_messages_round_trip() {
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let server = Server::start();
    server.conn.send(&Req::EchoBytes(2)).unwrap();
    server.conn.send_bytes(&big, 0, None).unwrap();
    // Past the lane, the message comes from the socket: handed over as it was read, with
    // little spare room.
    let back = server.conn.recv_bytes(None).unwrap();
    assert!(back == big);
    assert!(back.capacity() <= big.len() + big.len() / 4, "{} spare", back.capacity());
    // Into a buffer too short, a socket message comes back whole inside the error.
    server.conn.send_bytes(&big, 0, None).unwrap();
    let mut short = vec![0u8; 1 << 20];
    match server.conn.recv_bytes_into(&mut short, 0) {
        Err(Error::BufferTooShort { message, room }) => {
            assert!(message == big);
            assert_eq!(room, 1 << 20);
        }
        other => panic!("unexpected {:?}", other.map_err(|e| e.to_string())),
    }

    let mut reversed = big.clone();
    reversed.reverse();
    match server.ask(&Req::Reverse(big)) {
        Reply::Bytes(b) => assert!(b == reversed),
        other => panic!("unexpected {other:?}"),
    }
    server.stop();
}

#[test]
fn recv_bytes_into_with_offset_and_a_short_buffer() {
    let server = Server::start();
    server.conn.send(&Req::EchoBytes(3)).unwrap();
    for m in [&b"abc"[..], b"hello", b"xyz"] {
        server.conn.send_bytes(m, 0, None).unwrap();
    }

    let mut buf = [0u8; 10];
    assert_eq!(server.conn.recv_bytes_into(&mut buf, 3).unwrap(), 3);
    assert_eq!(&buf, b"\0\0\0abc\0\0\0\0");

    let mut short = [9u8; 4];
    match server.conn.recv_bytes_into(&mut short, 2) {
        Err(Error::BufferTooShort { message, room }) => {
            assert_eq!(message, b"hello");
            assert_eq!(room, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(short, [9; 4], "the buffer is left untouched");

    // An offset past the end is refused before anything is received.
    assert!(matches!(
        server.conn.recv_bytes_into(&mut short, 5),
        Err(Error::OutOfRange { offset: 5, len: None, size: 4 })
    ));
    // The connection is still in step: the next message is the third.
    assert_eq!(server.conn.recv_bytes_into(&mut short, 1).unwrap(), 3);
    assert_eq!(&short, b"\x09xyz");
    server.stop();
}

/// `recv_bytes_into_vec` replaces the vector's contents with each message, small ones (the
/// lane) and one of 1 MiB (the socket), reusing its memory; at end of file the vector keeps
/// what it held.
#[test]
fn recv_bytes_into_vec_replaces_the_contents_and_reuses_the_memory() {
    let server = Server::start();
    let big = vec![7u8; 1 << 20];
    let messages: [&[u8]; 5] = [b"hello", b"", &big, b"xy", b"last one"];
    server.conn.send(&Req::EchoBytes(messages.len() as u32)).unwrap();
    for m in messages {
        server.conn.send_bytes(m, 0, None).unwrap();
    }
    let mut buf = b"stale bytes".to_vec();
    for m in messages {
        assert_eq!(server.conn.recv_bytes_into_vec(&mut buf).unwrap(), m.len());
        assert_eq!(buf, m);
    }
    // The 1 MiB message's memory is still there for the next one.
    assert!(buf.capacity() >= 1 << 20);
    let (mine, theirs) = pipe(true).unwrap();
    drop(theirs);
    let mut kept = b"kept".to_vec();
    assert!(matches!(mine.recv_bytes_into_vec(&mut kept), Err(Error::Eof)));
    assert_eq!(kept, b"kept");
    server.stop();
}

#[test]
fn recv_bytes_with_a_too_small_maxlength_breaks_the_reading_side() {
    let server = Server::start();
    server.conn.send(&Req::EchoBytes(2)).unwrap();
    server.conn.send_bytes(&[1; 100], 0, None).unwrap();
    assert_eq!(server.conn.recv_bytes(Some(100)).unwrap(), vec![1; 100]);
    server.conn.send_bytes(&[2; 101], 0, None).unwrap();
    assert!(matches!(
        server.conn.recv_bytes(Some(100)),
        Err(Error::BadMessageLength { len: 101, maxlength: 100 })
    ));
    assert!(matches!(server.conn.recv_bytes(None), Err(Error::Broken)));
    assert!(matches!(server.conn.poll(), Err(Error::Broken)));
    // The duplex end can still send.
    server.conn.send(&Req::Stop).unwrap();
    assert_eq!(server.process.join().unwrap(), 0);
}

#[test]
fn poll_with_and_without_timeout() {
    let server = Server::start();
    let conn = &server.conn;
    assert!(!conn.poll().unwrap());

    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    assert!(!conn.poll_timeout(timeout).unwrap());
    assert!(start.elapsed() >= timeout, "poll returned after {:?}", start.elapsed());

    conn.send(&Req::EchoBytes(2)).unwrap();
    conn.send_bytes(b"ping", 0, None).unwrap();
    assert!(conn.poll_timeout(Duration::MAX).unwrap());
    assert!(conn.poll().unwrap(), "polling does not consume");
    assert_eq!(conn.recv_bytes(None).unwrap(), b"ping");
    assert!(!conn.poll().unwrap());

    conn.send_bytes(b"pong", 0, None).unwrap();
    assert!(conn.poll_timeout(Duration::from_secs(60)).unwrap());
    assert_eq!(conn.recv_bytes(None).unwrap(), b"pong");
    server.stop();
}

/// Sends a goodbye and returns, closing its end.
fn say_goodbye(conn: Connection) -> Result<(), Error> {
    conn.send("goodbye")
}

#[test]
fn the_peer_closing_gives_eof() {
    let (parent_end, child_end) = pipe(true).unwrap();
    // The child's end is moved into the process: the parent's copy is closed once it starts.
    let mut p = Process::new(say_goodbye, (child_end,));
    p.start().unwrap();
    assert_eq!(parent_end.recv::<String>().unwrap(), "goodbye");
    // At end of file, poll says a receive would not block, and the receive says why.
    assert!(parent_end.poll_timeout(Duration::MAX).unwrap());
    assert!(matches!(parent_end.recv::<String>(), Err(Error::Eof)));
    assert!(matches!(parent_end.recv_bytes(None), Err(Error::Eof)));
    assert!(matches!(parent_end.recv_bytes_into(&mut [0; 8], 0), Err(Error::Eof)));
    assert_eq!(p.join().unwrap(), 0);
    // Sending to a closed peer is an error, not a SIGPIPE.
    assert!(matches!(parent_end.send(&1u8), Err(Error::Io { .. })));
}

/// Sends the numbers 0..n on a write-only end, after checking it cannot receive.
fn write_numbers(writer: Connection, n: u32) -> Result<(), String> {
    if writer.readable() || !writer.writable() {
        return Err(format!("wrong direction: {writer:?}"));
    }
    if !matches!(writer.recv::<u32>(), Err(Error::WriteOnly)) {
        return Err("recv on a write-only end did not fail".into());
    }
    for i in 0..n {
        writer.send(&i).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn one_way_pipe_into_a_child_and_back() {
    let (reader, writer) = pipe(false).unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(!writer.readable() && writer.writable());
    let mut p = Process::new(write_numbers, (writer, 50u32));
    p.start().unwrap();
    for i in 0..50u32 {
        assert_eq!(reader.recv::<u32>().unwrap(), i);
    }
    assert!(matches!(reader.recv::<u32>(), Err(Error::Eof)));
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn one_way_pipe_used_the_wrong_way() {
    let (reader, writer) = pipe(false).unwrap();
    assert!(matches!(reader.send(&1u8), Err(Error::ReadOnly)));
    assert!(matches!(reader.send_bytes(b"x", 0, None), Err(Error::ReadOnly)));
    assert!(matches!(writer.recv::<u8>(), Err(Error::WriteOnly)));
    assert!(matches!(writer.recv_bytes(None), Err(Error::WriteOnly)));
    assert!(matches!(writer.recv_bytes_into(&mut [0; 4], 0), Err(Error::WriteOnly)));
    assert!(matches!(writer.poll(), Err(Error::WriteOnly)));
    assert_eq!(Error::ReadOnly.to_string(), "connection is read-only");
    assert_eq!(Error::WriteOnly.to_string(), "connection is write-only");
    // The right way still works after the wrong one.
    writer.send(&7u8).unwrap();
    assert_eq!(reader.recv::<u8>().unwrap(), 7);
}

#[test]
fn connections_sent_inside_messages_to_a_running_child() {
    let server = Server::start();

    // A duplex end: the child writes on it, then reads from it.
    let (ours, theirs) = pipe(true).unwrap();
    server.conn.send(&Req::Adopt(theirs)).unwrap();
    assert_eq!(ours.recv::<Reply>().unwrap(), Reply::Text("r=true w=true".into()));
    ours.send("through the adopted end").unwrap();
    assert_eq!(server.conn.recv::<Reply>().unwrap(), Reply::Text("through the adopted end".into()));
    assert_eq!(server.conn.recv::<Reply>().unwrap(), Reply::Done);
    // The child dropped its end and the parent's copy went with the message: end of file.
    assert!(matches!(ours.recv::<Reply>(), Err(Error::Eof)));

    // The writing end of a one-way pipe keeps its direction.
    let (reader, writer) = pipe(false).unwrap();
    server.conn.send(&Req::Adopt(writer)).unwrap();
    assert_eq!(reader.recv::<Reply>().unwrap(), Reply::Text("r=false w=true".into()));
    assert_eq!(server.conn.recv::<Reply>().unwrap(), Reply::Done);
    assert!(matches!(reader.recv::<Reply>(), Err(Error::Eof)));

    // And so does the reading end.
    let (reader, writer) = pipe(false).unwrap();
    server.conn.send(&Req::Adopt(reader)).unwrap();
    writer.send("to the adopted reader").unwrap();
    assert_eq!(server.conn.recv::<Reply>().unwrap(), Reply::Text("to the adopted reader".into()));
    assert_eq!(server.conn.recv::<Reply>().unwrap(), Reply::Done);

    // Its maximum message size travels too.
    let (ours, theirs) = pipe(true).unwrap();
    server.conn.send(&Req::Adopt(theirs.with_max_message_size(4))).unwrap();
    // The child's reply is larger than 4 bytes, so its send fails and it exits with an error.
    assert!(matches!(ours.recv::<Reply>(), Err(Error::Eof)));
    assert_eq!(server.process.join().unwrap(), 1);
}

/// Checks a received pair of connections by sending on one and receiving on the other.
fn loop_back(pair: (Connection, Connection)) -> Result<(), Error> {
    let (a, b) = pair;
    a.send("around")?;
    let s: String = b.recv()?;
    if s == "around" { Ok(()) } else { Err(Error::Eof) }
}

#[test]
fn both_ends_of_a_pipe_as_one_argument() {
    let mut p = Process::new(loop_back, (pipe(true).unwrap(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
}

/// The size of the messages too large for a pipe's lane (more than 2 MiB).
const HUGE: usize = (2 << 20) + 1;

/// Sends `n` numbered messages mixing the ways a message can travel: small and medium (the
/// shared lane, when the receiver is waiting), huge (the socket, every 50th), small with a
/// descriptor (the socket), and raw bytes; then a final `u32::MAX`.
fn mixed_sender(conn: Connection, n: u32) {
    for i in 0..n {
        match i % 4 {
            0 => conn.send(&(i, Vec::<u8>::new())).unwrap(),
            1 if i % 50 == 1 => conn.send(&(i, mp_queue::Bytes(vec![7u8; HUGE]))).unwrap(),
            1 => conn.send(&(i, vec![7u8; 20_000])).unwrap(),
            2 => {
                let (r, _w) = rustix::pipe::pipe().unwrap();
                conn.send(&(i, mp_process::fdpass::PassFd(r))).unwrap();
            }
            _ => conn.send_bytes(&i.to_le_bytes(), 0, None).unwrap(),
        }
        // The first half goes in bursts of 100 (the receiver is busy: the socket), the second
        // waits for an answer to each message (the receiver waits: the lane, for the small
        // ones).
        if i % 100 == 99 || i >= n / 2 {
            let _: u8 = conn.recv().unwrap();
        }
    }
    conn.send(&(u32::MAX, Vec::<u8>::new())).unwrap();
}

#[test]
fn order_holds_across_every_path_of_a_message() {
    let (conn, child_end) = pipe(true).unwrap();
    let n = 1000;
    let mut p = Process::new(mixed_sender, (child_end, n));
    p.start().unwrap();
    for i in 0..n {
        // Alternate between receiving at once and polling first (not waiting in recv).
        if i % 7 == 3 {
            assert!(conn.poll_timeout(Duration::MAX).unwrap());
        }
        match i % 4 {
            0 => assert_eq!(conn.recv::<(u32, Vec<u8>)>().unwrap(), (i, Vec::new())),
            1 => {
                let (j, v) = conn.recv::<(u32, mp_queue::Bytes)>().unwrap();
                let len = if i % 50 == 1 { HUGE } else { 20_000 };
                assert_eq!((j, v.len()), (i, len));
            }
            2 => {
                let (j, _fd) = conn.recv::<(u32, mp_process::fdpass::PassFd)>().unwrap();
                assert_eq!(j, i);
            }
            _ => assert_eq!(conn.recv_bytes(None).unwrap(), i.to_le_bytes()),
        }
        if i % 100 == 99 || i >= n / 2 {
            conn.send(&1u8).unwrap();
        }
    }
    assert_eq!(conn.recv::<(u32, Vec<u8>)>().unwrap().0, u32::MAX);
    assert_eq!(p.join().unwrap(), 0);
    assert!(matches!(conn.recv::<u8>(), Err(Error::Eof)));
}

#[test]
fn a_set_receive_spin_changes_nothing_but_the_waiting() {
    let (a, b) = mp_queue::pipe(true).unwrap();
    for spin in
        [None, Some(std::time::Duration::from_micros(50)), Some(std::time::Duration::from_secs(1))]
    {
        b.set_receive_spin(spin);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200u32 {
                    a.send(&i).unwrap();
                }
            });
            for i in 0..200u32 {
                assert_eq!(b.recv::<u32>().unwrap(), i);
            }
        });
    }
    // The end of the other side is still noticed (after the spin: set none).
    b.set_receive_spin(None);
    drop(a);
    assert!(matches!(b.recv::<u32>(), Err(mp_queue::Error::Eof)));
}

/// The message number `i`'s size and bytes in
/// `a_stream_through_lane_and_socket_keeps_every_message_in_order`.
fn streamed(i: u32) -> Vec<u8> {
    let len = [1 << 20, 10, 300 << 10, 0, 64, 5 << 20][i as usize % 6];
    let mut m = vec![i as u8; len];
    if len >= 8 {
        m[..4].copy_from_slice(&i.to_le_bytes());
        m[len - 4..].copy_from_slice(&i.to_be_bytes());
    }
    m
}

fn stream_sender(conn: Connection, n: u32) {
    // The first message waits for the receiver (its lane is open from then on); the rest go
    // back to back, as fast as the receiver takes them: lane records, and socket frames (the
    // 5 MiB ones always, others when the ring is full or a poll closed the lane) between
    // them.
    let _: u8 = conn.recv().unwrap();
    for i in 0..n {
        conn.send_bytes(&streamed(i), 0, None).unwrap();
    }
}

#[test]
fn a_stream_through_lane_and_socket_keeps_every_message_in_order() {
    let (conn, child_end) = pipe(true).unwrap();
    let n = 120;
    let mut p = Process::new(stream_sender, (child_end, n));
    p.start().unwrap();
    conn.send(&0u8).unwrap();
    for i in 0..n {
        // Now and then the receiver polls before it receives, which closes the lane until
        // the receive opens it again.
        if i % 11 == 5 {
            assert!(conn.poll_timeout(Duration::MAX).unwrap());
        }
        let got = conn.recv_bytes(None).unwrap();
        assert!(got == streamed(i), "message {i} differs ({} bytes)", got.len());
    }
    assert_eq!(p.join().unwrap(), 0);
    assert!(matches!(conn.recv_bytes(None), Err(Error::Eof)));
}
