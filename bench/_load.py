"""Load-generator side of ``kv_bench.py``: runs in separate processes, speaks HTTP with aiohttp.

Two kinds of worker, both started with :mod:`multiprocessing` (spawn) and driven over a ``Pipe``:

* :func:`throughput_worker` — ``clients`` keep-alive connections (connector limit = clients), each in a
  closed loop of KV PUTs or GETs; counts the requests that finish inside a fixed window.
* :func:`fanout_worker` — ``n`` waiters on one key (Consul blocking query or etcd watch stream); reports
  when each waiter woke up.

``raft_bench.py`` adds two more (at the end of this file): :func:`cluster_throughput_worker` (PUT
clients pinned to the members of a cluster, with latencies) and :func:`failover_worker` (continuous
writes across a leader kill).

All timestamps are ``CLOCK_MONOTONIC`` nanoseconds, which is one system-wide clock on Linux, so figures
from several processes (and the writer in the parent) can be compared directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

__all__ = [
    "Target",
    "now_ns",
    "raise_nofile_limit",
    "throughput_worker",
    "fanout_worker",
    "fill_keys",
    "bench_key",
    "VALUE",
    "cluster_throughput_worker",
    "failover_worker",
]

VALUE = b"v" * 100  # every PUT stores 100 bytes
READY_TIMEOUT_S = 60.0  # bound on connecting / registering all waiters of one worker
KEYSPACE = 1024  # bench/0 .. bench/1023


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: the same clock in every process on this machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def bench_key(i: int) -> str:
    """The i-th key of the benchmark key space."""
    return f"bench/{i % KEYSPACE}"


def _b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Target:
    """Where to send requests: ``kind`` is ``"ctk"`` or ``"etcd"``; ``prefix`` is etcd's gateway path."""

    kind: str
    base_url: str
    prefix: str = "/v3"


def _cpu_s() -> float:
    """This process's CPU seconds (all threads), ns resolution."""
    return time.process_time()


# ------------------------------------------------------------------ one request

RequestFn = Callable[[aiohttp.ClientSession, int], Awaitable[bool]]


def _request_fn(target: Target, op: str) -> RequestFn:
    """A coroutine function doing one PUT or GET of key number ``i``; returns success."""
    if target.kind == "ctk":
        base = target.base_url + "/v1/kv/"

        if op == "put":
            async def ctk_put(s: aiohttp.ClientSession, i: int) -> bool:
                async with s.put(base + bench_key(i), data=VALUE) as r:
                    await r.read()
                    return r.status == 200

            return ctk_put

        async def ctk_get(s: aiohttp.ClientSession, i: int) -> bool:
            async with s.get(base + bench_key(i)) as r:
                await r.read()
                return r.status == 200

        return ctk_get

    value64 = _b64(VALUE)
    keys64 = [_b64(bench_key(i)) for i in range(KEYSPACE)]
    headers = {"Content-Type": "application/json"}
    if op == "put":
        url = target.base_url + target.prefix + "/kv/put"

        async def etcd_put(s: aiohttp.ClientSession, i: int) -> bool:
            body = json.dumps({"key": keys64[i % KEYSPACE], "value": value64})
            async with s.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status == 200

        return etcd_put

    url = target.base_url + target.prefix + "/kv/range"

    async def etcd_get(s: aiohttp.ClientSession, i: int) -> bool:
        body = json.dumps({"key": keys64[i % KEYSPACE]})
        async with s.post(url, data=body, headers=headers) as r:
            await r.read()
            return r.status == 200

    return etcd_get


