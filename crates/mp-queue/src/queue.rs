//! `Queue`, `JoinableQueue` and `SimpleQueue`: typed handles on a shared ring.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::ring::{self, Kind, Put, Ring, Settings};

/// What a `put` hands back when it does not put: the value, always.
///
/// As crossbeam-channel's `SendError`, the value that could not be put comes back inside the
/// error. `?` turns it into an [`Error`], dropping the value.
pub enum PutError<T> {
    /// No room before the timeout, or at once for `put_nowait` (Python's `queue.Full`).
    Full(T),
    /// This handle was closed with `close` (Python's `ValueError: Queue is closed`).
    Closed(T),
    /// The value could not be put: it failed to serialise, is larger than the queue's
    /// largest message, or a system call failed.
    Failed {
        /// The value.
        value: T,
        /// Why.
        error: Error,
    },
}

impl<T> PutError<T> {
    /// The value that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(value) | PutError::Closed(value) | PutError::Failed { value, .. } => {
                value
            }
        }
    }

    /// Whether this is [`PutError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }

    /// The error without the value: [`Error::Full`], [`Error::Closed`] or the cause.
    pub fn into_error(self) -> Error {
        match self {
            PutError::Full(_) => Error::Full,
            PutError::Closed(_) => Error::Closed,
            PutError::Failed { error, .. } => error,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Failed { error, .. } => {
                f.debug_struct("Failed").field("error", error).finish_non_exhaustive()
            }
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Failed { error, .. } => write!(f, "put failed: {error}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Self {
        e.into_error()
    }
}

/// Builds a [`Queue`], [`JoinableQueue`] or [`SimpleQueue`] with settings other than the
/// defaults: item limit, ring size, largest message. Made by [`Queue::builder`],
/// [`JoinableQueue::builder`] or [`SimpleQueue::builder`]; `Q` is the queue it builds.
///
/// ```
/// use mp_queue::Queue;
///
/// let q: Queue<u32> = Queue::builder().maxsize(3).capacity(1 << 16).build()?;
/// assert_eq!(q.maxsize(), 3);
/// assert_eq!(q.capacity(), 1 << 16);
/// # Ok::<(), mp_queue::Error>(())
/// ```
pub struct QueueBuilder<Q> {
    /// The settings.
    settings: Settings,
    /// The queue type built.
    _queue: PhantomData<fn() -> Q>,
}

impl<Q> Clone for QueueBuilder<Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Q> Copy for QueueBuilder<Q> {}

impl<Q> fmt::Debug for QueueBuilder<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("maxsize", &self.settings.maxsize)
            .field("capacity", &self.settings.capacity)
            .field("max_message_size", &self.settings.max_message)
            .finish()
    }
}

impl<Q> QueueBuilder<Q> {
    /// The defaults: no item limit, a ring of [`DEFAULT_CAPACITY`](crate::DEFAULT_CAPACITY)
    /// bytes, messages up to [`DEFAULT_MAX_MESSAGE`](crate::DEFAULT_MAX_MESSAGE) bytes.
    fn new() -> Self {
        QueueBuilder {
            settings: Settings {
                capacity: ring::DEFAULT_CAPACITY,
                maxsize: 0,
                max_message: ring::DEFAULT_MAX_MESSAGE,
            },
            _queue: PhantomData,
        }
    }

    /// The ring's size in bytes: a power of two from
    /// [`MIN_CAPACITY`](crate::MIN_CAPACITY) to [`MAX_CAPACITY`](crate::MAX_CAPACITY)
    /// (checked by `build`). Messages up to half of it travel inside the ring; larger ones in
    /// a segment of their own. The memory is touched only as messages pass through it.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.settings.capacity = bytes;
        self
    }

    /// The largest message, in bytes as encoded (at least 1, checked by `build`); a larger
    /// one is an error for its `put`.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.settings.max_message = bytes;
        self
    }

    /// The most items the queue holds; 0 (the default) means no limit but the ring's bytes,
    /// as Python's `maxsize <= 0` means no limit.
    fn with_maxsize(mut self, maxsize: usize) -> Self {
        self.settings.maxsize = maxsize;
        self
    }
}

