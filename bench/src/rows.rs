//! The rows: one function per row, which runs the row's mp side or its floor.
//!
//! Adding a row takes a function here with its entry in [`ROWS`], an entry in the xtask's row
//! table (`xtask/src/rows.rs`) and a function in `bench/python/bench.py`.

use anyhow::{Context, Result, bail, ensure};

use crate::floor;
use crate::measure::{min_time, seconds_per_op};

/// The side of a row to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The work done through `mp`.
    Mp,
    /// The same work done through libc directly.
    Floor,
}

/// A row's result: the per-operation figure and its unit, in ASCII (`us` for µs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// The per-operation figure.
    pub value: f64,
    /// The unit of `value`.
    pub unit: &'static str,
}

impl Figure {
    /// Microseconds per child, from seconds per child.
    fn micros_per_child(seconds: f64) -> Figure {
        Figure { value: seconds * 1e6, unit: "us/child" }
    }

    /// Nanoseconds per operation, from seconds per operation.
    fn nanos_per_op(seconds: f64) -> Figure {
        Figure { value: seconds * 1e9, unit: "ns/op" }
    }

    /// Operations per second, from seconds per operation.
    fn per_second(seconds: f64, unit: &'static str) -> Figure {
        Figure { value: 1.0 / seconds, unit }
    }
}

/// A row's function.
type RowFn = fn(Side) -> Result<Figure>;

/// Every row, by name.
const ROWS: &[(&str, RowFn)] = &[
    ("spawn_fork", spawn_fork),
    ("spawn_forkserver", spawn_forkserver),
    ("spawn_spawn", spawn_spawn),
    ("lock_counter", lock_counter),
    ("lock_uncontended", lock_uncontended),
    ("pipe_pingpong", pipe_pingpong),
    ("pipe_pingpong_blocking", pipe_pingpong_blocking),
    ("pipe_bulk", pipe_bulk),
    ("shm_fill", crate::shm_rows::shm_fill),
    ("event_pingpong", crate::shm_rows::event_pingpong),
    ("event_pingpong_blocking", crate::shm_rows::event_pingpong_blocking),
    ("queue_small", crate::queue_rows::queue_small),
    ("queue_1mib", crate::queue_rows::queue_1mib),
    ("pool_apply_async", crate::pool_rows::pool_apply_async),
    ("pool_apply_latency", crate::pool_rows::pool_apply_latency),
    ("pool_map_small", crate::pool_rows::pool_map_small),
    ("pool_map_with_objects", crate::pool_rows::pool_map_with_objects),
    ("pool_imap_chunked", crate::pool_rows::pool_imap_chunked),
    ("pool_cpu_speedup", crate::pool_rows::pool_cpu_speedup),
    ("pool_cpu_speedup_consumer", crate::pool_rows::pool_cpu_speedup_consumer),
    ("manager_dict", crate::manager_rows::manager_dict),
    ("manager_dict_tcp", crate::manager_rows::manager_dict_tcp),
    ("manager_dict_tcp_wire", crate::manager_rows::manager_dict_tcp_wire),
    ("manager_dict_blocking", crate::manager_rows::manager_dict_blocking),
    ("manager_dict_4clients", crate::manager_rows::manager_dict_4clients),
    ("manager_proxy_create", crate::manager_rows::manager_proxy_create),
    ("manager_list_iterate", crate::manager_rows::manager_list_iterate),
    ("manager_memory", crate::manager_rows::manager_memory),
    ("connection_rtt_unix", crate::connection_rows::connection_rtt_unix),
    ("connection_rtt_tcp", crate::connection_rows::connection_rtt_tcp),
    ("connection_connect_auth_tcp", crate::connection_rows::connection_connect_auth_tcp),
    ("queue_small_loaded", crate::queue_rows::queue_small_loaded),
    ("pipe_pingpong_loaded", pipe_pingpong_loaded),
    ("event_pingpong_loaded", crate::shm_rows::event_pingpong_loaded),
    ("manager_dict_loaded", crate::manager_rows::manager_dict_loaded),
    ("pool_apply_async_loaded", crate::pool_rows::pool_apply_async_loaded),
];

