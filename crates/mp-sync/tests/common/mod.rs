//! Helpers shared by the `mp-sync` integration tests: pipes that children report through,
//! and a failpoint that kills the calling process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use mp_process::fdpass::PassFd;

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// A duplicate of a pipe end, to hand to a child.
pub fn pass(fd: &OwnedFd) -> PassFd {
    PassFd(fd.try_clone().expect("dup"))
}

/// Writes one line (atomically: it is shorter than `PIPE_BUF`) into a pipe.
pub fn say(fd: &impl AsFd, line: &str) {
    let text = format!("{line}\n");
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("write to the report pipe: {e}"),
        }
    }
}

/// A reader of the lines children write into a pipe. It never waits for end of file: under
/// `fork` every child holds the write ends of the pipes that existed when it started.
pub struct Lines {
    reader: BufReader<std::fs::File>,
}

impl Lines {
    /// Reads the read end `fd`.
    pub fn new(fd: OwnedFd) -> Lines {
        Lines { reader: BufReader::new(std::fs::File::from(fd)) }
    }

    /// The next line, without its newline.
    pub fn next(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a report line");
        assert!(n > 0, "the report pipe closed");
        line.trim_end().to_string()
    }

    /// The next `n` lines.
    pub fn take(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Blocks until the parent writes a byte into the pipe whose read end is `fd`.
pub fn wait_for_byte(fd: &impl AsFd) {
    let mut file = std::fs::File::from(fd.as_fd().try_clone_to_owned().expect("dup"));
    let mut b = [0u8; 1];
    file.read_exact(&mut b).expect("read the go byte");
}

/// Writes `n` bytes, releasing `n` children blocked in [`wait_for_byte`].
pub fn release(fd: &impl AsFd, n: usize) {
    let bytes = vec![b'!'; n];
    assert_eq!(rustix::io::write(fd, &bytes).expect("write go bytes"), n);
}

/// The failpoint: this process dies at once, by SIGKILL, whatever it holds.
pub fn die_now() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    loop {
        std::thread::park();
    }
}

/// Waits for `cond` to become true, checking it after yielding, for at most `limit`: a
/// condition polled where no event exists to wait for (a thread asleep in a futex), never a
/// sleep standing in for one.
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

/// The start method the suite runs under, for messages.
pub fn method() -> String {
    std::env::var("MP_START_METHOD").unwrap_or_else(|_| "fork".into())
}
