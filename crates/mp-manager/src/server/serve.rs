//! The manager's process: its main loop and one thread per connection.
//!
//! The main thread waits (one `poll`) on the doorway (new connections), the owner's pidfd (the
//! manager never outlives the process that started it), the pidfd of every client process
//! (its references are given back when it ends) and a doorbell (new sessions, shutdown).
//! Each connection has a thread that reads a request, runs it and answers, so a call that
//! blocks (a queue's `get`, a lock's `acquire`) blocks only its own client thread.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mp_process::code::Entry;
use mp_process::fdpass::{self, PassFd};
use mp_process::os;
use mp_queue::Connection;
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::RecvFlags;
use rustix::process::{Pid, PidfdFlags};
use serde::{Deserialize, Serialize};

use crate::error::RemoteError;
use crate::link::MAX_HELLO;
use crate::proto::{Call, Hello, Payload, Reply, Request, VERSION};
use crate::server::objects::Cx;
use crate::server::objects::{Session, Store};
use crate::server::registry::Registry;

/// What the manager's process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    /// The server's end of the doorway.
    pub doorway: PassFd,
    /// Where the server says it is ready (its pid) or why it cannot start.
    pub ready: Connection,
    /// The pid of the process that started the manager.
    pub owner: u32,
    /// Functions that register the program's own types or initialise the manager (entries of
    /// `fn(&mut Registry)`), run in order.
    pub setup: Vec<(u64, u64)>,
}

/// The server's state, shared by its threads.
struct Server {
    store: Store,
    registry: Registry,
    sessions: Mutex<HashMap<u32, Arc<Session>>>,
    /// Rung when the set of sessions changes or the server should stop.
    bell: OwnedFd,
    /// Set by a `Shutdown` request.
    stop: AtomicBool,
}

/// The manager process's target: serves until the owner ends or a client asks it to stop.
pub(crate) fn serve(args: ServerArgs) {
    let ServerArgs { doorway, ready, owner, setup } = args;
    // The manager's threads sleep at once when no request is there (clients still spin for
    // their replies): with a thread per connection, spinning servers take the cores their
    // clients need (four clients on two cores: 54k ops/s spinning, 107k sleeping; one client
    // drops from 960k to 640k, still 26x CPython).
    mp_sync::set_spin_limit(0);
    match setup_server(owner, &setup) {
        Ok((server, owner_fd)) => {
            if ready.send(&Ok::<u32, String>(os::pid())).is_err() {
                return;
            }
            drop(ready);
            main_loop(&server, doorway.0, owner_fd);
            // Stopping (a shutdown, or the owner's end): every object has its last word.
            for obj in server.store.all() {
                obj.shutdown();
            }
        }
        Err(why) => {
            let _ = ready.send(&Err::<u32, String>(why));
        }
    }
}

/// Builds the server: the owner's pidfd, the registry with the program's types.
fn setup_server(owner: u32, setup: &[(u64, u64)]) -> Result<(Arc<Server>, OwnedFd), String> {
    let owner_fd = open_pidfd(owner)
        .map_err(|e| format!("cannot watch the manager's owner (pid {owner}): {e}"))?;
    let mut registry = Registry::builtin();
    crate::server::sync::register(&mut registry);
    for &(offset, tag) in setup {
        let entry = Entry::<Registry>::from_parts(offset, tag)
            .ok_or_else(|| "a registration function's entry does not check".to_string())?;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.call(&mut registry)))
            .map_err(|_| "a registration function or the initializer panicked".to_string())?;
    }
    let bell = os::eventfd::doorbell().map_err(|e| format!("eventfd: {e}"))?;
    let server = Arc::new(Server {
        store: Store::new(),
        registry,
        sessions: Mutex::new(HashMap::new()),
        bell,
        stop: AtomicBool::new(false),
    });
    Ok((server, owner_fd))
}

/// A pidfd for `pid`.
fn open_pidfd(pid: u32) -> Result<OwnedFd, Errno> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(Errno::SRCH)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty())
}

