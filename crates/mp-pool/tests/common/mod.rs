//! Helpers shared by the `mp-pool` integration tests.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mp_process::fdpass::PassFd;

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// A duplicate of `fd` to hand to a task.
pub fn pass(fd: &OwnedFd) -> PassFd {
    PassFd(fd.try_clone().expect("dup"))
}

/// Writes one byte (a task reporting that it started).
pub fn say(fd: &PassFd) {
    let mut f = std::fs::File::from(fd.0.try_clone().expect("dup"));
    f.write_all(b"x").expect("write to the pipe");
}

/// Reads `n` bytes (waits for `n` tasks to report).
pub fn hear(fd: &OwnedFd, n: usize) {
    let mut buf = vec![0u8; n];
    let mut f = std::fs::File::from(fd.try_clone().expect("dup"));
    f.read_exact(&mut buf).expect("read the pipe");
}

/// Blocks until a byte arrives (or the pipe closes).
pub fn wait_for_byte(fd: &PassFd) {
    let mut f = std::fs::File::from(fd.0.try_clone().expect("dup"));
    let mut b = [0u8; 1];
    let _ = f.read(&mut b);
}

/// Waits for `cond` to become true, for at most `limit`; a condition polled, never a sleep
/// standing in for one.
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

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let _ = rustix::process::kill_process(pid, sig);
}
