#!/usr/bin/env python3
"""Plain long loops of the same work as bench.py's rows, to check bench.py's figures against.

Usage: python3 bench/python/plain.py [row ...]

Each row here does its work once in one long timed loop (no batches, no control messages
inside the timing, the children already started), as shared/tools/reference/cpython_steady.py
does, and prints `row value unit`. bench.py's figure for the row should agree within the
machine's noise; bench/README.md lists the comparison. Not part of `cargo xtask bench`.
"""

import multiprocessing
import sys
import time

import bench


def queue_stream(producer, count, check):
    ctx = multiprocessing.get_context("fork")
    control, items = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=producer, args=(control, items))
    p.start()
    control.put(1000)  # warm: the feeder threads and the pipe
    for _ in range(1000):
        items.get()
    control.put(count)
    start = time.perf_counter()
    for _ in range(count):
        check(items.get())
    elapsed = time.perf_counter() - start
    control.put(0)
    p.join()
    return elapsed / count


def queue_small():
    return 1 / queue_stream(bench.small_producer, 300_000, lambda x: None), "msgs/s"


def queue_1mib():
    per = queue_stream(bench.mib_producer, 1_500, lambda x: None)
    return bench.MIB / per / 1e9, "GB/s"


def pool_apply_async():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(bench.square, range(1000))
        n = 60_000
        start = time.perf_counter()
        results = [pool.apply_async(bench.square, (i,)) for i in range(n)]
        for r in results:
            r.get()
        return n / (time.perf_counter() - start), "tasks/s"


def pool_map_small():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(bench.square, range(1000))
        rounds = 40
        start = time.perf_counter()
        for _ in range(rounds):
            pool.map(bench.square, range(bench.MAP_LEN))
        return rounds * bench.MAP_LEN / (time.perf_counter() - start), "tasks/s"


def pipe_pingpong():
    ctx = multiprocessing.get_context("fork")
    conn, child_end = ctx.Pipe()
    p = ctx.Process(target=bench.pipe_pong, args=(child_end,))
    p.start()
    msg = b"\x07" * bench.PING_SIZE
    for _ in range(1000):
        conn.send_bytes(msg)
        conn.recv_bytes()
    n = 30_000
    start = time.perf_counter()
    for _ in range(n):
        conn.send_bytes(msg)
        conn.recv_bytes()
    per = (time.perf_counter() - start) / n
    conn.send_bytes(b"")
    p.join()
    return per * 1e6, "us/rt"


def event_pingpong():
    ctx = multiprocessing.get_context("fork")
    ping, pong_ev = ctx.Event(), ctx.Event()
    p = ctx.Process(target=bench.pong, args=(ping, pong_ev), daemon=True)
    p.start()
    n = 30_000
    start = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong_ev.wait()
        pong_ev.clear()
    per = (time.perf_counter() - start) / n
    p.kill()
    p.join()
    return per * 1e6, "us/rt"


def manager_dict():
    with bench.fork_manager() as m:
        d = m.dict()
        n = 20_000
        start = time.perf_counter()
        for i in range(n):
            d[i & 0xFF] = i
            d[i & 0xFF]
        return 2 * n / (time.perf_counter() - start), "ops/s"


def lock_uncontended():
    lock = multiprocessing.get_context("fork").Lock()
    n = 3_000_000
    start = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / n * 1e9, "ns/op"


def pipe_bulk():
    ctx = multiprocessing.get_context("fork")
    conn, child_end = ctx.Pipe()
    p = ctx.Process(target=bench.bulk_sink, args=(child_end,))
    p.start()
    msg = b"\x05" * bench.BULK_SIZE
    n = 2_000
    start = time.perf_counter()
    for _ in range(n):
        conn.send_bytes(msg)
    conn.send_bytes(b"")
    conn.recv_bytes()
    per = (time.perf_counter() - start) / n
    conn.send_bytes(b"s")
    p.join()
    return bench.BULK_SIZE / per / 1e9, "GB/s"


ROWS = {f.__name__: f for f in [queue_small, queue_1mib, pool_apply_async, pool_map_small,
                                pipe_pingpong, event_pingpong, manager_dict, lock_uncontended,
                                pipe_bulk]}


if __name__ == "__main__":
    for name in sys.argv[1:] or list(ROWS):
        value, unit = ROWS[name]()
        print(f"{name} {value:.4g} {unit}", flush=True)