/// The names of the rows.
pub fn names() -> Vec<&'static str> {
    ROWS.iter().map(|(name, _)| *name).collect()
}

/// Runs `side` of the row called `name`.
pub fn run(name: &str, side: Side) -> Result<Figure> {
    match ROWS.iter().find(|(n, _)| *n == name) {
        Some((_, row)) => row(side),
        None => bail!("unknown row `{name}` (rows: {})", names().join(", ")),
    }
}

/// The child's target: it does nothing.
fn noop() {}

/// Starts and joins a child that does nothing, with `method`, in µs per child. One child is
/// started before the timing, which for forkserver also starts the server.
fn mp_start_join(method: &str) -> Result<Figure> {
    let ctx = mp::get_context(method).with_context(|| format!("get_context({method:?})"))?;
    let start_join = || -> Result<()> {
        let mut p = ctx.process(noop, ());
        p.start().context("start")?;
        let code = p.join().context("join")?;
        ensure!(code == 0, "the child exited with {code}");
        Ok(())
    };
    start_join()?;
    let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| start_join()))?;
    Ok(Figure::micros_per_child(seconds))
}

/// The fork floor, in µs per child: `fork`, `_exit(0)` in the child, `waitpid`.
fn fork_floor() -> Result<Figure> {
    let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| floor::fork_exit_wait()))?;
    Ok(Figure::micros_per_child(seconds))
}

/// spawn_fork: start + join a child that does nothing, fork start method.
fn spawn_fork(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => mp_start_join("fork"),
        Side::Floor => fork_floor(),
    }
}

/// spawn_forkserver: the same with the forkserver start method; the floor is the fork floor.
fn spawn_forkserver(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => mp_start_join("forkserver"),
        Side::Floor => fork_floor(),
    }
}

/// spawn_spawn: the same with the spawn start method; the floor is `posix_spawn` of this binary
/// as `mp-bench exit-now`, which returns at the start of `main`.
fn spawn_spawn(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => mp_start_join("spawn"),
        Side::Floor => {
            let exec = floor::ExecSelf::new()?;
            exec.run_once()?;
            let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| exec.run_once()))?;
            Ok(Figure::micros_per_child(seconds))
        }
    }
}

/// The number of processes of `lock_counter`.
const COUNTER_PROCESSES: u64 = 2;

/// Sizes a contended run by the minimum run time: `run(n)` has every process do `n`
/// operations and returns the seconds it took; a short calibration run picks `n`, then the
/// measured run gives seconds per operation (over all processes).
fn sized_run(processes: u64, mut run: impl FnMut(u64) -> Result<f64>) -> Result<f64> {
    let min = min_time()?.as_secs_f64();
    let mut n: u64 = 10_000;
    loop {
        let seconds = run(n)?;
        if seconds >= min / 4.0 || n >= 1 << 34 {
            let scaled = (n as f64 * (min / seconds.max(1e-9)) * 1.1).ceil() as u64;
            let n = scaled.max(n);
            let seconds = run(n)?;
            return Ok(seconds / (n * processes) as f64);
        }
        n *= 4;
    }
}

/// The child of the mp side of `lock_counter`: waits for the go byte, then increments.
fn mp_increment(counter: mp::Value<u64>, n: u64, go: mp::process::fdpass::PassFd) -> Result<()> {
    lock_floor::wait_byte(std::os::fd::AsFd::as_fd(&go))?;
    for _ in 0..n {
        *counter.lock().map_err(mp::sync::Error::from)? += 1;
    }
    Ok(())
}

