//! Descriptors carried beside bytes (`SCM_RIGHTS`): the one place mp calls `sendmsg` and
//! `recvmsg` with ancillary data.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one message may carry: the kernel's `SCM_MAX_FD`.
pub const MAX_FDS: usize = 253;

/// Room for the control message of a message with [`MAX_FDS`] descriptors.
const SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// Sends `bufs` in one `sendmsg` with `fds` attached (none: a plain `sendmsg`) and returns the
/// number of bytes sent, which may be fewer than asked on a stream socket. Interruptions are
/// retried. More than [`MAX_FDS`] descriptors fail with `TOOMANYREFS`, sending nothing. The
/// caller keeps its descriptors; the receiver gets duplicates.
pub fn send(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> Result<usize, Errno> {
    let mut space = [MaybeUninit::<u8>::uninit(); SPACE];
    let mut control = if fds.is_empty() {
        SendAncillaryBuffer::default()
    } else {
        if fds.len() > MAX_FDS {
            return Err(Errno::TOOMANYREFS);
        }
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(Errno::TOOMANYREFS);
        }
        control
    };
    loop {
        match rustix::net::sendmsg(sock, bufs, &mut control, flags) {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

/// What one [`recv`] got.
#[derive(Debug, Default)]
pub struct Received {
    /// The number of bytes read (0: end of file on a stream socket, or an empty record).
    pub bytes: usize,
    /// The descriptors that came with them, owned and close-on-exec from the moment they
    /// arrived.
    pub fds: Vec<OwnedFd>,
    /// The record was longer than the buffers (`MSG_TRUNC`, datagram and seqpacket sockets).
    pub truncated: bool,
    /// The kernel dropped descriptors it could not install (`MSG_CTRUNC`: this process is out
    /// of descriptors, or more than [`MAX_FDS`] were sent).
    pub fds_dropped: bool,
}

/// Receives into `bufs` with one `recvmsg`, taking any descriptors that come along (always
/// close-on-exec). Interruptions are retried; `EAGAIN` (with `DONTWAIT`) is returned as is.
pub fn recv(
    sock: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    flags: RecvFlags,
) -> Result<Received, Errno> {
    let mut space = [MaybeUninit::<u8>::uninit(); SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(sock, bufs, &mut control, flags | RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => {}
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(Received {
        bytes: msg.bytes,
        fds,
        truncated: msg.flags.contains(ReturnFlags::TRUNC),
        fds_dropped: msg.flags.contains(ReturnFlags::CTRUNC),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_ride_beside_bytes() {
        let (a, b) = crate::os::socket::seqpacket_pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let sent =
            send(a.as_fd(), &[IoSlice::new(b"hi")], &[r.as_fd(), w.as_fd()], SendFlags::empty())
                .unwrap();
        assert_eq!(sent, 2);
        let mut buf = [0u8; 1];
        let got = recv(b.as_fd(), &mut [IoSliceMut::new(&mut buf)], RecvFlags::empty()).unwrap();
        assert_eq!((got.bytes, got.fds.len(), got.truncated, got.fds_dropped), (1, 2, true, false));
        let flags = rustix::io::fcntl_getfd(&got.fds[0]).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        let many: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| r.as_fd()).collect();
        assert_eq!(
            send(a.as_fd(), &[IoSlice::new(b"x")], &many, SendFlags::empty()),
            Err(Errno::TOOMANYREFS)
        );
        assert_eq!(
            recv(b.as_fd(), &mut [IoSliceMut::new(&mut buf)], RecvFlags::DONTWAIT).unwrap_err(),
            Errno::AGAIN
        );
    }
}
