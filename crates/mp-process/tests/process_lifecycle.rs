//! Lifecycle of a `Process` under the start method in `MP_START_METHOD`: exit codes, join,
//! timeouts, signals, sentinels, names, and many children at once.
//! Several cases are ports of CPython's `_test_multiprocessing.py` (`test_process`,
//! `test_terminate`, `test_kill`, `test_sentinel`, `test_many_processes`).

use std::time::Duration;

use std::os::fd::OwnedFd;

use mp_process::fdpass::PassFd;
use mp_process::{Error, Process, active_children, current_process, parent_process};
use mp_testkit::{eventually, exits_within, pipe, read_all, read_exact, wait_for_byte};

fn noop() {}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn panic_to(stderr: PassFd) {
    rustix::stdio::dup2_stderr(&stderr).expect("dup2 stderr");
    panic!("boom from the child");
}

fn fails() -> Result<(), String> {
    Err("the target failed".into())
}

fn block(fd: PassFd) {
    wait_for_byte(fd);
}

/// Releases a child blocked in `block`. Under fork the child holds a copy of the write end
/// too, so closing it would never give the child EOF: a byte is written instead.
fn release(w: OwnedFd) {
    let mut f = std::fs::File::from(w);
    std::io::Write::write_all(&mut f, b"go").unwrap();
}

fn started(mut p: Process) -> Process {
    p.start().expect("start");
    p
}

#[test]
fn normal_exit_is_zero() {
    let p = started(Process::new(noop, ()));
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
}

#[test]
fn exit_8_gives_exitcode_8() {
    let p = started(Process::new(exit_with, (8,)));
    assert_eq!(p.join().unwrap(), 8);
    assert_eq!(p.exitcode(), Some(8));
}

#[test]
fn panic_gives_1_with_message_and_backtrace_on_stderr() {
    let (r, w) = pipe();
    let p = started(Process::new(panic_to, (PassFd(w),)));
    let err = read_all(r);
    assert_eq!(p.join().unwrap(), 1);
    assert!(err.contains("boom from the child"), "stderr was: {err}");
    assert!(err.contains("stack backtrace"), "stderr was: {err}");
    assert!(err.contains(p.name()), "stderr names the process: {err}");
}

#[test]
fn err_result_gives_1() {
    let p = started(Process::new(fails, ()));
    assert_eq!(p.join().unwrap(), 1);
}

#[test]
fn terminate_gives_minus_15() {
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    assert!(p.is_alive());
    p.terminate().unwrap();
    assert_eq!(p.join().unwrap(), -15);
    drop(w);
}

#[test]
fn kill_gives_minus_9() {
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    p.kill().unwrap();
    assert_eq!(p.join().unwrap(), -9);
    // Signalling an exited process is not an error (Python ignores it too).
    p.terminate().unwrap();
    drop(w);
}

#[test]
fn join_timeout_zero_returns_at_once_while_running() {
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), None);
    assert_eq!(p.exitcode(), None);
    assert!(p.is_alive());
    release(w);
    assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), Some(0));
}

#[test]
fn join_timeout_too_large_to_represent_waits_for_ever() {
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    release(w);
    assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(0));
}