/// Waits for connections, ended clients, the owner's end and a shutdown.
fn main_loop(server: &Arc<Server>, doorway: OwnedFd, owner: OwnedFd) {
    let mut doorway_open = true;
    loop {
        if server.stop.load(Ordering::Acquire) {
            return;
        }
        let sessions: Vec<Arc<Session>> = server.sessions.lock().values().cloned().collect();
        let mut fds = Vec::with_capacity(sessions.len() + 3);
        fds.push(PollFd::new(&owner, PollFlags::IN));
        fds.push(PollFd::new(&server.bell, PollFlags::IN));
        for s in &sessions {
            fds.push(PollFd::new(&s.pidfd, PollFlags::IN));
        }
        if doorway_open {
            fds.push(PollFd::new(&doorway, PollFlags::IN));
        }
        if let Err(e) = os::poll::poll(&mut fds, None) {
            log::error!(target: "mp_manager", "the manager's poll failed ({e}); it stops");
            return;
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        drop(fds);
        if ready[0] {
            // The owner ended: so does the manager (CPython's survives, gh-81158).
            return;
        }
        if ready[1] {
            os::eventfd::drain(server.bell.as_fd());
        }
        for (session, _) in sessions.iter().zip(&ready[2..]).filter(|(_, r)| **r) {
            end_session(server, session);
        }
        if doorway_open && ready.last() == Some(&true) {
            doorway_open = accept(server, &doorway);
        }
    }
}

/// Gives back everything an ended client process held.
fn end_session(server: &Server, session: &Arc<Session>) {
    server.sessions.lock().remove(&session.pid);
    session.end(&server.store);
    for obj in server.store.all() {
        obj.session_ended(session.pid);
    }
}

/// Takes the connections waiting on the doorway; `false` once no process can send more.
fn accept(server: &Arc<Server>, doorway: &OwnedFd) -> bool {
    let mut buf = vec![0u8; MAX_HELLO];
    loop {
        let got = match os::fds::recv(
            doorway.as_fd(),
            &mut [IoSliceMut::new(&mut buf)],
            RecvFlags::DONTWAIT,
        ) {
            Ok(got) => got,
            Err(Errno::AGAIN) => return true,
            Err(e) => {
                log::error!(target: "mp_manager", "the manager's doorway failed ({e})");
                return false;
            }
        };
        if got.bytes == 0 && got.fds.is_empty() {
            // Every process that could connect is gone (or holds its end no more).
            return false;
        }
        if got.truncated || got.fds_dropped {
            log::warn!(target: "mp_manager", "a connection arrived damaged and was dropped");
            continue;
        }
        let hello: Hello = match fdpass::decode_with_fds(&buf[..got.bytes], got.fds) {
            Ok(hello) => hello,
            Err(e) => {
                log::warn!(target: "mp_manager", "a connection was refused: {e}");
                continue;
            }
        };
        if hello.version != VERSION {
            log::warn!(target: "mp_manager", "a connection of wire version {} was refused", hello.version);
            continue;
        }
        let server = Arc::clone(server);
        let spawned = std::thread::Builder::new()
            .name("mp-manager-conn".into())
            .spawn(move || serve_connection(&server, hello.conn));
        if let Err(e) = spawned {
            log::error!(target: "mp_manager", "cannot start a thread for a connection ({e})");
        }
    }
}

/// The session of the process at the other end of `conn`, made if it is new.
fn session_for(server: &Server, conn: &Connection) -> Result<Arc<Session>, String> {
    let cred = rustix::net::sockopt::socket_peercred(conn.as_fd())
        .map_err(|e| format!("cannot learn who connected ({e})"))?;
    let pid = cred.pid.as_raw_nonzero().get().unsigned_abs();
    let mut sessions = server.sessions.lock();
    if let Some(s) = sessions.get(&pid) {
        return Ok(Arc::clone(s));
    }
    let pidfd = open_pidfd(pid).map_err(|e| format!("cannot watch client {pid} ({e})"))?;
    let session = Arc::new(Session::new(pid, pidfd));
    sessions.insert(pid, Arc::clone(&session));
    drop(sessions);
    os::eventfd::ring(server.bell.as_fd());
    Ok(session)
}

/// Serves one connection until its client closes it.
fn serve_connection(server: &Arc<Server>, conn: Connection) {
    let session = match session_for(server, &conn) {
        Ok(s) => s,
        Err(why) => {
            log::warn!(target: "mp_manager", "{why}");
            return;
        }
    };
    loop {
        let Ok(bytes) = conn.recv_bytes(None) else { return };
        let (id, result, stop) = handle(server, &session, &conn, &bytes);
        let reply = Reply { id, result };
        let bytes = match postcard::to_allocvec(&reply) {
            Ok(bytes) => bytes,
            Err(e) => {
                let failed = Reply {
                    id,
                    result: Err(RemoteError::new(
                        "TypeError",
                        format!("cannot encode the reply: {e}"),
                    )),
                };
                postcard::to_allocvec(&failed).unwrap_or_default()
            }
        };
        if conn.send_bytes(&bytes, 0, None).is_err() {
            return;
        }
        if stop {
            server.stop.store(true, Ordering::Release);
            os::eventfd::ring(server.bell.as_fd());
            return;
        }
    }
}

/// Runs one request: its id, its outcome, and whether the manager should stop.
fn handle(
    server: &Server,
    session: &Arc<Session>,
    conn: &Connection,
    bytes: &[u8],
) -> (u64, Result<Payload, RemoteError>, bool) {
    let request: Request<'_> = match postcard::from_bytes(bytes) {
        Ok(request) => request,
        Err(e) => {
            return (0, Err(RemoteError::new("BadRequest", format!("not a request: {e}"))), false);
        }
    };
    let cx = Cx { store: &server.store, session, conn: conn.as_fd(), private: true };
    let store = &server.store;
    let result = match request.call {
        Call::Create { typeid, args } => {
            server.registry.create(&cx, typeid, args).and_then(|obj| {
                let id = store.add(obj);
                session.record(store, &[id]);
                Payload::of(&id)
            })
        }
        Call::Method { object, method, args } => {
            store.get(object).and_then(|obj| obj.call(&cx, method, args)).inspect(|payload| {
                session.record(store, &payload.refs);
            })
        }
        Call::Apply { object, what, entry, args } => store
            .get(object)
            .and_then(|obj| obj.apply(&cx, what, entry, args))
            .inspect(|payload| session.record(store, &payload.refs)),
        Call::Incref { object } => session.incref(store, object).map(|()| Payload::unit()),
        Call::Decref { object } => session.decref(store, object).map(|()| Payload::unit()),
        Call::Count => Payload::of(&(store.len() as u64, session.held())),
        Call::Pid => Payload::of(&os::pid()),
        Call::Shutdown => return (request.id, Ok(Payload::unit()), true),
    };
    (request.id, result, false)
}
