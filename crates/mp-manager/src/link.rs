//! A process's way to its manager: the manager's *doorway* (a private `SOCK_SEQPACKET` socket
//! whose other end only the manager reads) and the connections this process opened through it;
//! or, for a manager served on an address (a remote manager), the address and the key.
//!
//! A remote connection is a `Listener`/`Client` connection of `mp_queue` (TCP or `AF_UNIX`,
//! CPython's mutual HMAC handshake), whose first message names the client process's session
//! (random bytes made per process): the manager counts a session's connections and gives back
//! what it held when the last one closes. So that this happens only when the process ends (or
//! drops every proxy), each process keeps one connection of the session open and idle (its
//! *anchor*) for as long as it holds the link.
//!
//! A connection is an `mp_queue` duplex pipe (shared-memory lanes with bounded spinning, a
//! socket beneath), or, in a process that does not spin, a plain socket pair
//! (`mp_queue::socket_pipe`; see `pair.rs`): the client makes the pair and sends the server's
//! end through the doorway in one record (`SCM_RIGHTS`), so only processes that were handed the
//! doorway (the manager's own process tree) can connect, and they need no address and no
//! handshake. Each thread of a process takes a connection of its own for the length of one call
//! from the link's pool; after a fork the child finds the pool made by another pid and opens
//! its own (Python's gh-101320 cannot happen). A call abandoned between its request and its
//! reply (a panic, a caller unwinding) leaves its connection out of the pool: it is closed,
//! never reused.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use mp_process::AuthKey;
use mp_process::fdpass::{self, FdRef, Kind, ObjectId, PassFd, SharedObject, check, refuse};
use mp_process::os;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use mp_queue::{Address, Client, Connection};
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::proto::{
    Call, Hello, KEPT_BUFFER, Payload, RemoteHello, RemoteWelcome, Reply, Request, VERSION,
};

/// How many idle connections a process keeps per manager; more are closed after use.
const MAX_IDLE: usize = 16;

/// A handle on a manager's doorway, shared by every proxy of that manager in this process.
#[derive(Clone)]
pub(crate) struct Link(pub(crate) Arc<Door>);

/// What a [`Link`] shares.
pub(crate) struct Door {
    /// The identity of the manager (the same in every process).
    id: ObjectId,
    /// How connections are opened.
    way: Way,
    /// Connections not in use, and the pid that opened them. A `std` mutex, taken only for a
    /// push or a pop (see [`Door::lock_pool`]).
    pool: Mutex<Pool>,
    /// The pid that last set the pool up: a process of another pid (a forked child) must
    /// not wait for the pool's lock (its holder may be a thread of the parent).
    pool_pid: AtomicU32,
    /// A remote manager: whether the last connection this process opened took the same-host
    /// shortcut.
    same_host: AtomicBool,
}

impl Door {
    /// A door whose pool this process set up.
    fn new(id: ObjectId, way: Way, pool: Pool) -> Door {
        let pid = if pool.pid == 0 { 0 } else { os::pid() };
        Door {
            id,
            way,
            pool: Mutex::new(pool),
            pool_pid: AtomicU32::new(pid),
            same_host: AtomicBool::new(false),
        }
    }

