//! Fuzzes what a `Listener`/`Client` connection reads from an untrusted peer: the handshake
//! on both sides (the listener's reads of the client's answer and challenge, the client's
//! reads of the listener's), and CPython's frames after it (raw and typed receives). The
//! input is what the peer sends; every run must end in a value or an error, never a panic or
//! a hang (the handshake has a deadline; frames end at the peer's end of file).
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mp::connection::{Address, Client, Listener};

/// A listener with a key and one without, on abstract names of this process.
fn listeners() -> &'static (Listener, Listener) {
    static LISTENERS: OnceLock<(Listener, Listener)> = OnceLock::new();
    LISTENERS.get_or_init(|| {
        let name = |tag: &str| Address::Abstract(format!("mp-fuzz-{tag}-{}", std::process::id()).into_bytes());
        let keyed = Listener::builder()
            .address(name("keyed"))
            .authkey(b"key")
            .legacy_md5(true)
            .handshake_timeout(Duration::from_millis(50))
            .bind()
            .expect("bind");
        let open = Listener::builder().address(name("open")).bind().expect("bind");
        (keyed, open)
    })
}

/// Connects a raw peer to `listener` and writes `bytes`, then ends its writing.
fn raw_peer(listener: &Listener, bytes: &[u8]) -> UnixStream {
    let Address::Abstract(name) = listener.address() else { unreachable!() };
    let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)
        .expect("address");
    let mut peer = UnixStream::connect_addr(&addr).expect("connect");
    // The socket buffer takes a fuzz input whole; a write error only means the listener
    // closed first.
    let _ = peer.write_all(bytes);
    let _ = peer.shutdown(std::net::Shutdown::Write);
    peer
}

fuzz_target!(|data: &[u8]| {
    let (keyed, open) = listeners();
    let Some((&selector, bytes)) = data.split_first() else { return };
    match selector % 3 {
        // The listener's side of the handshake.
        0 => {
            let _peer = raw_peer(keyed, bytes);
            let _ = keyed.accept();
        }
        // Frames after the handshake (none: the open listener).
        1 => {
            let _peer = raw_peer(open, bytes);
            let conn = open.accept().expect("accept");
            for i in 0.. {
                let got = if i % 2 == 0 {
                    conn.recv_bytes(Some(1 << 16)).map(drop)
                } else {
                    conn.recv::<(u32, String, Vec<u8>)>().map(drop)
                };
                if matches!(got, Err(mp::QueueError::Eof | mp::QueueError::Broken)) {
                    break;
                }
            }
        }
        // The client's side: a raw peer plays the listener.
        _ => {
            let (raw, address) = raw_listener();
            std::thread::scope(|s| {
                s.spawn(|| {
                    if let Ok((mut server, _)) = raw.accept() {
                        let _ = server.write_all(bytes);
                        let _ = server.shutdown(std::net::Shutdown::Write);
                        // Held open until the client gives up (its deadline).
                        let _ = std::io::Read::read_to_end(&mut server, &mut Vec::new());
                    }
                });
                let client = Client::builder(address).map(|c| {
                    c.authkey(b"key").legacy_md5(true).timeout(Duration::from_millis(50))
                });
                let _ = client.and_then(|c| c.connect_now());
            });
        }
    }
});

/// A plain `AF_UNIX` listener on an abstract name, for the client's side, and its address.
fn raw_listener() -> &'static (std::os::unix::net::UnixListener, Address) {
    static RAW: OnceLock<(std::os::unix::net::UnixListener, Address)> = OnceLock::new();
    RAW.get_or_init(|| {
        let name = format!("mp-fuzz-raw-{}", std::process::id()).into_bytes();
        let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(&name)
            .expect("address");
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind");
        (listener, Address::Abstract(name))
    })
}
