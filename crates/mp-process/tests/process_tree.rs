//! Parents, children and grandchildren under the start method in `MP_START_METHOD`: names
//! and `parent_process()` across generations, daemonic children dying with their parent
//! (also a SIGKILLed one), the daemon rule, and forks from short-lived threads.

use std::io::{Read, Write};

use std::time::Duration;

use mp_process::fdpass::PassFd;
use mp_process::{Error, Process, current_process, parent_process};
use mp_testkit::{eventually, exits_within, pipe, read_all, read_exact, send_text, wait_for_byte};

fn report_family(out: PassFd) {
    let me = current_process();
    let parent = parent_process().expect("a child has a parent");
    let line = format!(
        "{}|{}|{}|{}|{}\n",
        me.name(),
        me.pid(),
        parent.name(),
        parent.pid(),
        parent.is_alive()
    );
    send_text(out, &line);
}

fn middle(out: PassFd) {
    let mut g = Process::new(report_family, (out,));
    g.start().expect("the grandchild starts");
    assert_eq!(g.join().expect("join the grandchild"), 0);
}

#[test]
fn grandchild_reports_its_parent() {
    let (r, w) = pipe();
    let mut p = Process::new(middle, (PassFd(w),)).with_name("middle");
    p.start().unwrap();
    let text = read_all(r);
    assert_eq!(p.join().unwrap(), 0);
    let fields: Vec<&str> = text.trim().split('|').collect();
    assert_eq!(fields.len(), 5, "{text}");
    let n: u32 = p.identity()[0];
    assert_eq!(fields[0], format!("Process-{n}:1"), "grandchild name");
    assert_eq!(fields[2], "middle", "parent name");
    assert_eq!(fields[3], p.pid().unwrap().to_string(), "parent pid");
    assert_eq!(fields[4], "true", "the parent is alive while it joins");
}

#[test]
fn child_sees_main_process_as_parent() {
    let (r, w) = pipe();
    let mut p = Process::new(report_family, (PassFd(w),));
    p.start().unwrap();
    let text = read_all(r);
    assert_eq!(p.join().unwrap(), 0);
    let fields: Vec<&str> = text.trim().split('|').collect();
    assert_eq!(fields[0], p.name());
    assert_eq!(fields[1], p.pid().unwrap().to_string());
    assert_eq!(fields[2], "MainProcess");
    assert_eq!(fields[3], std::process::id().to_string());
}

/// Reports whether its parent, which is alive, looks exited to a zero or short `join_timeout`.
fn report_parent_join(out: PassFd) {
    let parent = parent_process().expect("a child has a parent");
    let zero = parent.join_timeout(Duration::ZERO).expect("join_timeout(0)");
    let short = parent.join_timeout(Duration::from_millis(20)).expect("join_timeout(20 ms)");
    send_text(out, &format!("{zero}|{short}\n"));
}

#[test]
fn a_child_joins_its_running_parent_with_a_timeout() {
    let (r, w) = pipe();
    let mut p = Process::new(report_parent_join, (PassFd(w),));
    p.start().unwrap();
    let text = read_all(r);
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(text.trim(), "false|false", "the parent runs while the child joins it");
}

fn park_forever() {
    loop {
        std::thread::park();
    }
}

fn start_daemon_then_park(out: PassFd) {
    let mut d = Process::new(park_forever, ()).with_daemon(true);
    d.start().expect("start the daemon");
    send_text(out, &format!("{}\n", d.pid().unwrap()));
    park_forever();
}

#[test]
fn daemon_does_not_outlive_a_sigkilled_parent() {
    let (r, w) = pipe();
    let mut p = Process::new(start_daemon_then_park, (PassFd(w),));
    p.start().unwrap();
    let mut line = String::new();
    let mut f = std::fs::File::from(r);
    let mut b = [0u8; 1];
    while f.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0] as char);
    }
    let daemon_pid: i32 = line.parse().expect("daemon pid");
    let daemon = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(daemon_pid).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("the daemon is running");
    p.kill().unwrap();
    assert_eq!(p.join().unwrap(), -9);
    assert!(
        exits_within(&daemon, Duration::from_secs(30)),
        "the daemonic grandchild outlived its SIGKILLed parent"
    );
}