    /// The pool, locked; `None` in a process forked while a thread of its parent held the
    /// lock (that holder does not exist here, and the lock would never be freed). A process
    /// that has not set the pool up yet does not wait for the lock: it tries it a bounded
    /// number of times (its own threads hold it for a push or a pop only).
    fn lock_pool(&self) -> Option<MutexGuard<'_, Pool>> {
        if self.pool_pid.load(Ordering::Acquire) == os::pid() {
            return Some(self.pool.lock().unwrap_or_else(PoisonError::into_inner));
        }
        for _ in 0..10_000 {
            match self.pool.try_lock() {
                Ok(guard) => return Some(guard),
                Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        None
    }
}

/// How a process opens connections to its manager.
pub(crate) enum Way {
    /// Through the doorway of the manager's own process tree (its client end).
    Doorway(OwnedFd),
    /// To a manager served on an address, with the key.
    Remote {
        /// The manager's address.
        address: Address,
        /// The key its listener checks.
        key: AuthKey,
        /// Whether connections take the same-host shortcut when the manager offers it.
        shortcut: bool,
        /// The link's identity when it crosses into another process: shared objects are
        /// known by their first descriptor's inode, and a remote link has no other. An
        /// unbound `AF_UNIX` datagram socket (inert, an inode of its own; eventfds all share
        /// one inode, so two links would be taken for one).
        token: OwnedFd,
    },
}

/// Idle connections of one process.
#[derive(Default)]
struct Pool {
    /// The pid that opened them: another pid (a forked child) must not use them.
    pid: u32,
    /// The connections.
    idle: Vec<Conn>,
    /// A remote manager: the session of this process (random), and its anchor connection.
    session: [u8; 16],
    /// The connection that keeps this process's session open (remote managers only).
    anchor: Option<Connection>,
}

impl Pool {
    /// A fresh pool for this process; for a remote link, with a new session.
    fn fresh(remote: bool) -> Result<Pool> {
        let mut session = [0u8; 16];
        if remote {
            mp_process::fill_random(&mut session)
                .map_err(|e| Error::Io { op: "getrandom", source: e })?;
        }
        Ok(Pool { pid: os::pid(), idle: Vec::new(), session, anchor: None })
    }
}

/// An open connection and the id of its next request.
struct Conn {
    conn: Connection,
    next: u64,
    /// The buffer requests are encoded in, kept between calls.
    out: Vec<u8>,
    /// The buffer replies are received in, kept between calls.
    input: Vec<u8>,
}

impl Link {
    /// A link through `doorway` to the manager called `id`.
    pub(crate) fn new(id: ObjectId, doorway: OwnedFd) -> Link {
        Link(Arc::new(Door::new(id, Way::Doorway(doorway), Pool::default())))
    }

    /// A link to the manager served at `address`, checked by `key`: connects (the session's
    /// anchor), and returns the link and the manager process's pid.
    /// With `shortcut`, connections move to shared memory when the manager is on this host
    /// (see [`crate::shortcut`]).
    pub(crate) fn remote(address: Address, key: AuthKey, shortcut: bool) -> Result<(Link, u32)> {
        let mut pool = Pool::fresh(true)?;
        let (anchor, welcome) = connect_remote(&address, &key, pool.session, shortcut)?;
        let same_host = anchor.same_host;
        pool.anchor = Some(anchor.conn);
        let token = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::io("socket", e))?;
        let door = Door::new(welcome.id, Way::Remote { address, key, shortcut, token }, pool);
        door.same_host.store(same_host, Ordering::Relaxed);
        Ok((Link(Arc::new(door)), welcome.pid))
    }

    /// Whether the last connection this process opened to the (remote) manager took the
    /// same-host shortcut.
    pub(crate) fn same_host(&self) -> bool {
        self.0.same_host.load(Ordering::Relaxed)
    }

