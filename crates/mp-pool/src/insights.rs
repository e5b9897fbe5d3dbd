//! [`Pool::insights`](crate::Pool::insights): what each worker did and where the time went,
//! and the book the collector keeps for it (workers that are gone included).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::meter;

/// How many of a worker slot's latest restarts [`WorkerInsights::recent_restarts`] keeps.
const RECENT_RESTARTS: usize = 8;

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartReason {
    /// It died (a signal, a panic outside a task, an exit of its own): its exit code, minus
    /// the signal's number if a signal killed it (`Some(-9)` for SIGKILL).
    Died {
        /// The exit code, if the pool learned it.
        exitcode: Option<i32>,
    },
    /// The pool killed it because its task overran the task timeout.
    Timeout,
    /// It had done `maxtasksperchild` chunks and retired.
    MaxTasks,
}

impl fmt::Display for RestartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartReason::Died { exitcode: Some(c) } if *c < 0 => {
                write!(f, "killed by signal {}", -c)
            }
            RestartReason::Died { exitcode: Some(c) } => write!(f, "exited with {c}"),
            RestartReason::Died { exitcode: None } => f.write_str("died"),
            RestartReason::Timeout => f.write_str("killed by the task timeout"),
            RestartReason::MaxTasks => f.write_str("retired at maxtasksperchild"),
        }
    }
}

/// One worker that was replaced: its pid and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restart {
    /// The pid of the worker that was replaced.
    pub pid: u32,
    /// Why.
    pub reason: RestartReason,
}

/// One worker slot of a pool: the worker there now and those it replaced, added up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInsights {
    /// The slot's number (0 to the pool's size less one).
    pub slot: usize,
    /// The pid of the worker there now, if one is.
    pub pid: Option<u32>,
    /// Tasks finished by the slot's workers (a result, value or error, that reached the pool;
    /// the task a worker died running is not counted: it was not finished).
    pub tasks: u64,
    /// Time spent on tasks (decoding their arguments, running them, encoding their results).
    pub busy: Duration,
    /// Time spent waiting for work.
    pub waiting: Duration,
    /// Time spent receiving tasks' arguments and sending results.
    pub io: Duration,
    /// Time from starting a worker until it was ready for work (its initializer included),
    /// added up over the slot's workers.
    pub startup: Duration,
    /// How many times a worker of this slot was replaced, by reason: died.
    pub died: u64,
    /// ... killed by the task timeout.
    pub timed_out: u64,
    /// ... retired at `maxtasksperchild`.
    pub retired: u64,
    /// The latest replacements (at most 8), the oldest first.
    pub recent_restarts: Vec<Restart>,
}

impl WorkerInsights {
    /// How many times a worker of this slot was replaced.
    pub fn restarts(&self) -> u64 {
        self.died + self.timed_out + self.retired
    }

    /// Time spent on overhead: start-up, receiving and sending.
    pub fn overhead(&self) -> Duration {
        self.startup.saturating_add(self.io)
    }
}

/// One of the slowest tasks of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlowTask {
    /// The call it belonged to (the `call` of [`ProgressUpdate`](crate::ProgressUpdate)).
    pub call: u64,
    /// Its index in the call's input.
    pub index: u64,
    /// How many tasks were timed together: 1, or a chunk of quick tasks (`index` is then the
    /// chunk's first), timed as one to keep the clock off the path of each.
    pub tasks: u64,
    /// How long it took in the worker (decoding, running, encoding).
    pub duration: Duration,
    /// The worker that ran it.
    pub pid: u32,
}

/// What a pool's workers did: [`Pool::insights`](crate::Pool::insights) (mpire's
/// `get_insights`). Counted all along (the counters are in each worker's shared segment, and
/// cost a few stores per task), and `Display`ed as a small table.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// # fn main() -> Result<(), mp_pool::Error> {
/// let pool = mp_pool::Pool::new(2)?;
/// pool.map(square, 0..1000)?;
/// let insights = pool.insights();
/// assert_eq!(insights.tasks(), 1000);
/// println!("{insights}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Insights {
    /// Per worker slot.
    pub workers: Vec<WorkerInsights>,
    /// The slowest tasks (at most 5), the slowest first.
    pub slowest: Vec<SlowTask>,
    /// The time since the pool was made.
    pub uptime: Duration,
}

