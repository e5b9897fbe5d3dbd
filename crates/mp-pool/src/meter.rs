//! The worker's side of the pool's insights: counters of tasks and time, and its slowest
//! tasks, kept in its shared segment (see [`proto::SEG_DONE`]) where the parent reads them
//! whenever it is asked, also after the worker died. Each is written by this worker alone,
//! with plain stores; the clock is read per chunk of tasks, per batch and per send, and per
//! task only when tasks are slow enough for it not to matter.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::proto::{self, monotonic_ns};

/// Tasks that take longer than this on average are timed one by one (a clock read per task
/// is then under a thousandth of the work); quicker ones are timed by chunk.
const TIME_EACH_ABOVE_NS: u64 = 50_000;

/// One of the slowest tasks: job, index of the first task, tasks timed together, nanoseconds.
type Slow = [u64; 4];

/// The worker's counters.
pub(crate) struct Meter {
    /// The segment's words from [`proto::SEG_DONE`] up to the journal.
    words: &'static [AtomicU64],
    done: u64,
    busy: u64,
    wait: u64,
    io: u64,
    slow: [Slow; proto::SLOWEST],
    seq: u64,
}

/// The index of a segment offset among [`Meter::words`].
const fn word(offset: usize) -> usize {
    (offset - proto::SEG_DONE) / 8
}

impl Meter {
    /// The counters in `shm` (the worker's segment, kept for the rest of its life).
    pub(crate) fn new(shm: &'static mp_shm::SharedMemory) -> Meter {
        let n = (proto::SEG_JOURNAL - proto::SEG_DONE) / 8;
        Meter {
            words: shm.atomic_u64s(proto::SEG_DONE, n).unwrap_or(&[]),
            done: 0,
            busy: 0,
            wait: 0,
            io: 0,
            slow: [[0; 4]; proto::SLOWEST],
            seq: 0,
        }
    }

    fn store(&self, offset: usize, value: u64) {
        if let Some(w) = self.words.get(word(offset)) {
            w.store(value, Ordering::Relaxed);
        }
    }

    /// The worker is ready for work.
    pub(crate) fn ready(&self) {
        self.store(proto::SEG_READY, monotonic_ns().max(1));
    }

    /// A task finished (its outcome is recorded).
    #[inline]
    pub(crate) fn task_done(&mut self) {
        self.done += 1;
        self.store(proto::SEG_DONE, self.done);
    }

    /// Time spent on chunks of tasks.
    pub(crate) fn add_busy(&mut self, ns: u64) {
        self.busy = self.busy.saturating_add(ns);
        self.store(proto::SEG_BUSY, self.busy);
    }

    /// Time spent waiting for work.
    pub(crate) fn add_wait(&mut self, ns: u64) {
        self.wait = self.wait.saturating_add(ns);
        self.store(proto::SEG_WAIT, self.wait);
    }

    /// Time spent receiving tasks or sending results.
    pub(crate) fn add_io(&mut self, ns: u64) {
        self.io = self.io.saturating_add(ns);
        self.store(proto::SEG_IO, self.io);
    }

    /// Whether the tasks of a chunk of `count` should be timed one by one: they take long
    /// enough on average that a clock read each costs nothing.
    pub(crate) fn time_each(&self, count: u64) -> bool {
        count > 1 && self.done > 0 && self.busy / self.done >= TIME_EACH_ABOVE_NS
    }

    /// Offers `tasks` tasks of `job` from `index` on, which took `ns` together, to the list of
    /// the slowest.
    pub(crate) fn offer(&mut self, job: u64, index: u64, tasks: u64, ns: u64) {
        let Some(last) = self.slow.last() else { return };
        if ns <= last[3] {
            return;
        }
        let at = self.slow.iter().position(|s| ns > s[3]).unwrap_or(proto::SLOWEST - 1);
        self.slow[at..].rotate_right(1);
        self.slow[at] = [job, index, tasks, ns];
        self.publish_slow();
    }

