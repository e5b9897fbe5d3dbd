//! `mp::log_to_stderr` (Python's `multiprocessing.log_to_stderr`): records of mp's targets
//! reach stderr as `[LEVEL/ProcessName] message` in the process that asked and in its
//! children under every start method, and the resource tracker's leaked-memory warning reaches
//! stderr when no logger is installed.

use std::process::Command;

/// Logs a line from a child, under the target a program uses for mp's logger.
fn speak(method: String) {
    log::warn!(target: "mp", "a {method} child speaks");
    // Not an mp target: not printed.
    log::warn!(target: "someone_else", "not mine");
}

/// Logs a line from a pool worker.
fn work(x: u64) -> u64 {
    log::info!(target: "mp", "a worker squares {x}");
    x * x
}

/// Re-runs this test binary's `helper` (ignored unless asked) with `env`, returning its
/// stderr.
fn run_helper(helper: &str, env: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{out:?}\nstderr:\n{stderr}");
    stderr
}

#[test]
#[ignore = "run by children_log_to_stderr_under_every_start_method"]
fn logging_helper() {
    if std::env::var_os("MP_TEST_LOGGING_HELPER").is_none() {
        return;
    }
    let _guard = mp::init().unwrap();
    assert!(mp::log_to_stderr(mp::LevelFilter::Info));
    log::info!(target: "mp", "the parent speaks");
    log::debug!(target: "mp", "too detailed");
    for method in ["fork", "spawn", "forkserver"] {
        let ctx = mp::get_context(method).unwrap();
        let mut p =
            ctx.process(speak, (method.to_string(),)).with_name(format!("Speaker-{method}"));
        p.start().unwrap();
        p.join().unwrap();
        let pool = mp::Pool::builder().processes(1).context(&ctx).build().unwrap();
        assert_eq!(pool.apply(work, (3,)).unwrap(), 9);
    }
}

#[test]
fn children_log_to_stderr_under_every_start_method() {
    let stderr = run_helper("logging_helper", "MP_TEST_LOGGING_HELPER");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.contains(&"[INFO/MainProcess] the parent speaks"), "stderr:\n{stderr}");
    for (method, worker) in [
        ("fork", "ForkPoolWorker"),
        ("spawn", "SpawnPoolWorker"),
        ("forkserver", "ForkServerPoolWorker"),
    ] {
        let line = format!("[WARNING/Speaker-{method}] a {method} child speaks");
        assert!(lines.contains(&line.as_str()), "no {line:?} in stderr:\n{stderr}");
        let line = format!("[INFO/{worker}-1] a worker squares 3");
        assert!(lines.contains(&line.as_str()), "no {line:?} in stderr:\n{stderr}");
    }
    assert!(!stderr.contains("not mine"), "stderr:\n{stderr}");
    assert!(!stderr.contains("too detailed"), "stderr:\n{stderr}");
}

#[test]
#[ignore = "run by the_tracker_warns_about_leaked_memory_on_stderr_without_a_logger"]
fn leaking_helper() {
    if std::env::var_os("MP_TEST_LEAKING_HELPER").is_none() {
        return;
    }
    let name = format!("mp-test-leak-{}", std::process::id());
    let shm = mp::SharedMemory::create(&name, 4096).unwrap();
    // Never unlinked: the tracker unlinks it once this process is gone.
    drop(shm);
}

#[test]
fn the_tracker_warns_about_leaked_memory_on_stderr_without_a_logger() {
    // The helper's stderr stays open in its tracker until the tracker has cleaned up, so its
    // warning is in what `output` collects.
    let stderr = run_helper("leaking_helper", "MP_TEST_LEAKING_HELPER");
    assert!(
        stderr.contains(
            "[WARNING/ResourceTracker] mp: the resource tracker: there appear to be 1 leaked \
             shared_memory objects to clean up at shutdown"
        ),
        "stderr:\n{stderr}"
    );
}