/// lock_counter: 2 processes each do `with lock: value += 1` on a shared Value, in increments
/// per second. The floor is a robust pthread mutex in shared memory beside a `u64`, driven
/// through libc by forked children.
fn lock_counter(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => {
            let ctx = mp::get_context("fork").context("get_context(fork)")?;
            let counter = mp::Value::with_lock(0u64, mp::Lock::new()?)?;
            sized_run(COUNTER_PROCESSES, |n| {
                let before = counter.get()?;
                let (go_r, go_w) = lock_floor::pipe()?;
                let mut children = Vec::new();
                for _ in 0..COUNTER_PROCESSES {
                    let go = mp::process::fdpass::PassFd(go_r.try_clone()?);
                    let mut p = ctx.process(mp_increment, (counter.clone(), n, go));
                    p.start().context("start")?;
                    children.push(p);
                }
                let start = std::time::Instant::now();
                lock_floor::write_bytes(&go_w, COUNTER_PROCESSES as usize)?;
                for p in &children {
                    let code = p.join().context("join")?;
                    ensure!(code == 0, "a child exited with {code}");
                }
                let seconds = start.elapsed().as_secs_f64();
                ensure!(counter.get()? == before + n * COUNTER_PROCESSES, "lost increments");
                Ok(seconds)
            })?
        }
        Side::Floor => {
            let shared = lock_floor::SharedCounter::new()?;
            sized_run(COUNTER_PROCESSES, |n| shared.run(COUNTER_PROCESSES, n))?
        }
    };
    Ok(Figure::per_second(seconds, "incr/s"))
}

/// lock_uncontended: acquire + release of a lock nobody else uses, in ns.
fn lock_uncontended(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => {
            let lock = mp::Lock::new()?;
            seconds_per_op(|n| {
                for _ in 0..n {
                    drop(std::hint::black_box(lock.acquire().map_err(mp::sync::Error::from)?));
                }
                Ok(())
            })?
        }
        Side::Floor => {
            let shared = lock_floor::SharedCounter::new()?;
            seconds_per_op(|n| shared.lock_unlock(n))?
        }
    };
    Ok(Figure::nanos_per_op(seconds))
}

/// The floor of the lock rows: a robust pthread mutex in shared memory, through libc.
mod lock_floor {
    use std::io;
    use std::ptr;

    use anyhow::{Context, Result, ensure};

    /// A pipe (read end, write end), close-on-exec.
    pub fn pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
        use std::os::fd::FromRawFd as _;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, which pipe2 fills on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("pipe2");
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        Ok(unsafe {
            (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
        })
    }

    /// Reads one byte from `fd`: the go signal of a benchmark child.
    pub fn wait_byte(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let mut byte = 0u8;
        loop {
            // SAFETY: `byte` is one writable byte; `fd` is an open descriptor.
            let got = unsafe { libc::read(fd.as_raw_fd(), (&raw mut byte).cast(), 1) };
            match got {
                1 => return Ok(()),
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                _ => return Err(io::Error::last_os_error()).context("read the go byte"),
            }
        }
    }

