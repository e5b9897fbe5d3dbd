//! The messages between the pool and its workers: a small hand-rolled binary layout in one
//! `fdpass` frame each, with descriptors beside the bytes. Every read is bounds-checked.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use mp_process::fdpass;
use mp_process::fdpass::PassFd;
use mp_process::wire::WireError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A task's entry as it crosses into workers: the offset and tag of an
/// `mp_process::code::Entry` of the worker's chunk runner.
pub(crate) type TaskEntry = (u64, u64);

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = mp_process::wire::DEFAULT_MAX_FRAME;
/// A chunk of arguments is closed, and a worker sends its results, once they reach this size,
/// so that one more value always fits in a frame.
pub(crate) const SOFT_FRAME: usize = 8 << 20;
/// The largest encoded argument or result (a little under 56 MiB): what fits in a frame beside
/// [`SOFT_FRAME`] bytes of others. A larger one fails its task with `Error::Serialization`.
pub(crate) const MAX_VALUE: usize = MAX_FRAME - SOFT_FRAME - 4096;

/// Whether encoding failed because the value is larger than [`MAX_VALUE`].
pub(crate) fn too_large(e: &postcard::Error) -> bool {
    matches!(e, postcard::Error::SerializeBufferFull)
}

/// The error of a task whose argument or result (`what`) is larger than [`MAX_VALUE`].
pub(crate) fn too_large_message(what: &str) -> String {
    format!("the task's {what} encodes to more than {MAX_VALUE} bytes, the most a pool carries")
}

/// Frame kinds, parent to worker: a batch of chunks.
pub(crate) const K_BATCH: u8 = 1;
/// Parent to worker: exit once the results are sent.
pub(crate) const K_STOP: u8 = 2;
/// Parent to worker: definitions of shared objects (and releases), for the worker's
/// `ObjectCache`, sent before the batch that first refers to them.
pub(crate) const K_OBJECTS: u8 = 4;
/// Frame kinds, worker to parent.
pub(crate) const K_RESULTS: u8 = 1;
/// The initializer panicked; the payload is its message.
pub(crate) const K_INIT_FAILED: u8 = 3;
/// The worker could not receive a frame (out of descriptors, say); the payload is why. It
/// exits after sending this, and its unfinished tasks fail with the reason.
pub(crate) const K_RECV_FAILED: u8 = 5;

/// A chunk is closed once its items hold this many descriptors, so that a batch of chunks
/// can carry them (a frame carries at most `fdpass::MAX_FDS_PER_FRAME`).
pub(crate) const CHUNK_FDS: usize = 64;

/// The most shared objects a worker keeps defined for the pool (the least recently used are
/// released beyond it).
pub(crate) const WORKER_OBJECTS: usize = 128;

/// Chunk form bit: the arguments are one blob in the self-contained form (the initializer).
pub(crate) const F_SELF_CONTAINED: u8 = 4;

/// Result tags.
pub(crate) const T_OK: u8 = 0;
pub(crate) const T_PANIC: u8 = 1;
pub(crate) const T_ENCODE: u8 = 2;
pub(crate) const T_DECODE: u8 = 3;
/// A run of results of consecutive tasks: a `u32` count, a `u32` length, then that many
/// values, each a varint length and the value's bytes (values that hold no descriptor).
pub(crate) const T_RUN: u8 = 4;
/// A run of results of consecutive tasks without lengths: a `u32` count, a `u32` length, then
/// the values back to back (only for chunks whose form allows it).
pub(crate) const T_SEQ: u8 = 5;