#[test]
fn join_timeout_waits_at_least_the_timeout() {
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    let t = std::time::Instant::now();
    assert_eq!(p.join_timeout(Duration::from_millis(100)).unwrap(), None);
    assert!(t.elapsed() >= Duration::from_millis(100));
    release(w);
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn sentinel_polls_readable_when_the_child_exits() {
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    let sentinel = p.sentinel().unwrap().try_clone_to_owned().unwrap();
    assert!(!exits_within(&sentinel, Duration::ZERO));
    release(w);
    assert!(exits_within(&sentinel, Duration::from_secs(30)));
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn hundred_concurrent_children_all_exit_zero() {
    let mut procs: Vec<Process> = (0..100).map(|_| Process::new(noop, ())).collect();
    for p in &mut procs {
        p.start().unwrap();
    }
    for p in &procs {
        assert_eq!(p.join().unwrap(), 0);
    }
    assert!(active_children().is_empty());
}

#[test]
fn names_count_up_and_main_is_main_process() {
    assert_eq!(current_process().name(), "MainProcess");
    assert!(current_process().identity().is_empty());
    assert!(parent_process().is_none());
    let a = Process::new(noop, ());
    let b = Process::new(noop, ());
    let n = |p: &Process| p.name().strip_prefix("Process-").unwrap().parse::<u32>().unwrap();
    assert_eq!(n(&b), n(&a) + 1);
    assert_eq!(Process::new(noop, ()).with_name("worker").name(), "worker");
}

#[test]
fn pid_and_exitcode_are_none_before_start() {
    let p = Process::new(noop, ());
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(matches!(p.join(), Err(Error::NotStarted)));
    assert!(matches!(p.sentinel(), Err(Error::NotStarted)));
}

#[test]
fn active_children_lists_running_and_reaps_finished() {
    let (r, w) = pipe();
    let running = started(Process::new(block, (PassFd(r),)).with_name("runner"));
    let done = started(Process::new(noop, ()));
    let done_pid = done.pid().unwrap();
    let done_fd = done.sentinel().unwrap().try_clone_to_owned().unwrap();
    assert!(exits_within(&done_fd, Duration::from_secs(30)));
    let live = active_children();
    assert!(live.iter().any(|c| c.name == "runner" && Some(c.pid) == running.pid()));
    assert!(!live.iter().any(|c| c.pid == done_pid));
    // active_children joined the finished child: its status is known.
    assert_eq!(done.exitcode(), Some(0));
    release(w);
    assert_eq!(running.join().unwrap(), 0);
}

#[test]
fn dropping_a_running_process_neither_blocks_nor_kills_and_reaps_it() {
    let (r, w) = pipe();
    let (out_r, out_w) = pipe();
    let p = started(Process::new(echo, (PassFd(r), PassFd(out_w))));
    let pid = p.pid().unwrap();
    drop(p);
    // The child still runs: it answers.
    let mut f = std::fs::File::from(w);
    std::io::Write::write_all(&mut f, b"x").unwrap();
    assert_eq!(read_exact(&out_r, 1), b"x");
    std::io::Write::write_all(&mut f, b"y").unwrap();
    // And once it exits, the reaper collects it: no zombie stays behind.
    let gone = eventually(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "child {pid} was not reaped");
}

fn echo(input: PassFd, output: PassFd) {
    let mut i = std::fs::File::from(input.into_inner());
    let mut o = std::fs::File::from(output.into_inner());
    let mut b = [0u8; 1];
    // Echo one byte, then wait for a second one before exiting.
    if std::io::Read::read_exact(&mut i, &mut b).is_ok() {
        let _ = std::io::Write::write_all(&mut o, &b);
    }
    let _ = std::io::Read::read_exact(&mut i, &mut b);
}

#[test]
fn closures_that_capture_nothing_are_targets() {
    let p = started(Process::new(|x: u32, y: u32| assert_eq!(x + y, 5), (2, 3)));
    assert_eq!(p.join().unwrap(), 0);
    let p = started(Process::new(|x: i32| exit_with(x), (3,)));
    assert_eq!(p.join().unwrap(), 3);
}

#[test]
fn large_arguments_cross_intact() {
    let data: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    let p = started(Process::new(
        |data: Vec<u8>, sum: u64| {
            let got: u64 = data.iter().map(|&b| u64::from(b)).sum();
            assert!(got == sum && data.len() == 16 << 20);
        },
        (data, sum),
    ));
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn threads_joining_the_same_child_all_get_its_exit_code() {
    let (r, w) = pipe();
    let p = std::sync::Arc::new(started(Process::new(block_then_exit_7, (PassFd(r),))));
    let joiners: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.join().unwrap())
        })
        .collect();
    release(w);
    for j in joiners {
        assert_eq!(j.join().unwrap(), 7);
    }
    assert_eq!(p.exitcode(), Some(7));
}

