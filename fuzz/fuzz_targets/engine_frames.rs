//! The frames an engine's two sides read from each other (`mp_pool::engine`): a batch as an
//! `EngineWorker` reads it (from the pool's process, over MPI), an initializer frame, and a
//! batch's results as the pool's `Hub` reads them (from a worker). Bytes of any shape must
//! give errors, never a panic, a hang or a call of code the pool did not sign.
//!
//! `cargo +nightly fuzz run engine_frames -- -detect_leaks=0`
#![no_main]

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mp::pool::engine::{Engine, EngineWorker, Hub, Next};

/// An engine of one worker whose results are the fuzzer's bytes.
struct Forged(Mutex<Receiver<Vec<u8>>>);

impl Engine for Forged {
    fn workers(&self) -> usize {
        1
    }

    fn serve(self: Box<Self>, mut hub: Hub) {
        let rx = self.0.into_inner().unwrap();
        loop {
            match hub.next(0) {
                Next::Batch(_) => {
                    let Ok(results) = rx.recv() else { return };
                    hub.deliver(0, &results);
                }
                Next::Idle => hub.wait(None),
                Next::Finish | Next::Stop => return,
            }
        }
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn pool() -> &'static (mp::Pool, Mutex<Sender<Vec<u8>>>) {
    static POOL: OnceLock<(mp::Pool, Mutex<Sender<Vec<u8>>>)> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel();
        let pool = mp::Pool::builder().engine(Forged(Mutex::new(rx))).build().unwrap();
        (pool, Mutex::new(tx))
    })
}

thread_local! {
    static WORKER: std::cell::RefCell<EngineWorker> =
        std::cell::RefCell::new(EngineWorker::new().unwrap());
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 3 {
        0 => WORKER.with(|w| {
            let _ = w.borrow_mut().run(bytes.to_vec());
        }),
        1 => WORKER.with(|w| {
            let _ = w.borrow_mut().init(bytes);
        }),
        _ => {
            let (pool, tx) = pool();
            let r = pool.apply_async(square, (3,)).unwrap();
            tx.lock().unwrap().send(bytes.to_vec()).unwrap();
            // The one batch is answered by the bytes: the task ends, whatever they hold.
            let _ = r.get();
        }
    }
});
