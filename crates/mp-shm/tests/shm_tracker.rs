//! A named segment whose creator is SIGKILLed is unlinked by the tracker. The creator is this
//! test binary re-run with a helper switched on, so that it is the root of a process tree of
//! its own, with its own tracker.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, shm_exists};
use mp_shm::SharedMemory;

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

/// Waits, for at most 30 seconds, until `/dev/shm/<name>` is gone.
fn wait_gone(name: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if !shm_exists(name) {
            return true;
        }
        std::thread::yield_now();
    }
    !shm_exists(name)
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
