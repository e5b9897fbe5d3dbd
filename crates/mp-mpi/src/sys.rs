//! Every call into the MPI library (through `mpi::ffi`, rsmpi's bindings): the only unsafe
//! code of the crate. Each wrapper checks the call's return code (the communicators this
//! crate makes return errors instead of aborting: `MPI_ERRORS_RETURN`) and turns it into an
//! [`Error::Mpi`] naming the call.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int};
use std::mem::MaybeUninit;

use mpi::ffi;

use crate::error::{Error, Result};

/// A communicator handle (`MPI_Comm`), as the library gives it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Comm(ffi::MPI_Comm);

// SAFETY: an `MPI_Comm` is an opaque handle; with `MPI_THREAD_MULTIPLE` (which `init` checks)
// the library allows calls on it from any thread.
unsafe impl Send for Comm {}
// SAFETY: as for `Send`: the handle is never dereferenced here, only passed to the library.
unsafe impl Sync for Comm {}

/// The message of MPI error `code`.
fn error_string(code: c_int) -> String {
    let mut buf = vec![0 as c_char; ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: c_int = 0;
    // SAFETY: `buf` holds `MPI_MAX_ERROR_STRING` characters, as the call requires; `len` is a
    // valid place for the length.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr(), &mut len) };
    if rc != ffi::MPI_SUCCESS as c_int {
        return format!("MPI error {code}");
    }
    let len = usize::try_from(len).unwrap_or(0).min(buf.len());
    let bytes: Vec<u8> = buf.iter().take(len).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `Ok` if `rc` is `MPI_SUCCESS`, else the error of `call`.
fn check(call: &'static str, rc: c_int) -> Result<()> {
    if rc == ffi::MPI_SUCCESS as c_int {
        Ok(())
    } else {
        Err(Error::Mpi { call, message: error_string(rc) })
    }
}

/// Whether MPI was initialized (and not finalized) in this process.
pub(crate) fn initialized() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: `MPI_Initialized` may be called at any time, even before `MPI_Init`.
    unsafe { ffi::MPI_Initialized(&mut flag) };
    flag != 0
}

/// Whether MPI was finalized in this process.
pub(crate) fn finalized() -> bool {
    let mut flag: c_int = 0;
    // SAFETY: `MPI_Finalized` may be called at any time.
    unsafe { ffi::MPI_Finalized(&mut flag) };
    flag != 0
}

/// `MPI_Init_thread` asking for `MPI_THREAD_MULTIPLE`; the level provided.
pub(crate) fn init_thread_multiple() -> Result<c_int> {
    let mut provided: c_int = 0;
    // SAFETY: null `argc`/`argv` are allowed since MPI-2; `provided` is a valid place. The
    // caller calls this once per process (it checks `initialized` first).
    let rc = unsafe {
        ffi::MPI_Init_thread(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            ffi::RSMPI_THREAD_MULTIPLE,
            &mut provided,
        )
    };
    check("MPI_Init_thread", rc)?;
    Ok(provided)
}

/// `MPI_THREAD_MULTIPLE`'s value.
pub(crate) fn thread_multiple() -> c_int {
    // SAFETY: reading a constant the shim defines.
    unsafe { ffi::RSMPI_THREAD_MULTIPLE }
}

/// `MPI_Finalize`.
pub(crate) fn finalize() -> Result<()> {
    // SAFETY: called once, by the thread that initialized MPI, after every communicator of
    // this crate was freed (the caller's contract, see `Mpi`'s `Drop`).
    check("MPI_Finalize", unsafe { ffi::MPI_Finalize() })
}

/// `MPI_Abort` on `MPI_COMM_WORLD`: ends every process of the job with `code`.
pub(crate) fn abort(code: c_int) -> ! {
    // SAFETY: `MPI_Abort` may be called at any time after init; it does not return.
    unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code) };
    // An implementation whose abort returns (none does) still ends this process.
    std::process::abort()
}

/// `MPI_COMM_WORLD`.
pub(crate) fn world() -> Comm {
    // SAFETY: reading a handle the shim defines.
    Comm(unsafe { ffi::RSMPI_COMM_WORLD })
}

/// The size and this process's rank in `comm`.
pub(crate) fn size_rank(comm: Comm) -> Result<(usize, usize)> {
    let (mut size, mut rank): (c_int, c_int) = (0, 0);
    // SAFETY: `comm` is a live communicator; the out-pointers are valid.
    check("MPI_Comm_size", unsafe { ffi::MPI_Comm_size(comm.0, &mut size) })?;
    // SAFETY: as above.
    check("MPI_Comm_rank", unsafe { ffi::MPI_Comm_rank(comm.0, &mut rank) })?;
    Ok((usize::try_from(size).unwrap_or(0), usize::try_from(rank).unwrap_or(0)))
}

