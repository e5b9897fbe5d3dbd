//! Progress of bulk calls: [`Progress`] (what to report to: a terminal bar, a callback, a
//! stream of [`ProgressUpdate`]s), and the per-call state the pool keeps for it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The least time between two updates of one call (at most 20 a second), besides its first
/// and last.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

/// How many updates a [`ProgressEvents`] keeps unread; past it the oldest are dropped.
const EVENTS_KEPT: usize = 1024;

/// Where one call's progress stands: sent to a [`Progress`] callback or stream as results
/// arrive (at most every [`DEFAULT_INTERVAL`], and always once when the call finishes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressUpdate {
    /// Which call of the pool this is about (calls are numbered from 0 in the order they
    /// were made); several calls may report to one callback or stream.
    pub call: u64,
    /// Tasks finished: their results (values or errors) have arrived.
    pub done: u64,
    /// Of those, the tasks that failed (a panic, a worker's death, a timeout, ...).
    pub failed: u64,
    /// How many tasks the call has, when known: at once for `map` and `starmap` and for
    /// `imap` of an input of exact length, else once the input has ended.
    pub total: Option<u64>,
    /// The time since the call was made.
    pub elapsed: Duration,
    /// The call is over: every result is in, or the pool stopped it. This is the last update
    /// of the call.
    pub finished: bool,
}

/// What a bulk call ([`Pool::map`](crate::Pool::map), `starmap`, `imap`, `imap_unordered` and
/// their async and chunked forms) reports its progress to: a terminal bar, a callback, or a
/// stream of [`ProgressUpdate`]s.
///
/// Give it to one call with [`AsyncResult::with_progress`](crate::AsyncResult::with_progress)
/// or [`Imap::with_progress`](crate::Imap::with_progress), or to every bulk call of a pool
/// with [`PoolBuilder::progress`](crate::PoolBuilder::progress) (and [`Progress::none`] to
/// turn it off for one call).
///
/// Progress counts tasks whose results have arrived in the pool's process, as they arrive, so
/// a task counts once whatever happens to workers: a task that killed its worker counts as
/// done and failed, the tasks requeued after the death count when they finish elsewhere.
/// Updates come at most every [`DEFAULT_INTERVAL`] per call
/// ([`with_interval`](Progress::with_interval)), plus the first and the last; between them
/// the pool only counts, so progress costs nothing measurable on a map of tiny tasks.
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// # fn main() -> Result<(), mp_pool::Error> {
/// let pool = mp_pool::Pool::new(2)?;
/// let last = Arc::new(Mutex::new(None));
/// let seen = last.clone();
/// let progress = mp_pool::Progress::callback(move |u| *seen.lock().unwrap() = Some(*u));
/// let squares = pool.map_async(square, 0..100)?.with_progress(progress).get()?;
/// assert_eq!(squares.len(), 100);
/// let last = last.lock().unwrap().unwrap();
/// assert_eq!((last.done, last.failed, last.total, last.finished), (100, 0, Some(100), true));
/// # Ok(())
/// # }
/// ```
///
/// # Threads
/// Callbacks and the bar run in the pool's process, on the thread that saw the results
/// arrive: usually the pool's collector thread, so a callback must be quick and must not wait
/// for results of the same pool (as [`AsyncResult::with_callbacks`](crate::AsyncResult::with_callbacks)).
/// A panicking callback is caught and the pool goes on.
#[derive(Clone)]
pub struct Progress {
    sink: Sink,
    interval: Duration,
}

/// What a [`Progress`] reports to.
#[derive(Clone)]
enum Sink {
    None,
    Callback(Arc<dyn Fn(&ProgressUpdate) + Send + Sync>),
    Events(EventsSender),
    #[cfg(feature = "progress")]
    Bar {
        always: bool,
    },
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = match &self.sink {
            Sink::None => "none",
            Sink::Callback(_) => "callback",
            Sink::Events(_) => "events",
            #[cfg(feature = "progress")]
            Sink::Bar { .. } => "bar",
        };
        f.debug_struct("Progress").field("sink", &sink).field("interval", &self.interval).finish()
    }
}

