//! `AsyncResult` (Python's `AsyncResult`, also a `Future`) and the `imap` iterators (also
//! `Stream`s).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use mp_process::fdpass;

use crate::error::{Error, Result};
use crate::state::{Chunk, Job, Raw, Shared, State, Store};

/// Turns a completed job's store into the caller's value.
pub(crate) type Decode<T> = fn(&Store) -> Result<T>;

/// The value of a one-task job.
pub(crate) fn decode_one<R: DeserializeOwned>(store: &Store) -> Result<R> {
    let slot = match store {
        Store::One(one) => one.as_ref(),
        Store::Dense(m, _) => m.get(&0),
        Store::Sparse(_) => None,
    };
    match slot {
        Some(Ok(raw)) => raw.decode(),
        Some(Err(e)) => Err(e.duplicate()),
        None => Err(Error::Terminated),
    }
}

/// The values of a map job, or the error of the first task that failed.
pub(crate) fn decode_vec<R: DeserializeOwned>(store: &Store) -> Result<Vec<R>> {
    let Store::Dense(m, len) = store else { return Err(Error::Terminated) };
    // Keys are in task order, so the first error met is that of the first failed task.
    if let Some(e) = m.values().find_map(|s| s.as_ref().err()) {
        return Err(e.duplicate());
    }
    let mut out = Vec::with_capacity(*len);
    for (index, slot) in m {
        if *index != out.len() as u64 {
            return Err(Error::Terminated);
        }
        if let Ok(raw) = slot {
            raw.decode_all(&mut out)?;
        }
    }
    if out.len() != *len {
        return Err(Error::Terminated);
    }
    Ok(out)
}

/// The outcome of a job: its failure as a whole, else its store decoded.
fn outcome<T>(job: &Job, decode: Decode<T>) -> Result<T> {
    // A task error recorded before the pool stopped takes precedence (CPython's rule: the
    // first error of the call).
    match (&job.failed, decode(&job.store)) {
        (Some(Error::Interrupted), _) => Err(Error::Interrupted),
        (_, Err(e)) if !matches!(e, Error::Terminated) => Err(e),
        (Some(f), _) => Err(f.duplicate()),
        (None, r) => r,
    }
}

/// The result of an `apply_async`, `map_async` or `starmap_async` call: Python's
/// `AsyncResult`.
///
/// It is also a [`Future`](std::future::Future): an async program awaits it without blocking a
/// thread and without any particular runtime (the pool's collector thread wakes the task).
///
/// Dropping it before the result arrives is allowed: the task still runs and its result is
/// discarded. Every outstanding result resolves, as [`Error::Terminated`] (or the reason the
/// pool stopped), when the pool is terminated or dropped.
pub struct AsyncResult<T> {
    shared: Arc<Shared>,
    job: u64,
    decode: Decode<T>,
    taken: bool,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("job", &self.job).field("ready", &self.ready()).finish()
    }
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(shared: Arc<Shared>, job: u64, decode: Decode<T>) -> Self {
        AsyncResult { shared, job, decode, taken: false }
    }

    /// Waits for the result and returns it (Python's `get()`): the task's value, or its error.
    pub fn get(mut self) -> Result<T> {
        self.take(None)
    }

    /// Waits at most `timeout` for the result: [`Error::Timeout`] if it is not ready by then
    /// (after at least `timeout`; the task keeps running and a later call can still take the
    /// result). Once a value or task error has been returned, later calls return
    /// [`Error::InvalidArgument`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T> {
        self.take(Instant::now().checked_add(timeout))
    }

    fn take(&mut self, deadline: Option<Instant>) -> Result<T> {
        self.shared.check_process()?;
        if self.taken {
            return Err(Error::InvalidArgument("the result was already taken"));
        }
        let Some(mut g) = self.wait_until(deadline) else {
            return Err(Error::Timeout);
        };
        let job = g.jobs.remove(&self.job);
        drop(g);
        self.taken = true;
        match job {
            Some(j) => outcome(&j, self.decode),
            None => Err(Error::Terminated),
        }
    }

    /// Waits up to `deadline` for the job to be complete; the state, still locked, once it is.
    fn wait_until(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, State>> {
        let mut g = self.shared.lock();
        loop {
            match g.jobs.get(&self.job) {
                Some(j) if !j.complete => {}
                _ => return Some(g),
            }
            match deadline {
                None => g = self.shared.wait(g),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    g = self.shared.wait_timeout(g, d - now);
                }
            }
        }
    }

    /// Waits until the result is ready (Python's `wait()`).
    pub fn wait(&self) {
        if self.shared.check_process().is_ok() {
            drop(self.wait_until(None));
        }
    }

    /// Waits at most `timeout`; whether the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.shared.check_process().is_ok()
            && self.wait_until(Instant::now().checked_add(timeout)).is_some()
    }

    /// Whether the result is ready (Python's `ready()`).
    pub fn ready(&self) -> bool {
        match self.shared.lock().jobs.get(&self.job) {
            Some(j) => j.complete,
            None => true,
        }
    }

    /// Whether the call succeeded: `None` while not ready (Python raises `ValueError`).
    pub fn successful(&self) -> Option<bool> {
        let g = self.shared.lock();
        let j = g.jobs.get(&self.job)?;
        if !j.complete {
            return None;
        }
        let failed = j.failed.is_some()
            || match &j.store {
                Store::One(one) => one.as_ref().is_some_and(Result::is_err),
                Store::Dense(m, _) => m.values().any(Result::is_err),
                Store::Sparse(m) => m.values().any(Result::is_err),
            };
        Some(!failed)
    }
}

