#!/usr/bin/env python3
"""The CPython side of `cargo xtask bench`: the same work as `mp-bench <row> mp`.

Usage: python3 bench/python/bench.py <row>

Prints exactly one line on stdout, `RESULT <value> <unit> <peak_rss_kib>`: the per-operation
figure and the peak resident set of this process (ru_maxrss, in KiB on Linux). Each row sizes
itself by a minimum run time (MP_BENCH_MIN_TIME seconds, default 0.5) after a warm-up, and is
timed in batches of at least 50 ms (seconds_per_item), as the Rust side is: bench/README.md.
Standard library only. The spawn and forkserver start methods import this file again in the
children, hence the `__main__` guard at the bottom.

Adding a row: a function here that returns (value, unit), its entry in ROWS, a function in
bench/src/rows.rs and an entry in the row table of xtask/src/rows.rs.
"""

import multiprocessing
import os
import resource
import sys
import time

WARM_UP = 0.05
# A batch grows until it takes this long (as BATCH_TIME in bench/src/measure.rs).
BATCH_TIME = 0.05


def min_time():
    """The least timed work per run, in seconds."""
    return float(os.environ.get("MP_BENCH_MIN_TIME", "0.5"))


# Set by the blocking rows (one_by_one): seconds_per_op then gives the median call.
ONE_BY_ONE = False

# The fewest calls a median is taken of, however long they take.
MEDIAN_MIN_OPS = 1000


def seconds_per_op(op):
    """Seconds per call of `op`, timed in long batches as seconds_per_item times them (the loop
    around each call costs tens of ns, nothing next to the rows' µs). Under one_by_one: after
    the same warm-up, the median of calls timed one by one until min_time() of them is done."""

    def batch(n):
        for _ in range(n):
            op()

    if not ONE_BY_ONE:
        return seconds_per_item(batch)
    seconds_per_item(batch, timed=False)
    times = []
    total = 0.0
    limit = min_time()
    while total < limit or len(times) < MEDIAN_MIN_OPS:
        start = time.perf_counter()
        op()
        took = time.perf_counter() - start
        times.append(took)
        total += took
    times.sort()
    return times[len(times) // 2]


def one_by_one(row):
    """The blocking form of `row`: its round trips timed one by one, the median given, as the
    Rust side times its blocking rows (bench/README.md, "The blocking rows")."""

    def blocking():
        global ONE_BY_ONE
        ONE_BY_ONE = True
        return row()

    return blocking


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


COUNTER_PROCESSES = 2


def increment(lock, counter, n, go):
    """A child of lock_counter: waits for the go event, then does `with lock: value += 1`."""
    go.wait()
    for _ in range(n):
        with lock:
            counter.value += 1


def lock_counter():
    """2 processes each do `with lock: value += 1` on a shared Value, in increments per second.
    A short calibration run sizes the measured one by the minimum run time."""
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    counter = ctx.Value("q", 0, lock=False)

    def run(n):
        before = counter.value
        go = ctx.Event()
        children = [
            ctx.Process(target=increment, args=(lock, counter, n, go))
            for _ in range(COUNTER_PROCESSES)
        ]
        for p in children:
            p.start()
        start = time.perf_counter()
        go.set()
        for p in children:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"a child exited with {p.exitcode}")
        seconds = time.perf_counter() - start
        if counter.value != before + n * COUNTER_PROCESSES:
            raise RuntimeError("lost increments")
        return seconds

    limit = min_time()
    n = 2_000
    while True:
        seconds = run(n)
        if seconds >= limit / 4:
            break
        n *= 4
    n = max(n, int(n * limit / seconds * 1.1))
    seconds = run(n)
    return n * COUNTER_PROCESSES / seconds, "incr/s"


def lock_uncontended():
    """Acquire + release of a lock nobody else uses, in ns. Batches of 1,000 keep the
    clock reads out of the figure."""
    lock = multiprocessing.get_context("fork").Lock()

    def batch():
        for _ in range(1_000):
            lock.acquire()
            lock.release()

    return seconds_per_op(batch) / 1_000 * 1e9, "ns/op"