impl Progress {
    /// A bar on stderr (`indicatif`): tasks done out of the total, rate, elapsed time and
    /// estimated time left, and failed tasks if any; a spinner with a count while the total is
    /// unknown. It draws nothing when stderr is not a terminal (or `TERM` is `dumb`), unless
    /// [`with_draw_always`](Progress::with_draw_always). Feature `progress`.
    #[cfg(feature = "progress")]
    pub fn bar() -> Progress {
        Progress { sink: Sink::Bar { always: false }, interval: DEFAULT_INTERVAL }
    }

    /// For [`Progress::bar`]: draw even when stderr is not a terminal (a log file, CI), as
    /// plain text lines rewritten with carriage returns. No effect on other kinds.
    pub fn with_draw_always(self, always: bool) -> Progress {
        #[cfg(feature = "progress")]
        if let Sink::Bar { .. } = self.sink {
            return Progress { sink: Sink::Bar { always }, ..self };
        }
        #[cfg(not(feature = "progress"))]
        let _ = always;
        self
    }

    /// Calls `f` with each [`ProgressUpdate`].
    pub fn callback(f: impl Fn(&ProgressUpdate) + Send + Sync + 'static) -> Progress {
        Progress { sink: Sink::Callback(Arc::new(f)), interval: DEFAULT_INTERVAL }
    }

    /// A stream of the updates, for a program that draws its own (a GUI, a web page): the
    /// [`Progress`] to give to calls, and the receiving end, an [`Iterator`] and a
    /// [`futures_core::Stream`] that ends once every copy of the `Progress` and every call
    /// reporting to it are gone.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// # fn main() -> Result<(), mp_pool::Error> {
    /// let pool = mp_pool::Pool::new(2)?;
    /// let (progress, events) = mp_pool::Progress::events();
    /// pool.map_async(square, 0..10)?.with_progress(progress).get()?;
    /// let last = events.last().unwrap();
    /// assert_eq!((last.done, last.total, last.finished), (10, Some(10), true));
    /// # Ok(())
    /// # }
    /// ```
    pub fn events() -> (Progress, ProgressEvents) {
        let shared = Arc::new(EventsShared::default());
        let sender = EventsSender::new(shared.clone());
        (
            Progress { sink: Sink::Events(sender), interval: DEFAULT_INTERVAL },
            ProgressEvents { shared },
        )
    }

    /// No progress: turns a pool's default ([`PoolBuilder::progress`](crate::PoolBuilder::progress))
    /// off for one call.
    pub fn none() -> Progress {
        Progress { sink: Sink::None, interval: DEFAULT_INTERVAL }
    }

    /// Sets the least time between two updates of a call (default [`DEFAULT_INTERVAL`]); the
    /// first and last update of a call always come.
    pub fn with_interval(mut self, interval: Duration) -> Progress {
        self.interval = interval;
        self
    }

    /// The reporter of call `call` (made at `started`), or `None` for [`Progress::none`].
    pub(crate) fn start(
        &self,
        call: u64,
        total: Option<u64>,
        started: Instant,
    ) -> Option<JobProgress> {
        let reporter = match &self.sink {
            Sink::None => return None,
            Sink::Callback(f) => Reporter::Callback(f.clone()),
            Sink::Events(s) => Reporter::Events(s.clone()),
            #[cfg(feature = "progress")]
            Sink::Bar { always } => Reporter::Bar(bar::Bar::new(total, started, *always)),
        };
        Some(JobProgress {
            reporter: Arc::new(reporter),
            call,
            started,
            hint: total,
            interval: self.interval,
            last: None,
            dirty: false,
            finished: false,
        })
    }
}

/// What one call reports to.
pub(crate) enum Reporter {
    Callback(Arc<dyn Fn(&ProgressUpdate) + Send + Sync>),
    Events(EventsSender),
    #[cfg(feature = "progress")]
    Bar(bar::Bar),
}

impl Reporter {
    /// Reports one update (a panic in a callback is caught by the caller).
    pub(crate) fn report(&self, update: &ProgressUpdate) {
        match self {
            Reporter::Callback(f) => f(update),
            Reporter::Events(s) => s.send(*update),
            #[cfg(feature = "progress")]
            Reporter::Bar(b) => b.show(update),
        }
    }
}

/// An update to deliver, outside the pool's lock.
pub(crate) type Pending = (Arc<Reporter>, ProgressUpdate);

