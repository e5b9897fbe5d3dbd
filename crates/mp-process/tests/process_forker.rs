//! `Forker`: children started through a zygote forked earlier, under every default start
//! method (the forker itself is always a fork).

use mp_process::fdpass::PassFd;
use mp_process::{Forker, Process, StartMethod};
use std::time::Duration;

use mp_testkit::{alive, eventually, pipe, read_all, send_text, wait_for_byte};

/// Reports what the child knows of itself: its start method, its parent's pid, its name.
fn report(out: PassFd) {
    let method = mp_process::get_start_method().map(|m| m.as_str()).unwrap_or("none");
    let parent = mp_process::parent_process().map(|p| p.pid()).unwrap_or(0);
    let name = mp_process::current_process().name().to_owned();
    send_text(out, &format!("{method} {parent} {name}"));
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

/// Blocks until a byte arrives (or end of file).
fn block(fd: PassFd) {
    wait_for_byte(fd);
}

#[test]
fn children_of_a_forker_are_the_makers_and_report_their_exit_codes() {
    let _guard = mp_process::init().unwrap();
    let forker = Forker::fork().unwrap();
    let mut children = Vec::new();
    for code in [0, 3, 7] {
        let mut p = Process::new(exit_with, (code,)).with_forker(forker.clone());
        p.start().unwrap();
        children.push((p, code));
    }
    for (p, code) in &children {
        assert_eq!(p.join().unwrap(), *code);
    }
    let (r, w) = pipe();
    let mut p = Process::new(report, (PassFd(w),))
        .with_start_method(StartMethod::Fork)
        .with_name("Reporter")
        .with_forker(forker.clone());
    p.start().unwrap();
    let text = read_all(r);
    assert_eq!(p.join().unwrap(), 0);
    assert_eq!(text, format!("fork {} Reporter", std::process::id()));
}

#[test]
fn a_forker_let_go_kills_its_daemonic_children_and_exits() {
    let _guard = mp_process::init().unwrap();
    let forker = Forker::fork().unwrap();
    let server = forker.pid().unwrap();
    let (r, w) = pipe();
    let mut p = Process::new(block, (PassFd(r),)).with_daemon(true).with_forker(forker.clone());
    p.start().unwrap();
    let child = p.pid().unwrap();
    assert!(alive(child) && alive(server));
    // The maker still holds the child, yet lets go of the forker: the forker kills its
    // daemonic child and exits on its own (the child's exit status went with it).
    assert_eq!(forker.close(), Some(0), "the forker exited on its own");
    assert!(!alive(server), "the forker was reaped");
    assert!(eventually(Duration::from_secs(10), || !alive(child)), "the child was killed");
    assert!(matches!(p.join(), Err(mp_process::Error::ForkserverLost)));
    drop(w);
}

#[test]
fn a_forker_kept_alive_by_a_running_child_is_killed_when_let_go() {
    let _guard = mp_process::init().unwrap();
    let forker = Forker::fork().unwrap();
    let (r, w) = pipe();
    // A non-daemonic child outlives its forker's maker's interest: the forker cannot exit.
    let mut p = Process::new(block, (PassFd(r),)).with_daemon(false).with_forker(forker.clone());
    p.start().unwrap();
    let child = p.pid().unwrap();
    assert_eq!(forker.close(), Some(-9), "the forker had to be killed");
    // The child lives on (not daemonic); released, it exits.
    assert!(alive(child));
    mp_testkit::release(&w, 1);
    assert!(eventually(Duration::from_secs(10), || !alive(child)), "the child exited");
}

#[test]
fn a_forker_whose_children_are_done_exits_on_its_own() {
    let _guard = mp_process::init().unwrap();
    let forker = Forker::fork().unwrap();
    let server = forker.pid().unwrap();
    let mut p = Process::new(exit_with, (0,)).with_daemon(true).with_forker(forker.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
    drop(p);
    let other = forker.clone();
    assert_eq!(other.close(), None, "another handle remains");
    assert_eq!(forker.close(), Some(0), "the forker exited on its own");
    assert!(!alive(server));
}

#[test]
fn a_capturing_closure_cannot_go_through_a_forker() {
    let _guard = mp_process::init().unwrap();
    let forker = Forker::fork().unwrap();
    let mut p = Process::fork_closure(|| {}).with_forker(forker);
    assert!(matches!(p.start(), Err(mp_process::Error::ForkOnly)));
}

#[test]
fn a_forker_exits_when_let_go_even_while_a_forked_process_holds_a_copy_of_its_connection() {
    let _guard = mp_process::init().unwrap();
    let forker = Forker::fork().unwrap();
    // A process forked now inherits a copy of the maker's connection to the forker.
    let (r, w) = pipe();
    let mut sibling = Process::fork_closure(move || wait_for_byte(PassFd(r)))
        .with_start_method(StartMethod::Fork);
    sibling.start().unwrap();
    // Letting go says so: the forker does not wait for every copy to close.
    assert_eq!(forker.close(), Some(0));
    mp_testkit::release(&w, 1);
    assert_eq!(sibling.join().unwrap(), 0);
}
