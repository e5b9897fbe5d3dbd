//! Reports of a line each: children [`say`] what happened to them, and the test reads the
//! lines in order with [`Lines`].

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};

/// Writes one line into a pipe (atomically, if it is shorter than `PIPE_BUF`, so that lines of
/// several children never mix).
pub fn say(fd: impl AsFd, line: &str) {
    crate::pipes::write_all(fd, format!("{line}\n").as_bytes());
}

/// A reader of the lines children write into a pipe. It never waits for end of file: under
/// `fork` every child holds the write ends of the pipes that existed when it started.
#[derive(Debug)]
pub struct Lines {
    reader: BufReader<std::fs::File>,
}

impl Lines {
    /// Reads the read end `fd`.
    pub fn new(fd: OwnedFd) -> Lines {
        Lines { reader: BufReader::new(std::fs::File::from(fd)) }
    }

    /// The next line, without its newline; panics if the pipe closed.
    #[allow(
        clippy::should_implement_trait,
        reason = "a report that never comes is a failed test, not the end of an iteration"
    )]
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
