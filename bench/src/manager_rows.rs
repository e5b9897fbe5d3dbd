//! The manager rows: `manager_dict`, `manager_dict_tcp`, `manager_dict_tcp_wire`,
//! `manager_dict_blocking`, `manager_dict_4clients`,
//! `manager_proxy_create`, `manager_list_iterate`, `manager_memory` and `manager_dict_loaded`.
//!
//! Every row starts its manager under fork, as the other rows start their children, and
//! measures warm (the first proxies and connections exist before the timing).

use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::measure::{min_time, seconds_per_op};
use crate::rows::{Figure, Side};

/// A manager started under fork.
fn manager() -> Result<mp::Manager> {
    Ok(mp::Manager::builder().start_method(mp::StartMethod::Fork).start()?)
}

/// Seconds per operation of `d[k] = i; d[k]` (two operations per round), one client.
fn dict_set_get(d: &mp::DictProxy<u64, u64>) -> Result<f64> {
    let seconds = seconds_per_op(|n| {
        for i in 0..n {
            d.insert(i & 0xff, i)?;
            ensure!(d.get(&(i & 0xff))? == Some(i), "a wrong value");
        }
        Ok(())
    })?;
    Ok(seconds / 2.0)
}

/// manager_dict: set then get on a dict from the owner, in ops/s (each set, each get, is one).
pub fn manager_dict(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "manager_dict has no floor side");
    let m = manager()?;
    let d = m.dict()?;
    Ok(Figure { value: 1.0 / dict_set_get(&d)?, unit: "ops/s" })
}

/// Set then get on a dict of a manager served on TCP loopback, from a client that reached it
/// with `Manager::connect` (a remote client: the key's handshake on each connection), with
/// the same-host shortcut or without; ops/s.
fn remote_dict(shortcut: bool) -> Result<Figure> {
    let m = mp::Manager::builder()
        .start_method(mp::StartMethod::Fork)
        .address("127.0.0.1:0")
        .authkey(b"secret")
        .start()?;
    let address = m.address().context("the manager's address")?.clone();
    let remote = mp::Manager::connect_builder(address)
        .authkey(b"secret")
        .same_host_shortcut(shortcut)
        .connect()?;
    ensure!(remote.is_same_host() == shortcut, "the shortcut was (not) taken");
    let d = remote.dict()?;
    Ok(Figure { value: 1.0 / dict_set_get(&d)?, unit: "ops/s" })
}

/// manager_dict_tcp: set then get on a dict of a manager served on TCP loopback, from a
/// client that reached it with `Manager::connect`, which finds the manager on its host and
/// moves to shared memory (the same-host shortcut), in ops/s.
pub fn manager_dict_tcp(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "manager_dict_tcp has no floor side");
    remote_dict(true)
}

/// manager_dict_tcp_wire: the same with the shortcut off, every call over TCP (CPython's
/// framing), as a client on another host has it; the floor is a blocking 64-byte TCP
/// loopback round trip per operation, in ops/s.
pub fn manager_dict_tcp_wire(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => remote_dict(false),
        Side::Floor => Ok(Figure { value: 1.0 / crate::rows::tcp_pingpong(64)?, unit: "ops/s" }),
    }
}

/// manager_dict_blocking: the same with spinning off in both processes, so every receive
/// sleeps, in µs per operation; the floor is a blocking 64-byte `AF_UNIX` round trip. Both
/// sides give the median operation, timed one by one (`time_one_by_one`).
pub fn manager_dict_blocking(side: Side) -> Result<Figure> {
    crate::measure::time_one_by_one();
    let seconds = match side {
        Side::Mp => {
            // The manager, forked after this, inherits it.
            mp::sync::set_spin_limit(0);
            let m = manager()?;
            let d = m.dict()?;
            dict_set_get(&d)?
        }
        Side::Floor => crate::rows::socket_pingpong(64)?,
    };
    Ok(Figure { value: seconds * 1e6, unit: "us/op" })
}

/// manager_dict_loaded: manager_dict's work while every core runs a CPU hog (the xtask starts
/// them); the floor is a blocking 64-byte `AF_UNIX` round trip per operation, under the same
/// load, in ops/s.
pub fn manager_dict_loaded(side: Side) -> Result<Figure> {
    match side {
        Side::Mp => manager_dict(Side::Mp),
        Side::Floor => Ok(Figure { value: 1.0 / crate::rows::socket_pingpong(64)?, unit: "ops/s" }),
    }
}

