//! The manager's process: its main loop and one thread per connection.
//!
//! The main thread waits (one `poll`) on the doorway (new connections), the owner's pidfd (the
//! manager never outlives the process that started it), the pidfd of every client process
//! (its references are given back when it ends) and a doorbell (new sessions, shutdown).
//! Each connection has a thread that reads a request, runs it and answers, so a call that
//! blocks (a queue's `get`, a lock's `acquire`) blocks only its own client thread.
//!
//! A manager served on an address (a remote manager) also has an accepting thread: each
//! connection it accepts gets a thread that runs the handshake (so a slow or hostile peer
//! holds up nobody), reads the client's hello (its session), and serves it like any other,
//! except that functions of the program (entries) never run for it and it may not shut the
//! manager down. A remote session ends when its last connection closes.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mp_process::code::Entry;
use mp_process::fdpass::{self, PassFd};
use mp_process::os;
use mp_queue::{Address, Connection, Listener, Pending};
use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::RecvFlags;
use rustix::process::{Pid, PidfdFlags};
use serde::{Deserialize, Serialize};

use crate::error::RemoteError;
use crate::proto::{
    Call, Hello, KEPT_BUFFER, MAX_HELLO, Payload, RemoteHello, RemoteWelcome, Reply, Request,
    VERSION,
};
use crate::server::objects::Cx;
use crate::server::objects::{REMOTE_SESSIONS, Served, Session, Store};
use crate::server::registry::Registry;
use crate::shortcut::SideDoor;

/// What the manager's process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    /// The manager's identity (its links' in every process).
    pub id: u64,
    /// The server's end of the doorway.
    pub doorway: PassFd,
    /// Where the server says it is ready (its pid and the address it listens on) or why it
    /// cannot start.
    pub ready: Connection,
    /// The pid of the process that started the manager.
    pub owner: u32,
    /// Functions that register the program's own types or initialise the manager (entries of
    /// `fn(&mut Registry)`, with their arguments), run in order.
    pub setup: Vec<SetupStep>,
    /// Where to listen for remote clients, if anywhere.
    pub listen: Option<ListenArgs>,
}

/// A function the manager's process runs before it serves: a checked entry of
/// `fn(&mut Registry)`, and the arguments it finds in the registry (an initializer's).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SetupStep {
    /// The entry's parts.
    pub entry: (u64, u64),
    /// Its arguments, postcard (empty for none).
    pub args: Vec<u8>,
}

/// Where a manager listens for remote clients, and the key they must hold.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ListenArgs {
    /// The address to bind.
    pub address: Address,
    /// The key.
    pub key: Vec<u8>,
}

/// What the manager's process says when it is ready: its pid and the address it listens on.
pub(crate) type Ready = std::result::Result<(u32, Option<Address>), String>;

/// How long a remote connection's thread looks for the next request before it sleeps.
const REMOTE_SPIN: Duration = Duration::from_micros(30);

/// A remote client's session and how many connections it has open.
type RemoteSession = (Arc<Session>, usize);

/// The server's state, shared by its threads.
struct Server {
    /// The manager's identity.
    id: u64,
    store: Store,
    registry: Registry,
    sessions: Mutex<HashMap<u32, Arc<Session>>>,
    /// Remote sessions, by the session bytes their clients send, with their open connections.
    remote: Mutex<HashMap<[u8; 16], RemoteSession>>,
    /// The number of the next remote session.
    next_remote: AtomicU32,
    /// Remote connections in their handshake now.
    handshaking: AtomicUsize,
    /// Values published by name (`Manager::publish`).
    names: Mutex<HashMap<String, crate::proto::Item>>,
    /// The same-host shortcut's side door, once the server listens on an address.
    side_door: OnceLock<SideDoor>,
    /// Rung when the set of sessions changes or the server should stop.
    bell: OwnedFd,
    /// Set by a `Shutdown` request.
    stop: AtomicBool,
}