    /// Writes `n` bytes into `fd`, releasing `n` children blocked in [`wait_byte`].
    pub fn write_bytes(fd: &std::os::fd::OwnedFd, n: usize) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let bytes = vec![b'!'; n];
        // SAFETY: `bytes` is readable for `n` bytes; `fd` is an open descriptor.
        let wrote = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), n) };
        ensure!(wrote == n as isize, "short write of the go bytes: {}", io::Error::last_os_error());
        Ok(())
    }

    /// A robust, process-shared pthread mutex and a `u64` beside it, in an anonymous shared
    /// mapping: the floor of the lock rows.
    pub struct SharedCounter {
        /// The mapping: the mutex at offset 0, the counter at offset 64.
        base: *mut u8,
    }

    /// The size of the mapping.
    const COUNTER_MAP: usize = 4096;

    impl SharedCounter {
        /// Maps the page and initialises the mutex: process-shared, robust, error-checking.
        pub fn new() -> Result<SharedCounter> {
            // SAFETY: an anonymous shared mapping of one page at an address the kernel picks.
            let base = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    COUNTER_MAP,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error()).context("mmap");
            }
            let base = base.cast::<u8>();
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            // SAFETY: `attr` is storage for an attribute object that `init` fills before the other
            // calls use it; the mutex lies at the start of the fresh mapping, which nothing else
            // uses yet.
            let rc = unsafe {
                libc::pthread_mutexattr_init(attr.as_mut_ptr());
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
                libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
                libc::pthread_mutexattr_settype(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ERRORCHECK);
                let rc = libc::pthread_mutex_init(base.cast(), attr.as_ptr());
                libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
                rc
            };
            ensure!(rc == 0, "pthread_mutex_init: {}", io::Error::from_raw_os_error(rc));
            Ok(SharedCounter { base })
        }

        /// The mutex.
        fn mutex(&self) -> *mut libc::pthread_mutex_t {
            self.base.cast()
        }

        /// The counter.
        fn counter(&self) -> *mut u64 {
            // SAFETY: offset 64 lies inside the page, past the 40-byte mutex, aligned for a u64.
            unsafe { self.base.add(64).cast() }
        }

        /// Locks, adds one, unlocks, `n` times.
        fn increment(&self, n: u64) {
            for _ in 0..n {
                // SAFETY: the mutex was initialised in `new` and the mapping lives as long as
                // `self`; the counter is only touched while the mutex is held.
                unsafe {
                    libc::pthread_mutex_lock(self.mutex());
                    *self.counter() += 1;
                    libc::pthread_mutex_unlock(self.mutex());
                }
            }
        }

        /// Locks and unlocks `n` times.
        pub fn lock_unlock(&self, n: u64) -> Result<()> {
            for _ in 0..n {
                // SAFETY: as in `increment`.
                unsafe {
                    libc::pthread_mutex_lock(std::hint::black_box(self.mutex()));
                    libc::pthread_mutex_unlock(self.mutex());
                }
            }
            Ok(())
        }

        /// Forks `processes` children that each increment `n` times once a go byte arrives, and
        /// returns the seconds from the go to the last exit.
        pub fn run(&self, processes: u64, n: u64) -> Result<f64> {
            // SAFETY: the counter is only read here while no child runs.
            let before = unsafe { *self.counter() };
            let (go_r, go_w) = pipe()?;
            let mut pids = Vec::new();
            for _ in 0..processes {
                // SAFETY: the child only reads a pipe, runs `increment` (pthread calls on the
                // shared mapping) and leaves with `_exit`, never returning into the parent's frames.
                let pid = unsafe { libc::fork() };
                match pid {
                    -1 => return Err(io::Error::last_os_error()).context("fork"),
                    0 => {
                        let ok = wait_byte(std::os::fd::AsFd::as_fd(&go_r)).is_ok();
                        self.increment(n);
                        // SAFETY: ends the child at once, running none of the parent's destructors.
                        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
                    }
                    pid => pids.push(pid),
                }
            }
            let start = std::time::Instant::now();
            write_bytes(&go_w, processes as usize)?;
            for pid in pids {
                crate::floor::wait_ok(pid)?;
            }
            let seconds = start.elapsed().as_secs_f64();
            // SAFETY: every child has exited.
            let after = unsafe { *self.counter() };
            ensure!(after == before + n * processes, "lost increments");
            Ok(seconds)
        }
    }

    impl Drop for SharedCounter {
        fn drop(&mut self) {
            // SAFETY: the mapping was made in `new` and nothing refers to it any more.
            unsafe { libc::munmap(self.base.cast(), COUNTER_MAP) };
        }
    }
}

/// The size of a `pipe_pingpong` message.
const PING_SIZE: usize = 64;

/// The child of the mp side of `pipe_pingpong`: sends every message back, until an empty one.
fn mp_pong(conn: mp::Connection) -> Result<(), mp::QueueError> {
    let mut buf = [0u8; PING_SIZE];
    loop {
        let n = conn.recv_bytes_into(&mut buf, 0)?;
        if n == 0 {
            return Ok(());
        }
        conn.send_bytes(&buf, 0, Some(n))?;
    }
}