impl<T> QueueBuilder<Queue<T>> {
    /// The most items the queue holds; 0 (the default) means no limit but the ring's bytes,
    /// as Python's `maxsize <= 0` means no limit.
    pub fn maxsize(self, maxsize: usize) -> Self {
        self.with_maxsize(maxsize)
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<Queue<T>> {
    /// Makes the queue.
    ///
    /// Errors: [`Error::InvalidArgument`] for a capacity that is not a power of two in range
    /// or a largest message of 0 bytes; otherwise as [`Queue::new`].
    pub fn build(self) -> Result<Queue<T>> {
        Queue::create(Kind::Queue, self.settings)
    }
}

impl<T> QueueBuilder<JoinableQueue<T>> {
    /// The most items the queue holds; 0 (the default) means no limit but the ring's bytes.
    pub fn maxsize(self, maxsize: usize) -> Self {
        self.with_maxsize(maxsize)
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<JoinableQueue<T>> {
    /// Makes the joinable queue.
    ///
    /// Errors: as for a [`Queue`]'s `build`.
    pub fn build(self) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue { queue: Queue::create(Kind::Joinable, self.settings)? })
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<SimpleQueue<T>> {
    /// Makes the simple queue (which has no item limit).
    ///
    /// Errors: as for a [`Queue`]'s `build`.
    pub fn build(self) -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue { queue: Queue::create(Kind::Simple, self.settings)? })
    }
}

/// The deadline `timeout` from now (`None`: too far to represent, so never).
fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A queue shared between processes: Python's `multiprocessing.Queue`.
///
/// Many producers and many consumers, in any processes; items arrive in the order each
/// producer put them. Items are any serde type, encoded with postcard straight into a ring of
/// shared memory (and out of it), so a `put` or `get` is a copy and a few atomic operations,
/// with no helper thread and no system call unless a party sleeps. Clones share the queue; it
/// passes into children and inside messages under every start method.
///
/// ```
/// use mp_process::Process;
/// use mp_queue::Queue;
///
/// fn producer(q: Queue<String>) -> Result<(), mp_queue::Error> {
///     for i in 0..3 {
///         q.put(format!("item {i}"))?;
///     }
///     Ok(())
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let q = Queue::new()?;
/// let mut p = Process::new(producer, (q.clone(),));
/// p.start()?;
/// for i in 0..3 {
///     assert_eq!(q.get()?, format!("item {i}"));
/// }
/// assert_eq!(p.join()?, 0);
/// # Ok(())
/// # }
/// ```
///
/// # Crashes
/// A process killed in the middle of a `put` or `get` leaves the queue whole: the others go
/// on, and every message among the living is delivered exactly once. The message the dying
/// process was putting is in the queue or not; the one it was getting stays in the queue
/// unless it had already been taken. (ARCHITECTURE.md describes the protocol.)
///
/// # Differences from Python's multiprocessing
/// - `Queue()` without `maxsize` is bounded by its ring's bytes (4 MiB by default, see
///   [`QueueBuilder::capacity`]): when the ring is full, `put` waits for a consumer where
///   Python's feeder thread buffers without limit. Messages larger than half the ring travel in
///   a segment of their own and never wait for the ring to empty.
/// - There is no feeder thread: a `put` has returned only once the item is in the queue,
///   visible to every consumer (Python's `put` may return before, and `empty()` may still say
///   true just after). So `join_thread` and `cancel_join_thread` have no counterpart.
/// - `qsize` works on every platform.
/// - `close` closes this handle (and its clones in this process): later `put`s and `get`s on it
///   fail with [`Error::Closed`], as in Python; the queue lives on for the other handles.
/// - Items are postcard encodings of serde types, not pickles; the largest message is
///   [`QueueBuilder::max_message_size`] (64 MiB by default).
pub struct Queue<T> {
    /// The shared ring: one per queue in a process, whichever way its handles came.
    ring: Arc<Ring>,

    /// The item type; the handle holds no `T`.
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { ring: Arc::clone(&self.ring), _items: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue with no item limit (bounded by its ring's bytes), Python's `Queue()`.
    ///
    /// Errors: [`Error::SharedMemory`], [`Error::Sync`] or [`Error::Io`] if its shared memory,
    /// locks or descriptors cannot be made.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A queue holding at most `maxsize` items (0: no limit), Python's `Queue(maxsize)`.
    ///
    /// Errors: as [`Queue::new`].
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::builder().maxsize(maxsize).build()
    }

    /// A handle on a new ring of `kind`.
    fn create(kind: Kind, settings: Settings) -> Result<Self> {
        let ring = Ring::create(kind, settings, std::any::type_name::<T>())?;
        Ok(Queue::from_ring(Arc::new(ring)))
    }

    /// Puts `item`, waiting as long as it takes for room (Python's `put(item)`).
    ///
    /// Errors: [`PutError::Closed`] after [`close`](Queue::close); [`PutError::Failed`] if
    /// the item cannot be serialised or is larger than the largest message (the queue is
    /// unchanged and later items go through). The item comes back in the error.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, None, false)
    }

    /// Puts `item`, waiting at most `timeout` for room (Python's `put(item, timeout=t)`):
    /// [`PutError::Full`] after at least `timeout` without room.
    ///
    /// Errors: as [`put`](Queue::put), and `Full`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(item, deadline(timeout), false)
    }

    /// Puts `item` only if there is room now (Python's `put_nowait(item)`): otherwise
    /// [`PutError::Full`] at once. It may wait for another producer that is copying its
    /// item in.
    ///
    /// Errors: as [`put`](Queue::put), and `Full`.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, None, true)
    }

