#!/usr/bin/env python3
"""The CPython side of `cargo xtask bench`: the same work as `mp-bench <row> mp`.

Usage: python3 bench/python/bench.py <row>

Prints exactly one line on stdout, `RESULT <value> <unit> <peak_rss_kib>`: the per-operation
figure and the peak resident set of this process (ru_maxrss, in KiB on Linux). Each row sizes
itself by a minimum run time (MP_BENCH_MIN_TIME seconds, default 0.5) after a short warm-up.
Standard library only. The spawn and forkserver start methods import this file again in the
children, hence the `__main__` guard at the bottom.

Adding a row: a function here that returns (value, unit), its entry in ROWS, a function in
bench/src/rows.rs and an entry in the row table of xtask/src/table.rs.
"""

import multiprocessing
import os
import resource
import sys
import time

WARM_UP = 0.05


def min_time():
    """The least timed work per run, in seconds."""
    return float(os.environ.get("MP_BENCH_MIN_TIME", "0.5"))


def seconds_per_op(op):
    """Runs `op` for a short warm-up, then until at least min_time() has passed; returns the
    seconds per call. The rows here take microseconds or more, so the clock is read each call."""
    start = time.perf_counter()
    while True:
        op()
        if time.perf_counter() - start >= WARM_UP:
            break
    limit = min_time()
    count = 0
    start = time.perf_counter()
    while True:
        op()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= limit:
            return elapsed / count


def noop():
    """The child's target: it does nothing."""


def start_join(method):
    """Starts and joins a child that does nothing, in µs per child; one child is started before
    the timing, which for forkserver also starts the server."""
    ctx = multiprocessing.get_context(method)

    def once():
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"the child exited with {p.exitcode}")

    once()
    return seconds_per_op(once) * 1e6, "us/child"


def spawn_fork():
    return start_join("fork")


def spawn_forkserver():
    return start_join("forkserver")


def spawn_spawn():
    return start_join("spawn")


ROWS = {
    "spawn_fork": spawn_fork,
    "spawn_forkserver": spawn_forkserver,
    "spawn_spawn": spawn_spawn,
}


def main(argv):
    if len(argv) != 2 or argv[1] not in ROWS:
        print(f"usage: {argv[0]} <row> (rows: {', '.join(ROWS)})", file=sys.stderr)
        return 2
    value, unit = ROWS[argv[1]]()
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"RESULT {value} {unit} {peak_rss_kib}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