/// The clients of `manager_dict_4clients`.
const CLIENTS: u64 = 4;

/// A client of `manager_dict_4clients`: waits for the go, does `rounds` set+get rounds on its
/// own keys, says it is done.
fn dict_client(
    d: mp::DictProxy<u64, u64>,
    me: u64,
    rounds: u64,
    go: mp::Event,
    done: mp::Queue<u64>,
) -> mp::Result<()> {
    go.wait()?;
    for i in 0..rounds {
        let k = me << 32 | (i & 0xff);
        d.insert(k, i)?;
        if d.get(&k)? != Some(i) {
            return Err(std::io::Error::other("a wrong value").into());
        }
    }
    done.put(me)?;
    Ok(())
}

/// manager_dict_4clients: four processes at once doing set+get on one dict, total ops/s.
/// Each does a number of rounds sized from a one-client run to last the minimum time.
pub fn manager_dict_4clients(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "manager_dict_4clients has no floor side");
    let m = manager()?;
    let d = m.dict()?;
    let one = dict_set_get(&d)?;
    let rounds = ((min_time()?.as_secs_f64() / (2.0 * one)) as u64).max(1000);
    let ctx = mp::get_context("fork").context("get_context(fork)")?;
    let go = mp::Event::new()?;
    let done = mp::Queue::new()?;
    let mut clients: Vec<mp::Process> = (0..CLIENTS)
        .map(|me| ctx.process(dict_client, (d.clone(), me, rounds, go.clone(), done.clone())))
        .collect();
    for c in &mut clients {
        c.start().context("start")?;
    }
    let start = Instant::now();
    go.set();
    for _ in 0..CLIENTS {
        done.get()?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for c in &clients {
        let code = c.join().context("join")?;
        ensure!(code == 0, "a client exited with {code}");
    }
    Ok(Figure { value: (CLIENTS * rounds * 2) as f64 / elapsed, unit: "ops/s" })
}

/// manager_proxy_create: make a dict proxy and drop it, in proxies/s.
pub fn manager_proxy_create(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "manager_proxy_create has no floor side");
    let m = manager()?;
    let seconds = seconds_per_op(|n| {
        for _ in 0..n {
            drop(m.dict::<u64, u64>()?);
        }
        Ok(())
    })?;
    Ok(Figure { value: 1.0 / seconds, unit: "proxies/s" })
}

/// The length of `manager_list_iterate`'s list.
const LIST_LEN: u64 = 10_000;

/// manager_list_iterate: read a 10,000-item list of integers whole, in items/s.
pub fn manager_list_iterate(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "manager_list_iterate has no floor side");
    let m = manager()?;
    let l = m.list(0..LIST_LEN)?;
    let seconds = seconds_per_op(|n| {
        for _ in 0..n {
            ensure!(l.to_vec()?.len() as u64 == LIST_LEN, "a short list");
        }
        Ok(())
    })?;
    Ok(Figure { value: LIST_LEN as f64 / seconds, unit: "items/s" })
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line =
        status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in the status")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("an empty VmRSS")?
        .parse()
        .context("a VmRSS that is not a number")?;
    Ok(kib)
}

/// How many proxies `manager_memory` makes.
const PROXIES: usize = 10_000;

/// manager_memory: the manager process's resident memory grown by holding dict proxies (one
/// item each), in KiB per 1,000 live proxies.
pub fn manager_memory(side: Side) -> Result<Figure> {
    ensure!(side == Side::Mp, "manager_memory has no floor side");
    let m = manager()?;
    // Warm: the connection and the first objects.
    drop((0..100).map(|_| m.dict::<u64, u64>()).collect::<Result<Vec<_>, _>>()?);
    let before = rss_kib(m.pid())?;
    let dicts = (0..PROXIES)
        .map(|i| {
            let d = m.dict::<u64, u64>()?;
            d.insert(i as u64, i as u64)?;
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    let after = rss_kib(m.pid())?;
    drop(dicts);
    Ok(Figure { value: (after - before) * 1000.0 / PROXIES as f64, unit: "KiB/1000" })
}