    /// Whether the link is a remote manager's (no entries run there for this process).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.0.way, Way::Remote { .. })
    }

    /// The manager's identity.
    pub(crate) fn id(&self) -> ObjectId {
        self.0.id
    }

    /// Opens a new connection to the manager (for a remote one, in `session`).
    fn connect(&self, session: [u8; 16]) -> Result<Conn> {
        self.connect_as(session, crate::pair::spins())
    }

    /// [`connect`](Self::connect), with lanes or without (see
    /// [`connection_pair`](crate::pair::connection_pair)).
    fn connect_as(&self, session: [u8; 16], lanes: bool) -> Result<Conn> {
        let doorway = match &self.0.way {
            Way::Doorway(doorway) => doorway,
            Way::Remote { address, key, shortcut, .. } => {
                let (conn, welcome) = connect_remote(address, key, session, *shortcut)?;
                if welcome.id != self.0.id {
                    // Another manager now serves at the address: this one's objects are gone.
                    return Err(Error::ManagerGone);
                }
                self.0.same_host.store(conn.same_host, Ordering::Relaxed);
                return Ok(Conn { conn: conn.conn, next: 1, out: Vec::new(), input: Vec::new() });
            }
        };
        let (mine, theirs) = crate::pair::connection_pair(lanes)?;
        let (bytes, fds) = fdpass::encode_with_fds(&Hello { version: VERSION, conn: theirs })?;
        let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        match os::fds::send(doorway.as_fd(), &[IoSlice::new(&bytes)], &fds, SendFlags::NOSIGNAL) {
            Ok(_) => Ok(Conn { conn: mine, next: 1, out: Vec::new(), input: Vec::new() }),
            Err(Errno::PIPE | Errno::CONNREFUSED | Errno::CONNRESET) => Err(Error::ManagerGone),
            Err(e) => Err(Error::io("sending a connection to the manager", e)),
        }
    }

    /// An idle connection of this process, or a new one.
    fn take(&self) -> Result<Conn> {
        let me = os::pid();
        let remote = self.is_remote();
        let (stale, session, needs_anchor) = {
            let Some(mut pool) = self.0.lock_pool() else {
                // Forked while a thread of the parent held the pool: this process goes on
                // without it (a connection per call), or, for a remote manager, whose session
                // lives in the pool, says so.
                if remote {
                    return Err(Error::Io {
                        op: "taking a connection to the manager",
                        source: std::io::Error::other(
                            "the link's pool was locked by another thread when this process \
                             was forked; connect to the remote manager again in this process",
                        ),
                    });
                }
                return self.connect([0; 16]);
            };
            if pool.pid == me {
                if let Some(conn) = pool.idle.pop() {
                    return Ok(conn);
                }
                (Pool::default(), pool.session, remote && pool.anchor.is_none())
            } else {
                // Made by the process this one was forked from: its connections (and its
                // session) are the parent's. Closing this process's copies lets the server see
                // their end when the parent's go.
                let fresh = Pool::fresh(remote)?;
                let session = fresh.session;
                self.0.pool_pid.store(me, Ordering::Release);
                (std::mem::replace(&mut *pool, fresh), session, remote)
            }
        };
        drop(stale);
        if needs_anchor {
            let anchor = self.connect(session)?;
            if let Some(mut pool) = self.0.lock_pool() {
                if pool.pid == me && pool.session == session && pool.anchor.is_none() {
                    pool.anchor = Some(anchor.conn);
                }
            }
        }
        self.connect(session)
    }

    /// Gives a connection back after a complete call.
    fn put_back(&self, conn: Conn) {
        let Some(mut pool) = self.0.lock_pool() else { return };
        if pool.pid == os::pid() && pool.idle.len() < MAX_IDLE {
            pool.idle.push(conn);
        }
    }

    /// Sends `call` and waits for its reply.
    pub(crate) fn call(&self, call: Call<'_>) -> Result<Payload> {
        let mut conn = self.take()?;
        let id = conn.next;
        conn.next += 1;
        let request = Request { id, call };
        let mut out = std::mem::take(&mut conn.out);
        out.clear();
        let bytes = postcard::to_extend(&request, out)
            .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, &request)))?;
        conn.conn.send_bytes(&bytes, 0, None)?;
        // A buffer grown for a large request is not kept.
        if bytes.capacity() <= KEPT_BUFFER {
            conn.out = bytes;
        }
        // From here the connection owes a reply: if this call is abandoned (an error below, a
        // panic), `conn` is dropped and closed, never given back half-way.
        loop {
            conn.conn.recv_bytes_into_vec(&mut conn.input)?;
            let reply: Reply = match postcard::from_bytes(&conn.input) {
                Ok(reply) => reply,
                Err(e) => {
                    return Err(Error::Wire(mp_process::wire::WireError::Decode(e)));
                }
            };
            if reply.id != id {
                // The reply to a request of an earlier call that gave up on it.
                continue;
            }
            // A buffer grown for a large reply is not kept.
            if conn.input.capacity() > KEPT_BUFFER {
                conn.input = Vec::new();
            }
            self.put_back(conn);
            return reply.result.map_err(Error::from);
        }
    }

    /// [`Link::call`], decoding the result as a `T`.
    pub(crate) fn call_decode<T: serde::de::DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        let payload = self.call(call)?;
        decode_reply(&payload.bytes)
    }

    /// One more reference to `object` for this process.
    pub(crate) fn incref(&self, object: u64) -> Result<()> {
        self.call(Call::Incref { object }).map(drop)
    }

    /// One reference fewer.
    pub(crate) fn decref(&self, object: u64) -> Result<()> {
        self.call(Call::Decref { object }).map(drop)
    }
}

/// Decodes a reply's bytes as a `T`.
pub(crate) fn decode_reply<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Wire(mp_process::wire::WireError::Decode(e)))
}