/// The worker's shared segment: the count of tasks it has started (a `u64` at
/// [`SEG_STARTED`]), the count of batches it has read off its socket (at [`SEG_RECEIVED`]),
/// and its journal: the results it finished and has not sent yet, so that the parent still
/// gets them if the worker dies. The journal's length is a `u64` at [`SEG_JOURNAL_LEN`], its
/// records start at [`SEG_JOURNAL`].
pub(crate) const SEG_STARTED: usize = 0;
/// See [`SEG_STARTED`].
pub(crate) const SEG_JOURNAL_LEN: usize = 8;
/// See [`SEG_STARTED`].
pub(crate) const SEG_RECEIVED: usize = 16;
/// The worker's counters for the pool's insights (see `crate::meter`), each a `u64` written
/// by the worker alone: tasks finished.
pub(crate) const SEG_DONE: usize = 24;
/// Nanoseconds spent running chunks of tasks (decoding arguments, the tasks, encoding
/// results).
pub(crate) const SEG_BUSY: usize = 32;
/// Nanoseconds spent waiting for work.
pub(crate) const SEG_WAIT: usize = 40;
/// Nanoseconds spent receiving batches and sending results.
pub(crate) const SEG_IO: usize = 48;
/// When the worker was ready for work (after its initializer), in [`monotonic_ns`]; 0 before.
pub(crate) const SEG_READY: usize = 56;
/// The worker's slowest tasks, behind a sequence lock: the sequence (odd while it is
/// written), then [`SLOWEST`] records of four `u64`s (job, index of the first task, number of
/// tasks timed together, nanoseconds), the slowest first, unused ones zero.
pub(crate) const SEG_SLOW_SEQ: usize = 64;
/// See [`SEG_SLOW_SEQ`].
pub(crate) const SEG_SLOW: usize = 72;
/// How many slowest tasks a worker keeps.
pub(crate) const SLOWEST: usize = 5;
/// See [`SEG_STARTED`].
pub(crate) const SEG_JOURNAL: usize = 256;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for the pool's process and its workers.
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec.unsigned_abs().saturating_mul(1_000_000_000).saturating_add(t.tv_nsec.unsigned_abs())
}
/// The size of the worker's segment (memory is used only as far as the journal fills).
pub(crate) const SEG_SIZE: usize = SEG_JOURNAL + (1 << 20);
/// A journal record that says which task the next result record is for: `job` and `index`
/// as two `u64` (after 7 bytes of padding). Every other record is one task's result, for the
/// task after the previous record's: a result tag ([`T_OK`], [`T_PANIC`], [`T_ENCODE`],
/// [`T_DECODE`]), a varint length and the bytes; or, for a result of at most 6 bytes, the tag
/// with [`J_SMALL`] set, a length byte and the bytes. Every record starts at a multiple of 8
/// bytes (padded with zeros), so a small one is a single aligned `u64` store.
pub(crate) const J_TASK: u8 = 0x7E;
/// See [`J_TASK`].
pub(crate) const J_SMALL: u8 = 0x80;

/// Chunk form bit: the arguments are bare values back to back.
pub(crate) const F_SEQ_ARGS: u8 = 1;
/// Chunk form bit: the results may be sent as a [`T_SEQ`] run.
pub(crate) const F_SEQ_RESULTS: u8 = 2;

/// The header of one chunk in a [`K_BATCH`] frame; the chunk's payload (`len` bytes) and
/// descriptors follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    /// The job the chunk's tasks belong to.
    pub job: u64,
    /// The index of its first task in the job.
    pub first: u64,
    /// The task's entry.
    pub entry: TaskEntry,
    /// How many tasks it holds.
    pub count: u32,
    /// Its form bits ([`F_SEQ_ARGS`], [`F_SEQ_RESULTS`], [`F_SELF_CONTAINED`]).
    pub form: u8,
    /// The length of its payload.
    pub len: u32,
}

impl ChunkHeader {
    /// Appends the header and the chunk's scope of shared objects (their identities).
    pub fn write(&self, w: &mut Writer, scope: &[u64]) {
        w.u64(self.job);
        w.u64(self.first);
        w.u64(self.entry.0);
        w.u64(self.entry.1);
        w.u32(self.count);
        w.u8(self.form);
        w.u32(u32::try_from(scope.len()).unwrap_or(u32::MAX));
        for &id in scope {
            w.u64(id);
        }
        w.u32(self.len);
    }