fn try_to_start_child(out: PassFd) {
    let mut c = Process::new(|| {}, ());
    let verdict = match c.start() {
        Err(Error::DaemonicChildren) => "refused",
        Err(_) => "other error",
        Ok(()) => "started",
    };
    send_text(out, verdict);
}

#[test]
fn a_daemonic_process_may_not_start_children() {
    let (r, w) = pipe();
    let mut p = Process::new(try_to_start_child, (PassFd(w),)).with_daemon(true);
    p.start().unwrap();
    assert_eq!(read_all(r), "refused");
    assert_eq!(p.join().unwrap(), 0);
}

/// Reports the daemon flags of processes made (not started) in a daemonic process: by
/// default they inherit it, as in Python; an explicit flag wins. Then tries to start one.
fn report_daemon_defaults(out: PassFd) {
    let plain = Process::new(|| {}, ());
    let closure = Process::fork_closure(|| {});
    let ctx = mp_process::get_context("spawn").expect("a known method");
    let from_context = ctx.process(|| {}, ());
    let overridden = Process::new(|| {}, ()).with_daemon(false);
    let mut set = Process::new(|| {}, ());
    set.set_daemon(false).expect("set before start");
    let mut started = Process::new(|| {}, ());
    let verdict = match started.start() {
        Err(Error::DaemonicChildren) => "refused",
        Err(_) => "other error",
        Ok(()) => "started",
    };
    let line = format!(
        "{}|{}|{}|{}|{}|{}|{}",
        current_process().daemon(),
        plain.daemon(),
        closure.daemon(),
        from_context.daemon(),
        overridden.daemon(),
        set.daemon(),
        verdict
    );
    send_text(out, &line);
}