/// pipe_pingpong: round trips of a 64-byte message through a duplex pipe between the parent
/// and a forked child, in µs per round trip. The floor is the spinning round trip: two
/// processes spinning on two shared atomics (BENCHMARKS.md's "spinning round trip").
fn pipe_pingpong(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => {
            let ctx = mp::get_context("fork").context("get_context(fork)")?;
            let (conn, child_end) = mp::pipe(true)?;
            let mut p = ctx.process(mp_pong, (child_end,));
            p.start().context("start")?;
            let msg = [7u8; PING_SIZE];
            let mut buf = [0u8; PING_SIZE];
            let seconds = seconds_per_op(|n| {
                for _ in 0..n {
                    conn.send_bytes(&msg, 0, None)?;
                    let got = conn.recv_bytes_into(&mut buf, 0)?;
                    ensure!(got == PING_SIZE, "a short reply of {got} bytes");
                }
                Ok(())
            })?;
            conn.send_bytes(b"", 0, None)?;
            let code = p.join().context("join")?;
            ensure!(code == 0, "the child exited with {code}");
            seconds
        }
        Side::Floor => crate::floor::spin_pingpong()?,
    };
    Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
}

/// pipe_pingpong_loaded: pipe_pingpong's work while every core runs a CPU hog (the xtask
/// starts them); the floor is the blocking futex round trip under the same load.
fn pipe_pingpong_loaded(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => pipe_pingpong(Side::Mp),
        Side::Floor => {
            let seconds = crate::floor::futex_pingpong()?;
            Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
        }
    }
}

/// pipe_pingpong_blocking: the same round trips with spinning off (`set_spin_limit(0)`, which
/// the forked child inherits), so every receive sleeps; the floor is a bare futex wait/wake
/// round trip on two shared words (the blocking floor BENCHMARKS.md names). Both sides give
/// the median round trip, timed one by one (`time_one_by_one`).
fn pipe_pingpong_blocking(side: Side) -> Result<Figure> {
    crate::measure::time_one_by_one();
    match side {
        Side::Mp => {
            mp::sync::set_spin_limit(0);
            pipe_pingpong(Side::Mp)
        }
        Side::Floor => {
            let seconds = crate::floor::futex_pingpong()?;
            Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
        }
    }
}

/// Seconds per round trip of `size` bytes on a blocking `AF_UNIX` socket pair between two
/// processes: the floor of `pipe_pingpong` and `manager_dict_blocking`.
pub fn socket_pingpong(size: usize) -> Result<f64> {
    pipe_floor::pingpong(size)
}

/// Seconds per round trip of a `size`-byte message over TCP loopback (`TCP_NODELAY`) between
/// two processes.
pub fn tcp_pingpong(size: usize) -> Result<f64> {
    pipe_floor::tcp_pingpong(size)
}

/// Seconds per message of `size` bytes streamed from a forked child through a blocking
/// `AF_UNIX` socket pair, one `write` and one `read` per message: the blocking floor of
/// `queue_small_loaded`.
pub fn socket_stream(size: usize) -> Result<f64> {
    pipe_floor::stream(size)
}

/// Seconds per TCP loopback connect + accept + close, in one process.
pub fn tcp_connect() -> Result<f64> {
    pipe_floor::tcp_connect()
}

/// Seconds per batch of `batch` messages of `size` bytes through a raw `AF_UNIX` socket pair
/// followed by a one-byte ack: the floor of `pipe_bulk` and `queue_1mib`.
pub fn socket_bulk(size: usize, batch: usize) -> Result<f64> {
    pipe_floor::bulk(size, batch)
}

/// The size of one `pipe_bulk` message.
const BULK_SIZE: usize = 1 << 20;

/// How many `pipe_bulk` messages go before each ack.
const BULK_BATCH: usize = 8;

/// The child of the mp side of `pipe_bulk`: receives messages, acks each empty one, and
/// returns on a one-byte one.
fn mp_bulk_sink(conn: mp::Connection) -> Result<(), mp::QueueError> {
    loop {
        match conn.recv_bytes(None)?.len() {
            0 => conn.send_bytes(b"ack", 0, None)?,
            1 => return Ok(()),
            _ => {}
        }
    }
}

