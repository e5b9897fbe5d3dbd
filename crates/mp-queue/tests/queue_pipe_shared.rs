//! Handles on one end of a pipe ([`Connection::try_clone`]) used by several processes at once,
//! under the suite's start method: senders never interleave their messages, concurrent
//! receivers each get whole messages, and the other end sees end of file once every handle on
//! an end is closed.

use mp_process::Process;
use mp_queue::{Connection, Error, pipe};
use mp_sync::Event;

/// How many messages each sender sends (or each receiver is owed, on average).
const EACH: u32 = 45;

/// The size of message `seq`: one that fits a pipe's lane, one that takes several socket
/// buffers' worth of writes, one larger than a lane takes.
fn size(seq: u32) -> usize {
    match seq % 3 {
        0 => 100,
        1 => 300_000,
        _ => 3 << 20,
    }
}

/// The fill byte of message `seq` of sender `id`.
fn fill(id: u8, seq: u32) -> u8 {
    id.wrapping_mul(31).wrapping_add(seq as u8)
}

/// Message `seq` of sender `id`: its id, its number, then its fill byte to its size.
fn message(id: u8, seq: u32) -> Vec<u8> {
    let mut m = vec![fill(id, seq); size(seq)];
    m[0] = id;
    m[1..5].copy_from_slice(&seq.to_le_bytes());
    m
}

/// The sender and number of a message, checked to be whole: its size and every fill byte.
fn whole(m: &[u8]) -> (u8, u32) {
    assert!(m.len() >= 5, "a message of {} bytes", m.len());
    let (id, seq) = (m[0], u32::from_le_bytes([m[1], m[2], m[3], m[4]]));
    assert_eq!(m.len(), size(seq), "message {seq} of sender {id}: its length");
    let torn = m[5..].iter().position(|&b| b != fill(id, seq));
    assert_eq!(torn, None, "message {seq} of sender {id}: a foreign byte at this offset");
    (id, seq)
}

/// Sends `EACH` messages as sender `id` on `conn`, starting when `go` is set.
fn send_all(conn: Connection, id: u8, go: Event) -> Result<(), Error> {
    go.wait().expect("wait for the start");
    for seq in 0..EACH {
        conn.send_bytes(&message(id, seq), 0, None)?;
    }
    Ok(())
}

#[test]
fn children_sending_on_clones_of_one_end_never_interleave() {
    let (reader, writer) = pipe(false).unwrap();
    let go = Event::new().unwrap();
    let mut senders = Vec::new();
    for id in 0..2u8 {
        let mut p = Process::new(send_all, (writer.try_clone().unwrap(), id, go.clone()));
        p.start().unwrap();
        senders.push(p);
    }
    drop(writer);
    go.set();
    let mut next = [0u32; 2];
    for _ in 0..2 * EACH {
        let (id, seq) = whole(&reader.recv_bytes(None).unwrap());
        assert_eq!(seq, next[usize::from(id)], "sender {id}'s messages arrive in order");
        next[usize::from(id)] += 1;
    }
    for p in &senders {
        assert_eq!(p.join().unwrap(), 0);
    }
    assert!(
        matches!(reader.recv_bytes(None), Err(Error::Eof)),
        "end of file once every handle on the writing end is closed"
    );
}

/// Receives whole messages on `conn` until an empty one, then reports their numbers.
fn receive_all(conn: Connection, report: Connection) -> Result<(), Error> {
    let mut got = Vec::new();
    loop {
        let m = conn.recv_bytes(None)?;
        if m.is_empty() {
            break;
        }
        let (id, seq) = whole(&m);
        assert_eq!(id, 9, "the parent's messages");
        got.push(seq);
    }
    report.send(&got)
}

#[test]
fn children_receiving_on_clones_of_one_end_each_get_whole_messages() {
    let (reader, writer) = pipe(false).unwrap();
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let (report, child_report) = pipe(false).unwrap();
        let mut p = Process::new(receive_all, (reader.try_clone().unwrap(), child_report));
        p.start().unwrap();
        receivers.push((p, report));
    }
    for seq in 0..2 * EACH {
        writer.send_bytes(&message(9, seq), 0, None).unwrap();
    }
    // One end for each receiver: a receiver stops at the first.
    writer.send_bytes(b"", 0, None).unwrap();
    writer.send_bytes(b"", 0, None).unwrap();
    let mut all = Vec::new();
    for (p, report) in &receivers {
        let got: Vec<u32> = report.recv().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "each receiver gets them in order: {got:?}");
        all.extend(got);
        assert_eq!(p.join().unwrap(), 0);
    }
    all.sort_unstable();
    assert_eq!(all, (0..2 * EACH).collect::<Vec<_>>(), "every message reached one receiver");
}

#[test]
fn a_clone_is_another_handle_on_the_same_end() {
    let (a, b) = pipe(true).unwrap();
    let mut a2 = a.try_clone().unwrap();
    assert!(a2.readable() && a2.writable());
    a2.send(&1u8).unwrap();
    a.send(&2u8).unwrap();
    assert_eq!((b.recv::<u8>().unwrap(), b.recv::<u8>().unwrap()), (1, 2));
    b.send("to either").unwrap();
    assert_eq!(a2.recv::<String>().unwrap(), "to either");
    // Each handle closes on its own; the other end sees end of file once all are closed.
    a2.close();
    assert!(matches!(a2.try_clone(), Err(Error::Closed)));
    a.send(&3u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 3);
    drop(a);
    assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
}
