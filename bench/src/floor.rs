//! The floors: what the kernel and libc cost for the same work, with no `mp` logic.
//!
//! They run in the same binary as the mp side, in a fresh process of the same kind, so that
//! both are measured at the same resident size.

use std::ffi::{CString, OsString, c_char};
use std::io;
use std::os::unix::ffi::OsStringExt as _;
use std::ptr;

use anyhow::{Context, Result, ensure};

/// Waits for the child `pid` and checks that it exited with status 0.
pub fn wait_ok(pid: libc::pid_t) -> Result<()> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live, writable local; waitpid writes only there.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if got == -1 && error.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(error).context("waitpid");
    }
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child ended with wait status {status:#x}"
    );
    Ok(())
}

/// Forks a child that calls `_exit(0)` at once, and waits for it.
pub fn fork_exit_wait() -> Result<()> {
    // SAFETY: the child runs only `_exit`, which is async-signal-safe, so forking is sound even
    // if other threads hold locks; the parent only waits.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()).context("fork"),
        0 => {
            // SAFETY: `_exit` ends the child at once, running none of the parent's destructors
            // or atexit handlers, which the child must not run.
            unsafe { libc::_exit(0) }
        }
        pid => wait_ok(pid),
    }
}

/// Starts this binary again as `<argv0> exit-now` with `posix_spawn` and waits for it.
pub struct ExecSelf {
    argv0: CString,
    env: Vec<CString>,
}

impl ExecSelf {
    /// Prepares argv and the environment, so that the timed part only spawns and waits.
    pub fn new() -> Result<ExecSelf> {
        let argv0 = std::env::args_os().next().unwrap_or_else(|| OsString::from("mp-bench"));
        let argv0 = CString::new(argv0.into_vec()).context("argv[0] holds a NUL byte")?;
        let env = std::env::vars_os()
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                CString::new(entry)
            })
            .collect::<Result<Vec<_>, _>>()
            .context("an environment variable holds a NUL byte")?;
        Ok(ExecSelf { argv0, env })
    }

    /// Spawns `/proc/self/exe exit-now` and waits for it to exit.
    pub fn run_once(&self) -> Result<()> {
        let argv: [*mut c_char; 3] =
            [self.argv0.as_ptr().cast_mut(), c"exit-now".as_ptr().cast_mut(), ptr::null_mut()];
        let mut envp: Vec<*mut c_char> = self.env.iter().map(|e| e.as_ptr().cast_mut()).collect();
        envp.push(ptr::null_mut());
        let mut pid: libc::pid_t = 0;
        // SAFETY: the path, every argv entry and every envp entry are NUL-terminated strings that
        // outlive the call, both arrays end with a null pointer, posix_spawn does not write
        // through them despite the `*mut` in its signature, and null file actions and attributes
        // ask for the defaults.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                c"/proc/self/exe".as_ptr(),
                ptr::null(),
                ptr::null(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc)).context("posix_spawn of /proc/self/exe");
        }
        wait_ok(pid)
    }
}

/// A shared anonymous mapping of `len` bytes, unmapped on drop.
struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

