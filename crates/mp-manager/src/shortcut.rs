//! The same-host shortcut of remote managers: a client of a manager served on an address that
//! runs on the same host (the same network namespace) moves its connection from the socket to
//! an `mp_queue` pipe (shared-memory lanes; a plain `AF_UNIX` socket pair in a process that
//! does not spin), the way connections of the manager's own process tree are made
//! (`pair.rs`).
//!
//! The manager that listens on an address also listens on a *side door*: an abstract
//! `AF_UNIX` `SOCK_SEQPACKET` socket of a random name. Abstract names live in a network
//! namespace, so only processes of the manager's host (its namespace) can reach it; a client
//! on another host, or in another namespace, fails to connect and stays on the network.
//!
//! 1. A remote connection is authenticated (the key's handshake), says hello, and the welcome
//!    it gets back names the side door and a *token*: 16 random bytes, good once, for that
//!    connection's session, for as long as that connection is open.
//! 2. The client makes a pipe, connects to the side door and sends one record: the token and
//!    the server's end of the pipe (`SCM_RIGHTS`).
//! 3. The manager takes the record only from a peer of its own user id (`SO_PEERCRED`; such a
//!    process could read the manager's memory anyway), within the handshake's time, of at most
//!    [`MAX_HELLO`] bytes, with descriptors that check as a pipe's; it spends the token, counts
//!    the pipe as a connection of the token's session, and says so on the pipe. From then on
//!    the client calls on the pipe and closes the socket.
//!
//! The pipe's connection is the remote connection's in every other way: the same session, and
//! the same rights (no functions of the program run for it, it cannot shut the manager down).
//! If anything fails on the way (no side door, another host, another user, a refused record),
//! the client goes on over the socket: the shortcut is never needed.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mp_process::fdpass;
use mp_process::os;
use mp_queue::Connection;
use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};

use crate::proto::{MAX_HELLO, Shortcut, VERSION};

/// How long a client waits for the manager to take its pipe, and the manager for a record.
pub(crate) const KNOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client sends through the side door: one record.
#[derive(Serialize, Deserialize)]
pub(crate) struct Knock {
    /// [`VERSION`].
    pub version: u32,
    /// The token of the welcome.
    pub token: [u8; 16],
    /// The server's end of the client's new pipe.
    pub conn: Connection,
}

/// The start of every side door's abstract name.
const PREFIX: &str = "mp-manager-shortcut-";

