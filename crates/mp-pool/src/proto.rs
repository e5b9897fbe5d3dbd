//! The messages between the pool and its workers: a small hand-rolled binary layout in one
//! `fdpass` frame each, with descriptors beside the bytes. Every read is bounds-checked.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use mp_process::fdpass;
use mp_process::wire::WireError;

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = mp_process::wire::DEFAULT_MAX_FRAME;

/// Frame kinds, parent to worker.
pub(crate) const K_BATCH: u8 = 1;
/// Frame kinds, worker to parent.
pub(crate) const K_RESULTS: u8 = 1;
/// The initializer panicked; the payload is its message.
pub(crate) const K_INIT_FAILED: u8 = 3;

/// Result tags.
pub(crate) const T_OK: u8 = 0;
pub(crate) const T_PANIC: u8 = 1;
pub(crate) const T_ENCODE: u8 = 2;
pub(crate) const T_DECODE: u8 = 3;
/// A run of results of consecutive tasks: a `u32` count, then a blob of that many values, each
/// a `u32` length and the value's bytes (values that hold no descriptor).
pub(crate) const T_RUN: u8 = 4;

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
    /// A length-prefixed blob and the descriptors that go with it.
    pub fn blob(&mut self, bytes: &[u8], fds: impl IntoIterator<Item = OwnedFd>) {
        let before = self.fds.len();
        self.fds.extend(fds);
        let n = self.fds.len() - before;
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `value` as one value of an open run (a `u32` length and the bytes); fails, with
    /// nothing appended, if it holds a descriptor or does not serialise.
    pub fn run_value<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ()> {
        let start = self.buf.len();
        self.buf.resize(start + 4, 0);
        match postcard::serialize_with_flavor(value, Append(&mut self.buf)) {
            Ok(()) => {
                let len = u32::try_from(self.buf.len() - start - 4).unwrap_or(u32::MAX);
                if let Some(slot) = self.buf.get_mut(start..start + 4) {
                    slot.copy_from_slice(&len.to_le_bytes());
                }
                Ok(())
            }
            Err(_) => {
                self.buf.truncate(start);
                Err(())
            }
        }
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

/// A postcard flavor appending to a borrowed vector.
pub(crate) struct Append<'a>(pub &'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
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
#[derive(Debug)]
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

    /// A blob's place in the frame: its start, its length, and its descriptors.
    pub fn blob_span(&mut self) -> Result<(usize, usize, Vec<OwnedFd>), Malformed> {
        let len = self.u32()? as usize;
        let nfds = self.u32()? as usize;
        let mut fds = Vec::new();
        for _ in 0..nfds {
            fds.push(self.fds.next().ok_or(Malformed)?);
        }
        let start = self.pos;
        self.take(len)?;
        Ok((start, len, fds))
    }

    /// The frame's bytes.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// A blob, borrowed from the frame.
    pub fn blob_ref(&mut self) -> Result<(&[u8], Vec<OwnedFd>), Malformed> {
        let head: [u8; 8] = self.take(8)?.try_into().map_err(|_| Malformed)?;
        let [a, b, c, d, e, f, g, h] = head;
        let len = u32::from_le_bytes([a, b, c, d]) as usize;
        let nfds = u32::from_le_bytes([e, f, g, h]) as usize;
        let mut fds = Vec::new();
        if nfds > 0 {
            for _ in 0..nfds {
                fds.push(self.fds.next().ok_or(Malformed)?);
            }
        }
        Ok((self.take(len)?, fds))
    }
}