    /// Writes the slowest tasks under the sequence lock.
    fn publish_slow(&mut self) {
        let Some(seq) = self.words.get(word(proto::SEG_SLOW_SEQ)) else { return };
        self.seq += 1;
        seq.store(self.seq, Ordering::Relaxed);
        fence(Ordering::Release);
        for (k, v) in self.slow.iter().flatten().enumerate() {
            if let Some(w) = self.words.get(word(proto::SEG_SLOW) + k) {
                w.store(*v, Ordering::Relaxed);
            }
        }
        self.seq += 1;
        seq.store(self.seq, Ordering::Release);
    }
}

/// Times a stretch of the worker's life.
#[derive(Clone, Copy)]
pub(crate) struct Mark(u64);

impl Mark {
    pub(crate) fn now() -> Mark {
        Mark(monotonic_ns())
    }

    /// The nanoseconds since this mark, and a mark for now.
    pub(crate) fn lap(self) -> (u64, Mark) {
        let now = monotonic_ns();
        (now.saturating_sub(self.0), Mark(now))
    }
}

/// Reads the slowest tasks from a worker's segment words (from [`proto::SEG_DONE`] on): the
/// records, or `None` if they were being written (the caller tries again) or are torn for good
/// (a worker that died writing them).
pub(crate) fn read_slow(words: &[AtomicU64]) -> Option<Vec<Slow>> {
    let seq = words.get(word(proto::SEG_SLOW_SEQ))?;
    let before = seq.load(Ordering::Acquire);
    if before % 2 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(proto::SLOWEST);
    for k in 0..proto::SLOWEST {
        let at = word(proto::SEG_SLOW) + 4 * k;
        let get = |i: usize| words.get(at + i).map_or(0, |w| w.load(Ordering::Relaxed));
        out.push([get(0), get(1), get(2), get(3)]);
    }
    fence(Ordering::Acquire);
    (seq.load(Ordering::Relaxed) == before).then(|| out.into_iter().filter(|s| s[3] > 0).collect())
}

/// The counters in a worker's segment words (from [`proto::SEG_DONE`] on): tasks done,
/// busy, waiting and input/output nanoseconds, and when it was ready (0 if not yet).
pub(crate) fn read_counters(words: &[AtomicU64]) -> [u64; 5] {
    let get = |offset| words.get(word(offset)).map_or(0, |w| w.load(Ordering::Relaxed));
    [
        get(proto::SEG_DONE),
        get(proto::SEG_BUSY),
        get(proto::SEG_WAIT),
        get(proto::SEG_IO),
        get(proto::SEG_READY),
    ]
}

/// The words [`read_counters`] and [`read_slow`] read, in a worker's segment.
pub(crate) fn words(shm: &mp_shm::SharedMemory) -> &[AtomicU64] {
    shm.atomic_u64s(proto::SEG_DONE, (proto::SEG_JOURNAL - proto::SEG_DONE) / 8).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_tasks_are_kept_in_order_and_read_back() {
        let shm: &'static mp_shm::SharedMemory =
            Box::leak(Box::new(mp_shm::SharedMemory::new(proto::SEG_SIZE).unwrap()));
        let mut m = Meter::new(shm);
        for (i, ns) in [5u64, 1, 9, 3, 7, 2, 8, 6].into_iter().enumerate() {
            m.offer(1, i as u64, 1, ns);
        }
        let got: Vec<u64> = read_slow(words(shm)).unwrap().iter().map(|s| s[3]).collect();
        assert_eq!(got, [9, 8, 7, 6, 5]);
        m.task_done();
        m.add_busy(10);
        m.add_wait(20);
        m.add_io(30);
        let [done, busy, wait, io, ready] = read_counters(words(shm));
        assert_eq!((done, busy, wait, io, ready), (1, 10, 20, 30, 0));
        m.ready();
        assert!(read_counters(words(shm))[4] > 0);
    }
}
