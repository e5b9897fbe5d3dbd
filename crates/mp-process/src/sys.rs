//! The platform layer: every `unsafe` call of `mp-process` lives in this module.
//!
//! # Safety
//!
//! This module is the only place in the crate allowed to use `unsafe` (the crate root denies
//! it). It wraps the calls that rustix does not offer or offers only in its hidden,
//! experimental `runtime` module: `fork`, `_exit`, `posix_spawn` and the signal mask and
//! dispositions of a freshly forked child (through `libc`), the `.init_array` entry hook, the
//! linker symbols that bound the executable's text, the conversion of a validated text offset
//! into a function pointer, conjuring a zero-sized target, removing the bootstrap marker from
//! the environment while the process is still single-threaded, and closing descriptors a
//! forked child inherited from owners that do not exist in it. Each block says why its
//! contract holds. A macOS port replaces this file.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::Pid;

/// The descriptor number at which a spawned child finds its bootstrap socket.
pub(crate) const BOOT_FD: RawFd = 3;

static HOOK_RAN: AtomicBool = AtomicBool::new(false);

/// The constructor the dynamic loader runs before `main` in every process of a binary that
/// links `mp-process`: it diverts bootstrapped children before `main` is reached.
extern "C" fn entry_hook(_argc: c_int, _argv: *const *const c_char, _envp: *const *const c_char) {
    HOOK_RAN.store(true, Ordering::Relaxed);
    crate::bootstrap::on_entry();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ENTRY_HOOK: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = entry_hook;

/// Whether the entry hook ran in this process. Reading `ENTRY_HOOK` here makes every caller
/// (process start, `init`) pull the object that holds the hook into the link.
pub(crate) fn hook_ran() -> bool {
    std::hint::black_box(&ENTRY_HOOK);
    HOOK_RAN.load(Ordering::Relaxed)
}

/// Pretends the hook did or did not run, to test the error paths that depend on it.
#[cfg(test)]
pub(crate) fn set_hook_ran_for_test(ran: bool) {
    HOOK_RAN.store(ran, Ordering::Relaxed);
}

/// Removes the bootstrap marker variable from the environment.
///
/// Called only from the entry hook, before `main`, when the process has a single thread.
pub(crate) fn remove_env_in_hook(name: &str) {
    // SAFETY: `remove_var` is unsafe because another thread might read the environment at
    // the same time. This runs from the `.init_array` hook of a freshly exec'd process,
    // before `main`: no thread but the main one exists yet.
    unsafe { std::env::remove_var(name) };
}

unsafe extern "C" {
    /// Start of the executable's first segment, defined by every GNU-compatible linker.
    static __executable_start: u8;
    /// End of the executable's text, defined by every GNU-compatible linker.
    static etext: u8;
}

/// The half-open address range of the main executable's text.
pub(crate) fn text_range() -> (usize, usize) {
    // Only the addresses of the two linker-defined symbols are taken; they are never read.
    (std::ptr::addr_of!(__executable_start) as usize, std::ptr::addr_of!(etext) as usize)
}

/// The signature every child entry trampoline has.
pub(crate) type Trampoline = fn(&[u8], Vec<std::os::fd::OwnedFd>) -> i32;

/// The offset of `f` from the start of the executable, as sent to a child.
pub(crate) fn offset_of(f: Trampoline) -> u64 {
    let (start, _) = text_range();
    (f as usize).wrapping_sub(start) as u64
}

/// The address `offset` bytes into the executable, if it lies inside its text.
fn text_addr(offset: u64) -> Option<usize> {
    let (start, end) = text_range();
    let addr = start.checked_add(usize::try_from(offset).ok()?)?;
    (addr < end).then_some(addr)
}

/// Turns an offset received from a parent back into a trampoline, if it lies in the text.
pub(crate) fn trampoline_at(offset: u64) -> Option<Trampoline> {
    let addr = text_addr(offset)?;
    // SAFETY: the address lies inside the text of this executable, which the caller has
    // checked is the same file (device and inode) as the parent's. The offset came over the
    // inherited bootstrap socketpair, which only the parent holds, and the parent computed it
    // with `offset_of` from a function of exactly this type in the same binary. A function
    // pointer is a plain address on every Linux target this crate supports.
    Some(unsafe { std::mem::transmute::<usize, Trampoline>(addr) })
}

/// The offset of `f` from the start of the executable, if `f` lies in its text (a `fn` item
/// of the executable; a function of a shared library has no stable offset).
pub fn fn_offset(f: fn()) -> Option<u64> {
    let (start, end) = text_range();
    let addr = f as usize;
    (start..end).contains(&addr).then(|| (addr - start) as u64)
}

/// The `fn()` at `offset` into the executable's text, as [`fn_offset`] made it in another
/// process; `None` if the offset lies outside the text.
///
/// # Safety
///
/// `offset` must come from [`fn_offset`] in a process running the same executable file
/// (mp-process checks the device and inode of every child it starts), through a channel only
/// such trusted processes can write (shared memory or a socket of the process tree). The
/// bounds check keeps a forged offset inside the text but cannot make it a function start.
pub unsafe fn fn_at(offset: u64) -> Option<fn()> {
    let addr = text_addr(offset)?;
    // SAFETY: the caller guarantees that `offset` was made by `fn_offset` from a `fn()` of
    // this same executable, so `addr` is that function's address here.
    Some(unsafe { std::mem::transmute::<usize, fn()>(addr) })
}

/// Produces the value of a zero-sized target type in a child that never received it.
pub(crate) fn conjure_target<F: Copy + 'static>() -> F {
    const { assert!(std::mem::size_of::<F>() == 0) };
    // SAFETY: `F` is zero-sized (checked at compile time), so it has no bytes that could be
    // invalid. It is inhabited: the parent held a value of it, passed to `Process::new`, in
    // the same binary. It is `Copy`, so producing another value of it duplicates nothing that
    // may not be duplicated. `F` is only ever a fn item or closure type (the `Target` bound).
    unsafe { std::mem::zeroed() }
}

