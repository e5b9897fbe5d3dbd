//! Fuzzes a remote manager's side door (the same-host shortcut): a local peer of the
//! manager's user sends the input as one knock record. With the input's first byte odd, the
//! record starts as a real knock does (the wire's version and the token the manager offered
//! to an open connection), so the decoder gets past the token. The manager must close every
//! refused knock at once and keep serving: after every input a client's call must succeed.
#![no_main]

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mp::connection::{Address, Client, Connection};
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

/// A client of the manager, the connection holding the offer, the door's name and the token.
struct Setup {
    probe: mp::Manager,
    _offered: Connection,
    door: SocketAddrUnix,
    token: [u8; 16],
}

/// Skips one postcard varint at `at`.
fn skip_varint(bytes: &[u8], mut at: usize) -> usize {
    while bytes[at] & 0x80 != 0 {
        at += 1;
    }
    at + 1
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // Served in this process (a thread running `serve_forever`), so that libFuzzer sees
        // the side door's coverage.
        let server = mp::Manager::builder()
            .address("127.0.0.1:0")
            .authkey(b"key")
            .get_server()
            .expect("bind");
        let address: Address = server.address().clone();
        std::thread::spawn(move || {
            if let Err(e) = server.serve_forever() {
                panic!("the server stopped: {e}");
            }
        });
        let probe = mp::Manager::connect(address.clone(), Some(b"key")).expect("connect");
        let offered = Client::builder(&address).and_then(|c| c.authkey(b"key").connect_now()).expect("connect");
        let mut hello = vec![3u8];
        hello.extend_from_slice(&[9u8; 16]);
        offered.send_bytes(&hello, 0, None).expect("hello");
        // The welcome: id and pid (varints), then `Some` and the shortcut's door and token.
        let welcome = offered.recv_bytes(None).expect("welcome");
        let at = skip_varint(&welcome, skip_varint(&welcome, 0));
        assert_eq!(welcome[at], 1, "the manager offers the shortcut");
        let door_bytes = &welcome[at + 1..at + 17];
        let mut name = b"mp-manager-shortcut-".to_vec();
        for b in door_bytes {
            name.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        let door = SocketAddrUnix::new_abstract_name(&name).expect("a name");
        let token = welcome[at + 17..at + 33].try_into().expect("16 bytes");
        Setup { probe, _offered: offered, door, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let Some((&first, rest)) = data.split_first() else { return };
    let mut record = Vec::new();
    if first & 1 == 1 {
        record.push(3u8);
        record.extend_from_slice(&s.token);
    }
    record.extend_from_slice(rest);
    let socket: OwnedFd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socket");
    rustix::net::connect(&socket, &s.door).expect("the side door is open");
    if rustix::net::send(&socket, &record, SendFlags::NOSIGNAL).is_ok() {
        // A knock without descriptors never brings a pipe: the manager closes it.
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(10)),
        )
        .expect("a timeout");
        let mut byte = [0u8; 1];
        loop {
            match rustix::net::recv(&socket, &mut byte, rustix::net::RecvFlags::empty()) {
                Ok((0, _)) | Err(rustix::io::Errno::CONNRESET) => break,
                // libFuzzer's timer.
                Err(rustix::io::Errno::INTR) => {}
                Ok(_) => panic!("the manager answered a knock without a pipe"),
                Err(e) => panic!("a refused knock stayed open ({e})"),
            }
        }
    }
    s.probe.number_of_objects().expect("the manager still serves");
});
