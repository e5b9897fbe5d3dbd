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

/// The bit of signal `sig` in a mask as `/proc` prints it (bit `n - 1` for signal `n`).
pub(crate) fn signal_bit(sig: i32) -> u64 {
    1u64 << (sig - 1).clamp(0, 63)
}

/// Resets the signal dispositions of a freshly forked child, then its signal mask (which
/// [`block_signals`] filled across the fork, so that no handler of the parent runs in the
/// child before this), then ignores `SIGPIPE` as the Rust runtime does at start-up.
///
/// `ignored` and `caught` are the signals the parent saw ignored and caught just before the
/// fork (`u64::MAX` each if it could not tell): only those are reset, and `SIGCHLD`, whose
/// default action may carry `SA_NOCLDWAIT`, which `/proc` does not show. A system call per
/// signal costs about as much as the rest of a child's start.
pub(crate) fn reset_signals_in_child(ignored: u64, caught: u64) {
    let pipe = signal_bit(libc::SIGPIPE);
    let pipe_ignored = ignored & pipe != 0 && caught & pipe == 0;
    let reset = ignored | caught | signal_bit(libc::SIGCHLD);
    // SAFETY: these calls take pointers to local, initialised `sigset_t`s only. Changing the
    // mask and dispositions is what the child wants: it starts like a fresh program. The
    // child has a single thread, so no other thread depends on the old handlers.
    unsafe {
        // 32 and 33 are glibc's own (thread cancellation and set*id broadcasts).
        for sig in (1..32).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            let fixed = sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == libc::SIGPIPE;
            if !fixed && reset & signal_bit(sig) != 0 {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // Ignored in the parent already: that `SIG_IGN` is what the child wants.
        if !pipe_ignored {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// What `/proc/self/status` says of this process's threads and signal dispositions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SignalStatus {
    /// How many threads the process has.
    pub(crate) threads: u64,
    /// The signals it ignores (bit `n - 1` for signal `n`).
    pub(crate) ignored: u64,
    /// The signals it has a handler for.
    pub(crate) caught: u64,
}

/// Reads this process's [`SignalStatus`]; `None` if `/proc` cannot be read (not mounted, no
/// descriptor free) or lacks a line.
pub(crate) fn own_status() -> Option<SignalStatus> {
    use rustix::fs::{Mode, OFlags};
    let path = c"/proc/self/status";
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut scan = StatusScan::default();
    let mut buf = [0u8; 1024];
    while scan.result().is_none() {
        match rustix::io::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => scan.feed(buf.get(..n).unwrap_or_default()),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    scan.result()
}

/// Finds the `Threads:`, `SigIgn:` and `SigCgt:` lines of a `/proc/<pid>/status` text fed
/// in pieces of any size.
#[derive(Default)]
struct StatusScan {
    /// The current line, if it fits (no line looked for is longer).
    line: [u8; 32],
    /// How many bytes of the current line were seen.
    len: usize,
    threads: Option<u64>,
    ignored: Option<u64>,
    caught: Option<u64>,
}

impl StatusScan {
    fn result(&self) -> Option<SignalStatus> {
        Some(SignalStatus { threads: self.threads?, ignored: self.ignored?, caught: self.caught? })
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b != b'\n' {
                if let Some(slot) = self.line.get_mut(self.len) {
                    *slot = b;
                }
                self.len = self.len.saturating_add(1);
                continue;
            }
            // A line cut short is none of those looked for.
            let line = self.line.get(..self.len).unwrap_or_default();
            if let Some(count) = line.strip_prefix(b"Threads:") {
                self.threads = parse_field(count, 10);
            } else if let Some(hex) = line.strip_prefix(b"SigIgn:") {
                self.ignored = parse_field(hex, 16);
            } else if let Some(hex) = line.strip_prefix(b"SigCgt:") {
                self.caught = parse_field(hex, 16);
            }
            self.len = 0;
        }
    }
}

/// A number as `/proc` prints it after a field's name: blanks, then digits of `radix` only
/// (a signal mask: 16 hexadecimal digits for 64 signals).
fn parse_field(field: &[u8], radix: u32) -> Option<u64> {
    let digits = field.trim_ascii();
    let valid = |b: &u8| char::from(*b).is_digit(radix);
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(valid) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()
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
    // destructor never closes it), and nothing else will use or close it again.
    unsafe { libc::close(fd) };
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

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] = b"Name:\tcat\nUmask:\t0022\nState:\tR (running)\nThreads:\t3\n\
        SigQ:\t0/96367\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
        SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t8000000000000402\n\
        CapInh:\t0000000000000000\n";

    fn scan_in_pieces(text: &[u8], piece: usize) -> StatusScan {
        let mut scan = StatusScan::default();
        for chunk in text.chunks(piece) {
            scan.feed(chunk);
        }
        scan
    }

    #[test]
    fn every_line_is_found_whatever_the_pieces() {
        let want = SignalStatus { threads: 3, ignored: 0x1000, caught: 0x8000_0000_0000_0402 };
        for piece in [1, 2, 7, 31, 32, 33, 512] {
            assert_eq!(scan_in_pieces(STATUS, piece).result(), Some(want), "pieces of {piece}");
        }
    }

    #[test]
    fn a_missing_line_or_a_bad_field_is_none() {
        let without = b"Threads:\t1\nSigIgn:\t0000000000000000\nCapInh:\t0\n";
        let scan = scan_in_pieces(without, 5);
        assert_eq!((scan.threads, scan.ignored, scan.caught), (Some(1), Some(0), None));
        assert_eq!(scan.result(), None);
        // No final newline: the line is not complete.
        assert_eq!(scan_in_pieces(b"SigCgt:\t0000000000000001", 4).caught, None);
        for bad in [
            &b"SigCgt:\t\n"[..],
            b"SigCgt:\tzz00000000000000\n",
            b"SigCgt:\t+0\n",
            b"SigCgt:\t00000000000000000000000000000001\n",
            b"SigCgt:\t0000000000000001 and a line far longer than the longest looked for\n",
        ] {
            assert_eq!(scan_in_pieces(bad, 3).caught, None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(scan_in_pieces(b"Threads:\t1f\n", 64).threads, None, "not decimal");
    }

    #[test]
    fn this_process_reports_its_status() {
        let status = own_status().expect("/proc/self/status");
        assert!(status.threads >= 1);
        // The Rust runtime ignores SIGPIPE; nothing catches SIGKILL.
        assert_ne!(status.ignored & signal_bit(libc::SIGPIPE), 0, "{status:?}");
        assert_eq!(status.caught & signal_bit(libc::SIGKILL), 0, "{status:?}");
    }

    #[test]
    fn signal_bits_are_proc_s() {
        assert_eq!(signal_bit(1), 1);
        assert_eq!(signal_bit(libc::SIGPIPE), 0x1000);
        assert_eq!(signal_bit(64), 1 << 63);
    }
}
