//! Signals to the pool's owner, under the start method in `MP_START_METHOD`: Ctrl-C (SIGINT to
//! the process group) while a `map` runs ends the call with `Interrupted` promptly and leaves
//! no process behind; an owner killed by SIGKILL takes its workers (and zygote) with it.
//!
//! Each test re-runs its own binary as a helper in a new process group (the Ctrl-C helper
//! ignores SIGINT itself, as a program with a Ctrl-C handler would not die of it) and watches
//! the group empty.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mp_process::fdpass::PassFd;
use mp_testkit::{alive, eventually, pass, pipe, wait_for_byte};

const HELPER_ENV: &str = "MP_POOL_TEST_INTERRUPT_HELPER";

/// Says it started, then blocks for ever.
fn stuck(i: i64, block: PassFd) -> i64 {
    println!("started {i}");
    wait_for_byte(&block);
    i
}

#[test]
#[ignore = "run by ctrl_c_during_map_returns_an_error_and_leaves_nothing_behind"]
fn interrupt_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions; no handler runs.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let (block_r, _block_w) = pipe();
    let pool = mp_pool::Pool::new(2).unwrap();
    let args: Vec<(i64, PassFd)> = (0..10).map(|i| (i, pass(&block_r))).collect();
    let start = Instant::now();
    match pool.starmap_chunked(stuck, args, 1) {
        Err(mp_pool::Error::Interrupted) => println!("interrupted"),
        other => println!("unexpected {other:?}"),
    }
    // The pool takes no more calls.
    println!("after: {}", pool.apply(stuck, (0, pass(&block_r))).is_err());
    drop(pool);
    eprintln!("interrupted after {:?}", start.elapsed());
}

/// The pids of the processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn ctrl_c_during_map_returns_an_error_and_leaves_nothing_behind() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "interrupt_helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut started = 0;
    for line in lines.by_ref() {
        if line.unwrap().contains("started") {
            started += 1;
            if started == 2 {
                break;
            }
        }
    }
    assert_eq!(started, 2, "the helper's tasks never started");
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pgid as i32).unwrap(),
        rustix::process::Signal::INT,
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "helper: {status:?}, output {rest:?}");
    assert!(rest.iter().any(|l| l == "interrupted"), "{rest:?}");
    assert!(rest.iter().any(|l| l == "after: true"), "{rest:?}");
    assert!(
        eventually(Duration::from_secs(10), || group_members(pgid).is_empty()),
        "left behind: {:?}",
        group_members(pgid)
    );
}

const ORPHAN_ENV: &str = "MP_POOL_TEST_ORPHAN_HELPER";

#[test]
#[ignore = "run by workers_die_with_a_sigkilled_owner"]
fn orphan_helper() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let pool = mp_pool::Pool::new(2).unwrap();
    let pids: Vec<String> = pool.pids().iter().map(u32::to_string).collect();
    println!("pids {}", pids.join(" "));
    loop {
        std::thread::park();
    }
}

#[test]
fn workers_die_with_a_sigkilled_owner() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "orphan_helper", "--nocapture", "--test-threads=1"])
        .env(ORPHAN_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| {
            l.split_once("pids ").map(|(_, p)| p.split(' ').map(|s| s.parse().unwrap()).collect())
        })
        .expect("the helper's pids");
    assert_eq!(pids.len(), 2);
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in pids {
        assert!(
            eventually(Duration::from_secs(10), || !alive(pid)),
            "worker {pid} outlived its owner"
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || group_members(pgid).is_empty()),
        "left behind: {:?}",
        group_members(pgid)
    );
}
