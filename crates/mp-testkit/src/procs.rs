//! Processes: bounded polling, exits, `/proc`, signals.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Waits for `cond` to become true, checking it after yielding, for at most `limit`.
/// Returns whether it became true: a condition polled where no event exists to wait for (a
/// thread asleep in a futex, a pid leaving `/proc`), never a sleep standing in for one.
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
pub fn exits_within(pidfd: impl AsFd, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(&pidfd, rustix::event::PollFlags::IN)];
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

/// The fields of `/proc/<pid>/stat` after the command name (the state first), if the process
/// exists.
fn stat_fields(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned())
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|rest| !rest.starts_with('Z'))
}

/// The number of children of this process, zombies included.
pub fn children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|rest| rest.split_whitespace().nth(1) == Some(me.as_str()))
        })
        .count()
}

/// The numbers of this process's open descriptors, in order.
pub fn open_fds() -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // The directory listing itself held one, the highest-numbered or a reused one: drop
    // those that are closed now.
    fds.retain(|&fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok());
    fds
}

/// Sends `sig` to `pid`, ignoring a process already gone.
pub fn kill(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let _ = rustix::process::kill_process(pid, sig);
}

/// The failpoint of tests that kill a process at a chosen step: this process dies at once,
/// by SIGKILL, whatever it holds.
pub fn die_now() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    loop {
        std::thread::park();
    }
}

/// The start method the suite runs under (`MP_START_METHOD`, `fork` if unset), for messages.
pub fn method() -> String {
    std::env::var("MP_START_METHOD").unwrap_or_else(|_| "fork".into())
}

/// Whether the thread `tid` of this process sleeps now (state `S`), in whatever call: how a
/// test knows that a thread is blocked (a call waiting for its reply) before it acts.
pub fn asleep(tid: i32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the command's closing parenthesis.
    state.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('S'))
}

/// Whether the thread `tid` of this process sleeps in a `futex` call now: how a test knows
/// that a waiter is queued on a futex before it acts (the kernel offers nothing to wait on).
/// x86-64 only (the call's number there is 202); elsewhere always `true`, so the tests that
/// use it only lose their ordering there.
pub fn asleep_in_futex(tid: i32) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return true;
    }
    let call =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
    asleep(tid) && call.split_whitespace().next() == Some("202")
}