    /// Puts a copy of `item`, which the caller keeps, waiting as long as it takes for room:
    /// [`put`](Queue::put) without giving the item up. Every `put` serialises its item
    /// straight into the queue, so nothing is cloned here either (Python's `put(obj)` leaves
    /// `obj` to its caller in the same way).
    ///
    /// Errors: [`Error::Closed`] after [`close`](Queue::close); what
    /// [`PutError::Failed`] holds for [`put`](Queue::put) (the queue is unchanged).
    ///
    /// ```
    /// let q = mp_queue::Queue::new()?;
    /// let block = mp_queue::Bytes(vec![7u8; 1 << 20]);
    /// q.put_ref(&block)?;
    /// q.put_ref(&block)?;
    /// assert_eq!(q.get()?, block);
    /// assert_eq!(q.get()?, block);
    /// # Ok::<(), mp_queue::Error>(())
    /// ```
    pub fn put_ref(&self, item: &T) -> Result<()> {
        match self.put_borrowed(item, None, false)? {
            Put::Done => Ok(()),
            Put::Full => Err(Error::Full),
        }
    }

    /// Every `put`: `item` into the ring unless this handle is closed.
    fn put_borrowed(&self, item: &T, deadline: Option<Instant>, nonblocking: bool) -> Result<Put> {
        self.check_open()?;
        self.ring.put(item, deadline, nonblocking)
    }

    /// The three `put`s that take the item.
    fn put_until(
        &self,
        item: T,
        deadline: Option<Instant>,
        nonblocking: bool,
    ) -> Result<(), PutError<T>> {
        match self.put_borrowed(&item, deadline, nonblocking) {
            Ok(Put::Done) => Ok(()),
            Ok(Put::Full) => Err(PutError::Full(item)),
            Err(Error::Closed) => Err(PutError::Closed(item)),
            Err(error) => Err(PutError::Failed { value: item, error }),
        }
    }

    /// Takes the next item, waiting as long as it takes (Python's `get()`).
    ///
    /// Errors: [`Error::Closed`] after [`close`](Queue::close); [`Error::Wire`] if the item
    /// cannot be decoded as a `T` (it is consumed; the queue goes on).
    pub fn get(&self) -> Result<T> {
        self.check_open()?;
        self.ring.get(None, false)?.ok_or(Error::Empty)
    }