/// The abstract address of the side door called `door`.
fn address(door: &[u8; 16]) -> Result<SocketAddrUnix, Errno> {
    let mut name = PREFIX.as_bytes().to_vec();
    for b in door {
        name.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    SocketAddrUnix::new_abstract_name(&name)
}

/// A new `AF_UNIX` `SOCK_SEQPACKET` socket, close-on-exec.
fn seqpacket() -> Result<OwnedFd, Errno> {
    rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
}

/// A manager's side door: its listening socket and the tokens it has offered.
pub(crate) struct SideDoor {
    /// The listening socket.
    socket: OwnedFd,
    /// Its name.
    door: [u8; 16],
    /// Tokens offered and not spent: the session each is for.
    tokens: Mutex<HashMap<[u8; 16], [u8; 16]>>,
}

impl SideDoor {
    /// Opens a side door of a random name.
    pub(crate) fn open() -> std::io::Result<SideDoor> {
        let mut door = [0u8; 16];
        mp_process::fill_random(&mut door)?;
        let socket = seqpacket()?;
        rustix::net::bind(&socket, &address(&door)?)?;
        rustix::net::listen(&socket, 128)?;
        Ok(SideDoor { socket, door, tokens: Mutex::new(HashMap::new()) })
    }

    /// A token for `session`, good once, until [`SideDoor::withdraw`].
    pub(crate) fn offer(&self, session: [u8; 16]) -> Option<Shortcut> {
        let mut token = [0u8; 16];
        mp_process::fill_random(&mut token).ok()?;
        self.tokens.lock().insert(token, session);
        Some(Shortcut { door: self.door, token })
    }

    /// Takes back a token not spent (its connection closed).
    pub(crate) fn withdraw(&self, token: &[u8; 16]) {
        self.tokens.lock().remove(token);
    }

    /// Waits for the next knock at the door.
    pub(crate) fn accept(&self) -> Result<OwnedFd, Errno> {
        rustix::net::accept_with(&self.socket, SocketFlags::CLOEXEC)
    }

    /// Reads the record of a knock and spends its token: the session and the pipe, or why the
    /// knock is refused.
    pub(crate) fn claim(&self, peer: &OwnedFd) -> Result<([u8; 16], Connection), String> {
        let cred = rustix::net::sockopt::socket_peercred(peer)
            .map_err(|e| format!("cannot learn who knocked ({e})"))?;
        if cred.uid != rustix::process::geteuid() {
            return Err(format!("a knock from user {} was refused", cred.uid.as_raw()));
        }
        let deadline = Instant::now() + KNOCK_TIMEOUT;
        if !os::poll::readable(peer.as_fd(), Some(deadline)).map_err(|e| format!("poll: {e}"))? {
            return Err("a knock sent nothing in time".into());
        }
        let mut buf = vec![0u8; MAX_HELLO];
        let got =
            os::fds::recv(peer.as_fd(), &mut [IoSliceMut::new(&mut buf)], RecvFlags::DONTWAIT)
                .map_err(|e| format!("reading a knock: {e}"))?;
        if got.truncated || got.fds_dropped {
            return Err("a knock arrived damaged".into());
        }
        let knock: Knock = fdpass::decode_with_fds(&buf[..got.bytes], got.fds)
            .map_err(|e| format!("a knock does not decode: {e}"))?;
        if knock.version != VERSION {
            return Err(format!("a knock of wire version {} was refused", knock.version));
        }
        let session =
            self.tokens.lock().remove(&knock.token).ok_or_else(|| {
                "a knock with a token not offered (or spent) was refused".to_string()
            })?;
        Ok((session, knock.conn))
    }
}

/// The client's side: goes through the side door of `offer` with a new pipe and returns the
/// pipe once the manager has taken it; `None` (go on over the network) if the door cannot be
/// reached (another host or namespace) or the manager refuses.
pub(crate) fn knock(offer: &Shortcut) -> Option<Connection> {
    match try_knock(offer) {
        Ok(conn) => conn,
        Err(e) => {
            log::debug!(target: "mp_manager", "the same-host shortcut failed ({e}); staying on the network");
            None
        }
    }
}

/// [`knock`], with its errors.
fn try_knock(offer: &Shortcut) -> Result<Option<Connection>, Box<dyn std::error::Error>> {
    let socket = seqpacket()?;
    match rustix::net::connect(&socket, &address(&offer.door)?) {
        Ok(()) => {}
        // Not this host (or not this namespace): the usual way for a remote client.
        Err(Errno::CONNREFUSED | Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let (mine, theirs) = crate::pair::connection_pair(crate::pair::spins())?;
    let (bytes, owned) =
        fdpass::encode_with_fds(&Knock { version: VERSION, token: offer.token, conn: theirs })?;
    let fds: Vec<_> = owned.iter().map(AsFd::as_fd).collect();
    os::fds::send(socket.as_fd(), &[IoSlice::new(&bytes)], &fds, SendFlags::NOSIGNAL)?;
    // Only the manager may hold the server's end now: a refused knock (the record dropped
    // unread) then ends the pipe, and the wait below sees it at once.
    drop(fds);
    drop(owned);
    // The manager says `true` on the pipe once it serves it; a refusal closes it.
    if !mine.poll_timeout(KNOCK_TIMEOUT)? {
        return Err("the manager did not take the pipe in time".into());
    }
    match mine.recv::<bool>() {
        Ok(true) => Ok(Some(mine)),
        Ok(false) | Err(mp_queue::Error::Eof) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::Manager;
    use crate::proto::{Call, RemoteHello, RemoteWelcome, Reply, Request};

    const KEY: &[u8] = b"side door test key";

    /// A manager served on loopback, and an authenticated connection to it with the welcome
    /// it got (the connection's session is `session`).
    fn offered(session: [u8; 16]) -> (Manager, Connection, Shortcut) {
        let m = Manager::builder().address("127.0.0.1:0").authkey(KEY).start().unwrap();
        let (conn, offer) = welcome(&m, session);
        (m, conn, offer)
    }

    /// A new authenticated connection to `m` in `session`, and the shortcut it is offered.
    fn welcome(m: &Manager, session: [u8; 16]) -> (Connection, Shortcut) {
        let conn = mp_queue::Client::builder(m.address().unwrap())
            .unwrap()
            .authkey(KEY)
            .connect_now()
            .unwrap();
        conn.send(&RemoteHello { version: VERSION, session }).unwrap();
        let welcome: RemoteWelcome = conn.recv().unwrap();
        assert_eq!(welcome.pid, m.pid());
        (conn, welcome.shortcut.expect("a manager on an address offers the shortcut"))
    }

    /// Asks `conn` for the manager's pid.
    fn pid_over(conn: &Connection) -> u32 {
        let request = postcard::to_allocvec(&Request { id: 7, call: Call::Pid }).unwrap();
        conn.send_bytes(&request, 0, None).unwrap();
        let reply: Reply = postcard::from_bytes(&conn.recv_bytes(None).unwrap()).unwrap();
        assert_eq!(reply.id, 7);
        postcard::from_bytes(&reply.result.unwrap().bytes).unwrap()
    }

    /// Sends one record through the side door of `offer` and keeps the socket open.
    fn raw_knock(offer: &Shortcut, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> OwnedFd {
        let socket = seqpacket().unwrap();
        rustix::net::connect(&socket, &address(&offer.door).unwrap()).unwrap();
        os::fds::send(socket.as_fd(), &[IoSlice::new(bytes)], fds, SendFlags::NOSIGNAL).unwrap();
        socket
    }

    #[test]
    fn the_offered_token_brings_one_pipe_into_the_session() {
        let (m, tcp, offer) = offered([1; 16]);
        let pipe = knock(&offer).expect("the manager on this host takes the pipe");
        // An `mp_queue` pipe where this process spins (a socket pair on one CPU), not the
        // TCP socket.
        assert_eq!(pipe.is_socket(), !crate::pair::spins(), "the kind of this process");
        assert!(tcp.is_socket());
        assert!(pipe.socket().is_some_and(|s| {
            rustix::net::getsockname(s)
                .is_ok_and(|a| a.address_family() == rustix::net::AddressFamily::UNIX)
        }));
        assert_eq!(pid_over(&pipe), m.pid());
        // Spent: the same token again is refused, and the client goes on as it was.
        assert!(knock(&offer).is_none());
        assert_eq!(pid_over(&tcp), m.pid());
        // The session outlives its first connection while the pipe is open: the pipe keeps
        // serving after the socket closes.
        drop(tcp);
        assert_eq!(pid_over(&pipe), m.pid());
    }

    #[test]
    fn tokens_not_offered_are_refused() {
        let (m, _tcp, offer) = offered([2; 16]);
        let forged = Shortcut { door: offer.door, token: [0xaa; 16] };
        assert!(knock(&forged).is_none());
        // Another manager's door is not this one's.
        let (_other, _tcp2, other_offer) = offered([2; 16]);
        assert_ne!(other_offer.door, offer.door);
        assert!(knock(&Shortcut { door: other_offer.door, token: offer.token }).is_none());
        // The offered token still works at its own door.
        assert_eq!(pid_over(&knock(&offer).unwrap()), m.pid());
    }

    #[test]
    fn garbage_and_silent_knocks_hold_up_nobody() {
        let (m, _tcp, offer) = offered([3; 16]);
        // A peer that says nothing, and records that are no knock: nonsense, an empty
        // record, a knock whose descriptor is a plain pipe, a knock of another version.
        let silent = seqpacket().unwrap();
        rustix::net::connect(&silent, &address(&offer.door).unwrap()).unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let (_mine, theirs) = mp_queue::pipe(true).unwrap();
        let (old, old_fds) = fdpass::encode_with_fds(&Knock {
            version: VERSION + 1,
            token: offer.token,
            conn: theirs,
        })
        .unwrap();
        let old_fds: Vec<_> = old_fds.iter().map(AsFd::as_fd).collect();
        let refused = [
            raw_knock(&offer, b"nonsense", &[]),
            raw_knock(&offer, b"", &[]),
            raw_knock(&offer, &old[..old.len().min(40)], &[r.as_fd()]),
            raw_knock(&offer, &old, &old_fds),
        ];
        // Each refused knock is closed by the manager (its end reads end of file).
        for socket in &refused {
            assert!(os::poll::readable(socket.as_fd(), None).unwrap());
            let mut buf = [0u8; 8];
            assert_eq!(rustix::net::recv(socket, &mut buf, RecvFlags::empty()).unwrap().0, 0);
        }
        // A knock of another version spent nothing: the token still brings a pipe, while the
        // silent peer still holds its connection.
        assert_eq!(pid_over(&knock(&offer).unwrap()), m.pid());
        drop(silent);
    }
}
