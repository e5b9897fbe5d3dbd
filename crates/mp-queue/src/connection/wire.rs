//! What crosses for a [`Connection`] inside a message or into a child: its socket (out of
//! band, through `mp_process::fdpass`), and for an end of a pipe the pipe's lanes and the
//! end's locks.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use mp_process::fdpass::{FdRef, check, refuse};
use mp_sync::Lock;
use rustix::net::SocketType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Connection, Kind, Locks};
use crate::lane::Lanes;
use crate::sys;

/// What crosses for a connection, when sending.
#[derive(Serialize)]
#[serde(rename = "Connection")]
struct OutWire<'a> {
    fd: FdRef<'a>,
    /// `None` for a connection of a `Listener` or `Client`.
    pipe: Option<OutPipe<'a>>,
    max_message: u64,
}

/// What crosses for an end of a pipe beside its socket, when sending.
#[derive(Serialize)]
struct OutPipe<'a> {
    lanes: LanesRef<'a>,
    lane_in: u8,
    send_lock: Option<&'a Lock>,
    recv_lock: Option<&'a Lock>,
}

/// What crosses for a connection, when receiving.
#[derive(Deserialize)]
#[serde(rename = "Connection")]
struct InWire {
    #[serde(with = "mp_process::fdpass::serde_fd")]
    fd: OwnedFd,
    pipe: Option<InPipe>,
    max_message: u64,
}

/// What crosses for an end of a pipe beside its socket, when receiving.
#[derive(Deserialize)]
struct InPipe {
    lanes: LanesIn,
    lane_in: u8,
    send_lock: Option<Lock>,
    recv_lock: Option<Lock>,
}

/// A connection serialises as its socket (out of band, through `mp_process::fdpass`), its
/// maximum message size, and for an end of a pipe the pipe's lanes and the end's locks (a
/// handle on the same end: see [`Connection::try_clone`]), which say its direction.
/// Serialising a closed connection, or outside `fdpass::encode_with_fds`, fails.
impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| S::Error::custom("a closed Connection cannot be sent"))?;
        let pipe = match &self.kind {
            Kind::Pipe(end) => Some(OutPipe {
                lanes: LanesRef(&end.lanes),
                lane_in: end.lane_in as u8,
                send_lock: end.locks.send.as_ref(),
                recv_lock: end.locks.recv.as_ref(),
            }),
            Kind::Socket(_) if self.has_read_ahead() => {
                return Err(S::Error::custom(
                    "a Connection holding bytes it read ahead (part of a message received) \
                     cannot be sent: receive them first",
                ));
            }
            Kind::Socket(_) => None,
        };
        OutWire {
            fd: FdRef(fd),
            pipe,
            max_message: u64::try_from(self.max_message).unwrap_or(u64::MAX),
        }
        .serialize(s)
    }
}

/// A received connection is checked: an end of a pipe must be an `AF_UNIX` stream socket and
/// readable or writable (have a lock of either direction); a connection of a `Listener` or
/// `Client` must be a stream socket of a family it can use.
impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = InWire::deserialize(d)?;
        let mut conn = match wire.pipe {
            Some(pipe) => {
                let locks = Locks { send: pipe.send_lock, recv: pipe.recv_lock };
                if locks.send.is_none() && locks.recv.is_none() {
                    return Err(refuse("a Connection must be readable or writable"));
                }
                check::unix_socket(wire.fd.as_fd(), SocketType::STREAM, "a Connection")
                    .map_err(refuse::<D::Error>)?;
                let closed = sys::closed_fd().map_err(refuse::<D::Error>)?;
                let lanes = Arc::new(pipe.lanes.0);
                Connection::from_pipe(wire.fd, locks, closed, lanes, usize::from(pipe.lane_in))
            }
            None => {
                check::stream_socket(wire.fd.as_fd(), "a Connection")
                    .map_err(refuse::<D::Error>)?;
                Connection::from_socket(wire.fd).map_err(refuse::<D::Error>)?
            }
        };
        conn.max_message = usize::try_from(wire.max_message).unwrap_or(usize::MAX);
        Ok(conn)
    }
}

/// A pipe's lanes, borrowed for sending.
struct LanesRef<'a>(&'a Lanes);

impl Serialize for LanesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A pipe's lanes, received (and checked).
struct LanesIn(Lanes);

impl<'de> Deserialize<'de> for LanesIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Lanes::deserialize(d).map(LanesIn)
    }
}
