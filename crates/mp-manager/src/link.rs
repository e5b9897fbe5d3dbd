//! A process's way to its manager: the manager's *doorway* (a private `SOCK_SEQPACKET` socket
//! whose other end only the manager reads) and the connections this process opened through it.
//!
//! A connection is an `mp_queue` duplex pipe (shared-memory lanes with bounded spinning, a
//! socket beneath): the client makes the pair and sends the server's end through the doorway
//! in one record (`SCM_RIGHTS`), so only processes that were handed the doorway (the manager's
//! own process tree) can connect, and they need no address and no handshake. Each thread of a
//! process takes a connection of its own for the length of one call from the link's pool;
//! after a fork the child finds the pool made by another pid and opens its own (Python's
//! gh-101320 cannot happen). A call abandoned between its request and its reply (a panic, a
//! caller unwinding) leaves its connection out of the pool: it is closed, never reused.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use mp_process::fdpass::{self, FdRef, Kind, ObjectId, PassFd, SharedObject, check, refuse};
use mp_process::os;
use mp_queue::Connection;
use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::proto::{Call, Hello, Payload, Reply, Request, VERSION};

/// The largest hello record (a connection's definition: its socket, lanes and locks).
pub(crate) const MAX_HELLO: usize = 64 * 1024;

/// How many idle connections a process keeps per manager; more are closed after use.
const MAX_IDLE: usize = 16;

/// A handle on a manager's doorway, shared by every proxy of that manager in this process.
#[derive(Clone)]
pub(crate) struct Link(pub(crate) Arc<Door>);

/// What a [`Link`] shares.
pub(crate) struct Door {
    /// The identity of the manager (the same in every process).
    id: ObjectId,
    /// The client end of the doorway.
    doorway: OwnedFd,
    /// Connections not in use, and the pid that opened them.
    pool: Mutex<Pool>,
}

/// Idle connections of one process.
struct Pool {
    /// The pid that opened them: another pid (a forked child) must not use them.
    pid: u32,
    /// The connections.
    idle: Vec<Conn>,
}

/// An open connection and the id of its next request.
struct Conn {
    conn: Connection,
    next: u64,
}

impl Link {
    /// A link through `doorway` to the manager called `id`.
    pub(crate) fn new(id: ObjectId, doorway: OwnedFd) -> Link {
        Link(Arc::new(Door { id, doorway, pool: Mutex::new(Pool { pid: 0, idle: Vec::new() }) }))
    }

    /// The manager's identity.
    pub(crate) fn id(&self) -> ObjectId {
        self.0.id
    }

    /// Opens a new connection to the manager.
    fn connect(&self) -> Result<Conn> {
        let (mine, theirs) = mp_queue::pipe(true)?;
        let (bytes, fds) = fdpass::encode_with_fds(&Hello { version: VERSION, conn: theirs })?;
        let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        match os::fds::send(
            self.0.doorway.as_fd(),
            &[IoSlice::new(&bytes)],
            &fds,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => Ok(Conn { conn: mine, next: 1 }),
            Err(Errno::PIPE | Errno::CONNREFUSED | Errno::CONNRESET) => Err(Error::ManagerGone),
            Err(e) => Err(Error::io("sending a connection to the manager", e)),
        }
    }

    /// An idle connection of this process, or a new one.
    fn take(&self) -> Result<Conn> {
        let me = os::pid();
        let stale = {
            let mut pool = self.0.pool.lock();
            if pool.pid == me {
                if let Some(conn) = pool.idle.pop() {
                    return Ok(conn);
                }
                Vec::new()
            } else {
                // Made by the process this one was forked from: its connections are the
                // parent's. Closing this process's copies lets the server see their end when
                // the parent's go.
                pool.pid = me;
                std::mem::take(&mut pool.idle)
            }
        };
        drop(stale);
        self.connect()
    }

    /// Gives a connection back after a complete call.
    fn put_back(&self, conn: Conn) {
        let mut pool = self.0.pool.lock();
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
        let bytes = postcard::to_allocvec(&request)
            .map_err(|e| Error::Wire(mp_process::wire::encode_error(e, &request)))?;
        conn.conn.send_bytes(&bytes, 0, None)?;
        // From here the connection owes a reply: if this call is abandoned (an error below, a
        // panic), `conn` is dropped and closed, never given back half-way.
        loop {
            let bytes = conn.conn.recv_bytes(None)?;
            let reply: Reply = match postcard::from_bytes(&bytes) {
                Ok(reply) => reply,
                Err(e) => {
                    return Err(Error::Wire(mp_process::wire::WireError::Decode(e)));
                }
            };
            if reply.id != id {
                // The reply to a request of an earlier call that gave up on it.
                continue;
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
// from what `describe` writes (the manager's identity and its doorway), after checking that
// the descriptor is an `AF_UNIX` seqpacket socket. A link holds no shared memory: nothing
// trusts bytes behind it.
#[allow(unsafe_code)]
unsafe impl SharedObject for Door {
    const KIND: Kind = Kind::new("mp_manager::Link");

    fn object_id(&self) -> ObjectId {
        self.id
    }

    fn describe<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        FdRef(&self.doorway).serialize(s)
    }

    fn rebuild<'de, D: Deserializer<'de>>(
        id: ObjectId,
        d: D,
    ) -> std::result::Result<Self, D::Error> {
        let PassFd(doorway) = PassFd::deserialize(d)?;
        check::unix_socket(doorway.as_fd(), SocketType::SEQPACKET, "a manager's doorway")
            .map_err(refuse)?;
        Ok(Door { id, doorway, pool: Mutex::new(Pool { pid: 0, idle: Vec::new() }) })
    }
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
        let m = Manager::start().unwrap();
        let link = m.link();
        let conn = link.connect().unwrap();
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

    #[test]
    fn a_stale_reply_is_never_taken_for_a_later_calls() {
        let m = Manager::start().unwrap();
        let link = m.link();
        let l = m.list(vec![5u8]).unwrap();
        let id = l.handle_for_tests().id();
        // A call abandoned after its request: its reply is still on the way.
        let mut conn = link.connect().unwrap();
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
            let mut pool = link.0.pool.lock();
            pool.pid = os::pid();
            pool.idle.push(conn);
        }
        // The next call on that connection skips it and gets its own answer.
        let (objects, _): (u64, u64) = link.call_decode(Call::Count).unwrap();
        assert_eq!(objects, 1);
    }

    #[test]
    fn an_oversized_frame_drops_only_its_connection() {
        let m = Manager::start().unwrap();
        let link = m.link();
        let mut conn = link.connect().unwrap();
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
    fn garbage_on_the_doorway_is_dropped() {
        let m = Manager::start().unwrap();
        let link = m.link();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        for (bytes, fds) in [(&b"nonsense"[..], vec![]), (&b"\x01"[..], vec![r.as_fd()])] {
            os::fds::send(link.0.doorway.as_fd(), &[IoSlice::new(bytes)], &fds, SendFlags::empty())
                .unwrap();
        }
        let l = m.list(vec![1u8]).unwrap();
        assert_eq!(l.len().unwrap(), 1);
    }
}
