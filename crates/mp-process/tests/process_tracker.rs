//! The resource tracker unlinks named shared memory that a crashed program left behind, and
//! leaves alone what was unregistered. Each case runs its program as a fresh process tree:
//! this test binary re-run with a helper switched on, so that it gets a tracker of its own.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use mp_testkit::shm::{shm_exists as exists, wait_gone};
use rustix::fs::Mode;
use rustix::shm::OFlags;

const HELPER_ENV: &str = "MP_TEST_TRACKER_HELPER";

fn create_segment(name: &str) {
    let fd = rustix::shm::open(name, OFlags::CREATE | OFlags::EXCL | OFlags::RDWR, Mode::RUSR)
        .expect("shm_open");
    rustix::fs::ftruncate(&fd, 4096).expect("ftruncate");
}

/// The helper: creates segments as its mode says, prints their names, then waits on stdin.
#[test]
#[ignore = "helper: run by the tests below in a process tree of its own"]
fn tracker_helper() {
    let Ok(mode) = std::env::var(HELPER_ENV) else { return };
    let pid = std::process::id();
    let kept = format!("/mp-test-kept-{pid}");
    let leaked = format!("/mp-test-leaked-{pid}");
    create_segment(&leaked);
    mp_process::tracker::register_shm(&leaked).unwrap();
    create_segment(&kept);
    mp_process::tracker::register_shm(&kept).unwrap();
    mp_process::tracker::unregister_shm(&kept).unwrap();
    if mode == "child" {
        // A forked or spawned child registers a segment too: the tree shares one tracker.
        let mut p = mp_process::Process::new(
            |name: String| {
                create_segment(&name);
                mp_process::tracker::register_shm(&name).unwrap();
            },
            (format!("/mp-test-child-{pid}"),),
        );
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 0);
    }
    // libtest may have printed "test tracker_helper ... " without a newline: mark the pid.
    println!("\nPID={pid}");
    let mut rest = String::new();
    let _ = std::io::stdin().read_to_string(&mut rest);
}

fn run_helper_and_kill(mode: &str) -> u32 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tracker_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let pid = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the helper ended early");
        if let Some(pid) = line.trim().strip_prefix("PID=") {
            break pid.parse::<u32>().unwrap();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    pid
}

#[test]
fn a_sigkilled_creator_leaves_no_registered_segment_behind() {
    let pid = run_helper_and_kill("alone");
    let leaked = format!("/mp-test-leaked-{pid}");
    let kept = format!("/mp-test-kept-{pid}");
    assert!(wait_gone(&leaked), "the tracker did not unlink {leaked}");
    assert!(exists(&kept), "an unregistered segment must be left alone");
    rustix::shm::unlink(kept.as_str()).unwrap();
}

#[test]
fn segments_registered_by_children_are_tracked_too() {
    let pid = run_helper_and_kill("child");
    let from_child = format!("/mp-test-child-{pid}");
    let leaked = format!("/mp-test-leaked-{pid}");
    assert!(wait_gone(&from_child), "the tracker did not unlink {from_child}");
    assert!(wait_gone(&leaked));
    let kept = format!("/mp-test-kept-{pid}");
    rustix::shm::unlink(kept.as_str()).unwrap();
}