/// A doorway crosses as an object: defined once per receiver, one handle per process.
// SAFETY: the kind `mp_manager::Link` is this type's alone, and `rebuild` makes a link only
// from what `describe` writes (the manager's identity and its doorway, or a remote manager's
// address, key and identity token), after checking that the descriptor is an `AF_UNIX`
// seqpacket socket (a datagram one for a remote link). A link holds no shared memory: nothing
// trusts bytes behind it.
#[allow(unsafe_code)]
unsafe impl SharedObject for Door {
    const KIND: Kind = Kind::new("mp_manager::Link");

    fn object_id(&self) -> ObjectId {
        self.id
    }

    fn describe<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match &self.way {
            Way::Doorway(doorway) => OutWay::Doorway(FdRef(doorway)).serialize(s),
            Way::Remote { address, key, shortcut, token } => OutWay::Remote {
                address,
                key: key.as_bytes(),
                shortcut: *shortcut,
                token: FdRef(token),
            }
            .serialize(s),
        }
    }

    fn rebuild<'de, D: Deserializer<'de>>(
        id: ObjectId,
        d: D,
    ) -> std::result::Result<Self, D::Error> {
        let way = match InWay::deserialize(d)? {
            InWay::Doorway(PassFd(doorway)) => {
                check::unix_socket(doorway.as_fd(), SocketType::SEQPACKET, "a manager's doorway")
                    .map_err(refuse)?;
                Way::Doorway(doorway)
            }
            InWay::Remote { address, key, shortcut, token: PassFd(token) } => {
                check::unix_socket(token.as_fd(), SocketType::DGRAM, "a remote manager's link")
                    .map_err(refuse)?;
                Way::Remote { address, key: AuthKey::new(key), shortcut, token }
            }
        };
        Ok(Door::new(id, way, Pool::default()))
    }
}

/// How a link crosses, when sending: the doorway (a descriptor), or a remote manager's
/// address and key (a proxy of a remote manager handed to a child or through a queue takes
/// the key with it, as Python's proxies do when they are pickled for a child).
#[derive(Serialize)]
enum OutWay<'a> {
    Doorway(FdRef<'a>),
    Remote { address: &'a Address, key: &'a [u8], shortcut: bool, token: FdRef<'a> },
}

/// How a link crosses, when receiving.
#[derive(Deserialize)]
enum InWay {
    Doorway(PassFd),
    Remote { address: Address, key: Vec<u8>, shortcut: bool, token: PassFd },
}

/// A new connection to a remote manager.
struct RemoteConn {
    conn: Connection,
    /// Whether it is a pipe of the same-host shortcut (or else the socket).
    same_host: bool,
}

/// Opens a connection to the remote manager at `address` in `session`: connects, runs the
/// handshake, says hello, and reads the manager's welcome; with `shortcut`, moves to a pipe if
/// the welcome offers the same-host shortcut and its side door can be reached.
fn connect_remote(
    address: &Address,
    key: &AuthKey,
    session: [u8; 16],
    shortcut: bool,
) -> Result<(RemoteConn, RemoteWelcome)> {
    let conn =
        Client::builder(address)?.authkey(key.as_bytes()).connect_now().map_err(|e| match e {
            mp_queue::Error::Io { op: "connect", source }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                Error::ManagerGone
            }
            other => Error::from(other),
        })?;
    conn.send(&RemoteHello { version: VERSION, session })?;
    let welcome: RemoteWelcome = conn.recv()?;
    if let (true, Some(offer)) = (shortcut, &welcome.shortcut) {
        if let Some(pipe) = crate::shortcut::knock(offer) {
            // The manager counts the pipe in the session already: the socket may go.
            return Ok((RemoteConn { conn: pipe, same_host: true }, welcome));
        }
    }
    Ok((RemoteConn { conn, same_host: false }, welcome))
}

