//! The queue rows: `queue_small`, `queue_small_loaded` and `queue_1mib`.

use anyhow::{Context, Result, ensure};

use crate::measure::seconds_per_op;
use crate::rows::{Figure, Side};

/// The child of `queue_small`: for each count it takes from `control`, puts that many small
/// integers on `items`; returns on 0.
fn small_producer(control: mp::Queue<u64>, items: mp::Queue<u64>) -> Result<(), mp::QueueError> {
    loop {
        let n = control.get()?;
        if n == 0 {
            return Ok(());
        }
        for i in 0..n {
            items.put(i & 0xff)?;
        }
    }
}

/// queue_small: one producer process puts small integers, the parent gets them, in msgs/s.
pub fn queue_small(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "queue_small has no floor side");
    let ctx = mp::get_context("fork").context("get_context(fork)")?;
    let control = mp::Queue::new()?;
    let items = mp::Queue::new()?;
    let mut p = ctx.process(small_producer, (control.clone(), items.clone()));
    p.start().context("start")?;
    let seconds = seconds_per_op(|n| {
        control.put(n)?;
        for i in 0..n {
            ensure!(items.get()? == i & 0xff, "an item out of order");
        }
        Ok(())
    })?;
    control.put(0)?;
    let code = p.join().context("join")?;
    ensure!(code == 0, "the child exited with {code}");
    Ok(Figure { value: 1.0 / seconds, unit: "msgs/s" })
}

/// queue_small_loaded: queue_small's work while every core runs a CPU hog (the xtask starts
/// them); the floor is the blocking stream of 8-byte messages on an `AF_UNIX` socket pair,
/// one `write` and one `read` each, under the same load.
pub fn queue_small_loaded(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => queue_small(Side::Mp),
        Side::Floor => Ok(Figure { value: 1.0 / crate::rows::socket_stream(8)?, unit: "msgs/s" }),
    }
}

/// The size of one `queue_1mib` message.
const MIB: usize = 1 << 20;

/// How many messages the floor sends before each ack.
const FLOOR_BATCH: usize = 8;

/// The child of `queue_1mib`: for each count it takes from `control`, puts that many 1 MiB
/// byte messages on `items`; returns on 0.
fn mib_producer(
    control: mp::Queue<u64>,
    items: mp::Queue<mp::Bytes>,
) -> Result<(), mp::QueueError> {
    let msg = mp::Bytes(vec![5u8; MIB]);
    loop {
        let n = control.get()?;
        if n == 0 {
            return Ok(());
        }
        for _ in 0..n {
            items.put_ref(&msg)?;
        }
    }
}

/// queue_1mib: one producer process puts 1 MiB byte messages, the parent gets them, in GB/s.
/// The floor is the same bytes through a raw `AF_UNIX` socket pair (as `pipe_bulk`'s floor).
pub fn queue_1mib(side: Side) -> Result<Figure> {
    let seconds_per_msg = match side {
        Side::Mp => {
            let ctx = mp::get_context("fork").context("get_context(fork)")?;
            let control = mp::Queue::new()?;
            let items = mp::Queue::new()?;
            let mut p = ctx.process(mib_producer, (control.clone(), items.clone()));
            p.start().context("start")?;
            let seconds = seconds_per_op(|n| {
                control.put(n)?;
                for _ in 0..n {
                    ensure!(items.get()?.len() == MIB, "a short message");
                }
                Ok(())
            })?;
            control.put(0)?;
            let code = p.join().context("join")?;
            ensure!(code == 0, "the child exited with {code}");
            seconds
        }
        Side::Floor => crate::rows::socket_bulk(MIB, FLOOR_BATCH)? / FLOOR_BATCH as f64,
    };
    Ok(Figure { value: MIB as f64 / seconds_per_msg / 1e9, unit: "GB/s" })
}