impl<T> AsyncResult<T> {
    /// Reports the call's progress to `progress` (a bar, a callback or a stream: see
    /// [`Progress`](crate::Progress)) instead of the pool's default, if it has one
    /// ([`Progress::none`](crate::Progress::none): nowhere). An update is made at once, with
    /// the tasks already done (the call's time counts from when it was made), and the last
    /// when every result is in.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// # fn main() -> Result<(), mp_pool::Error> {
    /// let pool = mp_pool::Pool::new(2)?;
    /// let (progress, events) = mp_pool::Progress::events();
    /// let squares = pool.map_async(square, 0..1000)?.with_progress(progress).get()?;
    /// assert_eq!(squares.len(), 1000);
    /// let last = events.last().unwrap();
    /// assert_eq!((last.done, last.total, last.finished), (1000, Some(1000), true));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_progress(self, progress: crate::Progress) -> Self {
        if self.shared.check_process().is_ok() {
            let mut g = self.shared.lock();
            let hint = g.jobs.get(&self.job).and_then(|j| j.expected);
            g.attach_progress(self.job, &progress, hint, true);
            drop(g);
            self.shared.deliver_progress();
        }
        self
    }
}

impl<T: 'static> AsyncResult<T> {
    /// Registers Python's `callback` and `error_callback` (of `apply_async`, `map_async` and
    /// `starmap_async`): `on_ok` receives the value, or `on_err` the error, once every task
    /// of the call has finished. [`get`](AsyncResult::get) still returns the result (the value
    /// is decoded again for it; the error is a copy).
    ///
    /// # Where a callback runs
    /// Always in the pool's process, never in a worker (so it may capture anything `Send`).
    /// Normally on the pool's collector thread (`mp-pool-collector`), the thread that hands
    /// tasks to the workers and reads their results, as CPython runs callbacks on its
    /// result-handler thread. If the call has already finished when this is called, the
    /// callback runs at once, on the calling thread, before this returns; a thread of this
    /// process that calls into the pool (submitting a call, iterating an [`Imap`]) may also
    /// run the callbacks of calls that finished just then.
    ///
    /// The result counts as ready ([`ready`](AsyncResult::ready), [`wait`](AsyncResult::wait),
    /// [`get`](AsyncResult::get), the `Future`) only once its callback has returned.
    ///
    /// # What a callback must not do
    /// - Block, or take long: while it runs on the collector thread, the whole pool stands
    ///   still (no task is handed out, no result read, no dead worker replaced, no task
    ///   timeout enforced). Hand long work to another thread.
    /// - Wait for another result of the same pool (`get`, `wait`, `map`, `apply` inside the
    ///   callback): that result cannot arrive while the collector waits for the callback, so
    ///   it deadlocks.
    ///
    /// It may drop, close or terminate the pool (the collector stops once it returns).
    ///
    /// # Panics in a callback
    /// A panic is caught (the panic hook prints it, as for any panic) and goes no further: the
    /// pool goes on, the result still becomes ready, and `get` returns the task's value or
    /// error as if the callback had returned.
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// # fn main() -> Result<(), mp_pool::Error> {
    /// let pool = mp_pool::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let result = pool
    ///     .map_async(square, 1..=3)?
    ///     .with_callbacks(move |squares| tx.send(squares).unwrap(), |e| eprintln!("failed: {e}"));
    /// assert_eq!(result.get()?, [1, 4, 9]);
    /// assert_eq!(rx.recv().unwrap(), [1, 4, 9], "the callback ran before get returned");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_callbacks(
        self,
        on_ok: impl FnOnce(T) + Send + 'static,
        on_err: impl FnOnce(Error) + Send + 'static,
    ) -> Self {
        let decode = self.decode;
        let run = move |store: &Store, failed: Option<&Error>| {
            let r = match failed {
                Some(f) => match decode(store) {
                    Err(e) if !matches!(e, Error::Terminated) => Err(e),
                    _ => Err(f.duplicate()),
                },
                None => decode(store),
            };
            match r {
                Ok(v) => on_ok(v),
                Err(e) => on_err(e),
            }
        };
        let mut g = self.shared.lock();
        match g.jobs.get_mut(&self.job) {
            Some(j) if !j.complete => {
                j.callback = Some(Box::new(run));
                drop(g);
            }
            Some(j) => {
                let store = std::mem::replace(&mut j.store, Store::One(None));
                let failed = j.failed.as_ref().map(Error::duplicate);
                drop(g);
                let _ = catch_unwind(AssertUnwindSafe(|| run(&store, failed.as_ref())));
                if let Some(j) = self.shared.lock().jobs.get_mut(&self.job) {
                    j.store = store;
                }
            }
            None => drop(g),
        }
        self
    }
}