/// The universe size (`MPI_UNIVERSE_SIZE` on the world), if the launcher set one.
pub(crate) fn universe_size() -> Option<usize> {
    let mut value: *mut c_int = std::ptr::null_mut();
    let mut flag: c_int = 0;
    // SAFETY: `MPI_UNIVERSE_SIZE` is a predefined attribute whose value is a pointer to an
    // `int`; `value` and `flag` are valid places.
    let rc = unsafe {
        ffi::MPI_Comm_get_attr(
            ffi::RSMPI_COMM_WORLD,
            ffi::MPI_UNIVERSE_SIZE as c_int,
            (&mut value as *mut *mut c_int).cast(),
            &mut flag,
        )
    };
    if rc != ffi::MPI_SUCCESS as c_int || flag == 0 || value.is_null() {
        return None;
    }
    // SAFETY: with the flag set, `value` points to the attribute's `int`, owned by the library.
    usize::try_from(unsafe { *value }).ok()
}

/// Makes calls on `comm` return their errors instead of aborting the job.
pub(crate) fn errors_return(comm: Comm) -> Result<()> {
    // SAFETY: `comm` is a live communicator and `MPI_ERRORS_RETURN` a predefined handler.
    check("MPI_Comm_set_errhandler", unsafe {
        ffi::MPI_Comm_set_errhandler(comm.0, ffi::RSMPI_ERRORS_RETURN)
    })
}

/// `MPI_Comm_dup` of `comm` (collective over `comm`).
pub(crate) fn dup(comm: Comm) -> Result<Comm> {
    // SAFETY: a null handle is a valid place for the result, which the call fills in.
    let mut out = Comm(unsafe { ffi::RSMPI_COMM_NULL });
    // SAFETY: `comm` is live; `out.0` is a valid place.
    check("MPI_Comm_dup", unsafe { ffi::MPI_Comm_dup(comm.0, &mut out.0) })?;
    Ok(out)
}

/// The intercommunicator to the process that spawned this one, if one did.
pub(crate) fn parent() -> Result<Option<Comm>> {
    // SAFETY: as in `dup`.
    let mut out = Comm(unsafe { ffi::RSMPI_COMM_NULL });
    // SAFETY: `out.0` is a valid place.
    check("MPI_Comm_get_parent", unsafe { ffi::MPI_Comm_get_parent(&mut out.0) })?;
    // SAFETY: reading a handle the shim defines.
    Ok((out.0 != unsafe { ffi::RSMPI_COMM_NULL }).then_some(out))
}

/// `MPI_Comm_disconnect` (collective: waits for the other side's messages to complete).
pub(crate) fn disconnect(mut comm: Comm) -> Result<()> {
    // SAFETY: `comm` is a live communicator this crate owns, not used after this.
    check("MPI_Comm_disconnect", unsafe { ffi::MPI_Comm_disconnect(&mut comm.0) })
}

/// `MPI_Comm_free`.
pub(crate) fn free(mut comm: Comm) -> Result<()> {
    // SAFETY: `comm` is a live communicator this crate owns, not used after this.
    check("MPI_Comm_free", unsafe { ffi::MPI_Comm_free(&mut comm.0) })
}

/// An `MPI_Info` with the given keys, freed on drop.
struct Info(ffi::MPI_Info);

impl Info {
    fn new(pairs: &[(String, String)]) -> Result<Info> {
        if pairs.is_empty() {
            // SAFETY: reading a handle the shim defines.
            return Ok(Info(unsafe { ffi::RSMPI_INFO_NULL }));
        }
        // SAFETY: a null handle is a valid place for the result.
        let mut info = Info(unsafe { ffi::RSMPI_INFO_NULL });
        // SAFETY: `info.0` is a valid place.
        check("MPI_Info_create", unsafe { ffi::MPI_Info_create(&mut info.0) })?;
        for (k, v) in pairs {
            let bad = |_| Error::InvalidArgument("an MPI info key or value holds a NUL byte");
            let (k, v) =
                (CString::new(k.as_str()).map_err(bad)?, CString::new(v.as_str()).map_err(bad)?);
            // SAFETY: `info.0` is live; both strings are NUL-terminated and outlive the call.
            check("MPI_Info_set", unsafe { ffi::MPI_Info_set(info.0, k.as_ptr(), v.as_ptr()) })?;
        }
        Ok(info)
    }
}