fn block_then_exit_7(fd: PassFd) {
    wait_for_byte(fd);
    std::process::exit(7);
}

/// Fails unless `os::pid()` is this process's pid and not `parent`'s, then checks the same
/// in a grandchild forked from here.
fn pid_is_mine(parent: u32) -> Result<(), String> {
    pid_is_mine_once(parent)?;
    let mut grandchild = Process::new(pid_is_mine_once, (mp_process::os::pid(),))
        .with_start_method(mp_process::StartMethod::Fork);
    grandchild.start().map_err(|e| e.to_string())?;
    match grandchild.join().map_err(|e| e.to_string())? {
        0 => Ok(()),
        code => Err(format!("the grandchild exited with {code}")),
    }
}

fn pid_is_mine_once(parent: u32) -> Result<(), String> {
    let me = rustix::process::getpid().as_raw_nonzero().get().unsigned_abs();
    let kept = mp_process::os::pid();
    if kept == me && me != parent { Ok(()) } else { Err(format!("pid {me}, kept {kept}")) }
}

#[test]
fn the_pid_kept_is_each_processs_own() {
    // The parent's pid is known (kept) before the children are made.
    let parent = mp_process::os::pid();
    assert_eq!(parent, std::process::id());
    let p = started(Process::new(pid_is_mine, (parent,)));
    assert_eq!(p.join().unwrap(), 0, "a child (or its forked child) saw another pid");
    assert_eq!(mp_process::os::pid(), std::process::id());
}

#[test]
fn a_sentinel_asked_for_after_the_join_polls_readable() {
    let p = started(Process::new(noop, ()));
    assert_eq!(p.join().unwrap(), 0);
    // The child was reaped before anything opened its pidfd (fork and spawn open none at the
    // start): its sentinel must still say that it has exited.
    let sentinel = p.sentinel().unwrap();
    assert!(exits_within(sentinel, Duration::ZERO));
}

#[test]
fn a_start_opens_no_descriptor_until_the_sentinel_is_asked_for() {
    // A first child starts what the start method keeps for later ones (a tracker, a server).
    assert_eq!(started(Process::new(noop, ())).join().unwrap(), 0);
    let before = mp_testkit::open_fds();
    // The start closes this process's copy of the read end: the write end stays.
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    let at_start = mp_testkit::open_fds();
    let running = p.sentinel().map(|fd| exits_within(fd, Duration::ZERO));
    let with_sentinel = mp_testkit::open_fds();
    // The child is released before anything is checked, so that a failure leaves no child.
    release(w);
    assert_eq!(p.join().unwrap(), 0);
    // A forkserver's child comes with the pidfd its server sent; a child of this process
    // gets one only when something needs a descriptor.
    let sent = usize::from(mp_testkit::method() == "forkserver");
    assert_eq!(at_start.len(), before.len() + 1 + sent, "{before:?} then {at_start:?}");
    assert!(!running.unwrap(), "the sentinel polled readable while the child ran");
    assert_eq!(with_sentinel.len(), before.len() + 2);
}

#[test]
fn a_child_reaped_behind_mps_back_gives_errors_not_a_hang() {
    if mp_testkit::method() == "forkserver" {
        // The server, not this process, is the child's parent: nothing here can reap it.
        return;
    }
    let (r, w) = pipe();
    let p = started(Process::new(block, (PassFd(r),)));
    let pid = rustix::process::Pid::from_raw(p.pid().unwrap() as i32).unwrap();
    release(w);
    let reaped = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    assert!(reaped.unwrap().is_some());
    assert!(p.join().is_err(), "the join of a child reaped elsewhere must fail");
    assert!(p.sentinel().is_err(), "no pidfd can name a reaped child");
    assert!(!p.is_alive());
}