impl<T> std::future::Future for AsyncResult<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if let Err(e) = self.shared.check_process() {
            return Poll::Ready(Err(e));
        }
        if self.taken {
            return Poll::Ready(Err(Error::InvalidArgument("the result was already taken")));
        }
        let mut g = self.shared.lock();
        match g.jobs.get_mut(&self.job) {
            Some(j) if !j.complete => {
                j.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => {
                let job = g.jobs.remove(&self.job);
                drop(g);
                self.taken = true;
                Poll::Ready(match job {
                    Some(j) => outcome(&j, self.decode),
                    None => Err(Error::Terminated),
                })
            }
        }
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        if self.taken || self.shared.check_process().is_err() {
            return;
        }
        let mut g = self.shared.lock();
        match g.jobs.get_mut(&self.job) {
            Some(j) if j.complete => {
                g.jobs.remove(&self.job);
            }
            Some(j) => j.abandoned = true,
            None => {}
        }
    }
}

/// The lazy iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): it pulls its input only as results
/// are consumed, keeping a bounded number of tasks
/// ([`with_max_in_flight`](Imap::with_max_in_flight)) submitted and not yet yielded. It is
/// also a [`futures_core::Stream`].
///
/// Each item is one task's result. After the pool is terminated the iterator yields the
/// reason once, then ends.
///
/// # Reading ahead
/// The input is read in chunks, on the caller's thread, while results are taken (in `next`
/// or `poll_next`): at most [`with_max_in_flight`](Imap::with_max_in_flight) tasks (by
/// default the larger of 256 and four chunks per worker) are submitted and not yet yielded,
/// so a long or endless input is never read far ahead. An input that panics ends the input:
/// the result in that item's place is [`Error::Input`] with the panic's message, yielded
/// after the results of the items before it, and the iterator then ends (CPython's `imap`
/// yields the iterable's exception in its turn).
pub struct Imap<I: Iterator, R> {
    shared: Arc<Shared>,
    job: u64,
    input: Option<I>,
    entry: crate::proto::TaskEntry,
    ordered: bool,
    chunksize: usize,
    /// The bound set by [`Imap::with_max_in_flight`], if one was.
    max_in_flight: Option<usize>,
    processes: usize,
    submitted: u64,
    /// Results taken from the job and not yet yielded, in the order they are yielded.
    ready: VecDeque<Result<R>>,
    /// Results yielded or in `ready`.
    taken: u64,
    failure_yielded: bool,
    /// The input's length, if it told it exactly.
    total: Option<u64>,
    _r: PhantomData<fn() -> R>,
}