impl Drop for Info {
    fn drop(&mut self) {
        // SAFETY: reading a handle the shim defines.
        if self.0 != unsafe { ffi::RSMPI_INFO_NULL } {
            // SAFETY: `self.0` was made by `MPI_Info_create` and is freed once.
            unsafe { ffi::MPI_Info_free(&mut self.0) };
        }
    }
}

/// Starts `n` processes of `program` with `args` (`MPI_Comm_spawn` on `MPI_COMM_SELF`, with
/// the info keys `info`); the intercommunicator to them, which returns its errors.
pub(crate) fn spawn(
    program: &str,
    args: &[String],
    n: usize,
    info: &[(String, String)],
) -> Result<Comm> {
    let bad = |_| Error::InvalidArgument("a program path or argument holds a NUL byte");
    let program = CString::new(program).map_err(bad)?;
    let args: Vec<CString> =
        args.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>().map_err(bad)?;
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let count = c_int::try_from(n).map_err(|_| Error::InvalidArgument("too many workers"))?;
    let info = Info::new(info)?;
    let mut codes: Vec<c_int> = vec![0; n];
    // SAFETY: as in `dup`.
    let mut out = Comm(unsafe { ffi::RSMPI_COMM_NULL });
    // SAFETY: `MPI_COMM_SELF` is a predefined communicator; setting its handler to
    // `MPI_ERRORS_RETURN` makes a failed spawn return its error instead of aborting.
    check("MPI_Comm_set_errhandler", unsafe {
        ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_SELF, ffi::RSMPI_ERRORS_RETURN)
    })?;
    // SAFETY: `program` and the strings behind `argv` are NUL-terminated and outlive the call;
    // `argv` ends with a null pointer; `codes` holds `n` places, as the call writes one per
    // process; `info` is live or null; root 0 is this process's rank in `MPI_COMM_SELF`;
    // `out.0` is a valid place. The library does not write through `argv`.
    let rc = unsafe {
        ffi::MPI_Comm_spawn(
            program.as_ptr(),
            argv.as_mut_ptr(),
            count,
            info.0,
            0,
            ffi::RSMPI_COMM_SELF,
            &mut out.0,
            codes.as_mut_ptr(),
        )
    };
    check("MPI_Comm_spawn", rc)?;
    if let Some(&code) = codes.iter().find(|&&c| c != ffi::MPI_SUCCESS as c_int) {
        let started = codes.iter().filter(|&&c| c == ffi::MPI_SUCCESS as c_int).count();
        // SAFETY: reading a handle the shim defines.
        if out.0 != unsafe { ffi::RSMPI_COMM_NULL } {
            let _ = free(out);
        }
        return Err(Error::Spawn { started, wanted: n, message: error_string(code) });
    }
    errors_return(out)?;
    Ok(out)
}

/// The size of the remote group of the intercommunicator `comm`.
pub(crate) fn remote_size(comm: Comm) -> Result<usize> {
    let mut size: c_int = 0;
    // SAFETY: `comm` is a live intercommunicator; `size` is a valid place.
    check("MPI_Comm_remote_size", unsafe { ffi::MPI_Comm_remote_size(comm.0, &mut size) })?;
    Ok(usize::try_from(size).unwrap_or(0))
}

/// Sends `bytes` to `rank` of `comm` with `tag` (blocking: returns once the buffer may be
/// reused).
pub(crate) fn send(comm: Comm, rank: usize, tag: c_int, bytes: &[u8]) -> Result<()> {
    let count = c_int::try_from(bytes.len()).map_err(|_| Error::TooLarge(bytes.len()))?;
    let rank = c_int::try_from(rank).map_err(|_| Error::InvalidArgument("rank out of range"))?;
    // SAFETY: `bytes` is valid for `count` bytes of `MPI_UINT8_T`, which the library only
    // reads; `comm` is live.
    check("MPI_Send", unsafe {
        ffi::MPI_Send(bytes.as_ptr().cast(), count, ffi::RSMPI_UINT8_T, rank, tag, comm.0)
    })
}

/// A send in flight ([`isend`]): its request, and the bytes it reads, kept until it completes.
pub(crate) struct Sending {
    request: ffi::MPI_Request,
    bytes: Vec<u8>,
    complete: bool,
}

// SAFETY: the request is an opaque handle, usable from any thread under
// `MPI_THREAD_MULTIPLE`; the bytes are owned.
unsafe impl Send for Sending {}

