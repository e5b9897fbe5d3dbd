//! A named segment whose creator is SIGKILLed is unlinked by the tracker. The creator is this
//! test binary re-run with a helper switched on, so that it is the root of a process tree of
//! its own, with its own tracker.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use mp_shm::SharedMemory;
use mp_testkit::shm::{Cleanup, shm_exists, wait_gone};
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

/// The environment variable that switches the helper on; its value says what it creates.
const HELPER_ENV: &str = "MP_SHM_TEST_TRACKER_HELPER";

fn create_in_child(name: String) {
    let shm = SharedMemory::create(&name, 4096).unwrap();
    shm.write(0, b"made by a child").unwrap();
}

/// The helper: creates named segments, prints their names, then blocks until killed.
#[test]
#[ignore = "helper: run by the tests below as a process tree of its own"]
fn tracker_helper() {
    let Ok(mode) = std::env::var(HELPER_ENV) else { return };
    let shm = SharedMemory::create_unique(8192).unwrap();
    shm.write(0, b"left behind").unwrap();
    // libtest may have printed "test tracker_helper ... " without a newline.
    println!("\nNAME={}", shm.name());
    if mode == "restart" {
        restart_the_tracker_twice();
    }
    if mode == "child" {
        // A segment created by a child of the creator is tracked by the same tracker.
        let name = format!("mp-shm-test-{}-grandchild", std::process::id());
        let mut p = mp_process::Process::new(create_in_child, (name.clone(),));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
        println!("\nNAME={name}");
    }
    println!("\nREADY");
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
}

/// Counts the warnings logged in the helper (the tracker's restarts are logged).
struct CountWarnings(AtomicUsize);

impl log::Log for CountWarnings {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn && record.args().to_string().contains("tracker") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn flush(&self) {}
}

static WARNINGS: CountWarnings = CountWarnings(AtomicUsize::new(0));

/// SIGKILLs the tracker whose pid this process was told, and waits until it has exited.
fn kill_the_tracker() -> OwnedFd {
    let pid = mp_process::tracker::tracker_pid().expect("this process started the tracker");
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).expect("the tracker runs");
    rustix::process::pidfd_send_signal(&pidfd, Signal::KILL).expect("kill the tracker");
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    while rustix::event::poll(&mut fds, None).is_err() {}
    pidfd
}

/// Whether the process behind `pidfd` was reaped (by mp, its parent).
fn reaped(pidfd: &OwnedFd) -> bool {
    let got = rustix::process::waitid(
        WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    );
    matches!(got, Err(rustix::io::Errno::CHILD))
}

/// The helper's "restart" mode: the tracker is SIGKILLed, then a segment is created (the send
/// fails and a new tracker starts); the new one is killed too, then a child starts and
/// creates a segment (the dead tracker is replaced before the child starts, so the child
/// shares the new one).
fn restart_the_tracker_twice() {
    log::set_logger(&WARNINGS).expect("no logger yet");
    log::set_max_level(log::LevelFilter::Warn);
    let first = mp_process::tracker::tracker_pid().expect("the first create started it");
    let dead = kill_the_tracker();
    let name = format!("mp-shm-test-{}-after-restart", std::process::id());
    let shm = SharedMemory::create(&name, 4096).expect("create after the tracker died");
    shm.write(0, b"after the restart").unwrap();
    println!("\nNAME={name}");
    let second = mp_process::tracker::tracker_pid().expect("a new tracker, started here");
    assert_ne!(first, second, "a new tracker");
    assert!(reaped(&dead), "the dead tracker was reaped");
    assert_eq!(WARNINGS.0.load(Ordering::SeqCst), 1, "the restart was logged");

    let dead = kill_the_tracker();
    let name = format!("mp-shm-test-{}-from-child", std::process::id());
    let mut p = mp_process::Process::new(create_in_child, (name.clone(),));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    println!("\nNAME={name}");
    let third = mp_process::tracker::tracker_pid().expect("a new tracker, started here");
    assert_ne!(second, third, "a new tracker before the child started");
    assert!(reaped(&dead), "the dead tracker was reaped");
    assert_eq!(WARNINGS.0.load(Ordering::SeqCst), 2, "the restart was logged");
}

/// Runs the helper in `mode`, collects the names it created, and SIGKILLs it.
fn run_helper_and_kill(mode: &str) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tracker_helper", "--ignored", "--nocapture"])
        .env(HELPER_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut names = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            // Whatever was created is unlinked by the failing test's cleanup.
            drop(Cleanup(names.clone()));
            panic!("the helper ended before it was ready");
        }
        let line = line.trim();
        if let Some(name) = line.strip_prefix("NAME=") {
            names.push(name.to_owned());
        } else if line == "READY" {
            break;
        }
    }
    for name in &names {
        assert!(shm_exists(name), "{name} is not in /dev/shm");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    names
}

#[test]
fn a_killed_creator_leaks_nothing() {
    let names = run_helper_and_kill("alone");
    let _cleanup = Cleanup(names.clone());
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("psm_"));
    for name in &names {
        assert!(wait_gone(name), "the tracker did not unlink {name}");
    }
}

#[test]
fn segments_of_a_killed_tree_are_unlinked() {
    let names = run_helper_and_kill("child");
    let _cleanup = Cleanup(names.clone());
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(wait_gone(name), "the tracker did not unlink {name}");
    }
}

#[test]
fn a_killed_tracker_is_replaced_and_every_name_is_still_unlinked() {
    // The helper's tracker is SIGKILLed twice; the segments made before, between and after
    // (one by a child) are all unlinked once the helper's tree is gone.
    let names = run_helper_and_kill("restart");
    let _cleanup = Cleanup(names.clone());
    assert_eq!(names.len(), 3, "{names:?}");
    for name in &names {
        assert!(wait_gone(name), "the tracker did not unlink {name}");
    }
}
