//! Checks of received descriptors: a descriptor that arrives from another process is
//! untrusted until it is known to be of the kind its place asks for (a doorbell must be a
//! non-blocking eventfd, a side channel a `SOCK_SEQPACKET` socket...), since the wrong kind
//! would make a later non-blocking call block, or fail in ways nobody expects.
//!
//! Each check returns the reason for a refusal, naming `what` the descriptor was sent as.

use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::OFlags;
use rustix::net::{AddressFamily, SocketType};

/// Checks that `fd` is an eventfd in non-blocking mode.
pub fn eventfd(fd: BorrowedFd<'_>, what: &str) -> Result<(), String> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let target = rustix::fs::readlink(path.as_str(), Vec::new())
        .map_err(|e| format!("cannot check the descriptor sent as {what} ({path}: {e})"))?;
    if target.as_bytes() != b"anon_inode:[eventfd]" {
        return Err(format!(
            "the descriptor sent as {what} is not an eventfd ({})",
            String::from_utf8_lossy(target.as_bytes())
        ));
    }
    nonblocking(fd, what)
}

/// Checks that `fd` is in non-blocking mode.
pub fn nonblocking(fd: BorrowedFd<'_>, what: &str) -> Result<(), String> {
    let flags = rustix::fs::fcntl_getfl(fd)
        .map_err(|e| format!("cannot read the flags of the descriptor sent as {what} ({e})"))?;
    if !flags.contains(OFlags::NONBLOCK) {
        return Err(format!("the descriptor sent as {what} is in blocking mode"));
    }
    Ok(())
}

/// Checks that `fd` is an `AF_UNIX` socket of type `kind`.
pub fn unix_socket(fd: BorrowedFd<'_>, kind: SocketType, what: &str) -> Result<(), String> {
    let got = rustix::net::sockopt::socket_type(fd)
        .map_err(|e| format!("the descriptor sent as {what} is not a socket ({e})"))?;
    let domain = rustix::net::sockopt::socket_domain(fd)
        .map_err(|e| format!("cannot read the family of the socket sent as {what} ({e})"))?;
    if got != kind || domain != AddressFamily::UNIX {
        return Err(format!(
            "the socket sent as {what} is not an AF_UNIX {} socket",
            match kind {
                SocketType::STREAM => "stream",
                SocketType::SEQPACKET => "seqpacket",
                SocketType::DGRAM => "datagram",
                _ => "such a",
            }
        ));
    }
    Ok(())
}

/// Checks that `fd` is a stream socket of a family a connection can use: `AF_UNIX`,
/// `AF_INET` or `AF_INET6`.
pub fn stream_socket(fd: BorrowedFd<'_>, what: &str) -> Result<(), String> {
    let got = rustix::net::sockopt::socket_type(fd)
        .map_err(|e| format!("the descriptor sent as {what} is not a socket ({e})"))?;
    let domain = rustix::net::sockopt::socket_domain(fd)
        .map_err(|e| format!("cannot read the family of the socket sent as {what} ({e})"))?;
    let family_ok =
        [AddressFamily::UNIX, AddressFamily::INET, AddressFamily::INET6].contains(&domain);
    if got != SocketType::STREAM || !family_ok {
        return Err(format!("the socket sent as {what} is not a stream socket (unix or tcp)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::EventfdFlags;
    use rustix::net::SocketFlags;
    use std::os::fd::AsFd;

    #[test]
    fn only_nonblocking_eventfds_are_doorbells() {
        let good =
            rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        eventfd(good.as_fd(), "a doorbell").unwrap();
        let blocking = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        assert!(eventfd(blocking.as_fd(), "a doorbell").unwrap_err().contains("blocking mode"));
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let why = eventfd(r.as_fd(), "a doorbell").unwrap_err();
        assert!(why.contains("not an eventfd (pipe:"), "{why}");
        let null = rustix::fs::open(
            "/dev/null",
            OFlags::RDWR | OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert!(eventfd(null.as_fd(), "a doorbell").is_err());
        let dir =
            rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY, rustix::fs::Mode::empty())
                .unwrap();
        assert!(eventfd(dir.as_fd(), "a doorbell").is_err());
    }

    #[test]
    fn sockets_of_the_wrong_kind_are_refused() {
        let (a, _b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        unix_socket(a.as_fd(), SocketType::SEQPACKET, "a side channel").unwrap();
        assert!(unix_socket(a.as_fd(), SocketType::STREAM, "a pipe").is_err());
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(
            unix_socket(r.as_fd(), SocketType::STREAM, "a pipe")
                .unwrap_err()
                .contains("not a socket")
        );
        let udp = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None).unwrap();
        assert!(unix_socket(udp.as_fd(), SocketType::DGRAM, "x").is_err());
    }
}