// No field is ever pinned: `poll_next` only needs `&mut self`.
impl<I: Iterator + Unpin, R> Unpin for Imap<I, R> {}

impl<I: Iterator, R> std::fmt::Debug for Imap<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("submitted", &self.submitted)
            .field("taken", &self.taken)
            .finish()
    }
}

impl<I, R> Imap<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        job: u64,
        input: I,
        entry: crate::proto::TaskEntry,
        ordered: bool,
        processes: usize,
        total: Option<u64>,
    ) -> Self {
        Imap {
            shared,
            job,
            input: Some(input),
            entry,
            ordered,
            chunksize: 1,
            max_in_flight: None,
            processes,
            submitted: 0,
            ready: VecDeque::new(),
            taken: 0,
            failure_yielded: false,
            total,
            _r: PhantomData,
        }
    }

    /// Sets the number of tasks per chunk (Python's `chunksize`, default 1), before the first
    /// item is taken.
    pub fn with_chunksize(mut self, n: usize) -> Self {
        self.chunksize = n.max(1);
        self
    }

    /// Sets the bound on tasks submitted and not yet yielded (default: the larger of 256 and
    /// four chunks per worker). It is raised to at least one chunk.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n.max(1));
        self
    }

    /// Reports the progress of this call to `progress` (a bar, a callback or a stream: see
    /// [`Progress`](crate::Progress)) instead of the pool's default, if it has one. The total
    /// is known from the start if the input tells its exact length (`size_hint`), else once
    /// it has ended. Progress counts results as they reach the pool's process, whether or not
    /// the iterator has yielded them yet.
    ///
    /// ```
    /// fn double(x: u64) -> u64 {
    ///     2 * x
    /// }
    /// # fn main() -> Result<(), mp_pool::Error> {
    /// let pool = mp_pool::Pool::new(2)?;
    /// let (progress, events) = mp_pool::Progress::events();
    /// // An input of unknown length: the total is learnt when it ends.
    /// let input = (0..100u64).filter(|x| x % 2 == 0);
    /// let n = pool.imap_unordered(double, input)?.with_progress(progress).count();
    /// assert_eq!(n, 50);
    /// let all: Vec<_> = events.collect();
    /// assert_eq!(all.first().unwrap().total, None);
    /// let last = all.last().unwrap();
    /// assert_eq!((last.done, last.total, last.finished), (50, Some(50), true));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_progress(self, progress: crate::Progress) -> Self {
        if self.shared.check_process().is_ok() {
            let mut g = self.shared.lock();
            g.attach_progress(self.job, &progress, self.total, true);
            drop(g);
            self.shared.deliver_progress();
        }
        self
    }

    /// The bound on tasks submitted and not yet yielded.
    fn bound(&self) -> u64 {
        let default = (4 * self.processes.max(1)).saturating_mul(self.chunksize).max(256);
        self.max_in_flight.unwrap_or(default).max(self.chunksize) as u64
    }

    /// Tasks submitted and not yet yielded.
    fn in_flight(&self) -> u64 {
        self.submitted - (self.taken - self.ready.len() as u64)
    }

    /// Pulls input and submits chunks until the bound is reached or the input ends.
    fn top_up(&mut self) {
        let bound = self.bound();
        if self.input.is_none() || self.in_flight() >= bound {
            return;
        }
        while self.input.is_some() && self.in_flight() < bound {
            let mut items = Vec::with_capacity(self.chunksize);
            let mut ended = false;
            let mut panicked = None;
            if let Some(input) = &mut self.input {
                for _ in 0..self.chunksize {
                    // An input that panics ends the input: its place gets the panic, after the
                    // results of the items before it (CPython yields the iterable's exception
                    // in its turn).
                    match catch_unwind(AssertUnwindSafe(|| input.next())) {
                        Ok(Some(a)) => items.push(a),
                        Ok(None) => {
                            ended = true;
                            break;
                        }
                        Err(payload) => {
                            panicked = Some(crate::error::panic_message(payload.as_ref()));
                            ended = true;
                            break;
                        }
                    }
                }
            }
            let first = self.submitted;
            self.submitted += items.len() as u64;
            let (mut chunks, mut errors) = build_chunks(items, self.entry, first, self.chunksize);
            if let Some(message) = panicked {
                errors.push((self.submitted, Error::Input(message)));
                self.submitted += 1;
            }
            for c in &mut chunks {
                // The iterator splits result runs itself (`Raw::decode_each`).
                c.seq_results = true;
            }
            let mut g = self.shared.lock();
            let stopping = g.jobs.get(&self.job).is_none_or(|j| j.failed.is_some());
            if stopping {
                self.input = None;
                g.feeders = g.feeders.saturating_sub(1);
                break;
            }
            queue_chunks(&mut g, self.job, chunks, errors);
            if ended {
                self.input = None;
                g.feeders = g.feeders.saturating_sub(1);
                if let Some(j) = g.jobs.get_mut(&self.job) {
                    j.expected = Some(self.submitted);
                    if j.all_in() {
                        g.to_settle.push(self.job);
                    }
                }
            }
            drop(g);
            self.shared.ring_if_sleeping();
        }
        self.shared.settle();
    }

    /// The next result if one is there (`Some(None)` when the iterator is finished). Every
    /// result the job holds that can be yielded next is taken at once, so that most calls do
    /// not lock the pool's state.
    fn try_next(&mut self, cx: Option<&mut Context<'_>>) -> Option<Option<Result<R>>> {
        if let Some(r) = self.ready.pop_front() {
            return Some(Some(r));
        }
        let mut g = self.shared.lock();
        let Some(j) = g.jobs.get_mut(&self.job) else { return Some(None) };
        let Store::Sparse(m) = &mut j.store else { return Some(None) };
        let mut slots = Vec::new();
        if self.ordered {
            while let Some(slot) = m.remove(&self.taken) {
                self.taken += slot.as_ref().map_or(1, Raw::tasks);
                slots.push(slot);
            }
        } else {
            slots.extend(std::mem::take(m).into_values());
            self.taken += slots.iter().map(|s| s.as_ref().map_or(1, Raw::tasks)).sum::<u64>();
        }
        if !slots.is_empty() {
            drop(g);
            for slot in slots {
                match slot {
                    Ok(raw) => raw.decode_each(&mut self.ready),
                    Err(e) => self.ready.push_back(Err(e)),
                }
            }
            return self.ready.pop_front().map(Some);
        }
        if let Some(f) = &j.failed {
            if self.failure_yielded {
                return Some(None);
            }
            self.failure_yielded = true;
            return Some(Some(Err(f.duplicate())));
        }
        if self.input.is_none() && j.expected.is_some_and(|n| self.taken >= n) {
            return Some(None);
        }
        if let Some(cx) = cx {
            j.waker = Some(cx.waker().clone());
        }
        None
    }
}

