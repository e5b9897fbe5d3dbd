//! What a child inherits and what it does not: stdin is `/dev/null`, the signal mask is
//! empty, buffered output is not duplicated by a fork, and descriptors cross into children
//! (as arguments) and into running processes (over a socket, beside the bytes).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Command;

use mp_process::fdpass::{self, PassFd};
use mp_process::{Process, wire};
use mp_testkit::{pipe, read_all, release, send_text, wait_for_byte};

fn stdin_report(out: PassFd) {
    let st = rustix::fs::fstat(rustix::stdio::stdin()).expect("fstat stdin");
    let null = rustix::fs::stat("/dev/null").expect("stat /dev/null");
    let mut buf = [0u8; 1];
    let n = std::io::stdin().read(&mut buf).unwrap_or(99);
    send_text(out, &format!("{}|{}", st.st_rdev == null.st_rdev, n));
}

#[test]
fn stdin_is_dev_null() {
    // Twice: under fork the second child gets the `/dev/null` the parent opened for the first.
    for _ in 0..2 {
        let (r, w) = pipe();
        let mut p = Process::new(stdin_report, (PassFd(w),));
        p.start().unwrap();
        assert_eq!(read_all(r), "true|0");
        assert_eq!(p.join().unwrap(), 0);
    }
}

fn mask_report(out: PassFd) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
    send_text(out, blocked);
}

#[test]
fn the_signal_mask_is_reset_in_the_child() {
    // Block SIGUSR1 and SIGTERM in this thread, as a program with a signal thread would.
    // SAFETY: a local, initialised sigset; blocking signals in the calling thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let (r, w) = pipe();
    let mut p = Process::new(mask_report, (PassFd(w),));
    p.start().unwrap();
    assert_eq!(read_all(r), "0000000000000000");
    assert_eq!(p.join().unwrap(), 0);
}

fn dispositions_report(out: PassFd) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |key: &str| {
        let hex = status.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    send_text(out, &format!("{:x}|{:x}", field("SigIgn:"), field("SigCgt:")));
}

extern "C" fn on_usr2(_: libc::c_int) {}

/// Starts a child that reports its dispositions, joins it, and returns its ignored and
/// caught signals (bit `n - 1` for signal `n`).
fn child_dispositions() -> (u64, u64) {
    let (r, w) = pipe();
    let mut p = Process::new(dispositions_report, (PassFd(w),));
    p.start().unwrap();
    let report = read_all(r);
    assert_eq!(p.join().unwrap(), 0);
    let (ign, cgt) = report.split_once('|').unwrap();
    (u64::from_str_radix(ign, 16).unwrap(), u64::from_str_radix(cgt, 16).unwrap())
}

fn bit(sig: libc::c_int) -> u64 {
    1u64 << (sig - 1)
}

#[test]
fn signal_dispositions_are_reset_in_the_child() {
    // SAFETY: ignoring SIGUSR1 installs no handler; the SIGUSR2 handler does nothing and is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
    }
    let (ign, cgt) = child_dispositions();
    // Only SIGPIPE is ignored (as the Rust runtime does; 32 and 33 are glibc's own, left as
    // they are); neither signal of the parent's kept.
    let glibc = bit(32) | bit(33);
    assert_eq!(ign & !glibc, bit(libc::SIGPIPE), "ignored: {ign:x}");
    assert_eq!(cgt & (bit(libc::SIGUSR1) | bit(libc::SIGUSR2)), 0, "caught: {cgt:x}");
}

/// This thread's blocked signals, as `/proc` prints them.
fn own_blocked_mask() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim().to_string()
}

fn rt_and_sigchld_report(out: PassFd, go: PassFd, rt: i32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).unwrap().trim();
    let caught = u64::from_str_radix(caught, 16).unwrap();
    // SAFETY: a query only: the old action is written into a local, zeroed struct.
    let flags = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old);
        old.sa_flags
    };
    let rt_caught = caught & bit(rt) != 0;
    send_text(out, &format!("{rt_caught}|{}", flags & libc::SA_NOCLDWAIT != 0));
    // The parent's SA_NOCLDWAIT would reap this child before its join: it exits only once the
    // parent has taken the flag off.
    wait_for_byte(&go);
}

