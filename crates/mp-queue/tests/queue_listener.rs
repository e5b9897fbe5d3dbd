//! `Listener` and `Client`: addresses, the handshake, bad peers, processes, and a real
//! Python peer (CPython's framing and handshake, both directions, right and wrong keys); and
//! `socket_pipe`, the same framing between a parent and a child or a Python program.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use mp_process::Process;
use mp_queue::{Address, Client, Connection, Error, Listener};
use mp_testkit::python::{python, run_script};

const KEY: &[u8] = b"the key";

/// Echoes every message of `conn` back, until end of file.
fn echo_all(conn: Connection) -> mp_queue::Result<()> {
    loop {
        match conn.recv_bytes(None) {
            Ok(bytes) => conn.send_bytes(&bytes, 0, None)?,
            Err(Error::Eof) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Echoes every message of one connection back, until end of file.
fn echo_one(listener: &Listener) -> mp_queue::Result<()> {
    echo_all(listener.accept()?)
}

/// A round trip on every family, typed and raw.
#[test]
fn echo_over_tcp_unix_path_and_abstract_name() {
    let dir = std::env::temp_dir().join(format!("mp-test-listener-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    let path = dir.join("echo.sock");
    let abstract_name = format!("@mp-test-{}", std::process::id());
    for address in ["127.0.0.1:0", "[::1]:0", path.to_str().unwrap(), &abstract_name] {
        let Ok(mut listener) = Listener::bind(address, Some(KEY)) else {
            assert_eq!(address, "[::1]:0", "only IPv6 may be missing");
            continue;
        };
        let bound = listener.address().clone();
        std::thread::scope(|s| {
            let server = s.spawn(|| echo_one(&listener));
            let conn = Client::connect(&bound, Some(KEY)).unwrap();
            assert!(conn.is_socket());
            conn.send(&(1u8, "two".to_string())).unwrap();
            assert_eq!(conn.recv::<(u8, String)>().unwrap(), (1, "two".to_string()));
            conn.send_bytes(b"", 0, None).unwrap();
            assert_eq!(conn.recv_bytes(None).unwrap(), b"");
            let big = vec![7u8; 3 * 1024 * 1024 + 5];
            conn.send_bytes(&big, 0, None).unwrap();
            assert_eq!(conn.recv_bytes(None).unwrap(), big);
            drop(conn);
            server.join().unwrap().unwrap();
        });
        match &bound {
            Address::Tcp(a) => assert_ne!(a.port(), 0, "the port chosen is reported"),
            Address::Unix(p) => assert!(p.exists()),
            Address::Abstract(_) => {}
        }
        listener.close();
        assert!(matches!(listener.accept(), Err(Error::Closed)));
        if let Address::Unix(p) = &bound {
            assert!(!p.exists(), "the socket file is removed at close");
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn a_wrong_key_is_an_authentication_error_on_both_sides() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = listener.address().clone();
    std::thread::scope(|s| {
        let server = s.spawn(|| listener.accept().map(|_| ()));
        let client = Client::connect(&address, Some(b"another key"));
        assert!(
            matches!(&client, Err(Error::Authentication(m)) if m == "digest sent was rejected"),
            "{client:?}"
        );
        let server = server.join().unwrap();
        assert!(
            matches!(&server, Err(Error::Authentication(m)) if m == "digest received was wrong"),
            "{server:?}"
        );
    });
    // A client without a key meets a challenge it does not expect: both sides fail.
    std::thread::scope(|s| {
        let server = s.spawn(|| listener.accept().map(|_| ()));
        let conn = Client::connect(&address, None).unwrap();
        // The listener's challenge is the first message this client sees.
        assert!(conn.recv_bytes(None).unwrap().starts_with(b"#CHALLENGE#{sha256}"));
        drop(conn);
        assert!(server.join().unwrap().is_err());
    });
    // The listener still accepts good clients.
    std::thread::scope(|s| {
        let server = s.spawn(|| echo_one(&listener));
        let conn = Client::connect(&address, Some(KEY)).unwrap();
        conn.send(&5u32).unwrap();
        assert_eq!(conn.recv::<u32>().unwrap(), 5);
        drop(conn);
        server.join().unwrap().unwrap();
    });
}

#[test]
fn garbage_a_stalled_peer_and_an_early_close_do_not_wedge_the_listener() {
    let listener = Listener::builder()
        .address(Address::parse("127.0.0.1:0").unwrap())
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(300))
        .bind()
        .unwrap();
    let Address::Tcp(addr) = listener.address().clone() else { panic!() };
    // Garbage: a frame announcing 1 GiB, answered with an error before any allocation.
    let mut raw = TcpStream::connect(addr).unwrap();
    std::thread::scope(|s| {
        let server = s.spawn(|| listener.accept().map(|_| ()));
        raw.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
        let got = server.join().unwrap();
        assert!(matches!(&got, Err(Error::Authentication(m)) if m.contains("bytes")), "{got:?}");
    });
    // A peer that connects and says nothing: the handshake times out.
    let _stalled = TcpStream::connect(addr).unwrap();
    match listener.accept() {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    // A peer that closes at once.
    drop(TcpStream::connect(addr).unwrap());
    assert!(listener.accept().is_err());
    // And a good client after all of them.
    std::thread::scope(|s| {
        let server = s.spawn(|| echo_one(&listener));
        let conn = Client::connect(addr, Some(KEY)).unwrap();
        conn.send_bytes(b"still here", 0, None).unwrap();
        assert_eq!(conn.recv_bytes(None).unwrap(), b"still here");
        drop(conn);
        server.join().unwrap().unwrap();
    });
}

#[test]
fn corrupt_frames_after_the_handshake_break_only_that_connection() {
    let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    let Address::Tcp(addr) = listener.address().clone() else { panic!() };
    let mut raw = TcpStream::connect(addr).unwrap();
    let conn = listener.accept().unwrap();
    raw.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(matches!(conn.recv_bytes(None), Err(Error::Wire(_))));
    assert!(matches!(conn.recv_bytes(None), Err(Error::Broken)));
    // Oversized against the connection's limit: refused before reading the payload.
    let mut raw = TcpStream::connect(addr).unwrap();
    let conn = listener.accept().unwrap().with_max_message_size(1000);
    raw.write_all(&5000u32.to_be_bytes()).unwrap();
    assert!(matches!(conn.recv_bytes(None), Err(Error::Wire(_))));
    // A peer that closes inside a frame.
    let mut raw = TcpStream::connect(addr).unwrap();
    let conn = listener.accept().unwrap();
    raw.write_all(&[0, 0, 0, 10, 1, 2, 3]).unwrap();
    drop(raw);
    assert!(matches!(conn.recv_bytes(None), Err(Error::Wire(_))));
    // maxlength, as Python's recv_bytes(maxlength).
    let client = Client::connect(addr, None).unwrap();
    let conn = listener.accept().unwrap();
    client.send_bytes(&[1; 100], 0, None).unwrap();
    assert!(matches!(conn.recv_bytes(Some(10)), Err(Error::BadMessageLength { len: 100, .. })));
}

#[test]
fn a_taken_address_and_values_with_descriptors_are_clear_errors() {
    let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    let taken = Listener::bind(listener.address(), None);
    match taken {
        Err(Error::Io { op, source }) => {
            assert_eq!(op, "bind");
            assert_eq!(source.raw_os_error(), Some(rustix::io::Errno::ADDRINUSE.raw_os_error()));
        }
        other => panic!("{other:?}"),
    }
    let refused = Client::connect("127.0.0.1:1", None);
    assert!(matches!(refused, Err(Error::Io { op: "connect", .. })), "{refused:?}");
    let client = Client::connect(listener.address(), None).unwrap();
    let (a, _b) = mp_queue::pipe(true).unwrap();
    assert!(matches!(client.send(&a), Err(Error::InvalidArgument(_))));
    assert_eq!(listener.last_accepted(), None);
    let _conn = listener.accept().unwrap();
    assert!(matches!(listener.last_accepted(), Some(Address::Tcp(a)) if a.ip().is_loopback()));
}

#[test]
fn listeners_and_connections_work_with_wait() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    assert!(mp_queue::wait_timeout([listener.as_fd()], Duration::ZERO).unwrap().is_empty());
    let address = listener.address().clone();
    std::thread::scope(|s| {
        let client = s.spawn(move || {
            let conn = Client::connect(&address, Some(KEY)).unwrap();
            conn.send(&1u8).unwrap();
            conn.recv::<u8>().unwrap()
        });
        assert_eq!(mp_queue::wait([listener.as_fd()]).unwrap().len(), 1);
        let conn = listener.accept().unwrap();
        assert_eq!(mp_queue::wait([&conn]).unwrap().len(), 1);
        assert!(conn.poll().unwrap());
        assert_eq!(conn.recv::<u8>().unwrap(), 1);
        conn.send(&2u8).unwrap();
        assert_eq!(client.join().unwrap(), 2);
    });
}

#[test]
fn sixteen_clients_at_once() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = listener.address().clone();
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..16u32)
            .map(|i| {
                let address = address.clone();
                s.spawn(move || {
                    let conn = Client::connect(&address, Some(KEY)).unwrap();
                    conn.send(&i).unwrap();
                    conn.recv::<u32>().unwrap()
                })
            })
            .collect();
        let mut conns = Vec::new();
        for _ in 0..16 {
            conns.push(listener.accept().unwrap());
        }
        for conn in &conns {
            let i: u32 = conn.recv().unwrap();
            conn.send(&(i * 10)).unwrap();
        }
        let mut got: Vec<u32> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..16).map(|i| i * 10).collect::<Vec<_>>());
    });
}