PING_SIZE = 64


def pipe_pong(conn):
    """The child of pipe_pingpong: sends every message back, until an empty one."""
    while True:
        msg = conn.recv_bytes()
        if not msg:
            return
        conn.send_bytes(msg)


def pipe_pingpong():
    """Round trips of a 64-byte message through a duplex Pipe to a forked child, in µs."""
    ctx = multiprocessing.get_context("fork")
    conn, child_end = ctx.Pipe()
    p = ctx.Process(target=pipe_pong, args=(child_end,))
    p.start()
    child_end.close()
    msg = b"\x07" * PING_SIZE

    def once():
        conn.send_bytes(msg)
        if len(conn.recv_bytes()) != PING_SIZE:
            raise RuntimeError("a short reply")

    seconds = seconds_per_op(once)
    conn.send_bytes(b"")
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"the child exited with {p.exitcode}")
    return seconds * 1e6, "us/rt"


BULK_SIZE = 1 << 20
BULK_BATCH = 8


def bulk_sink(conn):
    """The child of pipe_bulk: receives messages, acks each empty one, returns on a 1-byte one."""
    while True:
        n = len(conn.recv_bytes())
        if n == 0:
            conn.send_bytes(b"ack")
        elif n == 1:
            return


def pipe_bulk():
    """1 MiB send_bytes one way (8 of them), then one ack, in GB/s."""
    ctx = multiprocessing.get_context("fork")
    conn, child_end = ctx.Pipe()
    p = ctx.Process(target=bulk_sink, args=(child_end,))
    p.start()
    child_end.close()
    msg = b"\x05" * BULK_SIZE

    def batch():
        for _ in range(BULK_BATCH):
            conn.send_bytes(msg)
        conn.send_bytes(b"")
        if conn.recv_bytes() != b"ack":
            raise RuntimeError("a wrong ack")

    seconds = seconds_per_op(batch)
    conn.send_bytes(b"s")
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"the child exited with {p.exitcode}")
    return BULK_SIZE * BULK_BATCH / seconds / 1e9, "GB/s"


FILL_BYTES = 256 << 20
CHUNK = 1 << 20