/// pipe_bulk: 1 MiB `send_bytes` one way (8 of them), then one ack, in GB/s. The floor is
/// the same bytes written to and read from a raw `AF_UNIX` socket pair, with a one-byte ack.
fn pipe_bulk(side: Side) -> Result<Figure> {
    let seconds_per_batch = match side {
        Side::Mp => {
            let ctx = mp::get_context("fork").context("get_context(fork)")?;
            let (conn, child_end) = mp::pipe(true)?;
            let mut p = ctx.process(mp_bulk_sink, (child_end,));
            p.start().context("start")?;
            let msg = vec![5u8; BULK_SIZE];
            let seconds = seconds_per_op(|n| {
                for _ in 0..n {
                    for _ in 0..BULK_BATCH {
                        conn.send_bytes(&msg, 0, None)?;
                    }
                    conn.send_bytes(b"", 0, None)?;
                    ensure!(conn.recv_bytes(None)? == b"ack", "a wrong ack");
                }
                Ok(())
            })?;
            conn.send_bytes(b"s", 0, None)?;
            let code = p.join().context("join")?;
            ensure!(code == 0, "the child exited with {code}");
            seconds
        }
        Side::Floor => pipe_floor::bulk(BULK_SIZE, BULK_BATCH)?,
    };
    Ok(Figure { value: (BULK_SIZE * BULK_BATCH) as f64 / seconds_per_batch / 1e9, unit: "GB/s" })
}

/// The floor of the pipe rows: a raw `AF_UNIX` stream socket pair and a forked child, through
/// libc.
mod pipe_floor {
    use std::io;
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    use anyhow::{Context, Result, bail, ensure};

    use crate::measure::seconds_per_op;