/// A child that connects with the key it inherited and sends its pid.
fn connect_with_inherited_key(address: String) -> mp_queue::Result<()> {
    let conn = Client::builder(address.as_str())?.current_authkey().connect_now()?;
    conn.send(&std::process::id())?;
    let echoed: u32 = conn.recv()?;
    assert_eq!(echoed, std::process::id());
    Ok(())
}

/// Serves one message on a connection it received from its parent.
fn serve_received(conn: Connection) -> mp_queue::Result<()> {
    let n: u64 = conn.recv()?;
    conn.send(&(n + 1))
}

#[test]
fn children_inherit_the_authkey_and_take_accepted_connections() {
    let _guard = mp_process::init().unwrap();
    mp_process::set_authkey(b"a key of this test tree");
    let listener = Listener::builder().current_authkey().bind().unwrap();
    let Address::Unix(path) = listener.address().clone() else { panic!("a path by default") };
    let mut child = Process::new(connect_with_inherited_key, (path.to_str().unwrap().to_string(),));
    child.start().unwrap();
    let conn = listener.accept().unwrap();
    let pid: u32 = conn.recv().unwrap();
    assert_eq!(pid, child.pid().unwrap());
    conn.send(&pid).unwrap();
    assert_eq!(child.join().unwrap(), 0);

    // An accepted connection handed to a child, which serves on it.
    let client = std::thread::spawn({
        let path = path.clone();
        move || {
            let conn = Client::builder(path.as_path())
                .unwrap()
                .authkey(b"a key of this test tree")
                .connect_now()
                .unwrap();
            conn.send(&41u64).unwrap();
            conn.recv::<u64>().unwrap()
        }
    });
    let accepted = listener.accept().unwrap();
    let mut server = Process::new(serve_received, (accepted,));
    server.start().unwrap();
    assert_eq!(client.join().unwrap(), 42);
    assert_eq!(server.join().unwrap(), 0);
}

