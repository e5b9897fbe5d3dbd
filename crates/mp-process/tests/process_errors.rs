//! Bad input gives clear errors: an unknown start method, fixing the method twice, a double
//! start, closing a running process, and objects used from the wrong process.

use std::io::Write;

use mp_process::fdpass::PassFd;
use mp_process::{
    Error, Process, StartMethod, get_all_start_methods, get_context, get_start_method,
    set_start_method,
};
use mp_testkit::{pipe, wait_for_byte};

fn noop() {}

fn block(fd: PassFd) {
    wait_for_byte(fd);
}

#[test]
fn unknown_start_method_names_are_errors() {
    match get_context("threads") {
        Err(Error::UnknownStartMethod(name)) => assert_eq!(name, "threads"),
        other => panic!("expected UnknownStartMethod, got {other:?}"),
    }
    let e = "Fork".parse::<StartMethod>().unwrap_err();
    assert!(e.to_string().contains("\"fork\", \"spawn\" or \"forkserver\""), "{e}");
    for m in get_all_start_methods() {
        assert_eq!(m.as_str().parse::<StartMethod>().unwrap(), m);
        assert_eq!(get_context(m.as_str()).unwrap().start_method(), m);
    }
}

#[test]
fn the_start_method_can_be_set_once_unless_forced() {
    let default = get_start_method().unwrap();
    if let Ok(env) = std::env::var(mp_process::START_METHOD_ENV) {
        assert_eq!(default.as_str(), env);
    }
    assert!(matches!(set_start_method(StartMethod::Spawn, false), Err(Error::ContextAlreadySet)));
    set_start_method(StartMethod::Spawn, true).unwrap();
    assert_eq!(get_start_method().unwrap(), StartMethod::Spawn);
    let mut p = Process::new(noop, ());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn starting_twice_is_an_error() {
    let mut p = Process::new(noop, ());
    p.start().unwrap();
    assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
    assert_eq!(p.join().unwrap(), 0);
    assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
}

#[test]
fn setting_daemon_after_start_is_an_error() {
    let mut p = Process::new(noop, ());
    p.set_daemon(true).unwrap();
    p.set_daemon(false).unwrap();
    p.start().unwrap();
    assert!(matches!(p.set_daemon(true), Err(Error::AlreadyStarted)));
    p.join().unwrap();
}

#[test]
fn closing_a_running_process_hands_it_back() {
    let (r, w) = pipe();
    let mut p = Process::new(block, (PassFd(r),));
    p.start().unwrap();
    let err = p.close().unwrap_err();
    assert!(err.to_string().contains("still running"));
    let p = err.0;
    assert!(p.is_alive());
    std::fs::File::from(w).write_all(b"x").unwrap();
    assert_eq!(p.join().unwrap(), 0);
    p.close().expect("closing a joined process");
}

#[test]
fn closing_an_unstarted_process_is_fine() {
    Process::new(noop, ()).close().unwrap();
}

#[test]
fn errors_chain_their_sources() {
    let e = Error::Wire(mp_process::wire::WireError::Truncated { expected: 8, got: 3 });
    assert!(std::error::Error::source(&e).is_some());
    assert!(e.to_string().contains("wire"));
}

/// Deserialises, but refuses to serialise, with a message of its own.
#[derive(Debug)]
struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Refuses keeps its reasons"))
    }
}

impl<'de> serde::Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <() as serde::Deserialize<'de>>::deserialize(d).map(|()| Refuses)
    }
}

fn takes_refuses(_: u32, _: Refuses) {}

#[test]
fn arguments_that_do_not_serialise_say_why() {
    // Under spawn and forkserver the arguments are encoded (under fork they are not).
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let mut p = get_context(method.as_str()).unwrap().process(takes_refuses, (7u32, Refuses));
        match p.start() {
            Err(e @ Error::Wire(_)) => {
                assert!(e.to_string().contains("Refuses keeps its reasons"), "{method}: {e}");
            }
            other => panic!("{method}: expected a wire error, got {other:?}"),
        }
    }
    // The fd-carrying encoder explains too, past the descriptors the value holds.
    let (_r, w) = pipe();
    let e = mp_process::fdpass::encode_with_fds(&(PassFd(w), Refuses)).unwrap_err();
    assert!(e.to_string().contains("Refuses keeps its reasons"), "{e}");
}
