//! The forkserver: a single-threaded fresh exec of the binary that forks children on
//! request, relays their exit status and hands back their pidfds; and its client.
//!
//! Each requester talks to the server over its own socketpair. The process that starts the
//! server inherits one end of the first; every child the server forks gets a new one, so a
//! child can start its own children through the same server. When a requester's connection
//! closes (it exited or was killed), the server SIGKILLs that requester's daemonic children.
//! The server exits when its last connection closes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};

use crate::bootstrap::{self, Boot};
use crate::child::{Child, Via, exit_code_of, track_new_child};
use crate::process::Encoded;
use crate::state::{ChildIdentity, global};
use crate::{Error, Result, fdpass, os, wire};

const HELLO_MAGIC: u64 = 0x6d70_6673_7276_0001; // "mpfsrv", version 1

/// A request to the server.
#[derive(Debug, Serialize, Deserialize)]
enum ToServer {
    /// The first message on the first connection: the executable the requester runs.
    Hello { magic: u64, exe: (u64, u64) },
    /// Fork a child running this bootstrap; fds: the requester's pidfd, then the payload's.
    Spawn(Boot),
}

/// A message from the server.
#[derive(Debug, Serialize, Deserialize)]
enum FromServer {
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
    fn new(sock: OwnedFd) -> Client {
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
    fn acquire_io(&self, deadline: Option<Instant>) -> bool {
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

    fn release_io(&self) {
        self.state.lock().io_busy = false;
        self.cv.notify_all();
    }

    /// Records one message from the server; returns a `Started` reply for the caller.
    fn dispatch(&self, msg: FromServer, fds: Vec<OwnedFd>) -> Result<Option<(i32, OwnedFd)>> {
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
    fn read_one(&self) -> Result<(bool, Option<(i32, OwnedFd)>)> {
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
    fn request(&self, boot: Boot, fds: &[BorrowedFd<'_>]) -> Result<(i32, OwnedFd)> {
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

/// The connection of this process to its forkserver, starting the server on first use.
fn client() -> Result<Arc<Client>> {
    let mut g = global();
    if let Some(c) = &g.forkserver {
        return Ok(c.clone());
    }
    let (mine, _pid) = bootstrap::spawn_helper(
        bootstrap::FORKSERVER_ENV,
        SocketType::STREAM,
        "starting the forkserver",
    )?;
    let hello =
        wire::encode(&ToServer::Hello { magic: HELLO_MAGIC, exe: bootstrap::exe_identity()? })?;
    fdpass::send_frame(mine.as_fd(), &hello, &[], wire::DEFAULT_MAX_FRAME)?;
    let client = Arc::new(Client::new(mine));
    g.forkserver = Some(client.clone());
    Ok(client)
}

/// Starts a child through the forkserver.
pub(crate) fn start(encoded: Encoded, ident: ChildIdentity) -> Result<Child> {
    let client = client()?;
    let parent_pidfd = global().self_pidfd()?;
    let name = ident.name.clone();
    let daemon = ident.daemon;
    let boot = Boot::new(encoded.entry, encoded.payload, ident)?;
    let tracker = crate::tracker::inherited();
    let fds = boot.fds(&parent_pidfd, tracker.as_ref(), &encoded.fds);
    let (pid, pidfd) = client.request(boot, &fds)?;
    let pid = Pid::from_raw(pid).ok_or_else(|| Error::Forkserver("invalid pid".into()))?;
    Ok(Child::new(pid, pidfd, name, daemon, Via::Forkserver(client)))
}

/// One requester, as the server sees it.
struct Conn {
    sock: OwnedFd,
    daemon_children: Vec<i32>,
}

/// One child, as the server sees it.
struct ServedChild {
    pid: i32,
    pidfd: OwnedFd,
    conn: usize,
}

/// The server's main loop; returns the server's exit code.
pub(crate) fn serve() -> i32 {
    let sock = match bootstrap::helper_socket() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let hello = match fdpass::recv_frame(sock.as_fd(), wire::DEFAULT_MAX_FRAME) {
        Ok(Some((bytes, _))) => wire::decode::<ToServer>(&bytes),
        Ok(None) => return 0,
        Err(e) => return bootstrap::fail(&format!("forkserver hello: {e}")),
    };
    match (hello, bootstrap::exe_identity()) {
        (Ok(ToServer::Hello { magic: HELLO_MAGIC, exe }), Ok(mine)) if exe == mine => {}
        _ => return bootstrap::fail("forkserver: bad hello (different executable or version)"),
    }
    let mut conns: Vec<Option<Conn>> = vec![Some(Conn { sock, daemon_children: Vec::new() })];
    let mut children: Vec<ServedChild> = Vec::new();
    loop {
        if conns.iter().all(Option::is_none) {
            return 0;
        }
        let (conn_ready, child_ready) = match wait_ready(&conns, &children) {
            Some(r) => r,
            None => continue,
        };
        for idx in child_ready.into_iter().rev() {
            let st = rustix::process::waitid(
                WaitId::PidFd(children[idx].pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            );
            let code = match st {
                Ok(Some(s)) => exit_code_of(&s),
                Ok(None) | Err(Errno::INTR) => continue,
                Err(_) => -1,
            };
            let done = children.swap_remove(idx);
            if let Some(Some(conn)) = conns.get_mut(done.conn) {
                conn.daemon_children.retain(|&p| p != done.pid);
                let msg = FromServer::Exited { pid: done.pid, code };
                if send(conn.sock.as_fd(), &msg, &[]).is_err() {
                    close_conn(&mut conns, &children, done.conn);
                }
            }
        }
        for idx in conn_ready {
            let Some(Some(conn)) = conns.get(idx) else { continue };
            match fdpass::recv_frame(conn.sock.as_fd(), wire::DEFAULT_MAX_FRAME) {
                Ok(Some((bytes, fds))) => match wire::decode::<ToServer>(&bytes) {
                    Ok(ToServer::Spawn(boot)) => {
                        serve_spawn(&mut conns, &mut children, idx, boot, fds);
                    }
                    Ok(ToServer::Hello { .. }) | Err(_) => {
                        let msg = FromServer::Failed { message: "malformed request".into() };
                        let _ = send(conn.sock.as_fd(), &msg, &[]);
                    }
                },
                Ok(None) | Err(_) => close_conn(&mut conns, &children, idx),
            }
        }
    }
}

/// Polls every connection and child pidfd; returns the ready indices of each.
fn wait_ready(
    conns: &[Option<Conn>],
    children: &[ServedChild],
) -> Option<(Vec<usize>, Vec<usize>)> {
    let mut fds = Vec::with_capacity(conns.len() + children.len());
    let mut conn_idx = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        if let Some(c) = c {
            fds.push(PollFd::new(&c.sock, PollFlags::IN));
            conn_idx.push(i);
        }
    }
    for c in children {
        fds.push(PollFd::new(&c.pidfd, PollFlags::IN));
    }
    os::poll::poll(&mut fds, None).ok()?;
    let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
    let conn_ready = conn_idx.iter().zip(&ready).filter(|(_, r)| **r).map(|(i, _)| *i).collect();
    let child_ready =
        ready[conn_idx.len()..].iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i).collect();
    Some((conn_ready, child_ready))
}

fn send(sock: BorrowedFd<'_>, msg: &FromServer, fds: &[BorrowedFd<'_>]) -> Result<()> {
    let bytes = wire::encode(msg)?;
    fdpass::send_frame(sock, &bytes, fds, wire::DEFAULT_MAX_FRAME)?;
    Ok(())
}

/// A requester went away: its daemonic children die with it.
fn close_conn(conns: &mut [Option<Conn>], children: &[ServedChild], idx: usize) {
    let Some(conn) = conns.get_mut(idx).and_then(Option::take) else { return };
    for pid in conn.daemon_children {
        if let Some(c) = children.iter().find(|c| c.pid == pid) {
            let _ = rustix::process::pidfd_send_signal(c.pidfd.as_fd(), Signal::KILL);
        }
    }
}

/// Forks a child for the requester on connection `idx`.
fn serve_spawn(
    conns: &mut Vec<Option<Conn>>,
    children: &mut Vec<ServedChild>,
    idx: usize,
    boot: Boot,
    fds: Vec<OwnedFd>,
) {
    if !matches!(conns.get(idx), Some(Some(_))) {
        return;
    }
    let pair = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    );
    let (server_end, child_end) = match pair {
        Ok(p) => p,
        Err(e) => return fail_request(conns, idx, &format!("socketpair: {e}")),
    };
    let daemon = boot.ident.daemon;
    let server_pid = rustix::process::getpid().as_raw_nonzero().get();
    let mut job = Some((boot, fds, child_end));
    let forked = os::process::fork_child(&mut || {
        let Some((boot, fds, child_end)) = job.take() else {
            return bootstrap::BOOTSTRAP_FAILURE;
        };
        // The server's other connections and children are not this child's.
        conns.clear();
        children.clear();
        // The server installs no handlers and blocks nothing: of its dispositions only the
        // ignored SIGINT differs from what a fresh Rust program has.
        os::process::ignore_sigint(false);
        let client = Arc::new(Client::new(child_end));
        bootstrap::run_boot(boot, fds, server_pid, Some(client))
    });
    let pid = match forked {
        Ok(pid) => pid,
        Err(e) => return fail_request(conns, idx, &format!("fork: {e}")),
    };
    drop(job);
    let raw = pid.as_raw_nonzero().get();
    let pidfd = match track_new_child(pid) {
        Ok(fd) => fd,
        Err(e) => return fail_request(conns, idx, &e.to_string()),
    };
    let sent = match conns.get_mut(idx) {
        Some(Some(conn)) => {
            if daemon {
                conn.daemon_children.push(raw);
            }
            send(conn.sock.as_fd(), &FromServer::Started { pid: raw }, &[pidfd.as_fd()]).is_ok()
        }
        _ => false,
    };
    children.push(ServedChild { pid: raw, pidfd, conn: idx });
    conns.push(Some(Conn { sock: server_end, daemon_children: Vec::new() }));
    if !sent {
        close_conn(conns, children, idx);
    }
}

fn fail_request(conns: &mut [Option<Conn>], idx: usize, message: &str) {
    if let Some(Some(conn)) = conns.get(idx) {
        let msg = FromServer::Failed { message: message.to_owned() };
        let _ = send(conn.sock.as_fd(), &msg, &[]);
    }
}