    /// Reads a header written by [`ChunkHeader::write`], its scope into `scope` (at most
    /// `max_scope` identities).
    pub fn read(r: &mut Reader, scope: &mut Vec<u64>, max_scope: usize) -> Result<Self, Malformed> {
        let (job, first, offset, tag, count, form) =
            (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u32()?, r.u8()?);
        let n = r.u32()? as usize;
        if n > max_scope {
            return Err(Malformed);
        }
        scope.clear();
        for _ in 0..n {
            scope.push(r.u64()?);
        }
        let len = r.u32()?;
        Ok(ChunkHeader { job, first, entry: (offset, tag), count, form, len })
    }
}

/// One entry of a [`K_RESULTS`] frame as read: a run of results of consecutive tasks
/// ([`T_RUN`], [`T_SEQ`]) or one task's result (another tag), with where its bytes lie in the
/// frame.
#[derive(Debug)]
pub(crate) struct ResultEntry {
    /// The job.
    pub job: u64,
    /// The index of the (first) task.
    pub index: u64,
    /// The result tag.
    pub tag: u8,
    /// How many tasks it covers.
    pub tasks: usize,
    /// Where its bytes start in the frame.
    pub start: usize,
    /// How many bytes.
    pub len: usize,
    /// The descriptors of a single result.
    pub fds: Vec<OwnedFd>,
}

impl ResultEntry {
    /// Reads the next entry of a [`K_RESULTS`] frame.
    pub fn read(r: &mut Reader) -> Result<Self, Malformed> {
        let job = r.u64()?;
        let index = r.u64()?;
        let tag = r.u8()?;
        let (tasks, start, len, fds) = if tag == T_RUN || tag == T_SEQ {
            let tasks = r.u32()? as usize;
            let len = r.u32()? as usize;
            (tasks, r.span(len)?, len, Vec::new())
        } else {
            let (start, len, fds) = r.blob_span()?;
            (1, start, len, fds)
        };
        Ok(ResultEntry { job, index, tag, tasks, start, len, fds })
    }
}

/// The text that follows the kind byte of a [`K_INIT_FAILED`] or [`K_RECV_FAILED`] frame.
pub(crate) fn message_frame(kind: u8, message: &str) -> Writer {
    let mut w = Writer::default();
    w.u8(kind);
    w.buf.extend_from_slice(message.as_bytes());
    w
}

