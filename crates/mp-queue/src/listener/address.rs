//! The addresses of listeners and clients: TCP, `AF_UNIX` paths and Linux abstract names.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a [`Listener`](crate::Listener) listens and a [`Client`](crate::Client) connects:
/// Python's `address` argument of `multiprocessing.connection`.
///
/// Python tells the families apart by the argument's type (a `(host, port)` tuple is TCP, a
/// string an `AF_UNIX` path, a string starting with a NUL byte an abstract name); here they
/// are variants, made from those same shapes by [`IntoAddress`]:
///
/// ```
/// use mp_queue::Address;
/// use std::path::Path;
///
/// assert!(matches!(Address::parse("127.0.0.1:6000")?, Address::Tcp(a) if a.port() == 6000));
/// assert!(matches!(Address::parse("localhost:6000")?, Address::Tcp(_)));
/// assert!(matches!(Address::parse("/tmp/app.sock")?, Address::Unix(_)));
/// assert!(matches!(Address::parse("@app")?, Address::Abstract(name) if name == b"app"));
/// assert!(matches!(Address::parse("\0app")?, Address::Abstract(name) if name == b"app"));
/// assert_eq!(Address::parse("[::1]:80")?.to_string(), "[::1]:80");
/// assert_eq!(Address::parse(":6000")?.to_string(), "127.0.0.1:6000", "loopback by default");
/// assert_eq!(Address::from(Path::new("sock")).to_string(), "sock");
/// # Ok::<(), mp_queue::Error>(())
/// ```
///
/// An address is `Serialize` and `Deserialize` (a path that is not UTF-8 fails to serialise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Address {
    /// A TCP address (IPv4 or IPv6), host names resolved.
    Tcp(SocketAddr),
    /// An `AF_UNIX` socket at a path in the file system: the listener creates the file and
    /// removes it when it closes.
    Unix(PathBuf),
    /// A Linux abstract `AF_UNIX` name (no file; gone with the last socket bound to it).
    Abstract(Vec<u8>),
}

impl Address {
    /// Reads an address from text: `"@name"` or `"\0name"` is an abstract name; text with a
    /// `/` is a path; `"host:port"` (`"[v6]:port"` for IPv6) is TCP, the host name resolved
    /// to its first address, and `":port"` is TCP on loopback (`127.0.0.1`: a listener
    /// reachable from other hosts names its interface, `"0.0.0.0:port"` for all; Python's
    /// empty host means all); anything else is a path.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty string, [`Error::Io`] for a host name
    /// that does not resolve.
    pub fn parse(text: &str) -> Result<Address> {
        if text.is_empty() {
            return Err(Error::InvalidArgument("an empty address"));
        }
        if let Some(name) = text.strip_prefix('@').or_else(|| text.strip_prefix('\0')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if text.contains('/') {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        if let Some(port) = text.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()) {
            return Ok(Address::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let is_tcp = text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !is_tcp {
            return Ok(Address::Unix(PathBuf::from(text)));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Address::Tcp(addr));
        }
        let mut resolved =
            text.to_socket_addrs().map_err(|e| Error::io("resolve a host name", e))?;
        resolved.next().map(Address::Tcp).ok_or_else(|| {
            Error::io(
                "resolve a host name",
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address"),
            )
        })
    }

    /// The family's name, as Python's `address_type`: `"AF_INET"`, `"AF_INET6"` or
    /// `"AF_UNIX"`.
    pub fn family(&self) -> &'static str {
        match self {
            Address::Tcp(SocketAddr::V4(_)) => "AF_INET",
            Address::Tcp(SocketAddr::V6(_)) => "AF_INET6",
            Address::Unix(_) | Address::Abstract(_) => "AF_UNIX",
        }
    }
}

/// TCP addresses as `host:port`, paths as they are, abstract names as `@name` (bytes that
/// are not UTF-8 escaped).
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Abstract(name) => write!(f, "@{}", name.escape_ascii()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl From<(IpAddr, u16)> for Address {
    fn from((ip, port): (IpAddr, u16)) -> Address {
        Address::Tcp(SocketAddr::new(ip, port))
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Address {
        Address::Unix(path.to_path_buf())
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Address {
        Address::Unix(path)
    }
}

/// What [`Listener::bind`](crate::Listener::bind) and
/// [`Client::connect`](crate::Client::connect) take as an address: an [`Address`], a
/// `SocketAddr`, an `(IpAddr, port)` or `(&str, port)` pair (Python's tuple; the host name is
/// resolved), a path, or text read by [`Address::parse`].
pub trait IntoAddress {
    /// The address, resolved.
    ///
    /// Errors: those of [`Address::parse`].
    fn into_address(self) -> Result<Address>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address> {
        Address::parse(self)
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address> {
        Address::parse(&self)
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address> {
        Address::parse(self)
    }
}

impl IntoAddress for SocketAddr {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Tcp(self))
    }
}

impl IntoAddress for (IpAddr, u16) {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for (&str, u16) {
    fn into_address(self) -> Result<Address> {
        if let Ok(ip) = self.0.parse::<IpAddr>() {
            return Ok(Address::Tcp(SocketAddr::new(ip, self.1)));
        }
        let mut resolved =
            self.to_socket_addrs().map_err(|e| Error::io("resolve a host name", e))?;
        resolved.next().map(Address::Tcp).ok_or_else(|| {
            Error::io(
                "resolve a host name",
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address"),
            )
        })
    }
}

impl IntoAddress for &Path {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}

impl IntoAddress for PathBuf {
    fn into_address(self) -> Result<Address> {
        Ok(self.into())
    }
}
