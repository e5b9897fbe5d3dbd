//! Pipes between a test and its children.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};

use mp_process::fdpass::PassFd;

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// A duplicate of `fd` (a pipe end) to hand to a child or a task.
pub fn pass(fd: impl AsFd) -> PassFd {
    PassFd(fd.as_fd().try_clone_to_owned().expect("dup"))
}

/// A `File` over a duplicate of `fd`, for `std::io`'s readers.
fn file(fd: impl AsFd) -> std::fs::File {
    std::fs::File::from(fd.as_fd().try_clone_to_owned().expect("dup"))
}

/// Writes all of `bytes` into `fd`, retrying interrupted and short writes.
pub(crate) fn write_all(fd: impl AsFd, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match rustix::io::write(&fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("write to the pipe: {e}"),
        }
    }
}

/// Blocks until a byte arrives in the pipe whose read end is `fd`, or the pipe closes (its
/// end of file). A child blocked here is released by [`release`].
pub fn wait_for_byte(fd: impl AsFd) {
    let mut file = file(fd);
    let mut b = [0u8; 1];
    loop {
        match file.read(&mut b) {
            Ok(_) => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read the go byte: {e}"),
        }
    }
}

/// Writes `n` bytes into the pipe whose write end is `fd`, releasing `n` children blocked in
/// [`wait_for_byte`].
pub fn release(fd: impl AsFd, n: usize) {
    let bytes = vec![b'!'; n];
    assert_eq!(rustix::io::write(fd, &bytes).expect("write go bytes"), n);
}

/// Writes `text` into a descriptor a child received, and closes it.
pub fn send_text(fd: PassFd, text: &str) {
    write_all(&fd, text.as_bytes());
}

/// Reads until end of file from a pipe's read end.
pub fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).expect("read the pipe");
    s
}

/// Reads exactly `n` bytes from a pipe's read end.
pub fn read_exact(fd: impl AsFd, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    file(fd).read_exact(&mut buf).expect("read the pipe");
    buf
}