/// A handler of a real-time signal, and `SIGCHLD` left at its default action but with
/// `SA_NOCLDWAIT` (which `/proc` does not show, and which would make the child's own
/// children vanish unreaped): neither reaches the child.
#[test]
fn a_real_time_handler_and_sigchld_flags_are_reset_in_the_child() {
    let rt = libc::SIGRTMIN() + 3;
    // SAFETY: the handler does nothing and is async-signal-safe; the SIGCHLD action is the
    // default one with a flag, and this test reaps its child through its pidfd.
    unsafe {
        libc::signal(rt, on_usr2 as *const () as libc::sighandler_t);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        act.sa_flags = libc::SA_NOCLDWAIT;
        libc::sigaction(libc::SIGCHLD, &act, std::ptr::null_mut());
    }
    let before = own_blocked_mask();
    let (r, w) = pipe();
    let (go_r, go_w) = pipe();
    let mut p = Process::new(rt_and_sigchld_report, (PassFd(w), PassFd(go_r), rt));
    p.start().unwrap();
    // The parent's mask is its own again after the start.
    assert_eq!(own_blocked_mask(), before);
    assert_eq!(read_all(r), "false|false");
    // SAFETY: back to the plain default action.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    release(&go_w, 1);
    assert_eq!(p.join().unwrap(), 0);
}

/// Another thread of the program runs while the parent forks (it could take a signal and run
/// a handler meanwhile): the child's dispositions are reset all the same.
#[test]
fn dispositions_are_reset_while_another_thread_runs() {
    // SAFETY: as in `signal_dispositions_are_reset_in_the_child`.
    unsafe {
        libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || stop_rx.recv());
    let (ign, cgt) = child_dispositions();
    assert_eq!(ign & bit(libc::SIGTERM), 0, "ignored: {ign:x}");
    assert_eq!(cgt & bit(libc::SIGUSR2), 0, "caught: {cgt:x}");
    stop_tx.send(()).unwrap();
    other.join().unwrap().unwrap();
}

fn write_bytes(out: PassFd, text: String) {
    send_text(out, &text);
}

#[test]
fn a_descriptor_crosses_into_a_child_as_an_argument() {
    let (r, w) = pipe();
    let mut p = Process::new(write_bytes, (PassFd(w), "through the pipe".to_string()));
    p.start().unwrap();
    assert_eq!(read_all(r), "through the pipe");
    assert_eq!(p.join().unwrap(), 0);
}

/// A running child receives a pipe's write end over its socket, long after it started.
fn receive_and_write(sock: PassFd) {
    let got: Option<(String, PassFd)> =
        fdpass::recv_value(sock.as_fd(), wire::DEFAULT_MAX_FRAME).expect("receive");
    let (text, fd) = got.expect("a message before EOF");
    send_text(fd, &text);
}

#[test]
fn a_descriptor_crosses_into_a_running_process() {
    let (mine, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let mut p = Process::new(receive_and_write, (PassFd(theirs),));
    p.start().unwrap();
    // The pipe exists only now, after the child started.
    let (r, w) = pipe();
    let msg = ("sent to a running process".to_string(), PassFd(w));
    fdpass::send_value(mine.as_fd(), &msg, wire::DEFAULT_MAX_FRAME).unwrap();
    drop(msg);
    assert_eq!(read_all(r), "sent to a running process");
    assert_eq!(p.join().unwrap(), 0);
}

const MARKER: &str = "partial-line-before-fork";

#[test]
#[ignore = "helper: run by output_is_not_duplicated_by_fork in a process of its own"]
fn output_helper() {
    if std::env::var_os("MP_TEST_OUTPUT_HELPER").is_none() {
        return;
    }
    print!("{MARKER}");
    let mut p = Process::new(|| {}, ());
    p.start().unwrap();
    p.join().unwrap();
    println!();
    std::io::stdout().flush().unwrap();
}

#[test]
fn output_is_not_duplicated_by_fork() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "output_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env("MP_TEST_OUTPUT_HELPER", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(MARKER).count(), 1, "stdout was:\n{stdout}");
}

/// Collects the warnings mp logs.
struct Capture(std::sync::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push(r.args().to_string());
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

#[test]
fn forking_a_threaded_process_warns_once() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let (stop_r, stop_w) = pipe();
    let other = std::thread::spawn(move || wait_for_byte(PassFd(stop_r)));
    for _ in 0..3 {
        let mut p = Process::fork_closure(|| {});
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
    }
    let warnings = CAPTURE.0.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("threads"), "{warnings:?}");
    std::fs::File::from(stop_w).write_all(b"x").unwrap();
    other.join().unwrap();
}
