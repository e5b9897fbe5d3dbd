//! The rows of `Listener`/`Client`: `connection_rtt_unix`, `connection_rtt_tcp` and
//! `connection_connect_auth_tcp`.
//!
//! The server is a child started under fork that accepts with the key and echoes; the
//! client is this process. Every measurement is warm (connected and authenticated first).

use anyhow::{Context, Result, ensure};

use crate::measure::seconds_per_op;
use crate::rows::{Figure, Side};

/// The key of the rows (CPython's side uses the same).
const KEY: &[u8] = b"secret";

/// The size of a round trip's message.
const SIZE: usize = 64;

/// The server: accepts connections one after another and echoes each until it closes.
fn echo_server(listener_address: String, ready: mp::Connection) -> Result<(), mp::QueueError> {
    let listener = mp::Listener::bind(listener_address.as_str(), Some(KEY))?;
    ready.send(&listener.address().to_string())?;
    loop {
        let Ok(conn) = listener.accept() else { continue };
        while let Ok(bytes) = conn.recv_bytes(None) {
            conn.send_bytes(&bytes, 0, None)?;
        }
    }
}

/// Starts the echo server on `address` (a daemonic child under fork) and returns it with
/// the address it bound.
fn start_server(address: &str) -> Result<(mp::Process, String)> {
    let ctx = mp::get_context("fork").context("get_context(fork)")?;
    let (ready, child_end) = mp::pipe(true)?;
    let mut p = ctx.process(echo_server, (address.to_string(), child_end));
    p.set_daemon(true).context("daemon")?;
    p.start().context("start the echo server")?;
    let bound: String = ready.recv().context("the server's address")?;
    Ok((p, bound))
}

/// Seconds per 64-byte `send_bytes` + `recv_bytes` round trip to the echo server at
/// `address`.
fn rtt(address: &str) -> Result<f64> {
    let (server, bound) = start_server(address)?;
    let conn = mp::Client::connect(bound.as_str(), Some(KEY))?;
    let msg = [7u8; SIZE];
    let mut buf = [0u8; SIZE];
    let seconds = seconds_per_op(|n| {
        for _ in 0..n {
            conn.send_bytes(&msg, 0, None)?;
            ensure!(conn.recv_bytes_into(&mut buf, 0)? == SIZE, "a short echo");
        }
        Ok(())
    })?;
    drop(conn);
    server.terminate().context("terminate")?;
    server.join().context("join")?;
    Ok(seconds)
}

/// connection_rtt_unix: a 64-byte round trip over an `AF_UNIX` connection, in µs; the floor
/// is a blocking round trip on a raw `AF_UNIX` socket pair.
pub fn connection_rtt_unix(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => rtt(&format!("@mp-bench-{}", std::process::id()))?,
        Side::Floor => crate::rows::socket_pingpong(SIZE)?,
    };
    Ok(Figure { value: seconds * 1e6, unit: "us" })
}

/// connection_rtt_tcp: the same over TCP loopback; the floor is a blocking round trip on a
/// raw TCP loopback pair with `TCP_NODELAY`.
pub fn connection_rtt_tcp(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => rtt("127.0.0.1:0")?,
        Side::Floor => crate::rows::tcp_pingpong(SIZE)?,
    };
    Ok(Figure { value: seconds * 1e6, unit: "us" })
}

/// connection_connect_auth_tcp: `Client::connect` with a key (connect, then the mutual
/// handshake with the server) and close, in µs; the floor is a TCP connect + accept + close.
pub fn connection_connect_auth_tcp(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => {
            let (server, bound) = start_server("127.0.0.1:0")?;
            let seconds = seconds_per_op(|n| {
                for _ in 0..n {
                    drop(mp::Client::connect(bound.as_str(), Some(KEY))?);
                }
                Ok(())
            })?;
            server.terminate().context("terminate")?;
            server.join().context("join")?;
            seconds
        }
        Side::Floor => crate::rows::tcp_connect()?,
    };
    Ok(Figure { value: seconds * 1e6, unit: "us" })
}