/// The manager process's target: serves until the owner ends or a client asks it to stop.
pub(crate) fn serve(args: ServerArgs) {
    let ServerArgs { id, doorway, ready, owner, setup, listen } = args;
    // The manager's threads spin for the next request as every receiver does: the lanes'
    // spin backs off when it does not pay (four clients on two cores), and a client that
    // sends at once finds the server awake (one client: 570k ops/s against 235k sleeping).
    let started = open_pidfd(owner)
        .map_err(|e| format!("cannot watch the manager's owner (pid {owner}): {e}"))
        .and_then(|owner_fd| {
            let listener = listen
                .map(|l| bind(&l).map_err(|e| format!("cannot listen on {}: {e}", l.address)))
                .transpose()?;
            Ok((setup_server(id, &setup)?, owner_fd, listener))
        });
    match started {
        Ok((server, owner_fd, listener)) => {
            let address = listener.as_ref().map(|l| l.address().clone());
            if ready.send(&Ready::Ok((os::pid(), address))).is_err() {
                return;
            }
            drop(ready);
            if let Some(listener) = listener {
                start_accepting(&server, listener);
            }
            main_loop(&server, Some(doorway.0), Some(owner_fd));
            stop(&server);
        }
        Err(why) => {
            let _ = ready.send(&Ready::Err(why));
        }
    }
}

/// Serves on `listener` in the calling thread, for ever (Python's `serve_forever`): a
/// manager of no process tree, for remote clients only.
pub(crate) fn serve_forever(
    id: u64,
    setup: &[SetupStep],
    listener: Listener,
) -> Result<(), String> {
    let server = setup_server(id, setup)?;
    start_accepting(&server, listener);
    main_loop(&server, None, None);
    stop(&server);
    Ok(())
}

/// Binds the listener of a remote manager.
pub(crate) fn bind(listen: &ListenArgs) -> mp_queue::Result<Listener> {
    Listener::builder()
        .address(listen.address.clone())
        .authkey(&listen.key)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .bind()
}

/// Stopping (a shutdown, or the owner's end): every object has its last word.
fn stop(server: &Server) {
    for obj in server.store.all() {
        obj.shutdown();
    }
}

/// Builds the server: the registry with the program's types.
fn setup_server(id: u64, setup: &[SetupStep]) -> Result<Arc<Server>, String> {
    let mut registry = Registry::builtin();
    crate::server::sync::register(&mut registry);
    for step in setup {
        let (offset, tag) = step.entry;
        let entry = Entry::<Registry>::from_parts(offset, tag)
            .ok_or_else(|| "a registration function's entry does not check".to_string())?;
        registry.setup_args.clone_from(&step.args);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.call(&mut registry)))
            .map_err(|_| "a registration function or the initializer panicked".to_string())?;
        if let Some(why) = registry.setup_error.take() {
            return Err(why);
        }
    }
    let bell = os::eventfd::doorbell().map_err(|e| format!("eventfd: {e}"))?;
    Ok(Arc::new(Server {
        id,
        store: Store::new(),
        registry,
        sessions: Mutex::new(HashMap::new()),
        remote: Mutex::new(HashMap::new()),
        next_remote: AtomicU32::new(REMOTE_SESSIONS),
        names: Mutex::new(HashMap::new()),
        handshaking: AtomicUsize::new(0),
        side_door: OnceLock::new(),
        bell,
        stop: AtomicBool::new(false),
    }))
}

/// Starts the thread that accepts remote connections, each served on a thread of its own,
/// and the one that takes same-host clients through the side door.
fn start_accepting(server: &Arc<Server>, listener: Listener) {
    match SideDoor::open() {
        Ok(door) => {
            let _ = server.side_door.set(door);
            let server = Arc::clone(server);
            let spawned = std::thread::Builder::new()
                .name("mp-manager-door".into())
                .spawn(move || accept_same_host(&server));
            if let Err(e) = spawned {
                log::warn!(target: "mp_manager", "no same-host shortcut: no thread for it ({e})");
            }
        }
        Err(e) => log::warn!(target: "mp_manager", "no same-host shortcut: {e}"),
    }
    let server = Arc::clone(server);
    let spawned = std::thread::Builder::new()
        .name("mp-manager-accept".into())
        .spawn(move || accept_remote(&server, &listener));
    if let Err(e) = spawned {
        log::error!(target: "mp_manager", "cannot start the manager's accepting thread ({e})");
    }
}

/// Takes knocks at the side door for as long as the manager serves, each on a thread of its
/// own (counted with the handshakes: a local peer that sends nothing holds a thread for
/// the knock's timeout at most).
fn accept_same_host(server: &Arc<Server>) {
    let Some(door) = server.side_door.get() else { return };
    accept_loop(
        server,
        "a knock at the side door",
        "mp-manager-same-host",
        || door.accept(),
        serve_same_host,
    );
}