    /// Takes the next item, waiting at most `timeout` (Python's `get(timeout=t)`):
    /// [`Error::Empty`] after at least `timeout` with nothing to take.
    ///
    /// Errors: as [`get`](Queue::get), and `Empty`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.check_open()?;
        self.ring.get(deadline(timeout), false)?.ok_or(Error::Empty)
    }

    /// Takes the next item if there is one now (Python's `get_nowait()`), else
    /// [`Error::Empty`] at once.
    ///
    /// Errors: as [`get`](Queue::get), and `Empty`.
    pub fn get_nowait(&self) -> Result<T> {
        self.check_open()?;
        self.ring.get(None, true)?.ok_or(Error::Empty)
    }
}

impl<T> Queue<T> {
    /// A [`QueueBuilder`] for a queue with other settings than [`Queue::new`]'s.
    pub fn builder() -> QueueBuilder<Queue<T>> {
        QueueBuilder::new()
    }

    /// A new handle (open) on `ring`.
    fn from_ring(ring: Arc<Ring>) -> Self {
        Queue { ring, _items: PhantomData }
    }

    /// `Err(Closed)` after `close`.
    fn check_open(&self) -> Result<()> {
        if self.ring.is_closed() { Err(Error::Closed) } else { Ok(()) }
    }

    /// The number of items in the queue: exact at the moment it is read, which other processes
    /// may change at once (Python's `qsize()`).
    pub fn qsize(&self) -> usize {
        self.ring.qsize()
    }

    /// Whether the queue holds no items (Python's `empty()`), with `qsize`'s caveat.
    pub fn empty(&self) -> bool {
        self.ring.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items (Python's `full()`); always `false` for a queue
    /// without an item limit (its ring may still lack room for a large item).
    pub fn full(&self) -> bool {
        self.ring.full()
    }

    /// The item limit, 0 for none.
    pub fn maxsize(&self) -> usize {
        self.ring.maxsize()
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The largest message in bytes, as encoded.
    pub fn max_message_size(&self) -> usize {
        self.ring.max_message()
    }

    /// Closes the queue for this process (Python's `close()`: "no more data will be put on
    /// this queue by the current process"): later `put` and `get` calls on every handle on it
    /// in this process (its clones, and copies received, which share one ring per process)
    /// fail with [`Error::Closed`]. Items already put stay in the queue for the other
    /// processes; the shared memory is freed when the last handle anywhere is dropped.
    pub fn close(&self) {
        self.ring.close();
    }

    /// Whether [`close`](Queue::close) was called in this process.
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }
}

/// The queue's doorbell: it polls readable while the queue holds items, for
/// [`wait`](crate::wait) and event loops. Readiness is a hint: another consumer may take the
/// item first, so follow it with `get_nowait`.
impl<T> AsFd for Queue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.doorbell()
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Serialises the queue's shared memory, locks and descriptors (through mp's fd-carrying
/// encoder: process arguments, connection messages, queue items).
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.ring.serialize(s)
    }
}

/// Receives a queue (a `Queue` or a `JoinableQueue`), checking its segment and descriptors.
impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let ring =
            Ring::deserialize(d, &[Kind::Queue, Kind::Joinable], std::any::type_name::<T>())?;
        Ok(Queue::from_ring(ring))
    }
}

/// A queue whose consumers report each item done: Python's `multiprocessing.JoinableQueue`.
///
/// Everything a [`Queue`] does (it dereferences to one), plus
/// [`task_done`](JoinableQueue::task_done) and [`join`](JoinableQueue::join), which waits
/// until every item put has been reported done.
///
/// ```
/// use mp_queue::JoinableQueue;
///
/// let q = JoinableQueue::new()?;
/// q.put(1u8)?;
/// q.put(2u8)?;
/// while let Ok(item) = q.get_nowait() {
///     assert!(item > 0);
///     q.task_done()?;
/// }
/// q.join()?;
/// assert!(matches!(q.task_done(), Err(mp_queue::Error::TooManyTaskDone)));
/// # Ok::<(), mp_queue::Error>(())
/// ```
///
/// A consumer killed before calling `task_done` for an item it took leaves `join` waiting,
/// as in Python (use [`join_timeout`](JoinableQueue::join_timeout) where that matters).
pub struct JoinableQueue<T> {
    /// The queue.
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue with no item limit (bounded by its ring's bytes).
    ///
    /// Errors: as [`Queue::new`].
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// A joinable queue holding at most `maxsize` items (0: no limit).
    ///
    /// Errors: as [`Queue::new`].
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Self::builder().maxsize(maxsize).build()
    }
}