/// Starts sending `bytes` to `rank` of `comm` with `tag` without waiting (`MPI_Isend`); the
/// bytes stay with the returned [`Sending`] until it completes.
pub(crate) fn isend(comm: Comm, rank: usize, tag: c_int, bytes: Vec<u8>) -> Result<Sending> {
    let count = c_int::try_from(bytes.len()).map_err(|_| Error::TooLarge(bytes.len()))?;
    let rank = c_int::try_from(rank).map_err(|_| Error::InvalidArgument("rank out of range"))?;
    // SAFETY: reading a handle the shim defines.
    let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
    // SAFETY: `bytes` is valid for `count` bytes; its heap buffer does not move when the
    // vector is moved into the `Sending`, which keeps it until the request completes (or leaks
    // it, see `Drop`); `request` is a valid place.
    check("MPI_Isend", unsafe {
        ffi::MPI_Isend(
            bytes.as_ptr().cast(),
            count,
            ffi::RSMPI_UINT8_T,
            rank,
            tag,
            comm.0,
            &mut request,
        )
    })?;
    Ok(Sending { request, bytes, complete: false })
}

impl std::fmt::Debug for Sending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("bytes", &self.bytes.len())
            .field("complete", &self.complete)
            .finish()
    }
}

impl Sending {
    /// Whether the send has completed (its bytes are no longer read).
    pub(crate) fn done(&mut self) -> Result<bool> {
        if self.complete {
            return Ok(true);
        }
        let mut flag: c_int = 0;
        let mut status = MaybeUninit::<ffi::MPI_Status>::zeroed();
        // SAFETY: `self.request` is the live request of `isend` (the call sets it to
        // `MPI_REQUEST_NULL` once complete); `flag` and `status` are valid places.
        check("MPI_Test", unsafe {
            ffi::MPI_Test(&mut self.request, &mut flag, status.as_mut_ptr())
        })?;
        self.complete = flag != 0;
        Ok(self.complete)
    }
}

impl Drop for Sending {
    /// A send that has not completed is let go (`MPI_Request_free`), and its bytes are leaked:
    /// the library may still read them.
    fn drop(&mut self) {
        if self.complete || self.done().unwrap_or(false) {
            return;
        }
        // SAFETY: `self.request` is a live request; freeing it lets the send complete on its
        // own. Its bytes are leaked below, so they outlive any read.
        unsafe { ffi::MPI_Request_free(&mut self.request) };
        std::mem::forget(std::mem::take(&mut self.bytes));
    }
}

/// A message waiting on `comm`, from any rank with any tag: its source, tag and length.
pub(crate) fn probe_any(comm: Comm) -> Result<Option<(usize, c_int, usize)>> {
    let mut flag: c_int = 0;
    let mut status = MaybeUninit::<ffi::MPI_Status>::zeroed();
    // SAFETY: `comm` is live; `flag` and `status` are valid places.
    check("MPI_Iprobe", unsafe {
        ffi::MPI_Iprobe(
            ffi::RSMPI_ANY_SOURCE,
            ffi::RSMPI_ANY_TAG,
            comm.0,
            &mut flag,
            status.as_mut_ptr(),
        )
    })?;
    if flag == 0 {
        return Ok(None);
    }
    // SAFETY: with the flag set, the call filled the status in; it was zeroed before anyway.
    let status = unsafe { status.assume_init() };
    let mut count: c_int = 0;
    // SAFETY: `status` describes the probed message; `count` is a valid place.
    check("MPI_Get_count", unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count) })?;
    let source = usize::try_from(status.MPI_SOURCE).unwrap_or(usize::MAX);
    Ok(Some((source, status.MPI_TAG, usize::try_from(count).unwrap_or(0))))
}

/// Receives the message of `len` bytes with `tag` from `rank` of `comm` that
/// [`probe_any`] found.
pub(crate) fn recv(comm: Comm, rank: usize, tag: c_int, len: usize) -> Result<Vec<u8>> {
    let count = c_int::try_from(len).map_err(|_| Error::TooLarge(len))?;
    let rank = c_int::try_from(rank).map_err(|_| Error::InvalidArgument("rank out of range"))?;
    let mut buf = vec![0u8; len];
    let mut status = MaybeUninit::<ffi::MPI_Status>::zeroed();
    // SAFETY: `buf` is valid for `count` bytes of `MPI_UINT8_T`; `comm` is live; `status` is a
    // valid place. A longer message than probed (impossible for the probed one) is an error,
    // never an overflow: the library truncates to `count`.
    check("MPI_Recv", unsafe {
        ffi::MPI_Recv(
            buf.as_mut_ptr().cast(),
            count,
            ffi::RSMPI_UINT8_T,
            rank,
            tag,
            comm.0,
            status.as_mut_ptr(),
        )
    })?;
    Ok(buf)
}