/// Takes one knock: the pipe it brings is served as a connection of the token's session.
fn serve_same_host(server: &Arc<Server>, peer: OwnedFd) {
    let claimed =
        server.side_door.get().ok_or("no side door".to_string()).and_then(|door| door.claim(&peer));
    server.handshaking.fetch_sub(1, Ordering::AcqRel);
    let (session_bytes, conn) = match claimed {
        Ok(claimed) => claimed,
        Err(why) => {
            log::warn!(target: "mp_manager", "{why}");
            return;
        }
    };
    // The offering connection is still open (its client waits for this answer), so the
    // session is there; if not (it closed meanwhile), dropping the pipe refuses the knock.
    let Some(session) = join_remote(server, session_bytes) else { return };
    if conn.send(&true).is_ok() {
        serve_requests(server, &session, &conn, false);
    }
    leave_remote(server, session_bytes, &session);
}

/// Counts one more connection of the remote session `bytes`, if it exists.
fn join_remote(server: &Server, bytes: [u8; 16]) -> Option<Arc<Session>> {
    let mut remote = server.remote.lock();
    let (session, conns) = remote.get_mut(&bytes)?;
    *conns += 1;
    Some(Arc::clone(session))
}

/// Counts one connection fewer of the remote session `bytes`: the session ends with its last.
fn leave_remote(server: &Server, bytes: [u8; 16], session: &Arc<Session>) {
    let ended = {
        let mut remote = server.remote.lock();
        match remote.get_mut(&bytes) {
            Some((_, conns)) if *conns > 1 => {
                *conns -= 1;
                false
            }
            Some(_) => remote.remove(&bytes).is_some(),
            None => false,
        }
    };
    if ended {
        end_remote_session(server, session);
    }
}

/// Accepts remote connections for as long as the manager serves.
fn accept_remote(server: &Arc<Server>, listener: &Listener) {
    accept_loop(
        server,
        "a remote connection",
        "mp-manager-remote",
        || listener.accept_pending(),
        serve_remote,
    );
}

/// Accepts with `accept` for as long as the manager serves and runs `serve` on a thread of
/// its own (named `thread`) for each peer: unauthenticated peers may hold at most
/// [`MAX_HANDSHAKES`] threads (each for its handshake's timeout at most, `serve` counting
/// itself out once its peer is authenticated); more are closed at once.
fn accept_loop<P: Send + 'static, E: std::fmt::Display>(
    server: &Arc<Server>,
    what: &str,
    thread: &str,
    accept: impl Fn() -> Result<P, E>,
    serve: fn(&Arc<Server>, P),
) {
    /// The pause after a failed accept (out of descriptors, say), so a lasting failure does
    /// not spin.
    const BACKOFF: Duration = Duration::from_millis(20);
    while !server.stop.load(Ordering::Acquire) {
        let peer = match accept() {
            Ok(peer) => peer,
            Err(e) => {
                log::warn!(target: "mp_manager", "accepting {what} failed: {e}");
                std::thread::sleep(BACKOFF);
                continue;
            }
        };
        if server.handshaking.fetch_add(1, Ordering::AcqRel) >= MAX_HANDSHAKES {
            server.handshaking.fetch_sub(1, Ordering::AcqRel);
            log::warn!(target: "mp_manager", "too many connections in their handshake: {what} was closed");
            continue;
        }
        let server = Arc::clone(server);
        let spawned =
            std::thread::Builder::new().name(thread.into()).spawn(move || serve(&server, peer));
        if let Err(e) = spawned {
            log::error!(target: "mp_manager", "cannot start a thread for {what} ({e})");
        }
    }
}

/// How many remote connections may be in their handshake at once.
const MAX_HANDSHAKES: usize = 64;

