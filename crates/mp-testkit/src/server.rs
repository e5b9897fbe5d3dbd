//! A child process that serves requests on a connection, so that a test can talk to a real
//! process under the start method the suite runs with (`MP_START_METHOD`).

use mp_process::Process;
use mp_queue::{Connection, pipe};
use serde::{Deserialize, Serialize};

/// What the parent asks the serving child.
#[derive(Debug, Serialize, Deserialize)]
pub enum Req {
    /// Reply `Sum` of the numbers.
    Sum(Vec<i64>),
    /// Reply `Text` in upper case.
    Upper(String),
    /// Reply `Bytes` reversed.
    Reverse(Vec<u8>),
    /// Receive this many raw messages and send each straight back, in order.
    EchoBytes(u32),
    /// Take this connection: send `Text("r=<readable> w=<writable>")` on it if it is
    /// writable, then, if it is readable, receive one `String` on it and reply it as `Text`
    /// on the serving connection; reply `Done` last. The connection is dropped afterwards.
    Adopt(Connection),
    /// Reply `Done` and return.
    Stop,
}

/// What the serving child answers.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// A sum.
    Sum(i64),
    /// A string.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// The request is complete.
    Done,
}

/// The serving child: answers requests until `Stop`.
pub fn serve(conn: Connection) -> Result<(), mp_queue::Error> {
    loop {
        match conn.recv::<Req>()? {
            Req::Sum(v) => conn.send(&Reply::Sum(v.iter().sum()))?,
            Req::Upper(s) => conn.send(&Reply::Text(s.to_uppercase()))?,
            Req::Reverse(mut b) => {
                b.reverse();
                conn.send(&Reply::Bytes(b))?;
            }
            Req::EchoBytes(n) => {
                for _ in 0..n {
                    let msg = conn.recv_bytes(None)?;
                    conn.send_bytes(&msg, 0, None)?;
                }
            }
            Req::Adopt(c) => {
                if c.writable() {
                    c.send(&Reply::Text(format!("r={} w={}", c.readable(), c.writable())))?;
                }
                if c.readable() {
                    let s: String = c.recv()?;
                    conn.send(&Reply::Text(s))?;
                }
                drop(c);
                conn.send(&Reply::Done)?;
            }
            Req::Stop => {
                conn.send(&Reply::Done)?;
                return Ok(());
            }
        }
    }
}

/// A running serving child and the parent's end of its connection.
#[derive(Debug)]
pub struct Server {
    /// The parent's end.
    pub conn: Connection,
    /// The child.
    pub process: Process,
}

impl Server {
    /// Starts a serving child on a fresh duplex pipe.
    pub fn start() -> Server {
        let (conn, child_end) = pipe(true).expect("pipe");
        let mut process = Process::new(serve, (child_end,));
        process.start().expect("start the serving child");
        Server { conn, process }
    }

    /// Sends `req` and returns the reply.
    pub fn ask(&self, req: &Req) -> Reply {
        self.conn.send(req).expect("send a request");
        self.conn.recv().expect("receive a reply")
    }

    /// Stops the child and checks that it exited with 0.
    pub fn stop(self) {
        assert_eq!(self.ask(&Req::Stop), Reply::Done);
        assert_eq!(self.process.join().expect("join"), 0, "the serving child failed");
    }
}
