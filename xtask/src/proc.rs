//! Running a program with a time limit while capturing its output.
//!
//! The program runs in a process group of its own, so that a time limit or a clean-up can end
//! its children too, with no dependency beyond std: the group is signalled through `kill(1)`.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long the output pipes may stay open after the program itself has exited.
const LINGER_GRACE: Duration = Duration::from_secs(5);

/// What a captured run produced.
#[derive(Debug)]
pub struct Captured {
    /// The exit status; always known, since a program past its time limit is killed and reaped.
    pub status: ExitStatus,
    /// Everything written to standard output.
    pub stdout: Vec<u8>,
    /// Everything written to standard error.
    pub stderr: Vec<u8>,
    /// Whether the time limit was reached, so that the program was killed.
    pub timed_out: bool,
    /// Whether processes it left behind still held its output open after it exited.
    pub lingered: bool,
    /// The wall time from the start to the exit.
    pub elapsed: Duration,
}

impl Captured {
    /// The standard output as text, with invalid UTF-8 replaced.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The standard error as text, with invalid UTF-8 replaced.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `cmd` with standard input from /dev/null, capturing its output, and kills its process
/// group if it runs past `limit`. Processes it leaves behind are killed once it has exited.
pub fn run_captured(cmd: &mut Command, limit: Duration) -> Result<Captured> {
    run_captured_with_grace(cmd, limit, LINGER_GRACE)
}

/// [`run_captured`] with the grace period for leftover processes given.
fn run_captured_with_grace(
    cmd: &mut Command,
    limit: Duration,
    grace: Duration,
) -> Result<Captured> {
    use std::os::unix::process::CommandExt as _;

    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let pid = child.id();
    let stdout = read_in_background(child.stdout.take().context("no stdout pipe")?);
    let stderr = read_in_background(child.stderr.take().context("no stderr pipe")?);
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });

    let mut timed_out = false;
    let status = match exit_rx.recv_timeout(limit) {
        Ok(status) => status,
        Err(_) => {
            timed_out = true;
            kill_group(pid);
            exit_rx.recv().context("the waiting thread stopped")?
        }
    }
    .context("cannot wait for the child")?;
    let elapsed = start.elapsed();

    // The pipes close when every process holding them has exited: the program and whatever it
    // started and left behind. Leftovers get a grace period, then they are killed.
    let grace_end = Instant::now() + grace;
    let mut lingered = false;
    let mut collect = |rx: &mpsc::Receiver<Vec<u8>>| {
        let wait = grace_end.saturating_duration_since(Instant::now());
        rx.recv_timeout(wait).or_else(|_| {
            lingered = true;
            kill_group(pid);
            // A process that left the group can still hold the pipe: do not wait for it forever.
            rx.recv_timeout(grace.max(Duration::from_secs(1)))
        })
    };
    let stdout = collect(&stdout).unwrap_or_default();
    let stderr = collect(&stderr).unwrap_or_default();
    // Nothing of the program may outlive its run; once the group is empty this does nothing.
    kill_group(pid);
    Ok(Captured { status, stdout, stderr, timed_out, lingered, elapsed })
}

/// Reads `source` to its end on a thread of its own; the bytes arrive on the returned channel.
fn read_in_background(mut source: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = source.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Sends SIGKILL to the process group `pgid`; errors (such as an empty group) are ignored.
///
/// The kernel does not hand out a process id again while a group of that id exists, so this
/// cannot hit an unrelated process.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Describes an exit status in words, such as `exit 1` or `killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;

    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("{status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let got = run_captured(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(got.stdout_text(), "out\n");
        assert_eq!(got.stderr_text(), "err\n");
        assert_eq!(got.status.code(), Some(3));
        assert!(!got.timed_out && !got.lingered);
    }

    #[test]
    fn kills_the_group_at_the_time_limit() {
        let got = run_captured(
            Command::new("sh").args(["-c", "echo begun; sleep 30 & wait"]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(got.timed_out);
        assert_eq!(got.stdout_text(), "begun\n");
        assert_eq!(describe(got.status), "killed by signal 9");
        assert!(got.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn kills_what_holds_the_output_after_the_exit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo left"]);
        let got =
            run_captured_with_grace(&mut cmd, Duration::from_secs(30), Duration::from_millis(200))
                .unwrap();
        assert!(got.lingered && !got.timed_out);
        assert_eq!(got.status.code(), Some(0));
        assert_eq!(got.stdout_text(), "left\n");
    }

    #[test]
    fn reads_stdin_as_empty() {
        let got = run_captured(
            Command::new("sh").args(["-c", "cat; echo done"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(got.stdout_text(), "done\n");
    }
}