impl<T> JoinableQueue<T> {
    /// A [`QueueBuilder`] for a joinable queue with other settings than
    /// [`JoinableQueue::new`]'s.
    pub fn builder() -> QueueBuilder<JoinableQueue<T>> {
        QueueBuilder::new()
    }

    /// Reports one item taken from the queue as processed (Python's `task_done()`).
    ///
    /// Errors: [`Error::TooManyTaskDone`] if every item put was already reported.
    pub fn task_done(&self) -> Result<()> {
        self.queue.ring.task_done()
    }

    /// Waits until every item put has been reported with `task_done` (Python's `join()`).
    ///
    /// Errors: [`Error::Io`] if the futex wait fails.
    pub fn join(&self) -> Result<()> {
        self.queue.ring.join(None).map(|_| ())
    }

    /// As [`join`](JoinableQueue::join), for at most `timeout`: whether every item was
    /// reported done.
    ///
    /// Errors: as [`join`](JoinableQueue::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool> {
        self.queue.ring.join(deadline(timeout))
    }

    /// The number of items put and not yet reported done.
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.ring.unfinished() as usize
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> AsFd for JoinableQueue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.as_fd()
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.qsize())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .field("maxsize", &self.maxsize())
            .finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

/// Receives a joinable queue, checking its segment and descriptors.
impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let ring = Ring::deserialize(d, &[Kind::Joinable], std::any::type_name::<T>())?;
        Ok(JoinableQueue { queue: Queue::from_ring(ring) })
    }
}

/// The plain queue: Python's `multiprocessing.SimpleQueue` (`put`, `get`, `empty`, `close`).
///
/// The same ring as a [`Queue`], without an item limit, timeouts or size queries.
///
/// ```
/// let q = mp_queue::SimpleQueue::new()?;
/// q.put(vec![1, 2, 3])?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, vec![1, 2, 3]);
/// assert!(q.empty());
/// # Ok::<(), mp_queue::Error>(())
/// ```
pub struct SimpleQueue<T> {
    /// The queue.
    queue: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { queue: self.queue.clone() }
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A simple queue (bounded by its ring's bytes, see [`QueueBuilder::capacity`]).
    ///
    /// Errors: as [`Queue::new`].
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// Puts `item`, waiting for room in the ring if it is full.
    ///
    /// Errors: as [`Queue::put`].
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.queue.put(item)
    }

    /// Puts a copy of `item`, which the caller keeps, as [`Queue::put_ref`].
    ///
    /// Errors: as [`Queue::put_ref`].
    pub fn put_ref(&self, item: &T) -> Result<()> {
        self.queue.put_ref(item)
    }

    /// Takes the next item, waiting as long as it takes.
    ///
    /// Errors: as [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }
}

impl<T> SimpleQueue<T> {
    /// A [`QueueBuilder`] for a simple queue with another ring size or largest message than
    /// [`SimpleQueue::new`]'s (a simple queue has no item limit).
    pub fn builder() -> QueueBuilder<SimpleQueue<T>> {
        QueueBuilder::new()
    }

    /// Whether the queue holds no items.
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes this handle (and its clones in this process), as [`Queue::close`].
    pub fn close(&self) {
        self.queue.close();
    }

    /// Whether [`close`](SimpleQueue::close) was called on this handle.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

impl<T> AsFd for SimpleQueue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.queue.as_fd()
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue").field("empty", &self.empty()).finish()
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

/// Receives a simple queue, checking its segment and descriptors.
impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let ring = Ring::deserialize(d, &[Kind::Simple], std::any::type_name::<T>())?;
        Ok(SimpleQueue { queue: Queue::from_ring(ring) })
    }
}
