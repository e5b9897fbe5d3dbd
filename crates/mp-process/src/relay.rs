//! The client side of the forkserver protocol: the messages, and a connection that asks the
//! server for children and collects their exit statuses.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use rustix::process::Pid;
use serde::{Deserialize, Serialize};

use crate::boot::Boot;
use crate::{Error, Result, fdpass, os, wire};

pub(crate) const HELLO_MAGIC: u64 = 0x6d70_6673_7276_0001; // "mpfsrv", version 1

/// A request to the server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToServer {
    /// The first message on the first connection: the executable the requester runs.
    Hello { magic: u64, exe: (u64, u64) },
    /// Fork a child running this bootstrap; fds: the requester's pidfd, then the payload's.
    Spawn(Boot),
    /// The requester lets go: the server treats its connection as closed (its daemonic
    /// children are killed), even while copies of it live on in forked processes.
    Close,
}

/// A message from the server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromServer {
    /// The child was forked; its pidfd rides beside this message.
    Started { pid: i32 },
    /// A child of this requester exited with this exit code.
    Exited { pid: i32, code: i32 },
    /// The request failed.
    Failed { message: String },
}

struct ClientState {
    /// A thread is reading or writing the socket.
    io_busy: bool,
    /// Exit codes received and not yet claimed, by pid (few at a time: a list is enough,
    /// and unlike a `HashMap` it needs no random seed in every forked child).
    exits: Vec<(i32, i32)>,
    /// Children whose `Process` was dropped: their exit codes are discarded.
    forgotten: Vec<i32>,
    /// The server closed the connection.
    dead: bool,
}

/// A connection to the forkserver.
pub(crate) struct Client {
    sock: OwnedFd,
    state: Mutex<ClientState>,
    cv: Condvar,
}

impl Client {
    pub fn new(sock: OwnedFd) -> Client {
        Client {
            sock,
            state: Mutex::new(ClientState {
                io_busy: false,
                exits: Vec::new(),
                forgotten: Vec::new(),
                dead: false,
            }),
            cv: Condvar::new(),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Takes the socket for reading and writing, waiting until `deadline`; false on timeout.
    pub fn acquire_io(&self, deadline: Option<Instant>) -> bool {
        let mut st = self.state.lock();
        while st.io_busy {
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut st, d).timed_out() && st.io_busy {
                        return false;
                    }
                }
                None => self.cv.wait(&mut st),
            }
        }
        st.io_busy = true;
        true
    }

    pub fn release_io(&self) {
        self.state.lock().io_busy = false;
        self.cv.notify_all();
    }

    /// Records one message from the server; returns a `Started` reply for the caller.
    pub fn dispatch(&self, msg: FromServer, fds: Vec<OwnedFd>) -> Result<Option<(i32, OwnedFd)>> {
        match msg {
            FromServer::Exited { pid, code } => {
                let mut st = self.state.lock();
                if let Some(i) = st.forgotten.iter().position(|&p| p == pid) {
                    st.forgotten.swap_remove(i);
                } else {
                    st.exits.push((pid, code));
                }
                drop(st);
                self.cv.notify_all();
                Ok(None)
            }
            FromServer::Started { pid } => match fds.into_iter().next() {
                Some(fd) => Ok(Some((pid, fd))),
                None => Err(Error::Forkserver("the server sent no pidfd".into())),
            },
            FromServer::Failed { message } => Err(Error::Forkserver(message)),
        }
    }

    /// Reads one message (the caller holds the io role). `Ok(false)` at EOF.
    pub fn read_one(&self) -> Result<(bool, Option<(i32, OwnedFd)>)> {
        match fdpass::recv_frame(self.sock.as_fd(), wire::DEFAULT_MAX_FRAME) {
            Ok(Some((bytes, fds))) => {
                let msg: FromServer = wire::decode(&bytes)?;
                Ok((true, self.dispatch(msg, fds)?))
            }
            Ok(None) => {
                self.state.lock().dead = true;
                self.cv.notify_all();
                Ok((false, None))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the server for a child; returns its pid and pidfd.
    pub fn request(&self, boot: Boot, fds: &[BorrowedFd<'_>]) -> Result<(i32, OwnedFd)> {
        let bytes = wire::encode(&ToServer::Spawn(boot))?;
        // A descriptor kept free for the child's pidfd: without room for it, the kernel would
        // drop it from the reply and the child would run untracked. So a process out of
        // descriptors fails here, before anything starts.
        let room = rustix::io::fcntl_dupfd_cloexec(&self.sock, 0)
            .map_err(|e| Error::io("keeping a descriptor free for the child's pidfd", e))?;
        self.acquire_io(None);
        let result = (|| {
            fdpass::send_frame(self.sock.as_fd(), &bytes, fds, wire::DEFAULT_MAX_FRAME)?;
            drop(room);
            loop {
                match self.read_one()? {
                    (true, Some(started)) => return Ok(started),
                    (true, None) => continue,
                    (false, _) => return Err(Error::ForkserverLost),
                }
            }
        })();
        self.release_io();
        result
    }

    /// Tells the server this requester lets go (see [`ToServer::Close`]); no reply. A server
    /// that is gone already needs no telling.
    pub fn close(&self) {
        if let Ok(bytes) = wire::encode(&ToServer::Close) {
            self.acquire_io(None);
            let _ = fdpass::send_frame(self.sock.as_fd(), &bytes, &[], wire::DEFAULT_MAX_FRAME);
            self.release_io();
        }
    }

    /// The exit code of `pid` once the server reports it, waiting until `deadline` (`None`:
    /// for ever). The caller has seen the child's pidfd become readable, so the report is on
    /// its way.
    pub fn exit_status(&self, pid: Pid, deadline: Option<Instant>) -> Result<Option<i32>> {
        let pid = pid.as_raw_nonzero().get();
        loop {
            {
                let st = self.state.lock();
                // The entry stays until the child is released, so that every thread
                // waiting for this child finds it.
                if let Some(&(_, code)) = st.exits.iter().find(|&&(p, _)| p == pid) {
                    return Ok(Some(code));
                }
                if st.dead {
                    return Err(Error::ForkserverLost);
                }
            }
            if !self.acquire_io(deadline) {
                return Ok(None);
            }
            let done = self.state.lock().exits.iter().any(|&(p, _)| p == pid);
            let result = if done {
                Ok(true)
            } else {
                match os::poll::readable(self.sock.as_fd(), deadline)
                    .map_err(|e| Error::io("poll", e))
                {
                    Ok(true) => self.read_one().map(|_| true),
                    Ok(false) => Ok(false),
                    Err(e) => Err(e),
                }
            };
            self.release_io();
            if !result? {
                return Ok(None);
            }
        }
    }

    /// Forgets `pid` once its last handle is gone: its report is dropped, or, if it has not
    /// arrived (`reported` is false), discarded when it does.
    pub fn release(&self, pid: Pid, reported: bool) {
        let pid = pid.as_raw_nonzero().get();
        let mut st = self.state.lock();
        if let Some(i) = st.exits.iter().position(|&(p, _)| p == pid) {
            st.exits.swap_remove(i);
        } else if !reported {
            st.forgotten.push(pid);
        }
    }
}
