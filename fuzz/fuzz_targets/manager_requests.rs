//! Fuzzes a remote manager's decoding of requests: an authenticated client (the key is
//! known: the fuzzer plays a client that holds it, the most a network peer can be) sends the
//! input as request frames after a well-formed hello. The manager must answer or close that
//! connection, and keep serving everyone else: after every input a second client's call must
//! succeed. Nothing a request holds may run as code in the manager.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mp::connection::{Address, Client};

/// A well-behaved remote client of the manager, and the manager's address. The manager is
/// served in this process, by a thread running `Server::serve_forever` (Python's
/// `get_server().serve_forever()`), so that libFuzzer sees the server's coverage: its
/// request decoding and every object's argument decoding are what this target explores.
fn manager() -> &'static (mp::Manager, Address) {
    static MANAGER: OnceLock<(mp::Manager, Address)> = OnceLock::new();
    MANAGER.get_or_init(|| {
        let name = format!("mp-fuzz-manager-{}", std::process::id()).into_bytes();
        let server = mp::Manager::builder()
            .address(Address::Abstract(name))
            .authkey(b"key")
            .get_server()
            .expect("bind");
        let address = server.address().clone();
        std::thread::spawn(move || {
            if let Err(e) = server.serve_forever() {
                panic!("the server stopped: {e}");
            }
        });
        let probe = mp::Manager::connect(address.clone(), Some(b"key")).expect("connect");
        (probe, address)
    })
}

/// The hello of a remote connection (the wire's version and a session), as the client sends
/// it: postcard of `(u32, [u8; 16])`.
fn hello(session: u8) -> Vec<u8> {
    let mut bytes = vec![3u8]; // version 3, a varint
    bytes.extend_from_slice(&[session; 16]);
    bytes
}

fuzz_target!(|data: &[u8]| {
    let (probe, address) = manager();
    let Ok(conn) = Client::builder(address).and_then(|c| c.authkey(b"key").connect_now()) else {
        panic!("the manager stopped accepting");
    };
    let session = data.first().copied().unwrap_or(0);
    if conn.send_bytes(&hello(session), 0, None).is_err() || conn.recv_bytes(None).is_err() {
        panic!("the manager refused a good hello");
    }
    // Frames: each chunk up to a 0xff byte is one request.
    for request in data.split(|&b| b == 0xff) {
        if conn.send_bytes(request, 0, None).is_err() {
            break;
        }
        // A request may block in the manager (a queue's `get`): then the client leaves, and
        // the manager gives the call up.
        if !conn.poll_timeout(std::time::Duration::from_millis(200)).unwrap_or(false)
            || conn.recv_bytes(None).is_err()
        {
            break;
        }
    }
    drop(conn);
    probe.number_of_objects().expect("the manager still serves");
});
