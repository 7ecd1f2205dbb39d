#!/usr/bin/env python3
"""What a client agent's forwarding costs: the same KV load against the leader, a follower and a client.

Starts 3 durable ctk servers and one client agent on loopback (raft_bench.py's cluster plumbing; every
process stopped by PID), then runs ``--clients`` concurrent keep-alive HTTP clients in closed loops for
``--seconds`` each: GETs of existing keys (default consistency) and PUTs of 100-byte values. The
client agent forwards every such request over the servers' RPC port to one server, which answers it
with its own HTTP API (agent/client.py) — the extra hop is what this measures. Also prints the time
from a PUT through the leader to a blocking query held on the client agent returning.

    .venv/bin/python bench/client_bench.py [--clients 32] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import raft_bench  # noqa: E402  (sibling script: cluster plumbing)
from _load import Target  # noqa: E402
from raft_bench import CtkCluster, Member, cleanup, pick_range, start_cluster  # noqa: E402

KEYS = 256
VALUE = b"v" * 100


async def closed_loop(base: str, verb: str, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def one(worker: int) -> None:
            nonlocal errors
            i = worker
            while time.monotonic() < stop_at:
                url = f"{base}/v1/kv/bench/{i % KEYS}"
                t0 = time.perf_counter()
                try:
                    if verb == "GET":
                        async with http.get(url) as r:
                            await r.read()
                            ok = r.status == 200
                    else:
                        async with http.put(url, data=VALUE) as r:
                            await r.read()
                            ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
                i += clients

        await asyncio.gather(*(one(w) for w in range(clients)))
    latencies.sort()
    n = len(latencies)
    return {"req_s": n / seconds, "p50_ms": 1000 * latencies[n // 2] if n else 0.0,
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else 0.0, "errors": errors}


async def blocking_wakeup(writer: str, reader: str, rounds: int = 20) -> dict[str, float]:
    """PUT through ``writer`` while a blocking query waits on ``reader``: time to the reader's answer."""
    out: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(rounds):
            async with http.get(f"{reader}/v1/kv/wake") as r:
                index = r.headers.get("X-Consul-Index", "0")
            waiter = asyncio.ensure_future(http.get(f"{reader}/v1/kv/wake?index={index}&wait=30s"))
            await asyncio.sleep(0.2)  # let the query reach the server and park
            t0 = time.perf_counter()
            async with http.put(f"{writer}/v1/kv/wake", data=str(i).encode()) as w:
                await w.read()
            resp = await waiter
            await resp.read()
            out.append(time.perf_counter() - t0)
            resp.release()
    return {"median_ms": 1000 * statistics.median(out), "max_ms": 1000 * max(out)}


def start_client(prefix: str, workdir: Path) -> Member:
    ip = f"{prefix}.9"
    data_dir = workdir / "ctk-c1"
    data_dir.mkdir()
    cmd = [sys.executable, "-m", "toolkit.cli.main", "agent", "-data-dir", str(data_dir), "-node", "c1",
           "-bind", ip, "-client", ip, "-dns-port", "-1", "-log-level", "warn", "-retry-interval", "1s",
           "-retry-join", f"{prefix}.1"]
    m = Member("c1", ip, cmd, Target("ctk", f"http://{ip}:8500"), data_dir, workdir / "ctk-c1.log",
               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    m.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = _get(m.target.base_url + "/v1/status/leader")
        if status == 200 and json.loads(body):
            return m
        time.sleep(0.2)
    raise RuntimeError("the client agent found no leader:\n" + m.tail())


def _get(url: str) -> tuple[int, bytes]:
    try:
        return raft_bench.http_call(url, timeout_s=2.0)
    except (OSError, http.client.HTTPException):
        return 0, b""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctk-client-bench-"))
    prefix = pick_range({"tcp": (8300, 8301, 8500), "udp": (8301,)}, 150)
    results: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    try:
        cluster = CtkCluster(prefix, work)
        leader = start_cluster(cluster)
        follower = next(m for m in cluster.members if m is not leader)
        client = start_client(prefix, work)
        targets = {"leader": leader.target.base_url, "follower": follower.target.base_url,
                   "client agent": client.target.base_url}
        asyncio.run(closed_loop(targets["leader"], "PUT", args.clients, 2.0))  # fill the keys
        for verb in ("GET", "PUT"):
            for name, base in targets.items():
                results[f"{verb} {name}"] = asyncio.run(closed_loop(base, verb, args.clients, args.seconds))
        results["wake-up via client agent"] = asyncio.run(blocking_wakeup(targets["leader"], targets["client agent"]))
        results["wake-up via leader"] = asyncio.run(blocking_wakeup(targets["leader"], targets["leader"]))
    finally:
        cleanup()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"KV load, {args.clients} clients, {args.seconds:.0f} s each (3 durable servers + 1 client agent)")
    print(f"{'':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for key, r in results.items():
        if isinstance(r, dict) and "req_s" in r:
            print(f"{key:28} {r['req_s']:9.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:7d}")
    for key in ("wake-up via leader", "wake-up via client agent"):
        r = results[key]
        print(f"{key:28} median {r['median_ms']:.1f} ms, max {r['max_ms']:.1f} ms (PUT → blocking query answered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