impl Insights {
    /// Tasks finished by every worker.
    pub fn tasks(&self) -> u64 {
        self.workers.iter().map(|w| w.tasks).sum()
    }

    /// Workers replaced, for every reason.
    pub fn restarts(&self) -> u64 {
        self.workers.iter().map(WorkerInsights::restarts).sum()
    }

    /// Time spent on tasks by every worker.
    pub fn busy(&self) -> Duration {
        self.workers.iter().map(|w| w.busy).sum()
    }

    /// Time spent on overhead (start-up, receiving, sending) by every worker.
    pub fn overhead(&self) -> Duration {
        self.workers.iter().map(WorkerInsights::overhead).sum()
    }

    /// Time spent waiting for work by every worker.
    pub fn waiting(&self) -> Duration {
        self.workers.iter().map(|w| w.waiting).sum()
    }

    /// The share of the workers' time that went to tasks rather than overhead, from 0 to 1
    /// (time spent waiting for work counts for neither); 0 before any.
    pub fn work_share(&self) -> f64 {
        let (work, over) = (self.busy().as_secs_f64(), self.overhead().as_secs_f64());
        if work + over > 0.0 { work / (work + over) } else { 0.0 }
    }
}

/// A duration for the table: `812ms`, `3.21s`, `45µs`.
fn short(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 100.0 {
        format!("{s:.0}s")
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 1e-3 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

impl fmt::Display for Insights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "worker", "pid", "tasks", "busy", "waiting", "io", "start-up", "restarts"
        )?;
        for w in &self.workers {
            let pid = w.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            writeln!(
                f,
                "{:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}",
                w.slot,
                pid,
                w.tasks,
                short(w.busy),
                short(w.waiting),
                short(w.io),
                short(w.startup),
                w.restarts()
            )?;
            for r in &w.recent_restarts {
                writeln!(f, "{:>6} replaced pid {}: {}", "", r.pid, r.reason)?;
            }
        }
        writeln!(
            f,
            "total: {} tasks in {}, {} restarts; work {:.1}%, overhead {:.1}% (start-up, receiving, sending)",
            self.tasks(),
            short(self.uptime),
            self.restarts(),
            100.0 * self.work_share(),
            if self.busy() + self.overhead() > Duration::ZERO {
                100.0 - 100.0 * self.work_share()
            } else {
                0.0
            },
        )?;
        if !self.slowest.is_empty() {
            write!(f, "slowest:")?;
            for (k, s) in self.slowest.iter().enumerate() {
                let sep = if k == 0 { " " } else { ", " };
                if s.tasks > 1 {
                    write!(
                        f,
                        "{sep}call {} tasks {}..{} {}",
                        s.call,
                        s.index,
                        s.index + s.tasks,
                        short(s.duration)
                    )?;
                } else {
                    write!(f, "{sep}call {} task {} {}", s.call, s.index, short(s.duration))?;
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A worker running in a slot, as the book sees it.
struct Live {
    pid: u32,
    segment: Arc<mp_shm::SharedMemory>,
    /// When it was started, in `proto::monotonic_ns`.
    spawned_ns: u64,
}

/// Counters of the workers of one slot that are gone, and the one running now.
#[derive(Default)]
struct SlotBook {
    live: Option<Live>,
    tasks: u64,
    busy_ns: u64,
    wait_ns: u64,
    io_ns: u64,
    startup_ns: u64,
    died: u64,
    timed_out: u64,
    retired: u64,
    recent: VecDeque<Restart>,
}

/// A worker's segment, read: its counters and its slowest tasks.
struct Reading {
    tasks: u64,
    busy_ns: u64,
    wait_ns: u64,
    io_ns: u64,
    startup_ns: u64,
    slow: Vec<SlowTask>,
}

impl Live {
    fn read(&self) -> Reading {
        let words = meter::words(&self.segment);
        let [tasks, busy_ns, wait_ns, io_ns, ready] = meter::read_counters(words);
        let startup_ns = if ready > 0 { ready.saturating_sub(self.spawned_ns) } else { 0 };
        // A worker writing its list when asked is read again; one that died writing it
        // leaves it torn, and its list is left out.
        let slow = (0..64).find_map(|_| meter::read_slow(words)).unwrap_or_default();
        let slow = slow
            .into_iter()
            .map(|[call, index, tasks, ns]| SlowTask {
                call,
                index,
                tasks,
                duration: Duration::from_nanos(ns),
                pid: self.pid,
            })
            .collect();
        Reading { tasks, busy_ns, wait_ns, io_ns, startup_ns, slow }
    }
}

/// What [`Insights`] are made of, kept by the collector in the pool's state.
pub(crate) struct Book {
    created: Instant,
    slots: Vec<SlotBook>,
    /// The slowest tasks of the workers that are gone.
    slowest: Vec<SlowTask>,
}

impl Book {
    pub fn new(processes: usize) -> Book {
        Book {
            created: Instant::now(),
            slots: (0..processes).map(|_| SlotBook::default()).collect(),
            slowest: Vec::new(),
        }
    }

    /// A worker started in `slot`.
    pub fn started(
        &mut self,
        slot: usize,
        pid: u32,
        segment: Arc<mp_shm::SharedMemory>,
        spawned_ns: u64,
    ) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.live = Some(Live { pid, segment, spawned_ns });
        }
    }

    /// The worker of `slot` is gone (`why`, if it is to be replaced; `None` when the pool
    /// stops): its counters are added to the slot's.
    pub fn gone(&mut self, slot: usize, why: Option<RestartReason>) {
        let Some(s) = self.slots.get_mut(slot) else { return };
        let Some(live) = s.live.take() else { return };
        let r = live.read();
        s.tasks += r.tasks;
        s.busy_ns += r.busy_ns;
        s.wait_ns += r.wait_ns;
        s.io_ns += r.io_ns;
        s.startup_ns += r.startup_ns;
        self.slowest = merge_slowest(std::mem::take(&mut self.slowest), r.slow);
        if let Some(reason) = why {
            match reason {
                RestartReason::Died { .. } => s.died += 1,
                RestartReason::Timeout => s.timed_out += 1,
                RestartReason::MaxTasks => s.retired += 1,
            }
            if s.recent.len() >= RECENT_RESTARTS {
                s.recent.pop_front();
            }
            s.recent.push_back(Restart { pid: live.pid, reason });
        }
    }

    /// The insights now.
    pub fn insights(&self) -> Insights {
        let mut slowest = self.slowest.clone();
        let mut workers = Vec::with_capacity(self.slots.len());
        for (slot, s) in self.slots.iter().enumerate() {
            let now = s.live.as_ref().map(Live::read);
            let add = |past: u64, f: fn(&Reading) -> u64| past + now.as_ref().map_or(0, f);
            let ns = |past: u64, f: fn(&Reading) -> u64| Duration::from_nanos(add(past, f));
            workers.push(WorkerInsights {
                slot,
                pid: s.live.as_ref().map(|l| l.pid),
                tasks: add(s.tasks, |r| r.tasks),
                busy: ns(s.busy_ns, |r| r.busy_ns),
                waiting: ns(s.wait_ns, |r| r.wait_ns),
                io: ns(s.io_ns, |r| r.io_ns),
                startup: ns(s.startup_ns, |r| r.startup_ns),
                died: s.died,
                timed_out: s.timed_out,
                retired: s.retired,
                recent_restarts: s.recent.iter().copied().collect(),
            });
            if let Some(r) = now {
                slowest = merge_slowest(slowest, r.slow);
            }
        }
        Insights { workers, slowest, uptime: self.created.elapsed() }
    }
}

/// The slowest of two lists, at most `proto::SLOWEST`, the slowest first.
fn merge_slowest(mut a: Vec<SlowTask>, b: Vec<SlowTask>) -> Vec<SlowTask> {
    a.extend(b);
    a.sort_by_key(|t| std::cmp::Reverse(t.duration));
    a.truncate(crate::proto::SLOWEST);
    a
}
