//! `Listener` and `Client`: connections between processes that are not parent and child,
//! possibly on other hosts (Python's `multiprocessing.connection.Listener` and `Client`).

mod address;
mod auth;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mp_process::AuthKey;
use rustix::net::{AddressFamily, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType};

pub use address::{Address, IntoAddress};
use auth::Handshake;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// How long a handshake may take by default, at most, before the connection is refused.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The default backlog of a listener's socket (CPython's `Listener` uses 1, its manager
/// server 16 before 3.13; both refuse connections beyond it).
pub const DEFAULT_BACKLOG: i32 = 128;

/// How a connection authenticates: the key and the options of the handshake.
#[derive(Clone, Debug)]
struct Auth {
    key: Option<AuthKey>,
    /// The OS error of a key asked for (`current_authkey`) that could not be made: binding
    /// or connecting then fails, never runs without a key.
    key_error: Option<i32>,
    legacy_md5: bool,
    timeout: Duration,
}

impl Auth {
    /// No handshake (Python's `authkey=None`).
    fn none() -> Auth {
        Auth { key: None, key_error: None, legacy_md5: false, timeout: DEFAULT_HANDSHAKE_TIMEOUT }
    }

    /// Takes this process's key.
    fn current(&mut self) {
        match mp_process::authkey() {
            Ok(key) => self.key = Some(key),
            Err(e) => {
                self.key_error =
                    Some(e.raw_os_error().unwrap_or(rustix::io::Errno::IO.raw_os_error()))
            }
        }
    }

    /// Fails if a key asked for could not be made.
    fn check(&self) -> Result<()> {
        match self.key_error {
            Some(code) => Err(Error::io(
                "getrandom (the process's key)",
                std::io::Error::from_raw_os_error(code),
            )),
            None => Ok(()),
        }
    }

    /// The handshake of one connection, if there is a key, its deadline from now.
    fn handshake(&self) -> Option<Handshake<'_>> {
        let key = self.key.as_ref()?;
        Some(Handshake {
            key: key.as_bytes(),
            legacy_md5: self.legacy_md5,
            deadline: mp_process::os::time::deadline(Some(self.timeout)),
        })
    }
}

/// A socket bound to an address that accepts connections: Python's
/// `multiprocessing.connection.Listener`.
///
/// Each [`accept`](Listener::accept) gives a [`Connection`] (the same type a [`pipe`](crate::pipe)
/// gives, with the same `send`/`recv`, `send_bytes`/`recv_bytes`, `poll` and use in
/// [`wait`](crate::wait)). With a key, every connection first runs CPython's mutual
/// handshake (HMAC-SHA256 challenges both ways), so both ends prove they hold the key before
/// a byte of data is read; framing is CPython's too, so either end may be a Python program.
/// Without a key (Python's `authkey=None`) there is no handshake.
///
/// ```
/// use mp_queue::{Client, Listener};
///
/// let key = b"secret";
/// let listener = Listener::bind("127.0.0.1:0", Some(key))?;
/// let address = listener.address().clone(); // the port the kernel chose
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let conn = Client::connect(&address, Some(key)).unwrap();
///         conn.send("hello").unwrap();
///         assert_eq!(conn.recv::<u32>().unwrap(), 5);
///     });
///     let conn = listener.accept()?;
///     let text: String = conn.recv()?;
///     conn.send(&(text.len() as u32))
/// })?;
/// # Ok::<(), mp_queue::Error>(())
/// ```
///
/// A `Listener` is `Send` and `Sync`: several threads may accept at once. It is also
/// [`AsFd`], readable when a connection waits to be accepted, so it can be given to
/// [`wait`](crate::wait).
///
/// Dropping the listener (or [`close`](Listener::close)) closes its socket and removes the
/// file of an `AF_UNIX` path address (only in the process that bound it).
#[derive(Debug)]
pub struct Listener {
    /// The listening socket, `None` once closed.
    fd: Option<OwnedFd>,
    /// The address bound (with the port the kernel chose for port 0).
    address: Address,
    /// How connections authenticate.
    auth: Auth,
    /// The peer of the last connection accepted.
    last_accepted: Mutex<Option<Address>>,
    /// The file to remove at close, and the process that may remove it.
    unlink: Option<(PathBuf, u32)>,
}

/// Settings of a [`Listener`], from [`Listener::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ListenerBuilder {
    address: Option<Address>,
    auth: Auth,
    backlog: i32,
}