/// The progress state of one call (job).
pub(crate) struct JobProgress {
    reporter: Arc<Reporter>,
    call: u64,
    started: Instant,
    /// The total known when the call was made, if any (the job's count once its input ends
    /// takes over).
    hint: Option<u64>,
    interval: Duration,
    /// When the last update was made.
    last: Option<Instant>,
    /// Results arrived since the last update.
    pub dirty: bool,
    /// The last update was made.
    finished: bool,
}

impl JobProgress {
    fn update(
        &mut self,
        done: u64,
        failed: u64,
        expected: Option<u64>,
        now: Instant,
        finished: bool,
    ) -> Pending {
        self.last = Some(now);
        self.dirty = false;
        self.finished |= finished;
        let update = ProgressUpdate {
            call: self.call,
            done,
            failed,
            total: expected.or(self.hint),
            elapsed: now.saturating_duration_since(self.started),
            finished,
        };
        (self.reporter.clone(), update)
    }

    /// Counts arrivals: an update if the interval has passed since the last, else `Err` with
    /// when one is due.
    pub fn tick(
        &mut self,
        done: u64,
        failed: u64,
        expected: Option<u64>,
    ) -> Result<Pending, Instant> {
        let now = Instant::now();
        if self.finished {
            return Err(now + self.interval);
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.dirty = true;
                Err(last + self.interval)
            }
            _ => Ok(self.update(done, failed, expected, now, false)),
        }
    }

    /// The update due now, if arrivals were held back and the interval has passed; else
    /// when one will be due, if any.
    pub fn due(
        &mut self,
        done: u64,
        failed: u64,
        expected: Option<u64>,
        now: Instant,
    ) -> Result<Pending, Option<Instant>> {
        if !self.dirty || self.finished {
            return Err(None);
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                Err(Some(last + self.interval))
            }
            _ => Ok(self.update(done, failed, expected, now, false)),
        }
    }

    /// The first update (at once, whatever the interval), or the last if `finished`.
    pub fn now(
        &mut self,
        done: u64,
        failed: u64,
        expected: Option<u64>,
        finished: bool,
    ) -> Option<Pending> {
        if self.finished {
            return None;
        }
        Some(self.update(done, failed, expected, Instant::now(), finished))
    }
}

/// Delivers updates taken from the pool's state, in order, catching panics.
pub(crate) fn deliver(updates: Vec<Pending>) {
    for (reporter, update) in updates {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reporter.report(&update)));
    }
}

/// The state of a [`ProgressEvents`] stream shared with its senders.
#[derive(Default)]
struct EventsShared {
    queue: Mutex<EventsQueue>,
    cv: Condvar,
    senders: AtomicUsize,
}

#[derive(Default)]
struct EventsQueue {
    updates: VecDeque<ProgressUpdate>,
    waker: Option<Waker>,
    closed: bool,
}

impl EventsShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, EventsQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A sending end of a [`ProgressEvents`] stream; the stream ends when the last is dropped.
pub(crate) struct EventsSender(Arc<EventsShared>);

impl EventsSender {
    fn new(shared: Arc<EventsShared>) -> EventsSender {
        shared.senders.fetch_add(1, Ordering::AcqRel);
        EventsSender(shared)
    }

    fn send(&self, update: ProgressUpdate) {
        let mut q = self.0.lock();
        if q.updates.len() >= EVENTS_KEPT {
            q.updates.pop_front();
        }
        q.updates.push_back(update);
        let waker = q.waker.take();
        drop(q);
        self.0.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Clone for EventsSender {
    fn clone(&self) -> Self {
        EventsSender::new(self.0.clone())
    }
}

impl Drop for EventsSender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut q = self.0.lock();
            q.closed = true;
            let waker = q.waker.take();
            drop(q);
            self.0.cv.notify_all();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The receiving end of [`Progress::events`]: every [`ProgressUpdate`] of the calls given its
/// `Progress`, in order (per call), as an [`Iterator`] (whose `next` blocks) and a
/// [`futures_core::Stream`]. It ends once every copy of the `Progress` (a pool's default
/// included) and every call reporting to it are gone. At most 1,024 unread updates are kept;
/// past that the oldest are dropped (updates are snapshots: the newest tells all).
pub struct ProgressEvents {
    shared: Arc<EventsShared>,
}

impl std::fmt::Debug for ProgressEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressEvents").finish_non_exhaustive()
    }
}