def fill(name):
    """The shm_fill child: copies a 1 MiB chunk into every MiB of the segment."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    chunk = b"\xa5" * CHUNK
    for off in range(0, FILL_BYTES, CHUNK):
        shm.buf[off:off + CHUNK] = chunk
    shm.close()


def shm_fill():
    """A child fills a 256 MiB shared segment, the parent reads it, in GB/s."""
    from multiprocessing import shared_memory

    ctx = multiprocessing.get_context("fork")

    def once():
        shm = shared_memory.SharedMemory(create=True, size=FILL_BYTES)
        try:
            p = ctx.Process(target=fill, args=(shm.name,))
            p.start()
            p.join()
            if p.exitcode != 0:
                raise RuntimeError("the filling child failed")
            for off in range(0, FILL_BYTES, CHUNK):
                if bytes(shm.buf[off:off + CHUNK])[-1] != 0xA5:
                    raise RuntimeError("the segment was not filled")
        finally:
            shm.close()
            shm.unlink()

    return FILL_BYTES / seconds_per_op(once) / 1e9, "GB/s"


def pong(ping, pong_ev):
    """The event_pingpong child: answers every ping with a pong until it is terminated."""
    while True:
        ping.wait()
        ping.clear()
        pong_ev.set()


def event_pingpong():
    """Round trips between two processes through two Events, in microseconds."""
    ctx = multiprocessing.get_context("fork")
    ping, pong_ev = ctx.Event(), ctx.Event()
    p = ctx.Process(target=pong, args=(ping, pong_ev), daemon=True)
    p.start()

    def once():
        ping.set()
        pong_ev.wait()
        pong_ev.clear()

    try:
        return seconds_per_op(once) * 1e6, "us/rt"
    finally:
        p.kill()
        p.join()


def small_producer(control, items):
    """The child of queue_small: puts that many small integers for each count; returns on 0."""
    while True:
        n = control.get()
        if n == 0:
            return
        for i in range(n):
            items.put(i & 0xFF)


def queue_small():
    """One producer process puts small integers on a Queue, the parent gets them, in msgs/s."""
    ctx = multiprocessing.get_context("fork")
    control, items = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=small_producer, args=(control, items))
    p.start()

    def batch(n):
        control.put(n)
        for i in range(n):
            if items.get() != i & 0xFF:
                raise RuntimeError("an item out of order")

    seconds = seconds_per_item(batch)
    control.put(0)
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"the child exited with {p.exitcode}")
    return 1.0 / seconds, "msgs/s"


MIB = 1 << 20


def mib_producer(control, items):
    """The child of queue_1mib: puts that many 1 MiB bytes objects for each count; returns on 0."""
    msg = b"\x05" * MIB
    while True:
        n = control.get()
        if n == 0:
            return
        for _ in range(n):
            items.put(msg)


def queue_1mib():
    """One producer process puts 1 MiB bytes messages on a Queue, the parent gets them, in GB/s."""
    ctx = multiprocessing.get_context("fork")
    control, items = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=mib_producer, args=(control, items))
    p.start()

    def batch(n):
        control.put(n)
        for _ in range(n):
            if len(items.get()) != MIB:
                raise RuntimeError("a short message")

    seconds = seconds_per_item(batch)
    control.put(0)
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"the child exited with {p.exitcode}")
    return MIB / seconds / 1e9, "GB/s"


def square(x):
    """The task of the small pool rows."""
    return x * x


def pool_apply_async():
    """apply_async(square, i) n times on a 2-worker pool, then every get, in tasks/s."""
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def batch(n):
            results = [pool.apply_async(square, (i,)) for i in range(n)]
            for i, r in enumerate(results):
                if r.get() != i * i:
                    raise RuntimeError("a wrong result")

        seconds = seconds_per_item(batch)
    return 1.0 / seconds, "tasks/s"


def pool_apply_latency():
    """One apply(square, i) at a time on a 2-worker pool, submit to result, in us per task."""
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def batch(n):
            for i in range(n):
                if pool.apply(square, (i,)) != i * i:
                    raise RuntimeError("a wrong result")

        seconds = seconds_per_item(batch)
    return seconds * 1e6, "us/task"


MAP_LEN = 100_000


def pool_map_small():
    """map(square, range(100_000)) on a 2-worker pool with the default chunksize, in tasks/s."""
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def batch(n):
            for _ in range(n):
                if len(pool.map(square, range(MAP_LEN))) != MAP_LEN:
                    raise RuntimeError("a short result")

        seconds = seconds_per_item(batch)
    return MAP_LEN / seconds, "tasks/s"


def _mpi_executor():
    """mpi4py.futures' pool of 2 spawned workers (as mp-mpi's), allowed to oversubscribe the
    host's slots as mp-mpi's spawn is; booted before the timing."""
    from mpi4py.futures import MPIPoolExecutor

    executor = MPIPoolExecutor(max_workers=2, mpi_info={"map_by": "slot:OVERSUBSCRIBE"})
    executor.bootup(wait=True)
    return executor


def mpi_pool_map_small():
    """map(square, range(100_000)) on mpi4py.futures' pool of 2 workers, in tasks/s, with the
    chunksize of CPython's Pool.map rule (mpi4py's default of 1 is ~50x slower: not its best)."""
    with _mpi_executor() as executor:
        chunksize = -(-MAP_LEN // (4 * 2))

        def batch(n):
            for _ in range(n):
                got = list(executor.map(square, range(MAP_LEN), chunksize=chunksize))
                if len(got) != MAP_LEN:
                    raise RuntimeError("a short result")

        seconds = seconds_per_item(batch)
    return MAP_LEN / seconds, "tasks/s"


# The MPI apply rows submit in groups of this many tasks: mpi4py's pool waits for its
# results with a backoff of about a millisecond, so smaller groups time its wake-ups, not its
# steady state (a plain loop of 20,000 submits agrees with the grouped figure).
MPI_GROUP = 1000


def mpi_pool_apply_async():
    """submit(square, i) for groups of 1,000 tasks on mpi4py.futures' pool of 2 workers, then
    every result, in tasks/s."""
    with _mpi_executor() as executor:

        def batch(n):
            futures = [executor.submit(square, i) for i in range(n * MPI_GROUP)]
            for i, f in enumerate(futures):
                if f.result() != i * i:
                    raise RuntimeError("a wrong result")

        seconds = seconds_per_item(batch)
    return MPI_GROUP / seconds, "tasks/s"


def pool_imap_chunked():
    """imap(square, range(100_000), chunksize=100) on a 2-worker pool, every result consumed in
    order, in tasks/s."""
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def batch(n):
            for _ in range(n):
                count = 0
                for i, r in enumerate(pool.imap(square, range(MAP_LEN), chunksize=100)):
                    if r != square(i):
                        raise RuntimeError("a wrong result")
                    count += 1
                if count != MAP_LEN:
                    raise RuntimeError("a short result")

        seconds = seconds_per_item(batch)
    return MAP_LEN / seconds, "tasks/s"


def crunch(seed):
    """About as many xorshift steps as the Rust row's 100 ms (CPython is far slower per step,
    so it does fewer: the row reports a ratio of times, not the time)."""
    x = seed | 1
    mask = (1 << 64) - 1
    for _ in range(300_000):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
    return x


def pool_cpu_speedup():
    """8 CPU-bound tasks, serial time over the time on a 2-worker pool (chunksize 1); each
    time is the best of two, taken alternately, so that a burst of outside load does not
    decide the ratio."""
    serial = parallel = float("inf")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for _ in range(2):
            start = time.perf_counter()
            for s in range(8):
                crunch(s)
            serial = min(serial, time.perf_counter() - start)
            start = time.perf_counter()
            pool.map(crunch, range(8), chunksize=1)
            parallel = min(parallel, time.perf_counter() - start)
    return serial / parallel, "x"


_RESULTS = None


def _set_results(queue):
    """The initializer of pool_cpu_speedup_consumer's workers: the queue they put results on
    (CPython's queues cross into a pool only by inheritance)."""
    global _RESULTS
    _RESULTS = queue


def crunch_and_put(seed):
    """A task of pool_cpu_speedup_consumer: crunches, then puts the result on the queue."""
    x = crunch(seed)
    _RESULTS.put(x)
    return x


def pool_cpu_speedup_consumer():
    """pool_cpu_speedup with a consumer waiting in the parent: the tasks put their results on
    a Queue and the parent blocks in get until all eight came."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    serial = parallel = float("inf")
    with ctx.Pool(2, initializer=_set_results, initargs=(results,)) as pool:
        for _ in range(2):
            start = time.perf_counter()
            for s in range(8):
                crunch(s)
            serial = min(serial, time.perf_counter() - start)
            start = time.perf_counter()
            handles = [pool.apply_async(crunch_and_put, (s,)) for s in range(8)]
            got = sum(results.get() for _ in range(8))
            parallel = min(parallel, time.perf_counter() - start)
            if got != sum(h.get() for h in handles):
                raise RuntimeError("the queue and the results differ")
    return serial / parallel, "x"


def fork_manager():
    """A SyncManager started under fork, as mp's rows start theirs."""
    return multiprocessing.get_context("fork").Manager()


def dict_set_get(d):
    """Seconds per operation of `d[k] = i; d[k]` (two operations per round)."""
    state = {"i": 0}

    def op():
        i = state["i"] = state["i"] + 1
        k = i & 0xFF
        d[k] = i
        if d[k] != i:
            raise RuntimeError("a wrong value")

    return seconds_per_op(op) / 2


def manager_dict():
    """Set then get on a manager's dict from the owner, in ops/s."""
    with fork_manager() as m:
        return 1.0 / dict_set_get(m.dict()), "ops/s"


def manager_dict_tcp():
    """Set then get on a dict of a manager served on TCP loopback, from a client connected
    to it (SyncManager(address, authkey).connect()), in ops/s."""
    from multiprocessing.managers import SyncManager
    server = SyncManager(address=("127.0.0.1", 0), authkey=b"secret",
                         ctx=multiprocessing.get_context("fork"))
    server.start()
    try:
        client = SyncManager(address=server.address, authkey=b"secret")
        client.connect()
        return 1.0 / dict_set_get(client.dict()), "ops/s"
    finally:
        server.shutdown()


def manager_dict_blocking():
    """The same in µs per operation (CPython's manager always blocks)."""
    with fork_manager() as m:
        return dict_set_get(m.dict()) * 1e6, "us/op"


def dict_client(d, me, rounds, go, done):
    """A client of manager_dict_4clients: set+get rounds on its own keys after the go."""
    go.wait()
    for i in range(rounds):
        k = (me << 32) | (i & 0xFF)
        d[k] = i
        if d[k] != i:
            raise RuntimeError("a wrong value")
    done.put(me)


def manager_dict_4clients():
    """Four processes at once doing set+get on one dict, total ops/s."""
    ctx = multiprocessing.get_context("fork")
    with fork_manager() as m:
        d = m.dict()
        one = dict_set_get(d)
        rounds = max(1000, int(min_time() / (2 * one)))
        go, done = ctx.Event(), ctx.Queue()
        clients = [ctx.Process(target=dict_client, args=(d, me, rounds, go, done)) for me in range(4)]
        for c in clients:
            c.start()
        start = time.perf_counter()
        go.set()
        for _ in clients:
            done.get()
        elapsed = time.perf_counter() - start
        for c in clients:
            c.join()
            if c.exitcode != 0:
                raise RuntimeError(f"a client exited with {c.exitcode}")
        return 4 * rounds * 2 / elapsed, "ops/s"


def manager_proxy_create():
    """Make a dict proxy and drop it, in proxies/s."""
    with fork_manager() as m:
        return 1.0 / seconds_per_op(lambda: m.dict()), "proxies/s"


def manager_list_iterate():
    """Read a 10,000-item list with Python's per-item loop (`for x in l`), in items/s."""
    with fork_manager() as m:
        lst = m.list(range(10_000))

        def op():
            if sum(1 for _ in lst) != 10_000:
                raise RuntimeError("a short list")

        return 10_000 / seconds_per_op(op), "items/s"


def rss_kib(pid):
    """The resident memory of process `pid`, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
    raise RuntimeError("no VmRSS")


def manager_memory():
    """The manager process's memory grown by 10,000 live dict proxies, in KiB per 1,000."""
    with fork_manager() as m:
        warm = [m.dict() for _ in range(100)]
        del warm
        pid = m._process.pid
        before = rss_kib(pid)
        dicts = []
        for i in range(10_000):
            d = m.dict()
            d[i] = i
            dicts.append(d)
        after = rss_kib(pid)
        del dicts
        return (after - before) * 1000 / 10_000, "KiB/1000"


def seconds_per_item(batch, timed=True):
    """Seconds per item of batch(n), which handles n items, at the steady state: n doubles
    (untimed: the warm-up, at least WARM_UP seconds) until one batch takes BATCH_TIME, then
    batches of that n run until min_time() of timed work is done. A batch that starts with a
    control message (a producer told how many items to put) or a pipeline that fills and drains
    (a pool) is thus timed at its steady rate, not in its start-up. With timed=False only the
    warm-up runs, and None is returned."""
    n = 1
    warm_up_start = time.perf_counter()
    while True:
        start = time.perf_counter()
        batch(n)
        now = time.perf_counter()
        long_enough = now - start >= BATCH_TIME or n >= 1 << 30
        if long_enough and now - warm_up_start >= WARM_UP:
            break
        if not long_enough:
            n *= 2
    if not timed:
        return None
    items = 0
    limit = min_time()
    start = time.perf_counter()
    while True:
        batch(n)
        items += n
        elapsed = time.perf_counter() - start
        if elapsed >= limit:
            return elapsed / items


def _echo_server(address, ready):
    """The server of the connection rows: accepts with the key and echoes, for ever."""
    from multiprocessing.connection import Listener
    with Listener(address, authkey=b"secret") as listener:
        ready.send(listener.address)
        while True:
            try:
                conn = listener.accept()
            except Exception:
                continue
            try:
                while True:
                    conn.send_bytes(conn.recv_bytes())
            except EOFError:
                conn.close()


def _start_echo(address):
    """Starts the echo server (a daemonic fork child); returns it and its address."""
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(False)
    p = ctx.Process(target=_echo_server, args=(address, w), daemon=True)
    p.start()
    return p, r.recv()


def _connection_rtt(address):
    from multiprocessing.connection import Client
    p, bound = _start_echo(address)
    conn = Client(bound, authkey=b"secret")
    msg = b"x" * 64

    def op():
        conn.send_bytes(msg)
        conn.recv_bytes()
    per = seconds_per_op(op)
    conn.close()
    p.terminate()
    p.join()
    return per * 1e6, "us"


def connection_rtt_unix():
    """A 64-byte send_bytes + recv_bytes round trip over an AF_UNIX Listener connection, in µs."""
    return _connection_rtt("\0mp-bench-py-%d" % os.getpid())


def connection_rtt_tcp():
    """The same over TCP loopback, in µs."""
    return _connection_rtt(("127.0.0.1", 0))


def connection_connect_auth_tcp():
    """Client(address, authkey) (connect and the mutual handshake) and close, in µs."""
    from multiprocessing.connection import Client
    p, bound = _start_echo(("127.0.0.1", 0))
    per = seconds_per_op(lambda: Client(bound, authkey=b"secret").close())
    p.terminate()
    p.join()
    return per * 1e6, "us"


ROWS = {
    "spawn_fork": spawn_fork,
    "spawn_forkserver": spawn_forkserver,
    "spawn_spawn": spawn_spawn,
    "lock_counter": lock_counter,
    "lock_uncontended": lock_uncontended,
    "pipe_pingpong": pipe_pingpong,
    "pipe_pingpong_blocking": one_by_one(pipe_pingpong),
    "pipe_bulk": pipe_bulk,
    "shm_fill": shm_fill,
    "event_pingpong": event_pingpong,
    "event_pingpong_blocking": one_by_one(event_pingpong),
    "queue_small": queue_small,
    "queue_1mib": queue_1mib,
    "pool_apply_async": pool_apply_async,
    "pool_apply_latency": pool_apply_latency,
    "pool_map_small": pool_map_small,
    "pool_imap_chunked": pool_imap_chunked,
    "pool_cpu_speedup": pool_cpu_speedup,
    "pool_cpu_speedup_consumer": pool_cpu_speedup_consumer,
    "manager_dict": manager_dict,
    "manager_dict_tcp": manager_dict_tcp,
    "manager_dict_tcp_wire": manager_dict_tcp,
    "manager_dict_blocking": one_by_one(manager_dict_blocking),
    "manager_dict_4clients": manager_dict_4clients,
    "manager_proxy_create": manager_proxy_create,
    "manager_list_iterate": manager_list_iterate,
    "manager_memory": manager_memory,
    "connection_rtt_unix": connection_rtt_unix,
    "connection_rtt_tcp": connection_rtt_tcp,
    "connection_connect_auth_tcp": connection_connect_auth_tcp,
    "mpi_pool_map_small": mpi_pool_map_small,
    "mpi_pool_apply_async": mpi_pool_apply_async,
}


# The loaded machine: the same work, with CPU hogs that `cargo xtask bench` runs beside it.
for _name in ["queue_small", "pipe_pingpong", "event_pingpong", "manager_dict", "pool_apply_async"]:
    ROWS[_name + "_loaded"] = ROWS[_name]


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