impl ListenerBuilder {
    /// The address to bind (default: a fresh `AF_UNIX` path in the temporary directory, as
    /// Python's `Listener()` without an address).
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// The key clients must prove they hold (default: none, no handshake, as Python's
    /// `authkey=None`).
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.auth.key = Some(AuthKey::new(key));
        self.auth.key_error = None;
        self
    }

    /// Uses this process's key ([`mp_process::authkey`]), as managers do.
    ///
    /// Errors, at [`bind`](ListenerBuilder::bind): the kernel's, if it cannot give random
    /// bytes for a first key.
    pub fn current_authkey(mut self) -> Self {
        self.auth.current();
        self
    }

    /// Whether Python ≤ 3.11 clients, which answer with HMAC-MD5, are accepted (default
    /// `false`; CPython 3.12 accepts them always).
    pub fn legacy_md5(mut self, allow: bool) -> Self {
        self.auth.legacy_md5 = allow;
        self
    }

    /// How long a connection's handshake may take before `accept` gives up on it (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]); Python waits for ever.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.auth.timeout = timeout;
        self
    }

    /// The socket's backlog: connections the kernel queues before they are accepted
    /// (default [`DEFAULT_BACKLOG`]).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Binds and listens.
    ///
    /// Errors: [`Error::Io`] with `op` `"bind"` for an address in use or not allowed
    /// (`EADDRINUSE`, `EACCES`, a path whose directory does not exist), `"socket"` or
    /// `"listen"` otherwise.
    pub fn bind(self) -> Result<Listener> {
        self.auth.check()?;
        let address = match self.address {
            Some(a) => a,
            None => temp_address()?,
        };
        let fd = listen_on(&address, self.backlog)?;
        let address = match &address {
            // The port the kernel chose for port 0.
            Address::Tcp(_) => local_address(fd.as_fd())?,
            other => other.clone(),
        };
        let unlink = match &address {
            Address::Unix(path) => Some((path.clone(), mp_process::os::pid())),
            _ => None,
        };
        Ok(Listener {
            fd: Some(fd),
            address,
            auth: self.auth,
            last_accepted: Mutex::new(None),
            unlink,
        })
    }
}

impl Listener {
    /// Binds `address` and listens, with `authkey` as the key clients must prove they hold
    /// (`None`: no handshake, as Python's `authkey=None`): Python's
    /// `Listener(address, authkey=authkey)`.
    ///
    /// `SO_REUSEADDR` is set on TCP sockets, as CPython does. The backlog is
    /// [`DEFAULT_BACKLOG`]; [`builder`](Listener::builder) sets it, the handshake's timeout,
    /// and whether Python ≤ 3.11 peers (HMAC-MD5) are accepted.
    ///
    /// Errors: those of [`Address::parse`] and [`ListenerBuilder::bind`].
    pub fn bind(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Listener> {
        let mut builder = Listener::builder().address(address.into_address()?);
        if let Some(key) = authkey {
            builder = builder.authkey(key);
        }
        builder.bind()
    }

    /// Settings for a listener.
    ///
    /// ```
    /// let listener = mp_queue::Listener::builder().current_authkey().legacy_md5(true).bind()?;
    /// assert!(matches!(listener.address(), mp_queue::Address::Unix(_)));
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder { address: None, auth: Auth::none(), backlog: DEFAULT_BACKLOG }
    }

    /// Accepts a connection, then runs the handshake if the listener has a key: Python's
    /// `Listener.accept()`.
    ///
    /// Blocks until a client connects. A TCP connection gets `TCP_NODELAY`.
    ///
    /// Errors: [`Error::Closed`] after [`close`](Listener::close);
    /// [`Error::Authentication`] if the client does not hold the key (or speaks another
    /// protocol), [`Error::Io`] (`TimedOut`) if its handshake does not finish within the
    /// timeout, [`Error::Eof`] if it leaves during the handshake: in each case that
    /// connection is closed and the listener goes on (accept again).
    pub fn accept(&self) -> Result<Connection> {
        self.accept_pending()?.authenticate()
    }

    /// Accepts a connection without running its handshake yet: a server that must not let
    /// one slow client hold up the others runs [`Pending::authenticate`] on a thread of the
    /// connection's own. Errors: [`Error::Closed`], [`Error::Io`].
    ///
    /// ```
    /// let listener = mp_queue::Listener::bind("127.0.0.1:0", Some(b"key"))?;
    /// let address = listener.address().clone();
    /// let client = std::thread::spawn(move || mp_queue::Client::connect(&address, Some(b"key")));
    /// let pending = listener.accept_pending()?;
    /// let conn = std::thread::spawn(move || pending.authenticate()).join().unwrap()?;
    /// conn.send(&1u8)?;
    /// assert_eq!(client.join().unwrap()?.recv::<u8>()?, 1);
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn accept_pending(&self) -> Result<Pending> {
        let listening = self.fd.as_ref().ok_or(Error::Closed)?;
        let (fd, peer) = loop {
            match rustix::net::acceptfrom_with(listening, SocketFlags::CLOEXEC) {
                Err(rustix::io::Errno::INTR) => {}
                other => break other.map_err(|e| Error::io("accept", e))?,
            }
        };
        let peer = peer.and_then(peer_address);
        *self.last_accepted.lock().unwrap_or_else(PoisonError::into_inner) = peer.clone();
        if matches!(self.address, Address::Tcp(_)) {
            rustix::net::sockopt::set_tcp_nodelay(&fd, true)
                .map_err(|e| Error::io("setsockopt (TCP_NODELAY)", e))?;
        }
        Ok(Pending { fd, peer, auth: self.auth.clone() })
    }