/// How long a remote connection's handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Authenticates a remote connection, reads its hello and serves it.
fn serve_remote(server: &Arc<Server>, pending: Pending) {
    let peer = pending.peer().map_or_else(|| "a local peer".to_string(), ToString::to_string);
    let authenticated = pending.authenticate();
    server.handshaking.fetch_sub(1, Ordering::AcqRel);
    let conn = match authenticated {
        Ok(conn) => conn,
        Err(e) => {
            log::warn!(target: "mp_manager", "a connection from {peer} was refused: {e}");
            return;
        }
    };
    let hello: RemoteHello = match conn.recv() {
        Ok(hello) => hello,
        Err(e) => {
            log::warn!(target: "mp_manager", "a connection from {peer} sent no hello: {e}");
            return;
        }
    };
    if hello.version != VERSION {
        log::warn!(target: "mp_manager", "a connection of wire version {} was refused", hello.version);
        return;
    }
    // A remote client's requests come over a socket, where a wake-up costs tens of µs: its
    // thread looks for the next request for a while after each reply, as long as the client
    // keeps sending within that while (an idle client costs nothing).
    conn.set_receive_spin(Some(REMOTE_SPIN));
    // The session counts this connection before the welcome, so that a pipe brought through
    // the side door with the welcome's token finds it.
    let session = {
        let mut remote = server.remote.lock();
        let (session, conns) = remote.entry(hello.session).or_insert_with(|| {
            let n = server.next_remote.fetch_add(1, Ordering::Relaxed);
            (Arc::new(Session::new(n, None)), 0)
        });
        *conns += 1;
        Arc::clone(session)
    };
    let shortcut = server.side_door.get().and_then(|door| door.offer(hello.session));
    if conn.send(&RemoteWelcome { id: server.id, pid: os::pid(), shortcut }).is_ok() {
        serve_requests(server, &session, &conn, false);
    }
    if let (Some(door), Some(offer)) = (server.side_door.get(), shortcut) {
        door.withdraw(&offer.token);
    }
    // The session ends with its last connection.
    leave_remote(server, hello.session, &session);
}

/// A pidfd for `pid`.
fn open_pidfd(pid: u32) -> Result<OwnedFd, Errno> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(Errno::SRCH)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty())
}

/// Waits for connections, ended clients, the owner's end and a shutdown. A manager serving
/// for ever has neither doorway nor owner.
fn main_loop(server: &Arc<Server>, doorway: Option<OwnedFd>, owner: Option<OwnedFd>) {
    let mut doorway_open = doorway.is_some();
    loop {
        if server.stop.load(Ordering::Acquire) {
            return;
        }
        let sessions: Vec<Arc<Session>> = server.sessions.lock().values().cloned().collect();
        let mut fds = Vec::with_capacity(sessions.len() + 3);
        fds.push(PollFd::new(&server.bell, PollFlags::IN));
        if let Some(owner) = &owner {
            fds.push(PollFd::new(owner, PollFlags::IN));
        }
        let watched: Vec<&Arc<Session>> = sessions.iter().filter(|s| s.pidfd.is_some()).collect();
        for s in &watched {
            if let Some(pidfd) = &s.pidfd {
                fds.push(PollFd::new(pidfd, PollFlags::IN));
            }
        }
        if let (true, Some(doorway)) = (doorway_open, &doorway) {
            fds.push(PollFd::new(doorway, PollFlags::IN));
        }
        if let Err(e) = os::poll::poll(&mut fds, None) {
            log::error!(target: "mp_manager", "the manager's poll failed ({e}); it stops");
            return;
        }
        let mut ready =
            fds.iter().map(|fd| !fd.revents().is_empty()).collect::<Vec<bool>>().into_iter();
        drop(fds);
        if ready.next() == Some(true) {
            os::eventfd::drain(server.bell.as_fd());
        }
        if owner.is_some() && ready.next() == Some(true) {
            // The owner ended: so does the manager (CPython's survives, gh-81158).
            return;
        }
        for session in &watched {
            if ready.next() == Some(true) {
                end_session(server, session);
            }
        }
        if let (true, Some(doorway), Some(true)) = (doorway_open, &doorway, ready.next()) {
            doorway_open = accept(server, doorway);
        }
    }
}

/// Gives back everything an ended client process held.
fn end_session(server: &Server, session: &Arc<Session>) {
    server.sessions.lock().remove(&session.pid);
    end_remote_session(server, session);
}

/// Gives back everything an ended session held (already out of the tables).
fn end_remote_session(server: &Server, session: &Arc<Session>) {
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
    let socket = conn.socket().ok_or("the connection is closed")?;
    let cred = rustix::net::sockopt::socket_peercred(socket)
        .map_err(|e| format!("cannot learn who connected ({e})"))?;
    let pid = cred.pid.as_raw_nonzero().get().unsigned_abs();
    let mut sessions = server.sessions.lock();
    if let Some(s) = sessions.get(&pid) {
        return Ok(Arc::clone(s));
    }
    let pidfd = open_pidfd(pid).map_err(|e| format!("cannot watch client {pid} ({e})"))?;
    let session = Arc::new(Session::new(pid, Some(pidfd)));
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
    serve_requests(server, &session, &conn, true);
}

