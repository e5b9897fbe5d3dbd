//! Forkers: single-threaded processes that fork children on request, relay their exit status
//! and hand back their pidfds. Two flavours share the server loop: the forkserver of the
//! `forkserver` start method (a fresh exec of the binary, one per process tree branch,
//! started on first use) and private forked ones (`Forker::fork`, in `process.rs`: a zygote forked from the
//! caller, as a pool under `fork` uses).
//!
//! Each requester talks to the server over its own socketpair. The process that starts the
//! server inherits one end of the first; every child the server forks gets a new one, so a
//! child can start its own children through the same server. When a requester's connection
//! closes (it exited or was killed), the server SIGKILLs that requester's daemonic children.
//! The server exits when its last connection closes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::boot::{Boot, ChildIdentity, Encoded, FORKSERVER_ENV, exe_identity};
use crate::bootstrap;
use crate::child::{Child, Via, exit_code_of, track_new_child};
use crate::relay::{Client, FromServer, HELLO_MAGIC, ToServer};
use crate::state::global;
use crate::{Error, Result, fdpass, os, wire};

/// The connection of this process to its forkserver, starting the server on first use.
fn client() -> Result<Arc<Client>> {
    let mut g = global();
    if let Some(c) = &g.forkserver {
        return Ok(c.clone());
    }
    let (mine, _pid) =
        bootstrap::spawn_helper(FORKSERVER_ENV, SocketType::STREAM, "starting the forkserver")?;
    let hello = wire::encode(&ToServer::Hello { magic: HELLO_MAGIC, exe: exe_identity()? })?;
    fdpass::send_frame(mine.as_fd(), &hello, &[], wire::DEFAULT_MAX_FRAME)?;
    let client = Arc::new(Client::new(mine));
    g.forkserver = Some(client.clone());
    Ok(client)
}

/// Starts a child through the forkserver.
pub(crate) fn start(encoded: Encoded, ident: ChildIdentity) -> Result<Child> {
    start_via(client()?, encoded, ident)
}

/// Starts a child through the forker behind `client`.
pub(crate) fn start_via(
    client: Arc<Client>,
    encoded: Encoded,
    ident: ChildIdentity,
) -> Result<Child> {
    let parent_pidfd = global().self_pidfd()?;
    let name = ident.name.clone();
    let daemon = ident.daemon;
    let tracker = crate::tracker::inherited();
    let boot = Boot::new(encoded.entry, encoded.payload, ident, tracker.is_some())?;
    let fds = boot.fds(&parent_pidfd, tracker.as_ref(), &encoded.fds);
    let (pid, pidfd) = client.request(boot, &fds)?;
    let pid = Pid::from_raw(pid).ok_or_else(|| Error::Forkserver("invalid pid".into()))?;
    Ok(Child::new(pid, Some(pidfd), name, daemon, Via::Forkserver(client)))
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
    match (hello, exe_identity()) {
        (Ok(ToServer::Hello { magic: HELLO_MAGIC, exe }), Ok(mine)) if exe == mine => {}
        _ => return bootstrap::fail("forkserver: bad hello (different executable or version)"),
    }
    serve_loop(sock)
}

/// Serves requests on `sock` and on the connections of the children it forks, until the last
/// connection closes; returns the exit code.
pub(crate) fn serve_loop(sock: OwnedFd) -> i32 {
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
                    Ok(ToServer::Close) => close_conn(&mut conns, &children, idx),
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
            return crate::BOOTSTRAP_FAILURE;
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
