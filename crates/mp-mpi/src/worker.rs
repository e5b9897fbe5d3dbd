//! The worker side: a spawned worker or a world's rank serving pools.

use std::time::Duration;

use mp_pool::engine::EngineWorker;

use crate::error::{Error, Result};
use crate::sys::{self, Comm};
use crate::tag;

/// [`tag::READY`]: ready; the worker's pid (`u32`) and host name follow.
pub(crate) const READY_OK: u8 = 0;
/// [`tag::READY`]: the initializer failed; its message follows.
pub(crate) const READY_INIT_FAILED: u8 = 1;
/// [`tag::READY`]: this worker runs another executable than the pool's.
pub(crate) const READY_WRONG_EXECUTABLE: u8 = 2;
/// [`tag::READY`]: this worker serves another process tree (its key differs).
pub(crate) const READY_OTHER_TREE: u8 = 3;

/// How a process waits for a message without holding a core: it looks again at once for a
/// while, then sleeps a little longer each time, up to a millisecond.
pub(crate) struct Backoff {
    spins: u32,
    nap: Duration,
}

impl Backoff {
    /// Looks this many times before the first nap.
    const SPINS: u32 = 2000;
    const FIRST_NAP: Duration = Duration::from_micros(20);
    const LONGEST_NAP: Duration = Duration::from_millis(1);

    pub(crate) fn new() -> Backoff {
        Backoff { spins: 0, nap: Self::FIRST_NAP }
    }

    /// Something arrived: look eagerly again.
    pub(crate) fn reset(&mut self) {
        self.spins = 0;
        self.nap = Self::FIRST_NAP;
    }

    /// Nothing arrived: how long to nap before the next look (zero while spinning).
    pub(crate) fn next(&mut self) -> Duration {
        if self.spins < Self::SPINS {
            self.spins += 1;
            std::hint::spin_loop();
            return Duration::ZERO;
        }
        let nap = self.nap;
        self.nap = (self.nap * 2).min(Self::LONGEST_NAP);
        nap
    }
}

/// Waits for the next message on `comm`: its source, tag and length.
fn next_message(comm: Comm, wait: &mut Backoff) -> Result<(usize, std::ffi::c_int, usize)> {
    loop {
        if let Some(found) = sys::probe_any(comm)? {
            wait.reset();
            return Ok(found);
        }
        let nap = wait.next();
        if !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
}

/// This host's name.
pub(crate) fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// The answer to a [`tag::HELLO`]: adopts the pool's tree key if the executable is the same.
fn hello(bytes: &[u8]) -> Vec<u8> {
    let word = |k: usize| {
        bytes.get(8 * k..8 * k + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    };
    let (Some(k0), Some(k1), Some(print)) = (word(0), word(1), word(2)) else {
        return vec![READY_WRONG_EXECUTABLE];
    };
    if mp_process::code::executable_fingerprint().ok() != Some(print) {
        return vec![READY_WRONG_EXECUTABLE];
    }
    if !mp_process::code::adopt_tree_key([k0, k1]) {
        return vec![READY_OTHER_TREE];
    }
    ready_ok()
}

/// A [`READY_OK`] answer.
pub(crate) fn ready_ok() -> Vec<u8> {
    let mut out = vec![READY_OK];
    out.extend_from_slice(&std::process::id().to_le_bytes());
    out.extend_from_slice(hostname().as_bytes());
    out
}

/// Serves pools on `comm`, whose rank 0 is the pool's process: until the pool ends (a spawned
/// worker) or rank 0 says the program ends (`world`).
pub(crate) fn serve(comm: Comm, world: bool) -> Result<()> {
    let mut worker: Option<EngineWorker> = None;
    let mut wait = Backoff::new();
    loop {
        let (source, tag, len) = next_message(comm, &mut wait)?;
        let bytes = sys::recv(comm, source, tag, len)?;
        if source != 0 {
            continue;
        }
        match tag {
            tag::HELLO => sys::send(comm, 0, tag::READY, &hello(&bytes))?,
            tag::INIT => {
                let w = match &mut worker {
                    Some(w) => w,
                    None => worker.insert(EngineWorker::new().map_err(Error::Pool)?),
                };
                let reply = match bytes.is_empty() {
                    true => ready_ok(),
                    false => match w.init(&bytes) {
                        Ok(()) => ready_ok(),
                        Err(message) => {
                            let mut out = vec![READY_INIT_FAILED];
                            out.extend_from_slice(message.as_bytes());
                            out
                        }
                    },
                };
                sys::send(comm, 0, tag::READY, &reply)?;
            }
            tag::BATCH => {
                let results = match &mut worker {
                    Some(w) => w.run(bytes),
                    // A batch before the pool's initializer: answered with no results (the
                    // pool fails its tasks).
                    None => Vec::new(),
                };
                sys::send(comm, 0, tag::RESULTS, &results)?;
            }
            tag::END => {
                // Everything sent before this answer is in the pool's hands when it arrives.
                sys::send(comm, 0, tag::END, &[])?;
                if !world {
                    return Ok(());
                }
            }
            tag::QUIT => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_bytes(key: [u64; 2], print: u64) -> Vec<u8> {
        [key[0], key[1], print].iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn a_forged_or_truncated_hello_is_refused() {
        let key = mp_process::code::tree_key();
        let print = mp_process::code::executable_fingerprint().unwrap();
        let good = hello_bytes(key, print);
        // Empty, truncated at every length, and another executable's fingerprint.
        for n in 0..good.len() {
            assert_eq!(hello(&good[..n]), [READY_WRONG_EXECUTABLE], "{n} bytes");
        }
        assert_eq!(hello(&hello_bytes(key, print ^ 1)), [READY_WRONG_EXECUTABLE]);
        // Another tree's key: this process keeps its own.
        assert_eq!(hello(&hello_bytes([key[0] ^ 1, key[1]], print)), [READY_OTHER_TREE]);
        assert_eq!(mp_process::code::tree_key(), key);
        // The right greeting (trailing bytes ignored): ready, with this process's pid.
        let mut long = good.clone();
        long.extend_from_slice(b"extra");
        for bytes in [good, long] {
            let reply = hello(&bytes);
            assert_eq!(reply.first(), Some(&READY_OK));
            assert_eq!(reply.get(1..5), Some(&std::process::id().to_le_bytes()[..]));
        }
    }

    #[test]
    fn the_backoff_spins_then_naps_longer_up_to_a_millisecond() {
        let mut b = Backoff::new();
        for _ in 0..Backoff::SPINS {
            assert_eq!(b.next(), Duration::ZERO);
        }
        let naps: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert_eq!(naps[0], Backoff::FIRST_NAP);
        assert!(naps.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*naps.last().unwrap(), Backoff::LONGEST_NAP);
        b.reset();
        assert_eq!(b.next(), Duration::ZERO);
    }
}