/// The Python side of the interoperability tests: a listener or a client, as argv says.
const PY_PEER: &str = r#"
import sys
from multiprocessing.connection import Listener, Client, AuthenticationError
role, key = sys.argv[1], sys.argv[2].encode()
def serve(conn):
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(data[::-1])
try:
    if role == "listen":
        with Listener(("127.0.0.1", 0), authkey=key) as l:
            print(l.address[1], flush=True)
            try:
                conn = l.accept()
            except AuthenticationError as e:
                print("AuthenticationError", e, flush=True)
                sys.exit(0)
            serve(conn)
            print("done", flush=True)
    else:
        port = int(sys.argv[3])
        try:
            conn = Client(("127.0.0.1", port), authkey=key)
        except AuthenticationError as e:
            print("AuthenticationError", e, flush=True)
            sys.exit(0)
        for msg in [b"hello", b"", bytes(range(256)) * 300]:
            conn.send_bytes(msg)
            print(conn.recv_bytes() == msg[::-1], flush=True)
        conn.close()
except Exception as e:
    print("error", type(e).__name__, e, flush=True)
"#;

/// A Python listener (of the version asked), a Rust client; and a Rust listener, a Python
/// client; with the right key and a wrong one.
fn interoperate(min_minor: u32, max_minor: u32, legacy: bool) {
    let Some(py) = python(min_minor, max_minor) else {
        eprintln!("SKIPPED: no Python 3.{min_minor}..=3.{max_minor} interpreter on this machine");
        return;
    };
    // Python listens.
    for (key, right) in [(KEY, true), (&b"wrong"[..], false)] {
        let mut child = run_script(&py, PY_PEER, &["listen", "the key"]);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().expect("the port");
        let got = Client::builder(("127.0.0.1", port))
            .unwrap()
            .authkey(key)
            .legacy_md5(legacy)
            .connect_now();
        let mut rest = String::new();
        if right {
            let conn = got.unwrap();
            conn.send_bytes(b"abc", 0, None).unwrap();
            assert_eq!(conn.recv_bytes(None).unwrap(), b"cba");
            let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
            conn.send_bytes(&big, 0, None).unwrap();
            let back = conn.recv_bytes(None).unwrap();
            assert_eq!(back, big.iter().rev().copied().collect::<Vec<_>>());
            drop(conn);
            std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
            assert_eq!(rest.trim(), "done");
        } else {
            assert!(
                matches!(&got, Err(Error::Authentication(m)) if m == "digest sent was rejected"),
                "{got:?}"
            );
            std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
            assert!(rest.starts_with("AuthenticationError digest received was wrong"), "{rest}");
        }
        assert!(child.wait().unwrap().success());
    }
    // Rust listens.
    for (key, right) in [(KEY, true), (&b"wrong"[..], false)] {
        let listener = Listener::builder()
            .address(Address::parse("127.0.0.1:0").unwrap())
            .authkey(key)
            .legacy_md5(legacy)
            .bind()
            .unwrap();
        let Address::Tcp(addr) = listener.address().clone() else { panic!() };
        let port = addr.port().to_string();
        let mut child = run_script(&py, PY_PEER, &["connect", "the key", &port]);
        let accepted = listener.accept();
        if right {
            let conn = accepted.unwrap();
            for _ in 0..3 {
                let msg = conn.recv_bytes(None).unwrap();
                let reversed: Vec<u8> = msg.iter().rev().copied().collect();
                conn.send_bytes(&reversed, 0, None).unwrap();
            }
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert_eq!(out, "True\nTrue\nTrue\n");
        } else {
            assert!(
                matches!(&accepted, Err(Error::Authentication(m)) if m == "digest received was wrong"),
                "{accepted:?}"
            );
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(out.starts_with("AuthenticationError digest sent was rejected"), "{out}");
        }
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn python_3_12_or_later_peers_interoperate_with_sha256() {
    interoperate(12, 99, false);
}

#[test]
fn python_3_11_peers_interoperate_with_legacy_md5_when_asked() {
    interoperate(8, 11, true);
}

#[test]
fn python_3_11_peers_are_refused_unless_legacy_md5_is_asked() {
    let Some(py) = python(8, 11) else {
        eprintln!("SKIPPED: no Python 3.8..=3.11 interpreter on this machine");
        return;
    };
    // A Python 3.11 client answers our sha256 challenge with HMAC-MD5: refused.
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let Address::Tcp(addr) = listener.address().clone() else { panic!() };
    let mut child = run_script(&py, PY_PEER, &["connect", "the key", &addr.port().to_string()]);
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(Error::Authentication(m)) if m.contains("HMAC-MD5")),
        "{accepted:?}"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.starts_with("AuthenticationError"), "{out}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn messages_read_ahead_still_show_in_poll_and_wait() {
    let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    let client = Client::connect(listener.address(), None).unwrap();
    let conn = listener.accept().unwrap();
    // Three messages in one write's worth: the first receive reads them all from the socket.
    client.send_bytes(b"one", 0, None).unwrap();
    client.send_bytes(b"two", 0, None).unwrap();
    client.send_bytes(b"three", 0, None).unwrap();
    assert!(mp_queue::wait_timeout([&conn], Duration::from_secs(30)).unwrap().len() == 1);
    assert_eq!(conn.recv_bytes(None).unwrap(), b"one");
    assert!(conn.poll().unwrap(), "the second waits in the read-ahead");
    assert_eq!(mp_queue::wait_timeout([&conn], Duration::ZERO).unwrap().len(), 1);
    let mut buf = [0u8; 8];
    assert_eq!(conn.recv_bytes_into(&mut buf, 2).unwrap(), 3);
    assert_eq!(&buf[2..5], b"two");
    match conn.recv_bytes_into(&mut buf, 6) {
        Err(Error::BufferTooShort { message, .. }) => assert_eq!(message, b"three"),
        other => panic!("{other:?}"),
    }
    assert!(!conn.poll().unwrap(), "nothing left");
    // A connection holding read-ahead bytes cannot be handed over; one without can.
    client.send_bytes(b"a", 0, None).unwrap();
    client.send_bytes(b"b", 0, None).unwrap();
    assert!(mp_queue::wait([&conn]).is_ok());
    assert_eq!(conn.recv_bytes(None).unwrap(), b"a");
    let (tx, _rx) = mp_queue::pipe(true).unwrap();
    if conn.poll().unwrap() {
        // "b" was read ahead with "a" (the usual case) or arrived meanwhile.
        let sent = tx.send(&conn);
        if let Err(e) = sent {
            assert!(e.to_string().contains("read ahead"), "{e}");
        }
        assert_eq!(conn.recv_bytes(None).unwrap(), b"b");
    }
    tx.send(&conn).unwrap();
}

#[test]
fn a_socket_pipe_crosses_into_a_child_and_carries_bytes_only() {
    let (mine, theirs) = mp_queue::socket_pipe().unwrap();
    assert!(mine.is_socket() && theirs.is_socket());
    let mut p = Process::new(echo_all, (theirs,));
    p.start().unwrap();
    mine.send(&("typed", 7u64)).unwrap();
    assert_eq!(mine.recv::<(String, u64)>().unwrap(), ("typed".to_owned(), 7));
    // Larger than one read of the socket, and empty: both come back whole.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    mine.send_bytes(&big, 0, None).unwrap();
    assert_eq!(mine.recv_bytes(None).unwrap(), big);
    mine.send_bytes(b"", 0, None).unwrap();
    assert_eq!(mine.recv_bytes(None).unwrap(), b"");
    // A value holding a descriptor cannot cross it, and nothing was sent.
    let (a, _b) = mp_queue::pipe(true).unwrap();
    assert!(matches!(mine.send(&a), Err(Error::InvalidArgument(_))));
    mine.send_bytes(b"after", 0, None).unwrap();
    assert_eq!(mine.recv_bytes(None).unwrap(), b"after");
    // The child killed: end of file at once.
    p.kill().unwrap();
    p.join().unwrap();
    assert!(matches!(mine.recv_bytes(None), Err(Error::Eof)));
}

/// A Python program at the other end of a `socket_pipe`: it wraps the inherited descriptor
/// in `multiprocessing.connection.Connection`, sends two messages back reversed, then one of
/// its own, and closes.
const PY_SOCKET_PIPE: &str = r#"
import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
for _ in range(2):
    conn.send_bytes(conn.recv_bytes()[::-1])
conn.send_bytes(b"bye from python")
conn.close()
print("done", flush=True)
"#;

#[test]
fn a_python_program_talks_over_a_socket_pipe() {
    let Some(py) = python(8, 99) else {
        eprintln!("SKIPPED: no Python 3 interpreter on this machine");
        return;
    };
    let (mine, theirs) = mp_queue::socket_pipe().unwrap();
    let fd = theirs.socket().unwrap();
    // The child inherits this one descriptor (socket pairs are made close-on-exec).
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).unwrap();
    let number = std::os::fd::AsRawFd::as_raw_fd(&fd).to_string();
    let mut child = run_script(&py, PY_SOCKET_PIPE, &[&number]);
    drop(theirs);
    mine.send_bytes(b"abc", 0, None).unwrap();
    assert_eq!(mine.recv_bytes(None).unwrap(), b"cba");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    mine.send_bytes(&big, 0, None).unwrap();
    assert_eq!(mine.recv_bytes(None).unwrap(), big.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(mine.recv_bytes(None).unwrap(), b"bye from python");
    assert!(matches!(mine.recv_bytes(None), Err(Error::Eof)));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(out, "done\n");
    assert!(child.wait().unwrap().success());
}