    /// The address the listener is bound to (for TCP port 0, with the port chosen).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the peer of the last connection accepted: Python's `last_accepted`.
    /// `None` before the first, and for `AF_UNIX` peers that did not bind a name (Python
    /// gives `''` for those).
    pub fn last_accepted(&self) -> Option<Address> {
        self.last_accepted.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether [`close`](Listener::close) was called.
    pub fn closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Closes the socket and removes the file of an `AF_UNIX` path address (if this process
    /// bound it). Idempotent; dropping the listener does the same. Connections already
    /// accepted stay open.
    pub fn close(&mut self) {
        if self.fd.take().is_some() {
            if let Some((path, pid)) = self.unlink.take() {
                if pid == mp_process::os::pid() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// The listening socket; once closed, the stand-in of closed connections (always ready).
impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => match crate::sys::closed_fd() {
                Ok(fd) => fd.as_fd(),
                // Without a stand-in (out of descriptors at first use), lend the standard
                // input's number: a closed listener must still lend something.
                Err(_) => rustix::stdio::stdin(),
            },
        }
    }
}

/// A connection accepted by [`Listener::accept_pending`], its handshake still to run.
#[derive(Debug)]
#[must_use = "a pending connection is closed unless it is authenticated"]
pub struct Pending {
    /// The accepted socket.
    fd: OwnedFd,
    /// The peer's address, if it has one.
    peer: Option<Address>,
    /// The listener's key and handshake options.
    auth: Auth,
}

impl Pending {
    /// The peer's address (as [`Listener::last_accepted`] gave it at accept time).
    pub fn peer(&self) -> Option<&Address> {
        self.peer.as_ref()
    }

    /// Runs the handshake (if the listener has a key) and gives the connection: the second
    /// half of [`Listener::accept`], with its errors. The handshake's timeout counts from
    /// this call.
    pub fn authenticate(self) -> Result<Connection> {
        if let Some(handshake) = self.auth.handshake() {
            handshake.deliver_challenge(self.fd.as_fd())?;
            handshake.answer_challenge(self.fd.as_fd())?;
        }
        Connection::from_socket(self.fd)
    }
}

/// Connects to listeners: Python's `multiprocessing.connection.Client`.
///
/// [`Client::connect`] is Python's `Client(address, authkey=...)`; [`Client::builder`] adds
/// the handshake's timeout and Python ≤ 3.11 (HMAC-MD5) peers.
#[derive(Debug, Clone)]
#[must_use]
pub struct Client {
    address: Address,
    auth: Auth,
}

impl Client {
    /// Connects to the listener at `address`, then, with a key, runs the handshake (this
    /// side answers the listener's challenge, then challenges it): Python's
    /// `Client(address, authkey=authkey)`. A TCP connection gets `TCP_NODELAY`.
    ///
    /// Errors: [`Error::Io`] with `op` `"connect"` (`ECONNREFUSED` when nothing listens,
    /// `ENOENT` for a missing path), [`Error::Authentication`] if the keys differ
    /// (`"digest sent was rejected"`) or the peer is not a listener of this protocol,
    /// [`Error::Eof`] if it closes during the handshake, [`Error::Io`] (`TimedOut`) if the
    /// handshake does not finish within [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn connect(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Connection> {
        let mut client = Client::builder(address)?;
        if let Some(key) = authkey {
            client = client.authkey(key);
        }
        client.connect_now()
    }

    /// Settings for a connection to `address`; [`connect_now`](Client::connect_now) connects.
    ///
    /// Errors: those of [`Address::parse`].
    pub fn builder(address: impl IntoAddress) -> Result<Client> {
        Ok(Client { address: address.into_address()?, auth: Auth::none() })
    }

    /// The key to prove (default: none, no handshake).
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.auth.key = Some(AuthKey::new(key));
        self.auth.key_error = None;
        self
    }

    /// Uses this process's key ([`mp_process::authkey`]), as manager clients do.
    pub fn current_authkey(mut self) -> Self {
        self.auth.current();
        self
    }

    /// Whether a Python ≤ 3.11 listener, which challenges for HMAC-MD5, is answered (default
    /// `false`).
    pub fn legacy_md5(mut self, allow: bool) -> Self {
        self.auth.legacy_md5 = allow;
        self
    }

    /// How long the connection and its handshake may take (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.auth.timeout = timeout;
        self
    }