impl<I, R> Iterator for Imap<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.shared.check_process().is_err() {
            return None;
        }
        self.top_up();
        loop {
            if let Some(r) = self.try_next(None) {
                return r;
            }
            let g = self.shared.lock();
            let waiting = match g.jobs.get(&self.job) {
                Some(j) if j.failed.is_none() => match &j.store {
                    Store::Sparse(m) => {
                        m.is_empty() || (self.ordered && !m.contains_key(&self.taken))
                    }
                    Store::One(_) | Store::Dense(..) => false,
                },
                _ => false,
            };
            if waiting {
                drop(self.shared.wait(g));
            }
        }
    }
}

impl<I, R> futures_core::Stream for Imap<I, R>
where
    I: Iterator + Unpin,
    I::Item: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        if self.shared.check_process().is_err() {
            return Poll::Ready(None);
        }
        self.top_up();
        match self.try_next(Some(cx)) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl<I: Iterator, R> Drop for Imap<I, R> {
    fn drop(&mut self) {
        if self.shared.check_process().is_err() {
            return;
        }
        let mut g = self.shared.lock();
        if self.input.take().is_some() {
            g.feeders = g.feeders.saturating_sub(1);
        }
        if let Some(j) = g.jobs.get_mut(&self.job) {
            j.expected = Some(self.submitted);
        }
        // The call is over for its progress: its iterator is gone.
        g.end_progress(self.job);
        if let Some(j) = g.jobs.get_mut(&self.job) {
            if j.complete || j.all_in() {
                g.jobs.remove(&self.job);
            } else {
                j.abandoned = true;
            }
        }
        drop(g);
        self.shared.deliver_progress();
        self.shared.ring();
    }
}

