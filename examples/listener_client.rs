//! `Listener` and `Client` (Python's `multiprocessing.connection`): an echo server in this
//! process and a client in another, which need not be its child: any program that knows the
//! address and the key may connect, a Python one included.
//!
//! The listener binds TCP port 0 on loopback (the kernel chooses the port) with a key; the
//! client connects, both sides prove they hold the key (CPython's HMAC-SHA256 handshake, both
//! ways), and the client sends a few messages and reads them back.

use mp::connection::{Client, Listener};

const KEY: &[u8] = b"secret password";

fn client(address: String) -> mp::Result<()> {
    let conn = Client::connect(address.as_str(), Some(KEY))?;
    for word in ["hello", "from", "the", "client"] {
        conn.send(word)?;
        let echo: String = conn.recv()?;
        println!("client got back: {echo}");
    }
    conn.send_bytes(b"close", 0, None)?;
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let listener = Listener::bind("127.0.0.1:0", Some(KEY))?;
    let mut p = mp::Process::new(client, (listener.address().to_string(),));
    p.start()?;
    let conn = listener.accept()?;
    println!(
        "connection accepted from {}",
        match listener.last_accepted() {
            Some(peer) if peer.family() == "AF_INET" => "a loopback TCP peer",
            _ => "somewhere else",
        }
    );
    loop {
        let message = conn.recv_bytes(None)?;
        if message == b"close" {
            break;
        }
        // Typed messages are postcard bytes: echo them as they came.
        conn.send_bytes(&message, 0, None)?;
    }
    println!("client exited with {}", p.join()?);
    Ok(())
}