    /// Connects and authenticates.
    ///
    /// Errors: as [`Client::connect`].
    pub fn connect_now(&self) -> Result<Connection> {
        self.auth.check()?;
        let started = Instant::now();
        let fd = connect_to(&self.address, self.auth.timeout)?;
        if let Some(mut handshake) = self.auth.handshake() {
            handshake.deadline = Some(started + self.auth.timeout);
            handshake.client(fd.as_fd())?;
        }
        Connection::from_socket(fd)
    }
}

/// A fresh `AF_UNIX` path for a listener without an address: in the temporary directory,
/// named after this process and a counter, with random bytes (Python's `listener-XXXXXX`).
fn temp_address() -> Result<Address> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 4];
    mp_process::fill_random(&mut random).map_err(|e| Error::io("getrandom", e))?;
    let name = format!(
        "mp-listener-{}-{}-{:08x}",
        mp_process::os::pid(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        u32::from_ne_bytes(random)
    );
    Ok(Address::Unix(std::env::temp_dir().join(name)))
}

/// A new stream socket of `family`, close-on-exec.
fn stream_socket(family: AddressFamily) -> Result<OwnedFd> {
    rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| Error::io("socket", e))
}

/// The `AF_UNIX` address of a path or abstract name.
fn unix_address(address: &Address) -> Result<SocketAddrUnix> {
    let made = match address {
        Address::Unix(path) => SocketAddrUnix::new(path.as_path()),
        Address::Abstract(name) => SocketAddrUnix::new_abstract_name(name),
        Address::Tcp(_) => return Err(Error::InvalidArgument("not an AF_UNIX address")),
    };
    made.map_err(|e| Error::io("bind (address too long)", e))
}

/// A socket bound to `address` and listening.
fn listen_on(address: &Address, backlog: i32) -> Result<OwnedFd> {
    let fd = match address {
        Address::Tcp(addr) => {
            let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
            let fd = stream_socket(family)?;
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)
                .map_err(|e| Error::io("setsockopt (SO_REUSEADDR)", e))?;
            rustix::net::bind(&fd, addr).map_err(|e| Error::io("bind", e))?;
            fd
        }
        unix => {
            let addr = unix_address(unix)?;
            let fd = stream_socket(AddressFamily::UNIX)?;
            rustix::net::bind(&fd, &addr).map_err(|e| Error::io("bind", e))?;
            fd
        }
    };
    rustix::net::listen(&fd, backlog).map_err(|e| Error::io("listen", e))?;
    Ok(fd)
}

/// The TCP address a socket is bound to.
fn local_address(fd: BorrowedFd<'_>) -> Result<Address> {
    let addr = rustix::net::getsockname(fd).map_err(|e| Error::io("getsockname", e))?;
    peer_address(addr).ok_or(Error::InvalidArgument("the socket has no TCP address"))
}

/// A socket address as an [`Address`], if it names something.
fn peer_address(addr: SocketAddrAny) -> Option<Address> {
    match addr.address_family() {
        AddressFamily::INET | AddressFamily::INET6 => {
            std::net::SocketAddr::try_from(addr).ok().map(Address::Tcp)
        }
        AddressFamily::UNIX => {
            let unix = SocketAddrUnix::try_from(addr).ok()?;
            if let Some(name) = unix.abstract_name() {
                return Some(Address::Abstract(name.to_vec()));
            }
            let path = unix.path()?;
            let bytes = path.to_bytes();
            if bytes.is_empty() {
                return None;
            }
            Some(Address::Unix(PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes),
            )))
        }
        _ => None,
    }
}

/// A socket connected to `address`, within `timeout` (TCP; `AF_UNIX` connects at once or
/// fails).
fn connect_to(address: &Address, timeout: Duration) -> Result<OwnedFd> {
    match address {
        Address::Tcp(addr) => {
            let stream = std::net::TcpStream::connect_timeout(addr, timeout)
                .map_err(|e| Error::io("connect", e))?;
            stream.set_nodelay(true).map_err(|e| Error::io("setsockopt (TCP_NODELAY)", e))?;
            Ok(OwnedFd::from(stream))
        }
        unix => {
            let addr = unix_address(unix)?;
            let fd = stream_socket(AddressFamily::UNIX)?;
            loop {
                match rustix::net::connect(&fd, &addr) {
                    Err(rustix::io::Errno::INTR) => {}
                    other => break other.map_err(|e| Error::io("connect", e))?,
                }
            }
            Ok(fd)
        }
    }
}