/// Encodes `items` into chunks of at most `chunksize` tasks of job 0 (the caller sets the
/// job), starting at task `first`; an item that fails to encode ends its chunk and is returned
/// as that task's error. Chunks hold bare values back to back (`Chunk::seq`) as long as their
/// items serialise without descriptors; an item that holds one starts a chunk in blob form.
pub(crate) fn build_chunks<T: Serialize>(
    items: impl IntoIterator<Item = T>,
    entry: crate::proto::TaskEntry,
    first: u64,
    chunksize: usize,
) -> (Vec<Chunk>, Vec<(u64, Error)>) {
    let chunksize = chunksize.max(1);
    let fresh = |first: u64| {
        let mut c = Chunk::new(0, entry, first, false);
        c.seq = true;
        c
    };
    let mut chunks = Vec::new();
    let mut errors = Vec::new();
    // One encoding context for all the items (it is inactive while the iterator runs).
    let mut session = match fdpass::EncodeSession::begin(fdpass::ObjectList::default()) {
        Ok(session) => session,
        Err(e) => {
            let e = Error::from(e);
            let failed = items.into_iter().enumerate();
            errors.extend(failed.map(|(k, _)| (first + k as u64, e.duplicate())));
            return (chunks, errors);
        }
    };
    // A closed chunk takes the objects its items recorded.
    let close = |chunks: &mut Vec<Chunk>, mut c: Chunk, session: &mut fdpass::EncodeSession| {
        c.objects = session.take_objects();
        chunks.push(c);
    };
    let mut current = fresh(first);
    current.payload.reserve(chunksize.min(1 << 16) * 4);
    for (k, item) in items.into_iter().enumerate() {
        let index = first + k as u64;
        let pushed = if current.seq { current.push_seq(&item, &mut session) } else { Ok(false) };
        let pushed = match pushed {
            Ok(false) => {
                if current.seq {
                    // An item holding a descriptor (or failing): it goes in blob form.
                    if current.count > 0 {
                        let done = std::mem::replace(&mut current, fresh(index));
                        close(&mut chunks, done, &mut session);
                    }
                    current.seq = false;
                }
                current.push(&item, &mut session)
            }
            Ok(true) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = pushed {
            if current.count > 0 {
                let done = std::mem::replace(&mut current, fresh(index + 1));
                close(&mut chunks, done, &mut session);
            } else {
                current = fresh(index + 1);
            }
            errors.push((index, e));
            continue;
        }
        // A chunk is also closed when it is large, so that it fits in a frame, and when its
        // items hold many descriptors, so that a batch of chunks can carry them.
        if current.count >= chunksize
            || current.payload.len() >= crate::proto::SOFT_FRAME
            || current.fds.len() >= crate::proto::CHUNK_FDS
        {
            let size = current.payload.len();
            let done = std::mem::replace(&mut current, fresh(index + 1));
            close(&mut chunks, done, &mut session);
            // The next chunk is probably about as large.
            current.payload.reserve(size + size / 8);
        }
    }
    if current.count > 0 {
        close(&mut chunks, current, &mut session);
    }
    (chunks, errors)
}

/// Queues the chunks and records the errors of job `job`.
pub(crate) fn queue_chunks(
    st: &mut crate::state::State,
    job: u64,
    chunks: Vec<Chunk>,
    errors: Vec<(u64, Error)>,
) {
    for mut c in chunks {
        c.job = job;
        st.queue.push_back(c);
    }
    for (index, e) in errors {
        st.record(job, index, Err(e));
    }
}