impl Serialize for Link {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        fdpass::serialize_object(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Link {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fdpass::deserialize_object(d).map(Link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::Manager;

    /// Sends `bytes` as one message on a fresh connection of `m` and returns the reply.
    fn raw(link: &Link, conn: &Conn, bytes: &[u8]) -> Reply {
        conn.conn.send_bytes(bytes, 0, None).unwrap();
        postcard::from_bytes(&conn.conn.recv_bytes(None).unwrap())
            .unwrap_or_else(|e| panic!("the manager of {:#x} answered garbage: {e}", link.id()))
    }

    /// A request's bytes.
    fn request(id: u64, call: Call<'_>) -> Vec<u8> {
        postcard::to_allocvec(&Request { id, call }).unwrap()
    }

    #[test]
    fn garbage_gets_an_error_and_the_connection_goes_on() {
        with_each_kind(garbage_gets_an_error);
    }

    /// Bytes that are no request get a `BadRequest` reply, and the connection serves on.
    fn garbage_gets_an_error(lanes: bool) {
        let m = Manager::start().unwrap();
        let link = m.link();
        let conn = link.connect_as([0; 16], lanes).unwrap();
        for garbage in [&b""[..], b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x01\x63"] {
            let reply = raw(link, &conn, garbage);
            assert_eq!(reply.id, 0);
            assert_eq!(reply.result.unwrap_err().kind, "BadRequest");
        }
        let reply = raw(link, &conn, &request(9, Call::Count));
        assert_eq!(reply.id, 9);
        assert!(reply.result.is_ok());
    }

    #[test]
    fn unknown_objects_methods_and_types_are_errors() {
        let m = Manager::start().unwrap();
        let link = m.link();
        let kind = |call: Call<'_>| link.call(call).unwrap_err().remote().unwrap().kind.clone();
        assert_eq!(kind(Call::Method { object: 999, method: "len", args: &[] }), "NoSuchObject");
        assert_eq!(kind(Call::Decref { object: 999 }), "NoSuchObject");
        assert_eq!(kind(Call::Incref { object: 999 }), "NoSuchObject");
        assert_eq!(kind(Call::Create { typeid: "nothing", args: &[] }), "NotExposed");
        let l = m.list(vec![1u8]).unwrap();
        let id = l.handle_for_tests().id();
        assert_eq!(kind(Call::Method { object: id, method: "fly", args: &[] }), "NotExposed");
        assert_eq!(
            kind(Call::Method { object: id, method: "get", args: &[1, 2, 3] }),
            "BadRequest"
        );
        // A forged entry is refused before anything runs.
        let forged = Call::Apply { object: id, what: "sort", entry: (64, 12345), args: &[0] };
        assert_eq!(kind(forged), "Refused");
        assert_eq!(l.to_vec().unwrap(), vec![1]);
    }

    /// Runs `body` with each kind of connection: with lanes, and a plain socket pair (what a
    /// process that does not spin opens; `without_spinning.rs` runs such processes).
    fn with_each_kind(body: impl Fn(bool)) {
        for lanes in [true, false] {
            body(lanes);
        }
    }

    #[test]
    fn the_manager_serves_connections_of_either_kind() {
        with_each_kind(|lanes| {
            let m = Manager::start().unwrap();
            let conn = m.link().connect_as([0; 16], lanes).unwrap();
            assert_eq!(conn.conn.is_socket(), !lanes);
            // The manager serves it as any other.
            let l = m.list(vec![1u8, 2]).unwrap();
            l.append(3).unwrap();
            assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3]);
            let reply = raw(m.link(), &conn, &request(4, Call::Count));
            assert_eq!(reply.id, 4);
            let (objects, _): (u64, u64) = decode_reply(&reply.result.unwrap().bytes).unwrap();
            assert_eq!(objects, 1);
        });
    }

    #[test]
    fn a_stale_reply_is_never_taken_for_a_later_calls() {
        with_each_kind(a_stale_reply_is_skipped);
    }

    /// A call abandoned after its request leaves its reply on the connection; the next call
    /// on it takes its own.
    fn a_stale_reply_is_skipped(lanes: bool) {
        let m = Manager::start().unwrap();
        let link = m.link();
        let l = m.list(vec![5u8]).unwrap();
        let id = l.handle_for_tests().id();
        // A call abandoned after its request: its reply is still on the way.
        let mut conn = link.connect_as([0; 16], lanes).unwrap();
        let args = postcard::to_allocvec(&0i64).unwrap();
        conn.conn
            .send_bytes(
                &request(1, Call::Method { object: id, method: "get", args: &args }),
                0,
                None,
            )
            .unwrap();
        conn.next = 2;
        {
            let mut pool = link.0.lock_pool().unwrap();
            pool.pid = os::pid();
            link.0.pool_pid.store(os::pid(), Ordering::Release);
            pool.idle.push(conn);
        }
        // The next call on that connection skips it and gets its own answer.
        let (objects, _): (u64, u64) = link.call_decode(Call::Count).unwrap();
        assert_eq!(objects, 1);
    }

    #[test]
    fn an_oversized_frame_drops_only_its_connection() {
        with_each_kind(an_oversized_frame_is_refused);
    }

    /// The manager refuses a frame past its limit and closes that connection alone.
    fn an_oversized_frame_is_refused(lanes: bool) {
        let m = Manager::start().unwrap();
        let link = m.link();
        let mut conn = link.connect_as([0; 16], lanes).unwrap();
        conn.conn.set_max_message_size(usize::MAX);
        let big = vec![0u8; mp_process::wire::DEFAULT_MAX_FRAME + 1];
        // The manager refuses the frame and closes the connection; the send itself may or may
        // not see that before it ends.
        let _ = conn.conn.send_bytes(&big, 0, None);
        assert!(matches!(conn.conn.recv_bytes(None), Err(mp_queue::Error::Eof)));
        let l = m.list(vec![1u8]).unwrap();
        assert_eq!(l.len().unwrap(), 1);
    }

    #[test]
    fn a_remote_client_may_not_shut_the_manager_down() {
        let m = crate::Manager::builder().address("127.0.0.1:0").authkey(b"k").start().unwrap();
        let address = m.address().unwrap().clone();
        let (remote, pid) = Link::remote(address, AuthKey::new(b"k"), false).unwrap();
        assert_eq!(pid, m.pid());
        assert_eq!(remote.id(), m.link().id(), "one manager, one identity");
        let refused = remote.call(Call::Shutdown).unwrap_err();
        assert!(refused.is_remote("Refused"), "{refused:?}");
        let l = m.list(vec![1u8]).unwrap();
        assert_eq!(l.len().unwrap(), 1);
    }

    #[test]
    fn an_item_whose_get_reply_is_lost_goes_back_to_the_queue() {
        let m = Manager::start().unwrap();
        let link = m.link();
        let q = m.queue::<u32>().unwrap();
        q.put(7).unwrap();
        let id = q.handle_for_tests().id();
        // A client that cannot read any more (its receiving side shut down): the manager
        // takes the item for its `get`, and its reply fails.
        let conn = link.connect([0; 16]).unwrap();
        os::socket::shutdown(conn.conn.socket().unwrap(), true).unwrap();
        let args = postcard::to_allocvec(&None::<std::time::Duration>).unwrap();
        conn.conn
            .send_bytes(
                &request(1, Call::Method { object: id, method: "get", args: &args }),
                0,
                None,
            )
            .unwrap();
        // Once the manager has answered (and failed), it drops that connection: sends on it
        // fail. The item is still there for the next getter.
        let dropped = mp_testkit::eventually(std::time::Duration::from_secs(30), || {
            conn.conn.send_bytes(&request(2, Call::Count), 0, None).is_err()
        });
        assert!(dropped, "the manager drops a connection whose reply failed");
        assert_eq!(q.get_timeout(std::time::Duration::from_secs(30)).unwrap(), 7);
        assert_eq!(q.qsize().unwrap(), 0);
    }

    /// A forked child's calls on a list it inherited.
    fn use_inherited(l: crate::ListProxy<u8>) -> Result<(), Error> {
        l.append(2)?;
        if l.len()? == 2 { Ok(()) } else { Err(Error::ManagerGone) }
    }

    #[test]
    fn a_child_forked_while_another_thread_held_the_pool_does_not_hang() {
        let m = Manager::start().unwrap();
        let l = m.list(vec![1u8]).unwrap();
        let link = m.link().clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _pool = link.0.lock_pool().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        locked_rx.recv().unwrap();
        let mut child = mp_process::Process::new(use_inherited, (l.clone(),))
            .with_start_method(mp_process::StartMethod::Fork);
        child.start().unwrap();
        assert_eq!(child.join().unwrap(), 0, "the child's calls went through");
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(l.to_vec().unwrap(), vec![1, 2]);
    }

    #[test]
    fn garbage_on_the_doorway_is_dropped() {
        let m = Manager::start().unwrap();
        let link = m.link();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        for (bytes, fds) in [(&b"nonsense"[..], vec![]), (&b"\x01"[..], vec![r.as_fd()])] {
            let Way::Doorway(doorway) = &link.0.way else { panic!("a local manager") };
            os::fds::send(doorway.as_fd(), &[IoSlice::new(bytes)], &fds, SendFlags::empty())
                .unwrap();
        }
        let l = m.list(vec![1u8]).unwrap();
        assert_eq!(l.len().unwrap(), 1);
    }
}