def _session(limit: int) -> aiohttp.ClientSession:
    """A keep-alive client session with at most ``limit`` connections."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, force_close=False,
                                     keepalive_timeout=120, enable_cleanup_closed=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))


async def fill_keys(target: Target, concurrency: int = 32) -> int:
    """PUT every key of the key space once (not timed); returns how many succeeded."""
    put = _request_fn(target, "put")
    ok = 0
    async with _session(concurrency) as s:
        todo = iter(range(KEYSPACE))

        async def one() -> None:
            nonlocal ok
            for i in todo:
                if await put(s, i):
                    ok += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return ok


# ------------------------------------------------------------------ throughput

async def _throughput(target: Target, op: str, clients: int, first_client: int, conn: Connection,
                      warmup_s: float, duration_s: float) -> dict[str, Any]:
    """Closed-loop clients; counts the requests completed inside [start+warm-up, +duration)."""
    request = _request_fn(target, op)
    async with _session(clients) as s:
        # Open every connection before the clock starts (one request each, not counted).
        await asyncio.gather(*(request(s, first_client + c) for c in range(clients)))
        conn.send(("ready", clients))
        if not await asyncio.to_thread(conn.poll, READY_TIMEOUT_S):
            return {"ok": 0, "errors": 0, "error": "no start signal from the parent"}
        start_ns: int = conn.recv()
        window_lo = start_ns + int(warmup_s * 1e9)
        window_hi = window_lo + int(duration_s * 1e9)
        await asyncio.sleep(max(0.0, (start_ns - now_ns()) / 1e9))
        ok = errors = 0
        first_error = ""

        async def client(c: int) -> None:
            nonlocal ok, errors, first_error
            i = (first_client + c) * 7919
            while True:
                t = now_ns()
                if t >= window_hi:
                    return
                try:
                    good = await request(s, i)
                except (TimeoutError, aiohttp.ClientError, OSError) as err:
                    good = False
                    first_error = first_error or f"{type(err).__name__}: {err}"
                done = now_ns()
                if window_lo <= done < window_hi:
                    if good:
                        ok += 1
                    else:
                        errors += 1
                i += 1

        cpu0 = wall0 = 0.0

        async def sample_cpu() -> None:
            nonlocal cpu0, wall0
            await asyncio.sleep(max(0.0, (window_lo - now_ns()) / 1e9))
            cpu0, wall0 = _cpu_s(), now_ns() / 1e9

        sampler = asyncio.create_task(sample_cpu())
        await asyncio.gather(*(client(c) for c in range(clients)))
        await sampler
        cpu_frac = (_cpu_s() - cpu0) / max(1e-9, now_ns() / 1e9 - wall0)
        return {"ok": ok, "errors": errors, "error": first_error, "cpu": cpu_frac}


def throughput_worker(target: Target, op: str, clients: int, first_client: int, conn: Connection,
                      warmup_s: float, duration_s: float) -> None:
    """Process entry: send ``("ready", n)``, receive the start time (ns), run, send ``("result", dict)``."""
    raise_nofile_limit()
    try:
        result = asyncio.run(_throughput(target, op, clients, first_client, conn, warmup_s, duration_s))
    except Exception as err:  # reported to the parent, which prints it
        result = {"ok": 0, "errors": 0, "error": f"{type(err).__name__}: {err}"}
    conn.send(("result", result))
    conn.close()


# ------------------------------------------------------------------ fan-out

async def _ctk_waiter(s: aiohttp.ClientSession, url: str, index: int, out: list[int], slot: int,
                      errors: list[str]) -> None:
    """One Consul blocking query; ``out[slot]`` = arrival time if it returned a newer index."""
    try:
        async with s.get(url, params={"index": str(index), "wait": "60s"}) as r:
            await r.read()
            t = now_ns()
            new_index = int(r.headers.get("X-Consul-Index", "0"))
            if r.status == 200 and new_index > index:
                out[slot] = t
            else:
                errors.append(f"HTTP {r.status} index {new_index} (not past {index})")
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
        errors.append(f"{type(err).__name__}: {err}")


async def _etcd_watcher(s: aiohttp.ClientSession, url: str, key64: str, created: Callable[[], None],
                        out: list[int], slot: int, errors: list[str]) -> None:
    """One etcd watch stream; ``out[slot]`` = arrival time of the first event line."""
    try:
        async with s.post(url, data=json.dumps({"create_request": {"key": key64}}),
                          headers={"Content-Type": "application/json"}) as r:
            if r.status != 200:
                errors.append(f"HTTP {r.status}: {(await r.read())[:200]!r}")
                return
            for _ in range(1000):  # bounded: created, (progress notifies), then the event
                line = await r.content.readline()
                t = now_ns()
                if not line:
                    errors.append("watch stream closed before an event")
                    return
                msg = json.loads(line).get("result", {})
                if msg.get("created"):
                    created()
                if msg.get("events"):
                    out[slot] = t
                    return
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as err:
        errors.append(f"{type(err).__name__}: {err}")


async def _fanout(target: Target, n: int, key: str, index: int, conn: Connection,
                  wake_timeout_s: float, batch: int) -> dict[str, Any]:
    """Ramp up ``n`` waiters in batches, report ready, wait for the write, collect arrival times."""
    out = [0] * n
    errors: list[str] = []
    ready = 0
    ready_ev = asyncio.Event()
    want = 0

    def mark_ready() -> None:
        nonlocal ready
        ready += 1
        if ready >= want:
            ready_ev.set()

    trace = aiohttp.TraceConfig()

    async def headers_sent(_s: object, _c: object, _p: object) -> None:
        mark_ready()

    if target.kind == "ctk":
        trace.on_request_headers_sent.append(headers_sent)
    connector = aiohttp.TCPConnector(limit=n, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace],
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)) as s:
        tasks: list[asyncio.Task[None]] = []
        deadline = time.monotonic() + READY_TIMEOUT_S
        # Ramp up in batches so the listen backlog is never flooded with thousands of SYNs at once.
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            want = hi
            ready_ev.clear()
            for slot in range(lo, hi):
                if target.kind == "ctk":
                    coro = _ctk_waiter(s, target.base_url + "/v1/kv/" + key, index, out, slot, errors)
                else:
                    coro = _etcd_watcher(s, target.base_url + target.prefix + "/watch", _b64(key), mark_ready,
                                         out, slot, errors)
                tasks.append(asyncio.create_task(coro))
            if ready < want:
                try:
                    await asyncio.wait_for(ready_ev.wait(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
            if errors and ready + len(errors) >= want and ready < want:
                break  # failures, not slowness: stop ramping, report them
        cpu0 = _cpu_s()  # idle from here until the write; the delta is the cost of the wake-ups
        conn.send(("ready", ready, errors[:3]))
        if not await asyncio.to_thread(conn.poll, READY_TIMEOUT_S + wake_timeout_s):
            for t in tasks:
                t.cancel()
            return {"arrivals": [], "ready": ready, "errors": ["no write signal from the parent"]}
        write_ns: int = conn.recv()
        remaining = max(0.1, (write_ns + int(wake_timeout_s * 1e9) - now_ns()) / 1e9)
        _done, pending = await asyncio.wait(tasks, timeout=remaining)
        cpu = _cpu_s() - cpu0
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        arrivals = [t for t in out if t]
        last = max(arrivals) if arrivals else write_ns
        return {"arrivals": arrivals, "ready": ready, "errors": errors[:5], "error_count": len(errors),
                "not_woken": len(pending), "cpu_s": cpu, "busy_s": max(1e-9, (last - write_ns) / 1e9)}


def fanout_worker(target: Target, n: int, key: str, index: int, conn: Connection,
                  wake_timeout_s: float, batch: int = 250) -> None:
    """Process entry: start ``n`` waiters, send ``("ready", count, errors)``, receive the write time,
    then send ``("result", dict)`` with every arrival timestamp (ns)."""
    raise_nofile_limit()
    try:
        result = asyncio.run(_fanout(target, n, key, index, conn, wake_timeout_s, batch))
    except Exception as err:  # reported to the parent, which prints it
        result = {"arrivals": [], "ready": 0, "errors": [f"{type(err).__name__}: {err}"]}
    conn.send(("result", result))
    conn.close()


# ------------------------------------------------------------------ clusters (raft_bench.py)
#
# Added for ``raft_bench.py``; nothing above changes. Clients are pinned to cluster members the way
# real clients are (one member per client connection), and a failover client writes continuously.

async def _cluster_throughput(assign: list[Target], first_client: int, conn: Connection,
                              warmup_s: float, duration_s: float) -> dict[str, Any]:
    """Closed-loop PUT clients, client ``c`` on member ``assign[c]``; counts and times the requests
    completed inside [start+warm-up, +duration)."""
    clients = len(assign)
    fns = {t: _request_fn(t, "put") for t in dict.fromkeys(assign)}
    async with _session(clients) as s:
        # Open every connection before the clock starts (one request each, not counted).
        await asyncio.gather(*(fns[t](s, first_client + c) for c, t in enumerate(assign)))
        conn.send(("ready", clients))
        if not await asyncio.to_thread(conn.poll, READY_TIMEOUT_S):
            return {"ok": 0, "errors": 0, "error": "no start signal from the parent"}
        start_ns: int = conn.recv()
        window_lo = start_ns + int(warmup_s * 1e9)
        window_hi = window_lo + int(duration_s * 1e9)
        await asyncio.sleep(max(0.0, (start_ns - now_ns()) / 1e9))
        ok = errors = 0
        first_error = ""
        lat_ms: list[float] = []
        per_target: dict[str, int] = {t.base_url: 0 for t in fns}

        async def client(c: int) -> None:
            nonlocal ok, errors, first_error
            target = assign[c]
            put = fns[target]
            i = (first_client + c) * 7919
            while True:
                t = now_ns()
                if t >= window_hi:
                    return
                try:
                    good = await put(s, i)
                except (TimeoutError, aiohttp.ClientError, OSError) as err:
                    good = False
                    first_error = first_error or f"{type(err).__name__}: {err}"
                done = now_ns()
                if window_lo <= done < window_hi:
                    if good:
                        ok += 1
                        per_target[target.base_url] += 1
                        lat_ms.append((done - t) / 1e6)
                    else:
                        errors += 1
                i += 1

        cpu0 = wall0 = 0.0

        async def sample_cpu() -> None:
            nonlocal cpu0, wall0
            await asyncio.sleep(max(0.0, (window_lo - now_ns()) / 1e9))
            cpu0, wall0 = _cpu_s(), now_ns() / 1e9

        sampler = asyncio.create_task(sample_cpu())
        await asyncio.gather(*(client(c) for c in range(clients)))
        await sampler
        cpu_frac = (_cpu_s() - cpu0) / max(1e-9, now_ns() / 1e9 - wall0)
        return {"ok": ok, "errors": errors, "error": first_error, "cpu": cpu_frac, "lat_ms": lat_ms,
                "per_target": per_target}


def cluster_throughput_worker(assign: list[Target], first_client: int, conn: Connection,
                              warmup_s: float, duration_s: float) -> None:
    """Process entry: like :func:`throughput_worker` (PUTs only), one client per entry of ``assign``
    pinned to that member; the result also carries every in-window latency (``lat_ms``)."""
    raise_nofile_limit()
    try:
        result = asyncio.run(_cluster_throughput(assign, first_client, conn, warmup_s, duration_s))
    except Exception as err:  # reported to the parent, which prints it
        result = {"ok": 0, "errors": 0, "error": f"{type(err).__name__}: {err}"}
    conn.send(("result", result))
    conn.close()


async def _failover(targets: list[Target], conn: Connection, interval_s: float, give_up_s: float,
                    max_inflight: int) -> dict[str, Any]:
    """Open-loop writes, one every ``interval_s`` to each member in turn, until a write *started*
    after the kill time (sent by the parent) is acknowledged."""
    fns = [_request_fn(t, "put") for t in targets]
    inflight: set[asyncio.Task[None]] = set()
    kill_ns = 0
    first: dict[str, Any] = {}
    errors: dict[str, int] = {}
    sent = ok_before = 0
    got_first = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=give_up_s, sock_connect=give_up_s)

    async def write(s: aiohttp.ClientSession, k: int) -> None:
        nonlocal ok_before
        start = now_ns()
        try:
            good = await fns[k % len(fns)](s, 100_000 + k)
            why = "HTTP error"
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            good, why = False, type(err).__name__
        done = now_ns()
        if not good:
            errors[why] = errors.get(why, 0) + 1
        elif not kill_ns or start < kill_ns:
            ok_before += 1
        elif not first or done < first["ack_ns"]:
            first.update(ack_ns=done, start_ns=start, member=targets[k % len(fns)].base_url)
            got_first.set()

    connector = aiohttp.TCPConnector(limit=max_inflight, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ok_before < 2 * len(targets) and time.monotonic() < deadline:  # warm: every member answers
            await asyncio.gather(*(write(s, k) for k in range(len(targets))))
            sent += len(targets)
        conn.send(("ready", ok_before))
        k = sent
        give_up = time.monotonic() + READY_TIMEOUT_S + give_up_s
        next_at = time.monotonic()
        while not got_first.is_set() and time.monotonic() < give_up:
            if not kill_ns and conn.poll():
                kill_ns = conn.recv()
                give_up = time.monotonic() + give_up_s
                errors.clear()
            if len(inflight) < max_inflight:
                task = asyncio.create_task(write(s, k))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                k += 1
                sent += 1
            next_at += interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got_first.wait(), max(0.0, next_at - time.monotonic()))
        for task in list(inflight):
            task.cancel()
        if inflight:
            await asyncio.wait(list(inflight), timeout=5)
    if not first:
        return {"ok": False, "kill_ns": kill_ns, "sent": sent, "errors": errors,
                "error": "no write acknowledged after the kill" if kill_ns else "no kill signal from the parent"}
    return {"ok": True, "kill_ns": kill_ns, **first, "sent": sent, "errors": errors}


def failover_worker(targets: list[Target], conn: Connection, interval_s: float = 0.01,
                    give_up_s: float = 30.0, max_inflight: int = 512) -> None:
    """Process entry: write to every member until all answer, send ``("ready", n)``, receive the kill
    time (ns) and send ``("result", dict)`` with the first acknowledged write started after it
    (``ack_ns``, ``start_ns``, ``member``) and the errors seen meanwhile, by kind."""
    raise_nofile_limit()
    try:
        result = asyncio.run(_failover(targets, conn, interval_s, give_up_s, max_inflight))
    except Exception as err:  # reported to the parent, which prints it
        result = {"ok": False, "error": f"{type(err).__name__}: {err}", "errors": {}}
    conn.send(("result", result))
    conn.close()
