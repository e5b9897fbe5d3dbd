//! Socket pairs: every connection mp makes between its own processes is an `AF_UNIX` pair,
//! so descriptors can ride along.

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, Shutdown, SocketFlags, SocketType};

/// A connected pair of `AF_UNIX` sockets of type `kind`, both close-on-exec.
pub fn pair(kind: SocketType) -> Result<(OwnedFd, OwnedFd), Errno> {
    rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
}

/// A connected pair of `AF_UNIX` `SOCK_STREAM` sockets, both close-on-exec.
pub fn stream_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    pair(SocketType::STREAM)
}

/// A connected pair of `AF_UNIX` `SOCK_SEQPACKET` sockets (records keep their boundaries and
/// order), both close-on-exec.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    pair(SocketType::SEQPACKET)
}

/// Shuts down the direction of `sock` its owner will never use: `reading` shuts down the
/// receiving side, otherwise the sending side.
pub fn shutdown(sock: BorrowedFd<'_>, reading: bool) -> Result<(), Errno> {
    rustix::net::shutdown(sock, if reading { Shutdown::Read } else { Shutdown::Write })
}

/// What [`peek`] saw at the head of a stream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Bytes to read (or a reset connection, which the read that follows reports).
    Bytes,
    /// End of file.
    Eof,
    /// Nothing yet.
    Nothing,
}

/// Looks at the head of the stream socket `sock` without taking anything and without blocking.
pub fn peek(sock: BorrowedFd<'_>) -> Result<Peek, Errno> {
    let mut byte = [0u8; 1];
    loop {
        match rustix::net::recv(sock, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Ok(Peek::Eof),
            Ok(_) | Err(Errno::CONNRESET) => return Ok(Peek::Bytes),
            Err(Errno::AGAIN) => return Ok(Peek::Nothing),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn peeking_and_shutting_down() {
        let (a, b) = stream_pair().unwrap();
        assert_eq!(peek(a.as_fd()).unwrap(), Peek::Nothing);
        rustix::io::write(&b, b"x").unwrap();
        assert_eq!(peek(a.as_fd()).unwrap(), Peek::Bytes);
        let mut buf = [0u8; 1];
        rustix::io::read(&a, &mut buf).unwrap();
        shutdown(b.as_fd(), false).unwrap();
        assert_eq!(peek(a.as_fd()).unwrap(), Peek::Eof);
        let (c, _d) = seqpacket_pair().unwrap();
        assert_eq!(rustix::net::sockopt::socket_type(&c).unwrap(), SocketType::SEQPACKET);
    }
}