/// Serves the requests of one connection of `session` until it closes; `private` for the
/// connections of the manager's own process tree.
fn serve_requests(server: &Arc<Server>, session: &Arc<Session>, conn: &Connection, private: bool) {
    // The socket itself, for noticing the caller hang up during a long wait.
    let Some(socket) = conn.socket() else { return };
    // The buffers requests are received in and replies encoded in, kept between requests.
    let mut input: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        if input.capacity() > KEPT_BUFFER {
            input = Vec::new();
        }
        if conn.recv_bytes_into_vec(&mut input).is_err() {
            return;
        }
        let mut called: Option<(Arc<dyn Served>, &str)> = None;
        let (id, result, stop) = handle(server, session, socket, &input, private, &mut called);
        let reply = Reply { id, result };
        out.clear();
        let bytes = match postcard::to_extend(&reply, std::mem::take(&mut out)) {
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
        let sent = conn.send_bytes(&bytes, 0, None);
        // A buffer grown for a large reply is not kept.
        if bytes.capacity() <= KEPT_BUFFER {
            out = bytes;
        }
        if sent.is_err() {
            // The caller cannot get the reply: what the call took out of an object (a queue's
            // item) goes back.
            if let (Some((obj, method)), Ok(payload)) = (called, reply.result) {
                obj.reply_lost(&server.store, method, payload);
            }
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
fn handle<'b>(
    server: &Server,
    session: &Arc<Session>,
    socket: BorrowedFd<'_>,
    bytes: &'b [u8],
    private: bool,
    called: &mut Option<(Arc<dyn Served>, &'b str)>,
) -> (u64, Result<Payload, RemoteError>, bool) {
    let request: Request<'_> = match postcard::from_bytes(bytes) {
        Ok(request) => request,
        Err(e) => {
            return (0, Err(RemoteError::new("BadRequest", format!("not a request: {e}"))), false);
        }
    };
    let cx = Cx { store: &server.store, session, conn: socket, private };
    let store = &server.store;
    let result = match request.call {
        Call::Create { typeid, args } => {
            server.registry.create(&cx, typeid, args).and_then(|obj| {
                let id = store.add(obj);
                session.record(store, &[id]);
                Payload::of(&id)
            })
        }
        Call::Method { object, method, args } => store.get(object).and_then(|obj| {
            let result = obj.call(&cx, method, args);
            if result.is_ok() {
                *called = Some((obj, method));
            }
            result.inspect(|payload| session.record(store, &payload.refs))
        }),
        Call::Apply { object, what, entry, args } => store
            .get(object)
            .and_then(|obj| obj.apply(&cx, what, entry, args))
            .inspect(|payload| session.record(store, &payload.refs)),
        Call::Incref { object } => session.incref(store, object).map(|()| Payload::unit()),
        Call::Decref { object } => session.decref(store, object).map(|()| Payload::unit()),
        Call::Count => Payload::of(&(store.len() as u64, session.held())),
        Call::Pid => Payload::of(&os::pid()),
        Call::Publish { name, value } => cx.hold(&value).map(|()| {
            let old = server.names.lock().insert(name.to_string(), value);
            if let Some(old) = old {
                cx.release(old);
            }
            Payload::unit()
        }),
        Call::Lookup { name } => match server.names.lock().get(name) {
            Some(value) => cx.give(value).inspect(|payload| session.record(store, &payload.refs)),
            None => {
                Err(RemoteError::new("NoSuchName", format!("nothing is published as {name:?}")))
            }
        },
        Call::Unpublish { name } => {
            let old = server.names.lock().remove(name);
            let found = old.is_some();
            if let Some(old) = old {
                cx.release(old);
            }
            Payload::of(&found)
        }
        Call::Shutdown if private => return (request.id, Ok(Payload::unit()), true),
        Call::Shutdown => Err(RemoteError::new(
            "Refused",
            "a remote client cannot shut the manager down (its owner does)",
        )),
    };
    (request.id, result, false)
}