    /// A connected `AF_UNIX` stream socket pair, close-on-exec.
    fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, which socketpair fills on success.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("socketpair");
        }
        // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// Writes all of `buf` to `fd`, retrying interruptions.
    fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            // SAFETY: `buf` is readable for its length; `fd` is an open descriptor.
            let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("write");
            }
            buf = &buf[n as usize..];
        }
        Ok(())
    }

    /// Fills `buf` from `fd`, retrying interruptions; `false` at end of file before the first
    /// byte.
    fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            // SAFETY: `rest` is writable for its length; `fd` is an open descriptor.
            let n = unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
            match n {
                0 if filled == 0 => return Ok(false),
                0 => bail!("end of file inside a message"),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e).context("read");
                    }
                }
                n => filled += n as usize,
            }
        }
        Ok(true)
    }

    /// Forks a child that runs `serve` on its end of a fresh socket pair and leaves with
    /// `_exit`; returns the parent's end and the child's pid.
    fn fork_with(serve: impl FnOnce(&OwnedFd) -> Result<()>) -> Result<(OwnedFd, libc::pid_t)> {
        fork_pair(socket_pair()?, serve)
    }

    /// A connected TCP loopback pair with `TCP_NODELAY` on both ends.
    fn tcp_pair() -> Result<(OwnedFd, OwnedFd)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind")?;
        let a = std::net::TcpStream::connect(listener.local_addr()?).context("connect")?;
        let (b, _) = listener.accept().context("accept")?;
        a.set_nodelay(true)?;
        b.set_nodelay(true)?;
        Ok((a.into(), b.into()))
    }

    /// Seconds per round trip of a `size`-byte message over TCP loopback (`TCP_NODELAY`), the
    /// echo in a forked child: the floor of `connection_rtt_tcp`.
    pub fn tcp_pingpong(size: usize) -> Result<f64> {
        let (ours, pid) = fork_pair(tcp_pair()?, |sock| {
            let mut buf = vec![0u8; size];
            while read_exact(sock, &mut buf)? {
                write_all(sock, &buf)?;
            }
            Ok(())
        })?;
        let msg = vec![7u8; size];
        let mut buf = vec![0u8; size];
        let seconds = seconds_per_op(|n| {
            for _ in 0..n {
                write_all(&ours, &msg)?;
                ensure!(read_exact(&ours, &mut buf)?, "the child went away");
            }
            Ok(())
        })?;
        finish(ours, pid)?;
        Ok(seconds)
    }

    /// Seconds per TCP loopback connect + accept + close, in one process, no handshake: the
    /// floor of `connection_connect_auth_tcp` (as `sock_rtt.c` measures it).
    pub fn tcp_connect() -> Result<f64> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind")?;
        let address = listener.local_addr()?;
        seconds_per_op(|n| {
            for _ in 0..n {
                let client = std::net::TcpStream::connect(address).context("connect")?;
                let (server, _) = listener.accept().context("accept")?;
                drop((client, server));
            }
            Ok(())
        })
    }

    /// Forks a child that runs `serve` on `theirs` and leaves with `_exit`; returns `ours`
    /// and the child's pid.
    fn fork_pair(
        (ours, theirs): (OwnedFd, OwnedFd),
        serve: impl FnOnce(&OwnedFd) -> Result<()>,
    ) -> Result<(OwnedFd, libc::pid_t)> {
        // SAFETY: the child only uses its socket through read and write and leaves with
        // `_exit`, never returning into the parent's frames.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()).context("fork"),
            0 => {
                drop(ours);
                let ok = serve(&theirs).is_ok();
                // SAFETY: ends the child at once, running none of the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => Ok((ours, pid)),
        }
    }

    /// Closes the parent's end, so the child reads end of file, and waits for the child.
    fn finish(ours: OwnedFd, pid: libc::pid_t) -> Result<()> {
        drop(ours);
        crate::floor::wait_ok(pid)
    }

    /// Seconds per round trip of a `size`-byte message.
    pub fn pingpong(size: usize) -> Result<f64> {
        let (ours, pid) = fork_with(|sock| {
            let mut buf = vec![0u8; size];
            while read_exact(sock, &mut buf)? {
                write_all(sock, &buf)?;
            }
            Ok(())
        })?;
        let msg = vec![7u8; size];
        let mut buf = vec![0u8; size];
        let seconds = seconds_per_op(|n| {
            for _ in 0..n {
                write_all(&ours, &msg)?;
                ensure!(read_exact(&ours, &mut buf)?, "the child went away");
            }
            Ok(())
        })?;
        finish(ours, pid)?;
        Ok(seconds)
    }

    /// Seconds per message of `size` bytes: the child is told a count (8 bytes) and writes
    /// that many messages, one `write` each; the parent reads them one `read` each.
    pub fn stream(size: usize) -> Result<f64> {
        let (ours, pid) = fork_with(|sock| {
            let msg = vec![9u8; size];
            let mut count = [0u8; 8];
            while read_exact(sock, &mut count)? {
                for _ in 0..u64::from_le_bytes(count) {
                    write_all(sock, &msg)?;
                }
            }
            Ok(())
        })?;
        let mut buf = vec![0u8; size];
        let seconds = seconds_per_op(|n| {
            write_all(&ours, &n.to_le_bytes())?;
            for _ in 0..n {
                ensure!(read_exact(&ours, &mut buf)?, "the child went away");
            }
            Ok(())
        })?;
        finish(ours, pid)?;
        Ok(seconds)
    }

    /// Seconds per batch of `batch` messages of `size` bytes followed by a one-byte ack.
    pub fn bulk(size: usize, batch: usize) -> Result<f64> {
        let (ours, pid) = fork_with(|sock| {
            let mut buf = vec![0u8; size];
            loop {
                for i in 0..batch {
                    if !read_exact(sock, &mut buf)? {
                        ensure!(i == 0, "end of file inside a batch");
                        return Ok(());
                    }
                }
                write_all(sock, b"!")?;
            }
        })?;
        let msg = vec![5u8; size];
        let mut ack = [0u8; 1];
        let seconds = seconds_per_op(|n| {
            for _ in 0..n {
                for _ in 0..batch {
                    write_all(&ours, &msg)?;
                }
                ensure!(read_exact(&ours, &mut ack)?, "the child went away");
            }
            Ok(())
        })?;
        finish(ours, pid)?;
        Ok(seconds)
    }
}
