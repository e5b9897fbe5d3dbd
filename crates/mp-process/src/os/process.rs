//! The process calls rustix does not offer (or offers only in its hidden, experimental
//! `runtime` module), through `libc`: `fork`, `_exit`, `posix_spawn` of `/proc/self/exe`, the
//! signal mask and dispositions of a freshly forked child, a handler run in every forked
//! child (`pthread_atfork`), removing the bootstrap marker from
//! the environment while the process is still single-threaded, taking descriptor 3, and
//! closing what a forked child inherited from owners that do not exist in it.
//!
//! Each function states its contract; a macOS port replaces this file.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::process::Pid;

/// The descriptor number at which a spawned child finds its bootstrap socket.
pub(crate) const BOOT_FD: RawFd = 3;

/// Removes the bootstrap marker variable `name` from the environment.
///
/// # Safety
///
/// No other thread may exist in the process (no thread can read the environment
/// meanwhile): call it from the `.init_array` entry hook, before `main`.
pub(crate) unsafe fn remove_env_in_hook(name: &str) {
    // SAFETY: `remove_var` requires that no other thread reads or writes the environment at
    // the same time; by the caller's contract the process has a single thread.
    unsafe { std::env::remove_var(name) };
}

/// Forks. The child runs `child` and leaves with `_exit` and its result (1 if it panics);
/// the parent gets the child's pid.
pub(crate) fn fork_child(child: &mut dyn FnMut() -> i32) -> io::Result<Pid> {
    // SAFETY: `fork` itself has no memory-safety preconditions. Its hazard is the child of a
    // multithreaded parent, which inherits locks held by threads that do not exist in it. The
    // caller (`process::fork_now`) holds stdout, stderr and mp's own global lock
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

/// Registers `handler` to run in the child of every `fork` of this process (glibc's
/// `fork`, whoever calls it), before `fork` returns there.
pub(crate) fn on_fork_child(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `pthread_atfork` only records the handler; `handler` is a plain function that
    // lives as long as the program. It runs in the child while the child has a single thread.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(handler)) };
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
}

/// Ends the calling process at once with `code`, without running atexit handlers or
/// destructors (the child of a fork must never run the parent's).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// The signal mask a thread had before [`block_signals`].
#[derive(Clone, Copy)]
pub(crate) struct SavedMask(libc::sigset_t);

/// Blocks every signal in the calling thread (but glibc's own two, which it never lets a
/// program block) and returns the mask it had, for [`restore_signals`].
pub(crate) fn block_signals() -> SavedMask {
    // SAFETY: both sets are local and initialised (`sigfillset` fills `all`, and `old` is
    // zeroed, then written by the call); blocking signals in this thread only delays them.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        SavedMask(old)
    }
}

/// Gives the calling thread back the mask `saved` took.
pub(crate) fn restore_signals(saved: &SavedMask) {
    // SAFETY: `saved.0` is a mask the kernel filled in; setting it touches no memory.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &saved.0, std::ptr::null_mut());
    }
}

/// The realtime signals glibc lets a program use (`SIGRTMIN..=SIGRTMAX`), asked of glibc
/// before a fork so that its child does not run that code (every page of code a forked child
/// runs for the first time is a page fault there).
#[derive(Clone, Copy)]
pub(crate) struct RealtimeSignals(i32, i32);

impl RealtimeSignals {
    /// Asks glibc for the range.
    pub(crate) fn get() -> RealtimeSignals {
        RealtimeSignals(libc::SIGRTMIN(), libc::SIGRTMAX())
    }
}

/// The kernel's `struct sigaction` on x86-64 and aarch64 (`rt_sigaction` takes it, not
/// glibc's); other architectures lay it out otherwise and go through glibc's `signal`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets the disposition of `sig` to `handler` (`SIG_DFL` or `SIG_IGN`: no handler runs, so
/// no restorer is needed) with the `rt_sigaction` system call itself.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn set_disposition(sig: i32, handler: libc::sighandler_t) {
    let act = KernelSigaction { handler, flags: 0, restorer: 0, mask: 0 };
    // SAFETY: `act` is a valid kernel `sigaction` that lives across the call, the old action
    // is not asked for (null), and the size is that of the kernel's 64-bit signal set.
    unsafe {
        libc::syscall(libc::SYS_rt_sigaction, sig, &act as *const KernelSigaction, 0usize, 8usize);
    }
}

/// Sets the disposition of `sig` to `handler` (`SIG_DFL` or `SIG_IGN`) through glibc.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn set_disposition(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: setting a disposition to `SIG_DFL` or `SIG_IGN` installs no handler and
    // touches no memory.
    unsafe {
        libc::signal(sig, handler);
    }
}

/// Resets every signal disposition of a freshly forked child, then its signal mask (which
/// [`block_signals`] filled across the fork, so that no handler of the parent runs in the
/// child before this), then ignores `SIGPIPE` as the Rust runtime does at start-up. It makes
/// the system calls itself (through glibc's `syscall` only), so the child runs one page of
/// glibc's code for it rather than three.
pub(crate) fn reset_signals_in_child(realtime: RealtimeSignals) {
    // 32 and 33 are glibc's own (thread cancellation and set*id broadcasts).
    for sig in (1..32).chain(realtime.0..=realtime.1) {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGPIPE {
            continue;
        }
        set_disposition(sig, libc::SIG_DFL);
    }
    set_disposition(libc::SIGPIPE, libc::SIG_IGN);
    let empty: u64 = 0;
    // SAFETY: the new mask is a local 64-bit set that lives across the call, the old one is
    // not asked for, and the size is the kernel's. Emptying the mask of the child's single
    // thread is what the child wants: it starts like a fresh program.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            0usize,
            8usize,
        );
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

/// In a freshly forked child: closes `fd`, the descriptor of an object the caller has
/// forgotten (`std::mem::forget`) because its other owners are threads of the parent, which
/// do not exist in the child.
///
/// # Safety
///
/// `fd` must be open and owned by an object that was forgotten in this process, and nothing
/// that can still run in this process (no thread, no other object) may use or close `fd`
/// afterwards.
pub(crate) unsafe fn close_forgotten(fd: RawFd) {
    // SAFETY: by the caller's contract, `fd` is open, its owner was forgotten (so its
    // destructor never closes it), and nothing else will use or close it again. (rustix's
    // close is a system call in place: a forked child runs no text of libc's for it.)
    unsafe { rustix::io::close(fd) };
}

/// Takes ownership of descriptor [`BOOT_FD`], the bootstrap socket a spawning parent placed
/// there, if it is open, and marks it close-on-exec. Only the first call in a process can take
/// it; later calls return `None`.
///
/// Called from the entry hook of a process whose environment carries the bootstrap marker,
/// before `main`.
pub(crate) fn take_boot_fd() -> Option<OwnedFd> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    // SAFETY: `fcntl(F_GETFD)` on a descriptor number only queries its flags.
    if unsafe { libc::fcntl(BOOT_FD, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `from_raw_fd` needs an open descriptor that nothing else owns. It is open
    // (checked above); the spawning parent put the bootstrap socket there with posix_spawn's
    // dup2 and the hook runs before `main`, so no object of this process adopted descriptor
    // BOOT_FD before; `TAKEN` makes this the only adoption.
    let fd = unsafe { OwnedFd::from_raw_fd(BOOT_FD) };
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Some(fd)
}
