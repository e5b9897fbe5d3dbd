//! The shared-memory and event rows: `shm_fill` and the `event_pingpong` rows, mp side and floor.

use anyhow::{Context, Result, ensure};

use crate::measure::seconds_per_op;
use crate::rows::{Figure, Side};

/// The size of the `shm_fill` segment: 256 MiB.
const FILL_BYTES: usize = 256 << 20;
/// The copy chunk of `shm_fill`: 1 MiB.
const CHUNK: usize = 1 << 20;
/// The byte the child writes.
const FILL: u8 = 0xA5;

/// The `shm_fill` child: copies a 1 MiB chunk into every MiB of the segment.
fn fill(shm: mp::shm::SharedMemory) -> Result<(), mp::shm::Error> {
    let chunk = vec![FILL; CHUNK];
    (0..FILL_BYTES).step_by(CHUNK).try_for_each(|off| shm.write(off, &chunk))
}

/// One `shm_fill` on the mp side: a fresh anonymous segment, a forked child fills it, the
/// parent reads it back chunk by chunk.
fn mp_fill_once() -> Result<()> {
    let shm = mp::shm::SharedMemory::new(FILL_BYTES).context("SharedMemory::new")?;
    let ctx = mp::get_context("fork")?;
    let mut p = ctx.process(fill, (shm.try_clone().context("try_clone")?,));
    p.start().context("start")?;
    ensure!(p.join().context("join")? == 0, "the filling child failed");
    let mut buf = vec![0u8; CHUNK];
    for off in (0..FILL_BYTES).step_by(CHUNK) {
        shm.read(off, &mut buf).context("read")?;
        ensure!(buf[CHUNK - 1] == FILL, "the segment was not filled");
    }
    Ok(())
}

/// shm_fill: a child fills a 256 MiB shared segment, the parent reads it, in GB/s. The floor
/// does the same with a bare memfd, `mmap`, `fork` and `waitpid`.
pub fn shm_fill(side: Side) -> Result<Figure> {
    let once = match side {
        Side::Mp => mp_fill_once,
        Side::Floor => crate::floor::memfd_fill_once,
    };
    let seconds = seconds_per_op(|n| (0..n).try_for_each(|_| once()))?;
    Ok(Figure { value: FILL_BYTES as f64 / seconds / 1e9, unit: "GB/s" })
}

/// The `event_pingpong` child: answers every ping with a pong, until it is killed.
fn pong(ping: mp::Event, pong: mp::Event) -> Result<(), mp::sync::Error> {
    loop {
        ping.wait()?;
        ping.clear();
        pong.set();
    }
}

/// event_pingpong: round trips between two processes through two `Event`s, in µs. The floor
/// is the same round trip spinning on two shared atomics.
pub fn event_pingpong(side: Side) -> Result<Figure> {
    let seconds = match side {
        Side::Mp => {
            let (ping, pong_ev) = (mp::Event::new()?, mp::Event::new()?);
            let ctx = mp::get_context("fork")?;
            let mut p = ctx.process(pong, (ping.clone(), pong_ev.clone())).with_daemon(true);
            p.start().context("start")?;
            let result = seconds_per_op(|n| {
                for _ in 0..n {
                    ping.set();
                    pong_ev.wait()?;
                    pong_ev.clear();
                }
                Ok(())
            });
            p.kill()?;
            p.join()?;
            result?
        }
        Side::Floor => crate::floor::spin_pingpong()?,
    };
    Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
}

/// event_pingpong_blocking: the same round trips with spinning off (`set_spin_limit(0)`, which
/// the forked child inherits), so every wait sleeps on its futex; the floor is a bare futex
/// wait/wake round trip on two shared words. Both sides give the median round trip, timed one
/// by one (`time_one_by_one`).
pub fn event_pingpong_blocking(side: Side) -> Result<Figure> {
    crate::measure::time_one_by_one();
    match side {
        Side::Mp => {
            mp::sync::set_spin_limit(0);
            event_pingpong(Side::Mp)
        }
        Side::Floor => {
            let seconds = crate::floor::futex_pingpong()?;
            Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
        }
    }
}

/// event_pingpong_loaded: event_pingpong's work while every core runs a CPU hog (the xtask
/// starts them); the floor is the blocking futex round trip under the same load.
pub fn event_pingpong_loaded(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => event_pingpong(Side::Mp),
        Side::Floor => {
            let seconds = crate::floor::futex_pingpong()?;
            Ok(Figure { value: seconds * 1e6, unit: "us/rt" })
        }
    }
}