/// Builds one frame.
#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A blob: its header (see [`put_blob_header`]), the bytes, and the descriptors beside
    /// the frame.
    pub fn blob(&mut self, bytes: &[u8], fds: impl IntoIterator<Item = OwnedFd>) {
        let before = self.fds.len();
        self.fds.extend(fds);
        let n = self.fds.len() - before;
        put_blob_header(&mut self.buf, bytes.len(), n);
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `value` as one value of an open run (a varint length and the bytes, or with
    /// `bare` the bytes alone); fails, with nothing appended, if it holds a descriptor or does
    /// not serialise.
    pub fn run_value<T: serde::Serialize + ?Sized>(
        &mut self,
        value: &T,
        bare: bool,
    ) -> postcard::Result<()> {
        if bare {
            let start = self.buf.len();
            return postcard::serialize_with_flavor(value, Append::new(&mut self.buf)).inspect_err(
                |_| {
                    self.buf.truncate(start);
                },
            );
        }
        put_prefixed(&mut self.buf, value, false)
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.fds.clear();
    }
    /// Sends the frame over `sock`.
    pub fn send(&self, sock: BorrowedFd<'_>) -> Result<(), WireError> {
        let fds: Vec<BorrowedFd<'_>> = self.fds.iter().map(AsFd::as_fd).collect();
        fdpass::send_frame(sock, &self.buf, &fds, MAX_FRAME)
    }
}

/// Appends a LEB128 varint.
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`, advancing it.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A blob's header: `varint(len << 1 | has_fds)`, then `varint(descriptor count)` if it has
/// any. Small values cost one byte of framing.
pub(crate) fn put_blob_header(buf: &mut Vec<u8>, len: usize, fds: usize) {
    put_varint(buf, ((len as u64) << 1) | u64::from(fds > 0));
    if fds > 0 {
        put_varint(buf, fds as u64);
    }
}

/// Appends `value`, encoded, behind a blob header without descriptors (`blob_flag`) or a
/// plain varint length; on failure nothing is appended.
pub(crate) fn put_prefixed<T: serde::Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
    blob_flag: bool,
) -> postcard::Result<()> {
    let start = buf.len();
    buf.push(0);
    if let Err(e) = postcard::serialize_with_flavor(value, Append::new(buf)) {
        buf.truncate(start);
        return Err(e);
    }
    let len = (buf.len() - start - 1) as u64;
    let head = if blob_flag { len << 1 } else { len };
    if head < 0x80 {
        if let Some(b) = buf.get_mut(start) {
            *b = head as u8;
        }
    } else {
        let mut h = Vec::with_capacity(10);
        put_varint(&mut h, head);
        buf.splice(start..start + 1, h);
    }
    Ok(())
}

/// A postcard flavor appending one value, of at most [`MAX_VALUE`] bytes, to a borrowed
/// vector; a larger one fails with `SerializeBufferFull` before it takes more memory.
pub(crate) struct Append<'a> {
    buf: &'a mut Vec<u8>,
    /// The length the vector may reach.
    end: usize,
}

impl<'a> Append<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Append<'a> {
        let end = buf.len().saturating_add(MAX_VALUE);
        Append { buf, end }
    }
}

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() >= self.end {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.buf.len() + data.len() > self.end {
            return Err(postcard::Error::SerializeBufferFull);
        }
        // Varints are a few bytes: copies of a fixed length beat a call to memcpy.
        match *data {
            [a] => self.buf.push(a),
            [a, b] => self.buf.extend_from_slice(&[a, b]),
            [a, b, c] => self.buf.extend_from_slice(&[a, b, c]),
            [a, b, c, d] => self.buf.extend_from_slice(&[a, b, c, d]),
            [a, b, c, d, e] => self.buf.extend_from_slice(&[a, b, c, d, e]),
            [a, b, c, d, e, f] => self.buf.extend_from_slice(&[a, b, c, d, e, f]),
            [a, b, c, d, e, f, g] => self.buf.extend_from_slice(&[a, b, c, d, e, f, g]),
            [a, b, c, d, e, f, g, h] => self.buf.extend_from_slice(&[a, b, c, d, e, f, g, h]),
            _ => self.buf.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Reads one frame.
pub(crate) struct Reader {
    buf: Vec<u8>,
    pos: usize,
    fds: std::vec::IntoIter<OwnedFd>,
}

/// A frame that does not parse.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

impl Reader {
    pub fn new(buf: Vec<u8>, fds: Vec<OwnedFd>) -> Reader {
        Reader { buf, pos: 0, fds: fds.into_iter() }
    }
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        self.take(1)?.first().copied().ok_or(Malformed)
    }
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| Malformed)?))
    }
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| Malformed)?))
    }
    /// A blob written by [`Writer::blob`], with its descriptors.
    pub fn blob(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), Malformed> {
        let (bytes, fds) = self.blob_ref()?;
        Ok((bytes.to_vec(), fds))
    }

    /// Skips to the next multiple of 8 bytes.
    pub fn align8(&mut self) {
        self.pos = self.pos.next_multiple_of(8).min(self.buf.len());
    }

    /// Bytes behind a plain varint length, borrowed from the frame.
    pub fn prefixed(&mut self) -> Result<&[u8], Malformed> {
        let len = get_varint(&self.buf, &mut self.pos).ok_or(Malformed)?;
        self.take(usize::try_from(len).map_err(|_| Malformed)?)
    }

    /// A blob's place in the frame: its start, its length, and its descriptors.
    pub fn blob_span(&mut self) -> Result<(usize, usize, Vec<OwnedFd>), Malformed> {
        let (len, fds) = self.blob_header()?;
        let start = self.pos;
        self.take(len)?;
        Ok((start, len, fds))
    }

    /// A blob's header: its length, and its descriptors taken from the frame's.
    fn blob_header(&mut self) -> Result<(usize, Vec<OwnedFd>), Malformed> {
        let head = get_varint(&self.buf, &mut self.pos).ok_or(Malformed)?;
        let len = usize::try_from(head >> 1).map_err(|_| Malformed)?;
        let mut fds = Vec::new();
        if head & 1 == 1 {
            let n = get_varint(&self.buf, &mut self.pos).ok_or(Malformed)?;
            for _ in 0..n {
                fds.push(self.fds.next().ok_or(Malformed)?);
            }
        }
        Ok((len, fds))
    }

    /// `len` bytes' place in the frame, skipped.
    pub fn span(&mut self, len: usize) -> Result<usize, Malformed> {
        let start = self.pos;
        self.take(len)?;
        Ok(start)
    }

    /// Moves the reader to `pos` (clamped to the frame's end).
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    /// The bytes of `range` of the frame (empty if it lies outside).
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or(&[])
    }

    /// The frame's bytes.
    /// The rest of the frame as text (lossily).
    pub fn rest_text(&self) -> String {
        String::from_utf8_lossy(self.buf.get(self.pos..).unwrap_or(&[])).into_owned()
    }

    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// A blob, borrowed from the frame.
    pub fn blob_ref(&mut self) -> Result<(&[u8], Vec<OwnedFd>), Malformed> {
        let (len, fds) = self.blob_header()?;
        Ok((self.take(len)?, fds))
    }
}

/// The records of a worker's journal (see [`J_TASK`]) as `(job, index, tag, bytes)`, up to
/// the first that does not parse.
pub(crate) fn parse_journal(bytes: Vec<u8>) -> Vec<(u64, u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut r = Reader::new(bytes, Vec::new());
    let mut next: Option<(u64, u64)> = None;
    while let Ok(head) = r.u8() {
        if head == J_TASK {
            let (Ok(_), Ok(job), Ok(index)) = (r.span(7), r.u64(), r.u64()) else { break };
            next = Some((job, index));
            continue;
        }
        let Some((job, index)) = next else { break };
        let (tag, body) = if head & J_SMALL != 0 {
            let Ok(len) = r.u8().map(usize::from) else { break };
            let Ok(at) = r.span(len.min(6)) else { break };
            (head & !J_SMALL, r.slice(at..at + len.min(6)).to_vec())
        } else {
            let Ok(body) = r.prefixed().map(<[u8]>::to_vec) else { break };
            (head, body)
        };
        r.align8();
        out.push((job, index, tag, body));
        next = Some((job, index.wrapping_add(1)));
    }
    out
}

/// The initializer as it crosses into a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    pub entry: TaskEntry,
    pub payload: Vec<u8>,
    pub fds: Vec<PassFd>,
}

/// What a worker needs besides its socket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerBoot {
    pub init: Option<InitSpec>,
    /// Exit after this many chunks (Python's `maxtasksperchild`).
    pub maxtasks: Option<u64>,
    /// Send every result as soon as it is ready (a task timeout is set).
    pub flush_each: bool,
    /// The segment shared with the parent (see [`proto::SEG_STARTED`]): the number of tasks
    /// this worker has started, so that the parent knows which task was running if the worker
    /// dies, and the results it finished and has not sent, so that they are not lost with it.
    pub progress: mp_shm::SharedMemory,
    /// Where to die, for tests (see [`crate::failpoint`]).
    #[cfg(feature = "failpoints")]
    pub failpoint: Option<(crate::FailStep, u64)>,
}

/// Encodes `value` with its descriptors out of band. Most values hold none: they are encoded
/// by postcard directly, and only a value that meets a descriptor (which fails outside an fd
/// context) is encoded again through `fdpass`.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>), WireError> {
    match postcard::to_stdvec(value) {
        Ok(bytes) => Ok((bytes, Vec::new())),
        Err(_) => fdpass::encode_with_fds(value),
    }
}

/// Decodes a value encoded by [`encode`]; without descriptors, by postcard directly.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T, WireError> {
    if !fds.is_empty() {
        return fdpass::decode_with_fds(bytes, fds);
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(WireError::TrailingBytes { extra: rest.len() }),
        // A descriptor index with no descriptor, or malformed bytes: let fdpass say which.
        Err(_) => fdpass::decode_with_fds(bytes, fds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_headers_round_trip_and_refuse_what_does_not_fit() {
        let h = ChunkHeader {
            job: 7,
            first: 40,
            entry: (0x1234, 0xdead_beef),
            count: 3,
            form: F_SEQ_ARGS | F_SEQ_RESULTS,
            len: 12,
        };
        let mut w = Writer::default();
        h.write(&mut w, &[11, 12]);
        let bytes = w.buf.clone();
        let mut scope = vec![99];
        let back = ChunkHeader::read(&mut Reader::new(bytes.clone(), Vec::new()), &mut scope, 8);
        assert_eq!((back, scope.as_slice()), (Ok(h), &[11u64, 12][..]));
        // A scope past the limit, and every truncation, are malformed.
        assert_eq!(
            ChunkHeader::read(&mut Reader::new(bytes.clone(), Vec::new()), &mut scope, 1),
            Err(Malformed)
        );
        for cut in 0..bytes.len() {
            let r = &mut Reader::new(bytes[..cut].to_vec(), Vec::new());
            assert_eq!(ChunkHeader::read(r, &mut scope, 8), Err(Malformed), "cut at {cut}");
        }
    }

    #[test]
    fn result_entries_read_back_runs_and_single_results() {
        let mut w = Writer::default();
        w.u64(5);
        w.u64(9);
        w.u8(T_RUN);
        w.u32(2);
        w.u32(3);
        w.buf.extend_from_slice(b"abc");
        w.u64(5);
        w.u64(11);
        w.u8(T_PANIC);
        w.blob(b"boom", Vec::new());
        let mut r = Reader::new(w.buf, Vec::new());
        let run = ResultEntry::read(&mut r).unwrap();
        assert_eq!((run.job, run.index, run.tag, run.tasks, run.len), (5, 9, T_RUN, 2, 3));
        assert_eq!(r.slice(run.start..run.start + run.len), b"abc");
        let one = ResultEntry::read(&mut r).unwrap();
        assert_eq!((one.index, one.tag, one.tasks), (11, T_PANIC, 1));
        assert_eq!(r.slice(one.start..one.start + one.len), b"boom");
        assert!(ResultEntry::read(&mut r).is_err());
        assert_eq!(message_frame(K_RECV_FAILED, "why").buf, b"\x05why");
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn truncated_or_garbage_frames_are_errors_not_panics() {
        let mut w = Writer::default();
        w.u8(K_RESULTS);
        w.u32(1);
        w.blob(&[7u8; 300], []);
        let full = w.buf.clone();
        for cut in 0..full.len() {
            let mut r = Reader::new(full[..cut].to_vec(), Vec::new());
            let _ = r.u8().and_then(|_| r.u32()).and_then(|_| r.blob());
        }
        let mut r = Reader::new(vec![0xff; 20], Vec::new());
        assert!(r.blob().is_err());
        // A header announcing descriptors that did not come.
        let mut buf = Vec::new();
        put_blob_header(&mut buf, 0, 3);
        assert!(Reader::new(buf, Vec::new()).blob().is_err());
    }
}