#[test]
fn a_process_made_in_a_daemonic_process_is_daemonic_by_default() {
    let (r, w) = pipe();
    let mut p = Process::new(report_daemon_defaults, (PassFd(w),)).with_daemon(true);
    p.start().unwrap();
    assert_eq!(read_all(r), "true|true|true|true|false|false|refused");
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn a_process_made_in_a_non_daemonic_process_is_not_daemonic_by_default() {
    let (r, w) = pipe();
    let mut p = Process::new(report_daemon_defaults, (PassFd(w),));
    assert!(!p.daemon());
    p.start().unwrap();
    assert_eq!(read_all(r), "false|false|false|false|false|false|started");
    assert_eq!(p.join().unwrap(), 0);
}

/// Reports this child's start method, then that of a grandchild it starts without a
/// context (which inherits the child's method).
fn report_start_method(out: PassFd) {
    let me = mp_process::get_start_method().expect("a start method");
    let (r, w) = pipe();
    let mut g = Process::new(report_own_start_method, (PassFd(w),));
    g.start().expect("the grandchild starts");
    let grandchild = read_all(r);
    assert_eq!(g.join().expect("join the grandchild"), 0);
    send_text(out, &format!("{me}|{grandchild}"));
}

fn report_own_start_method(out: PassFd) {
    send_text(out, mp_process::get_start_method().expect("a start method").as_str());
}

#[test]
fn a_child_reports_the_start_method_it_was_started_with() {
    // The suite's default comes from MP_START_METHOD; each context's child must report its
    // own method whatever that default is (CPython does the same for every pair).
    let default = mp_process::get_start_method().unwrap();
    for method in mp_process::get_all_start_methods() {
        let (r, w) = pipe();
        let ctx = mp_process::get_context(method.as_str()).unwrap();
        let mut p = ctx.process(report_start_method, (PassFd(w),));
        p.start().unwrap();
        let text = read_all(r);
        assert_eq!(p.join().unwrap(), 0);
        assert_eq!(text, format!("{method}|{method}"), "started by {method}, default {default}");
    }
    let (r, w) = pipe();
    let mut p = Process::new(report_own_start_method, (PassFd(w),));
    p.start().unwrap();
    assert_eq!(read_all(r), default.as_str(), "a child started without a context");
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(mp_process::get_start_method().unwrap(), default, "the parent's is unchanged");
}

fn echo_then_exit(input: PassFd, output: PassFd) {
    let mut i = std::fs::File::from(input.into_inner());
    let mut o = std::fs::File::from(output.into_inner());
    let mut b = [0u8; 1];
    i.read_exact(&mut b).expect("read the go byte");
    o.write_all(&b).expect("echo it");
}

#[test]
fn a_fork_from_a_thread_that_exits_does_not_kill_the_daemon() {
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let handle = std::thread::spawn(move || {
        let mut p = Process::new(echo_then_exit, (PassFd(in_r), PassFd(out_w))).with_daemon(true);
        p.start().expect("start from a thread");
        (p, rustix::thread::gettid())
    });
    let (p, tid) = handle.join().unwrap();
    // PR_SET_PDEATHSIG would fire as the thread exits, before its task is released: wait
    // until the thread is gone entirely, then check the daemon is still there to answer.
    let task = format!("/proc/self/task/{}", tid.as_raw_nonzero());
    assert!(eventually(Duration::from_secs(30), || !std::path::Path::new(&task).exists()));
    let mut w = std::fs::File::from(in_w);
    w.write_all(b"!").unwrap();
    assert_eq!(read_exact(&out_r, 1), b"!");
    assert_eq!(p.join().unwrap(), 0, "the daemon was killed when its forking thread exited");
}

fn parked_child(_unused: PassFd) {
    park_forever();
}

#[test]
fn init_guard_terminates_daemons_and_joins_the_rest() {
    let (r, w) = pipe();
    let guard = mp_process::init().unwrap();
    let mut d = Process::new(parked_child, (PassFd(r),)).with_daemon(true);
    d.start().unwrap();
    let mut n = Process::new(|| {}, ());
    n.start().unwrap();
    drop(guard);
    assert_eq!(d.exitcode(), Some(-15), "the daemon was terminated");
    assert_eq!(n.exitcode(), Some(0), "the other child was joined");
    drop(w);
}

fn owner_check(p: std::sync::Arc<Process>, out: PassFd) {
    let verdict = match p.join() {
        Err(Error::WrongProcess { .. }) => "refused",
        _ => "allowed",
    };
    send_text(out, verdict);
    // Dropping the captured handle here must do nothing to the parent's child.
    drop(p);
}

#[test]
fn a_process_handle_used_in_another_process_is_an_error() {
    let (gate_r, gate_w) = pipe();
    let mut target = Process::new(block_on, (PassFd(gate_r),));
    target.start().unwrap();
    // Made after `target` started, so that a forked `target` holds no copy of `w`.
    let (r, w) = pipe();
    let target = std::sync::Arc::new(target);
    let shared = target.clone();
    let w = PassFd(w);
    let mut p = Process::fork_closure(move || owner_check(shared, w));
    p.start().unwrap();
    assert_eq!(read_all(r), "refused");
    assert_eq!(p.join().unwrap(), 0);
    assert!(target.is_alive(), "the child's drop in another process did nothing");
    std::fs::File::from(gate_w).write_all(b"x").unwrap();
    assert_eq!(target.join().unwrap(), 0);
}

fn block_on(fd: PassFd) {
    wait_for_byte(fd);
}

#[test]
fn fork_closure_runs_a_capturing_closure_under_any_default() {
    let (r, w) = pipe();
    let captured = String::from("1,2,3");
    let w = PassFd(w);
    let mut p = Process::fork_closure(move || {
        let sum: u32 = captured.split(',').map(|x| x.parse::<u32>().unwrap()).sum();
        send_text(w, &sum.to_string());
    });
    p.start().unwrap();
    assert_eq!(read_all(r), "6");
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn fork_closure_under_another_method_is_an_error() {
    let mut p = Process::fork_closure(|| {}).with_start_method(mp_process::StartMethod::Spawn);
    assert!(matches!(p.start(), Err(Error::ForkOnly)));
}