/// Forks. The child runs `child` and leaves with `_exit` and its result (1 if it panics);
/// the parent gets the child's pid.
pub(crate) fn fork_child(child: &mut dyn FnMut() -> i32) -> io::Result<Pid> {
    // SAFETY: `fork` itself has no memory-safety preconditions. Its hazard is the child of a
    // multithreaded parent, which inherits locks held by threads that do not exist in it. The
    // caller (`process::fork_with_hygiene`) holds stdout, stderr and mp's own global lock
    // across this call, so the child owns them; glibc's atfork handlers reset malloc's
    // locks. The child never returns from this function: it runs `child` under
    // `catch_unwind` and leaves with `_exit`, so it never unwinds into or returns through the
    // parent's frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(1);
        exit_now(code);
    }
    Pid::from_raw(pid).ok_or_else(|| io::Error::other("fork returned an invalid pid"))
}

/// Ends the calling process at once with `code`, without running atexit handlers or
/// destructors (the child of a fork must never run the parent's).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Resets the signal mask and every signal disposition of a freshly forked child, then
/// ignores `SIGPIPE` as the Rust runtime does at start-up.
pub(crate) fn reset_signals_in_child() {
    // SAFETY: these calls take pointers to local, initialised `sigset_t`s only. Changing the
    // mask and dispositions is what the child wants: it starts like a fresh program. The
    // child has a single thread, so no other thread depends on the old handlers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // 32 and 33 are glibc's own (thread cancellation and set*id broadcasts).
        for sig in (1..32).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Sets `SIGPIPE` to ignored, as the Rust runtime does before `main` (the entry hook runs
/// before that happens in a spawned child).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a disposition to `SIG_IGN` installs no handler and touches no memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Sets `SIGINT` to ignored (`true`) or back to its default (the forkserver must survive a
/// Ctrl-C to its process group; its children restore the default).
pub(crate) fn ignore_sigint(ignore: bool) {
    let disposition = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: as in `ignore_sigpipe`: no handler is installed, no memory is touched.
    unsafe {
        libc::signal(libc::SIGINT, disposition);
    }
}

/// Starts a fresh exec of this executable (`/proc/self/exe`) with `sock` as descriptor
/// [`BOOT_FD`], `/dev/null` as stdin, an empty signal mask, default signal dispositions, and
/// `marker` (a `NAME=VALUE` string) added to the environment.
pub(crate) fn spawn_self(sock: BorrowedFd<'_>, marker: &str) -> io::Result<Pid> {
    // The source descriptor must differ from BOOT_FD so that dup2 clears close-on-exec.
    let moved;
    let src: RawFd = if sock.as_raw_fd() == BOOT_FD {
        moved = rustix::io::fcntl_dupfd_cloexec(sock, BOOT_FD + 1)?;
        moved.as_raw_fd()
    } else {
        sock.as_raw_fd()
    };
    let path = c"/proc/self/exe";
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| CString::new(a.into_encoded_bytes()).ok())
        .unwrap_or_else(|| CString::from(c"mp-child"));
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(marker).map_err(|_| io::Error::other("NUL in marker"))?);
    let argv: [*mut c_char; 2] = [argv0.as_ptr() as *mut c_char, std::ptr::null_mut()];
    let mut envp: Vec<*mut c_char> = env.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    envp.push(std::ptr::null_mut());
    let devnull: &CStr = c"/dev/null";

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer passed below points to live, initialised memory owned by this
    // frame (`argv0`, `env`, `devnull`, the attribute and file-action objects), each
    // null-terminated as posix_spawn requires; the attribute and action objects are
    // initialised before use and destroyed on every path after use.
    let rc = unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        if libc::posix_spawnattr_init(&mut attr) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::posix_spawn_file_actions_init(&mut actions) != 0 {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(io::Error::last_os_error());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        let mut full: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigfillset(&mut full);
        let mut rc = libc::posix_spawnattr_setsigmask(&mut attr, &empty);
        if rc == 0 {
            rc = libc::posix_spawnattr_setsigdefault(&mut attr, &full);
        }
        if rc == 0 {
            rc = libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            );
        }
        if rc == 0 {
            rc = libc::posix_spawn_file_actions_adddup2(&mut actions, src, BOOT_FD);
        }
        if rc == 0 {
            rc = libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                devnull.as_ptr(),
                libc::O_RDONLY,
                0,
            );
        }
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Pid::from_raw(pid).ok_or_else(|| io::Error::other("posix_spawn returned an invalid pid"))
}

