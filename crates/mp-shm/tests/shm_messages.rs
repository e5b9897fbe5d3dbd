//! Every shared type crosses inside a message to a running child: encoded with
//! `mp_process::fdpass`, its descriptor beside the bytes (`SCM_RIGHTS`), and checked by the
//! receiver before it is mapped.

use std::os::fd::{AsFd, OwnedFd};

use mp_process::Process;
use mp_process::fdpass::{PassFd, recv_value, send_value};
use mp_shm::{Item, RawArray, RawValue, ShareableList, SharedMemory};
use mp_testkit::shm::{Cleanup, unique_name};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};

/// The largest frame either side accepts.
const MAX: usize = 1 << 20;

/// What the parent sends to the running child.
#[derive(Serialize, Deserialize)]
enum Msg {
    /// Write "seen" at the offset.
    Shm(SharedMemory, usize),
    /// Add one to the value.
    Value(RawValue<u64>),
    /// Reverse the array.
    Array(RawArray<i32>),
    /// Append "!" to the string in slot 0.
    List(ShareableList),
    /// Several objects in one frame: set every value to the number of them.
    Many(Vec<RawValue<u64>>),
    /// Stop.
    Done,
}

/// The child's answer to each message: `Ok` or why it failed.
type Reply = Result<(), String>;

fn handle(msg: Msg) -> Reply {
    match msg {
        Msg::Shm(shm, offset) => shm.write(offset, b"seen").map_err(|e| e.to_string()),
        Msg::Value(v) => {
            v.set(v.get() + 1);
            Ok(())
        }
        Msg::Array(a) => {
            let mut items = a.to_vec();
            items.reverse();
            a.write_from(&items).map_err(|e| e.to_string())
        }
        Msg::List(list) => match list.get(0).map_err(|e| e.to_string())? {
            Item::Str(s) => list.set(0, Item::Str(s + "!")).map_err(|e| e.to_string()),
            other => Err(format!("unexpected {other:?}")),
        },
        Msg::Many(values) => {
            for v in &values {
                v.set(values.len() as u64);
            }
            Ok(())
        }
        Msg::Done => Ok(()),
    }
}

/// The running child: answers messages until `Done` or the end of the stream.
fn serve(sock: PassFd) {
    loop {
        // A message that is refused is answered with the reason.
        let (reply, done) = match recv_value::<Msg>(sock.as_fd(), MAX) {
            Ok(None) => return,
            Ok(Some(msg)) => {
                let done = matches!(msg, Msg::Done);
                (handle(msg), done)
            }
            Err(e) => (Err(e.to_string()), false),
        };
        send_value(sock.as_fd(), &reply, MAX).unwrap();
        if done {
            return;
        }
    }
}

/// A running child that serves messages on the other end of the returned socket.
struct Server {
    sock: OwnedFd,
    process: Process,
}

impl Server {
    fn start() -> Server {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let mut process = Process::new(serve, (PassFd(theirs),));
        process.start().unwrap();
        Server { sock: ours, process }
    }

    fn ask(&self, msg: &Msg) -> Reply {
        send_value(self.sock.as_fd(), msg, MAX).unwrap();
        recv_value::<Reply>(self.sock.as_fd(), MAX).unwrap().expect("the child hung up")
    }

    fn finish(self) {
        self.ask(&Msg::Done).unwrap();
        assert_eq!(self.process.join().unwrap(), 0);
    }
}

#[test]
fn every_type_crosses_in_a_message() {
    let server = Server::start();

    let shm = SharedMemory::new(10_000).unwrap();
    server.ask(&Msg::Shm(shm.try_clone().unwrap(), 9_000)).unwrap();
    let mut buf = [0u8; 4];
    shm.read(9_000, &mut buf).unwrap();
    assert_eq!(&buf, b"seen");
    // An offset past the end is the child's error value, not a crash.
    assert!(server.ask(&Msg::Shm(shm.try_clone().unwrap(), 9_998)).is_err());

    let value = RawValue::new(41u64).unwrap();
    server.ask(&Msg::Value(value.clone())).unwrap();
    assert_eq!(value.get(), 42);

    let array = RawArray::new(&[1, 2, 3, 4, 5]).unwrap();
    server.ask(&Msg::Array(array.clone())).unwrap();
    assert_eq!(array.to_vec(), vec![5, 4, 3, 2, 1]);

    let list = ShareableList::new(&[Item::from("hey"), Item::None]).unwrap();
    server.ask(&Msg::List(list.clone())).unwrap();
    assert_eq!(list.get(0).unwrap(), Item::from("hey!"));

    let many: Vec<RawValue<u64>> = (0..5).map(|i| RawValue::new(i).unwrap()).collect();
    server.ask(&Msg::Many(many.clone())).unwrap();
    assert!(many.iter().all(|v| v.get() == 5));

    server.finish();
}

#[test]
fn named_segments_cross_in_a_message() {
    let name = unique_name("msg");
    let _cleanup = Cleanup::one(&name);
    let server = Server::start();
    let shm = SharedMemory::create(&name, 64).unwrap();
    server.ask(&Msg::Shm(shm.try_clone().unwrap(), 60)).unwrap();
    let mut buf = [0u8; 64];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf[60..], b"seen");
    // The receiver checks the descriptor against the name (a forged "named" descriptor could
    // be truncated under it): once the name is gone it cannot, and refuses the segment, as
    // Python's receiver, which opens the name, fails.
    shm.unlink().unwrap();
    let err = server.ask(&Msg::Shm(shm.try_clone().unwrap(), 0)).unwrap_err();
    assert!(err.contains("cannot be opened to check"), "{err}");
    let list = ShareableList::create(&unique_name("msg-list"), &["a".into()]).unwrap();
    let _cleanup_list = Cleanup::one(list.shm().name());
    server.ask(&Msg::List(list.clone())).unwrap();
    assert_eq!(list.get(0).unwrap(), Item::from("a!"));
    list.shm().unlink().unwrap();
    server.finish();
}