impl ProgressEvents {
    /// The updates that have arrived, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = ProgressUpdate> + '_ {
        std::iter::from_fn(|| self.shared.lock().updates.pop_front())
    }

    /// The next update, waiting at most `timeout`: `None` if none came (or the stream ended).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<ProgressUpdate> {
        let deadline = Instant::now().checked_add(timeout);
        let mut q = self.shared.lock();
        loop {
            if let Some(u) = q.updates.pop_front() {
                return Some(u);
            }
            if q.closed {
                return None;
            }
            match deadline {
                None => q = self.shared.cv.wait(q).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    q = self
                        .shared
                        .cv
                        .wait_timeout(q, d - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }
}

impl Iterator for ProgressEvents {
    type Item = ProgressUpdate;

    fn next(&mut self) -> Option<ProgressUpdate> {
        let mut q = self.shared.lock();
        loop {
            if let Some(u) = q.updates.pop_front() {
                return Some(u);
            }
            if q.closed {
                return None;
            }
            q = self.shared.cv.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl futures_core::Stream for ProgressEvents {
    type Item = ProgressUpdate;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProgressUpdate>> {
        let mut q = self.shared.lock();
        if let Some(u) = q.updates.pop_front() {
            return Poll::Ready(Some(u));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The terminal bar (feature `progress`).
#[cfg(feature = "progress")]
mod bar {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

    use super::ProgressUpdate;

    const BAR: &str = "{wide_bar} {pos}/{len} [{elapsed_precise}<{eta_precise}, {rate}]{msg}";
    const SPINNER: &str = "{spinner} {pos} tasks [{elapsed_precise}, {rate}]{msg}";

    /// One call's bar.
    pub(crate) struct Bar {
        bar: ProgressBar,
        /// Drawn as plain text to a stderr that is not a terminal.
        plain: bool,
        /// It was shown (an update came): only then is it left on the screen when dropped.
        shown: AtomicBool,
    }

    impl Bar {
        pub fn new(total: Option<u64>, started: Instant, always: bool) -> Bar {
            let target = ProgressDrawTarget::stderr();
            let plain = always && target.is_hidden();
            let target = if plain {
                ProgressDrawTarget::term_like_with_hz(Box::new(Plain), 2)
            } else {
                target
            };
            let bar = ProgressBar::with_draw_target(total, target).with_elapsed(started.elapsed());
            set_style(&bar, total.is_some());
            Bar { bar, plain, shown: AtomicBool::new(false) }
        }

        pub fn show(&self, u: &ProgressUpdate) {
            self.shown.store(true, Ordering::Relaxed);
            if let Some(total) = u.total {
                if self.bar.length() != Some(total) {
                    set_style(&self.bar, true);
                    self.bar.set_length(total);
                }
            }
            if u.failed > 0 {
                self.bar.set_message(format!(" {} failed", u.failed));
            }
            self.bar.set_position(u.done);
            if u.finished {
                if u.total.is_none_or(|t| u.done >= t) {
                    self.bar.finish();
                } else {
                    self.bar.abandon();
                }
                // The bar stays; what the program prints next goes below it.
                self.end_line();
            }
        }
    }

    impl Bar {
        /// Ends the bar's line, if it was drawn (on a terminal, or as plain text).
        fn end_line(&self) {
            if self.plain || !self.bar.is_hidden() {
                let _ = std::io::stderr().write_all(b"\n");
            }
        }
    }

    impl Drop for Bar {
        fn drop(&mut self) {
            if self.shown.load(Ordering::Relaxed) && !self.bar.is_finished() {
                self.bar.abandon();
                self.end_line();
            }
        }
    }

    fn set_style(bar: &ProgressBar, known: bool) {
        let template = if known { BAR } else { SPINNER };
        if let Ok(style) = ProgressStyle::with_template(template) {
            let style = style.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} tasks/s", state.per_sec());
                },
            );
            bar.set_style(style.progress_chars("=> "));
        }
    }

    /// A stderr that is not a terminal: the bar as a line rewritten with carriage returns.
    #[derive(Debug)]
    struct Plain;

    impl indicatif::TermLike for Plain {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            std::io::stderr().write_all(s.as_bytes())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            std::io::stderr().write_all(s.as_bytes())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            std::io::stderr().write_all(b"\r")
        }
        fn flush(&self) -> std::io::Result<()> {
            std::io::stderr().flush()
        }
    }
}