/// In a freshly forked child: forgets `owner` and closes `fd`, which it owned.
///
/// Only `state::Global::become_forked_child` calls this, for objects whose other owners are
/// threads of the parent, which do not exist in the child: nothing will use or close `fd`
/// again, so closing it cannot leave another owner with a dangling descriptor.
pub(crate) fn forget_and_close<T>(owner: T, fd: RawFd) {
    std::mem::forget(owner);
    // SAFETY: `owner` is forgotten, so its destructor never closes `fd`; the remaining owners
    // belong to threads that do not exist in this child (the caller's contract above).
    unsafe { libc::close(fd) };
}

/// Takes ownership of descriptor [`BOOT_FD`], the bootstrap socket a spawning parent placed
/// there, if it is open, and marks it close-on-exec.
///
/// Called once, from the entry hook of a process whose environment carries the bootstrap
/// marker, before `main`.
pub(crate) fn take_boot_fd() -> Option<OwnedFd> {
    // SAFETY: `fcntl(F_GETFD)` on a descriptor number only queries its flags.
    if unsafe { libc::fcntl(BOOT_FD, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open (checked above). The spawning parent put the bootstrap
    // socket there with posix_spawn's dup2 and the hook runs before `main`, so no other object
    // in this process owns descriptor BOOT_FD; it is taken once (the marker is removed first).
    let fd = unsafe { OwnedFd::from_raw_fd(BOOT_FD) };
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Some(fd)
}