impl SharedMap {
    /// Maps `len` bytes of `fd` (or anonymous memory when `fd` is `None`), shared.
    fn new(len: usize, fd: Option<libc::c_int>) -> Result<SharedMap> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED, fd),
            None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping at an address the kernel picks; nothing else is touched.
        let ptr = unsafe {
            libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0)
        };
        ensure!(ptr != libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
        Ok(SharedMap { ptr: ptr.cast(), len })
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` describe a mapping this value made and nothing else unmaps.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Forks a child that runs `child` and leaves with `_exit`, and waits for it.
fn fork_run(child: impl FnOnce()) -> Result<()> {
    // SAFETY: the bench program is single-threaded when it forks; the child runs `child`,
    // which only touches shared memory, and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()).context("fork"),
        0 => {
            child();
            // SAFETY: as in `fork_exit_wait`.
            unsafe { libc::_exit(0) }
        }
        pid => wait_ok(pid),
    }
}

/// The `shm_fill` floor: a memfd of 256 MiB mapped shared, a forked child copies a 1 MiB chunk
/// into every MiB of it, the parent copies it back out.
pub fn memfd_fill_once() -> Result<()> {
    const LEN: usize = 256 << 20;
    const CHUNK: usize = 1 << 20;
    // SAFETY: a NUL-terminated name; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"floor".as_ptr(), libc::MFD_CLOEXEC) };
    ensure!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: `fd` is the memfd just made; it is closed once below.
    let truncated = unsafe { libc::ftruncate(fd, LEN as libc::off_t) };
    let map = SharedMap::new(LEN, Some(fd));
    // SAFETY: `fd` is open and owned here; the mapping keeps its own reference.
    unsafe { libc::close(fd) };
    ensure!(truncated == 0, "ftruncate: {}", io::Error::last_os_error());
    let map = map?;
    let chunk = vec![0xA5u8; CHUNK];
    fork_run(|| {
        for off in (0..LEN).step_by(CHUNK) {
            // SAFETY: `off + CHUNK <= LEN`, inside the mapping; `chunk` is a separate buffer.
            unsafe { ptr::copy_nonoverlapping(chunk.as_ptr(), map.ptr.add(off), CHUNK) };
        }
    })?;
    let mut buf = vec![0u8; CHUNK];
    for off in (0..LEN).step_by(CHUNK) {
        // SAFETY: as above; the child has exited, nobody writes the mapping any more.
        unsafe { ptr::copy_nonoverlapping(map.ptr.add(off), buf.as_mut_ptr(), CHUNK) };
        ensure!(buf[CHUNK - 1] == 0xA5, "the segment was not filled");
    }
    Ok(())
}

/// Sleeps on the shared futex word `word` while it holds `expected`.
fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT (shared, no timeout) on a valid, aligned 32-bit word in a shared
    // mapping; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one waiter on the shared futex word `word`.
fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned 32-bit word; nothing is written.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// How a side of [`pingpong`] waits for the other's store.
#[derive(Clone, Copy, PartialEq)]
enum Waiting {
    /// Spin on the word.
    Spin,
    /// Sleep in `FUTEX_WAIT` after saying so in the word's sleeper flag; the other side makes
    /// the `FUTEX_WAKE` system call only when that flag says someone sleeps, as every blocking
    /// primitive does (and mp's do).
    Futex,
}

/// A futex word and the flag its waiter raises before it sleeps on it, on a cache line of
/// their own.
#[repr(C, align(64))]
struct Slot {
    word: std::sync::atomic::AtomicU32,
    sleeper: std::sync::atomic::AtomicU32,
}

impl Slot {
    /// Stores `v` and wakes the other side if it sleeps (or is about to) on the word.
    fn post(&self, v: u32, waiting: Waiting) {
        use std::sync::atomic::Ordering::SeqCst;
        self.word.store(v, SeqCst);
        if waiting == Waiting::Futex && self.sleeper.load(SeqCst) != 0 {
            futex_wake(&self.word);
        }
    }

    /// Waits until the word no longer holds `seen` and returns what it holds. Under
    /// [`Waiting::Futex`] the flag is raised before the word is looked at again, and the poster
    /// stores before it looks at the flag (both sequentially consistent): either this side
    /// sees the new value, or the poster sees the flag and wakes it.
    fn wait_change(&self, seen: u32, waiting: Waiting) -> u32 {
        use std::sync::atomic::Ordering::{Acquire, SeqCst};
        loop {
            let v = self.word.load(Acquire);
            if v != seen {
                return v;
            }
            match waiting {
                Waiting::Spin => std::hint::spin_loop(),
                Waiting::Futex => {
                    self.sleeper.store(1, SeqCst);
                    if self.word.load(SeqCst) == seen {
                        futex_wait(&self.word, seen);
                    }
                    self.sleeper.store(0, SeqCst);
                }
            }
        }
    }
}

/// Round trips through two words in shared memory between this process and a forked child,
/// in seconds per round trip: the parent posts a count on one, the child echoes it on the
/// other, each side waiting as `waiting` says.
fn pingpong(waiting: Waiting) -> Result<f64> {
    let map = SharedMap::new(4096, None)?;
    // SAFETY: the mapping is page-aligned, zeroed and 4096 bytes: room for two 64-byte `Slot`s
    // (atomics, which have no invalid bit patterns) at offsets 0 and 64, shared with the child.
    let (ping, pong) = unsafe { (&*map.ptr.cast::<Slot>(), &*map.ptr.add(64).cast::<Slot>()) };
    const STOP: u32 = u32::MAX;
    // SAFETY: the bench program is single-threaded; the child only waits and wakes on the
    // shared words and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        let mut seen = 0;
        loop {
            seen = ping.wait_change(seen, waiting);
            if seen == STOP {
                // SAFETY: as in `fork_exit_wait`.
                unsafe { libc::_exit(0) }
            }
            pong.post(seen, waiting);
        }
    }
    let mut counter = 0u32;
    let result = crate::measure::seconds_per_op(|n| {
        for _ in 0..n {
            let previous = counter;
            counter = counter.wrapping_add(1) % (STOP - 1) + 1;
            ping.post(counter, waiting);
            let got = pong.wait_change(previous, waiting);
            ensure!(got == counter, "the child echoed {got}, not {counter}");
        }
        Ok(())
    });
    ping.post(STOP, waiting);
    wait_ok(pid)?;
    result
}

/// The `event_pingpong` floor: both sides spin, in seconds per round trip.
pub fn spin_pingpong() -> Result<f64> {
    pingpong(Waiting::Spin)
}

/// The blocking floor of `pipe_pingpong_blocking`, `event_pingpong_blocking` and the loaded
/// ping-pong rows: each side sleeps in `FUTEX_WAIT` until the other wakes it, in seconds per
/// round trip (bench/README.md, "The blocking rows").
pub fn futex_pingpong() -> Result<f64> {
    pingpong(Waiting::Futex)
}
