//! Helpers shared by the `mp-process` integration tests: pipes that children write into.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mp_process::fdpass::PassFd;

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Writes `text` into a descriptor a child received.
pub fn send_text(fd: PassFd, text: &str) {
    let mut f = std::fs::File::from(fd.into_inner());
    f.write_all(text.as_bytes()).expect("write to the pipe");
}

/// Reads until EOF from a pipe's read end.
pub fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).expect("read the pipe");
    s
}

/// Reads exactly `n` bytes from a pipe's read end.
pub fn read_exact(fd: &OwnedFd, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut f = std::fs::File::from(fd.try_clone().expect("dup"));
    f.read_exact(&mut buf).expect("read the pipe");
    buf
}

/// Blocks a child until its parent writes a byte or closes the pipe.
pub fn wait_for_byte(fd: PassFd) {
    let mut f = std::fs::File::from(fd.into_inner());
    let mut b = [0u8; 1];
    let _ = f.read(&mut b);
}

/// Waits for `cond` to become true, checking it after yielding, for at most `limit`.
/// Returns whether it became true: a condition polled, never a sleep standing in for one.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

/// Whether the pidfd polls readable (the process exited) within `timeout`.
pub fn exits_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}
