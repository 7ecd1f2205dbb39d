#!/usr/bin/env python3
"""KV throughput and blocking-query fan-out: ctk (in memory and durable) side by side with etcd, one run.

Starts its own servers on free 127.0.0.1 ports (``ctk agent -dev``, ``ctk agent -server -bootstrap
-data-dir TMP``, and ``etcd`` from Debian's ``etcd-server`` if installed), drives them from separate
load-generator processes (aiohttp, see ``_load.py``), prints one plain table per section, and stops
every process it started, by PID, whatever happens. ``--json`` prints the same figures as JSON.

    .venv/bin/python bench/kv_bench.py [--quick] [--only ctk|etcd] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import http.client
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _load  # noqa: E402  (sibling helper; bench/ is not a package)
from _load import Target, now_ns  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MP = mp.get_context("spawn")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FAN_KEY = "fan"
FAN_PER_PROC = 5000  # waiters per client process (1 process kept up with 5,000 here; --fan-procs to change)

# Every process this script starts is listed here and stopped by PID in ``cleanup()``.
_LIVE_SERVERS: list[Server] = []
_LIVE_WORKERS: list[BaseProcess] = []


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout carries only the figures."""
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_sched_s(pid: int) -> tuple[float, float]:
    """(on-CPU, runnable-but-waiting-for-a-CPU) seconds so far, summed over the threads of ``pid``, from
    /proc/PID/task/*/schedstat (ns resolution); (nan, nan) if the kernel does not provide it."""
    run_ns = wait_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (task / "schedstat").read_text().split()
                run_ns += int(fields[0])
                wait_ns += int(fields[1])
    except OSError:
        pass
    if not run_ns:
        return math.nan, math.nan
    return run_ns / 1e9, wait_ns / 1e9


def proc_cpu_s(pid: int) -> float:
    """CPU seconds used so far by all threads of ``pid`` (schedstat, else /proc/PID/stat ticks; 0 if gone)."""
    run_s, _ = proc_sched_s(pid)
    if math.isfinite(run_s):
        return run_s
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def host_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / CLK_TCK, sum(vals) / CLK_TCK


def loadavg() -> float:
    """The 1-minute load average (how busy the machine is with everyone's work)."""
    return os.getloadavg()[0]


def _die_with_parent() -> None:
    """Child pre-exec: get SIGTERM if this script dies without cleaning up (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ------------------------------------------------------------------ servers

@dataclass
class Server:
    """A server process this script started (ctk agent or etcd)."""

    name: str
    target: Target
    proc: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def tail(self) -> str:
        """The end of the server's log, for error messages."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""


def http_call(url: str, method: str = "GET", body: bytes | None = None,
              timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One small synchronous request (setup and the fan-out write, never load)."""
    assert url.startswith("http://127.0.0.1:")
    hostport, _, path = url[len("http://"):].partition("/")
    host, port = hostport.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        c.request(method, "/" + path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _wait_up(server: Server, probe: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``probe`` until it holds; fail early with the log tail if the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not come up within {timeout_s:.0f}s:\n{server.tail()}")


def start_ctk(name: str, durable: bool, workdir: Path) -> Server:
    """``ctk agent -dev`` (in memory) or ``-server -bootstrap -data-dir`` (durable) on free ports."""
    port = free_port()
    args = ["-node", "n1", "-client", "127.0.0.1", "-http-port", str(port), "-dns-port", "-1",
            "-server-port", str(free_port()), "-serf-lan-port", str(free_port()),
            "-serf-wan-port", str(free_port()), "-bind", "127.0.0.1", "-log-level", "warn"]
    data_dir = None
    if durable:
        data_dir = Path(tempfile.mkdtemp(prefix="ctk-data-", dir=workdir))
        args = ["-server", "-bootstrap", "-data-dir", str(data_dir), *args]
    else:
        args = ["-dev", *args]
    log_path = workdir / f"{name.replace('(', '-').strip(')')}.log"
    cmd = [sys.executable, "-m", "toolkit.cli.main", "agent", *args]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                preexec_fn=_die_with_parent)
    server = Server(name, Target("ctk", f"http://127.0.0.1:{port}"), proc, log_path, data_dir)
    _LIVE_SERVERS.append(server)

    def ready() -> bool:
        status, _, body = http_call(server.target.base_url + "/v1/status/leader", timeout_s=1)
        return status == 200 and bool(json.loads(body))

    _wait_up(server, ready)
    status, _, _ = http_call(server.target.base_url + "/v1/kv/bench/ready", "PUT", b"1")
    if status != 200:
        raise RuntimeError(f"{name}: first KV write failed with HTTP {status}")
    return server


def etcd_version(binary: str) -> str:
    """``etcd --version``'s first line, value only."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    return out.splitlines()[0].split(":", 1)[-1].strip() if out else "?"


def start_etcd(binary: str, workdir: Path) -> Server:
    """A single-member etcd on free ports with its own data dir; probes the gateway prefix."""
    client, peer = free_port(), free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="etcd-data-", dir=workdir))
    cmd = [binary, "--name", "bench", "--data-dir", str(data_dir),
           "--listen-client-urls", f"http://127.0.0.1:{client}",
           "--advertise-client-urls", f"http://127.0.0.1:{client}",
           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-cluster", f"bench=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
           "--quota-backend-bytes", str(2 * 1024**3), "--auto-compaction-retention", "1",
           "--logger", "zap", "--log-level", "error", "--log-outputs", "stderr"]
    log_path = workdir / "etcd.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
    server = Server("etcd", Target("etcd", f"http://127.0.0.1:{client}"), proc, log_path, data_dir)
    _LIVE_SERVERS.append(server)
    _wait_up(server, lambda: http_call(server.target.base_url + "/health", timeout_s=1)[0] == 200)
    # etcd 3.4 serves the gRPC gateway under /v3/ (and the older /v3beta/); use whichever answers.
    for prefix in ("/v3", "/v3beta", "/v3alpha"):
        body = json.dumps({"key": "YmVuY2gvcmVhZHk=", "value": "MQ=="}).encode()
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_call(server.target.base_url + prefix + "/kv/put", "POST", body)[0] == 200:
                server.target = Target("etcd", server.target.base_url, prefix)
                server.extra["gateway"] = prefix + "/"
                return server
    raise RuntimeError("etcd's HTTP gateway answers neither /v3/ nor /v3beta/ nor /v3alpha/")


def cleanup() -> None:
    """Stop every load worker and server this script started, by PID."""
    for w in _LIVE_WORKERS:
        if w.is_alive():
            w.terminate()
            w.join(3)
            if w.is_alive():
                w.kill()
                w.join(3)
    _LIVE_WORKERS.clear()
    for s in _LIVE_SERVERS:
        s.stop()
    _LIVE_SERVERS.clear()


# ------------------------------------------------------------------ worker plumbing

def _spawn(target: Callable[..., None], before: tuple[Any, ...],
           after: tuple[Any, ...]) -> tuple[BaseProcess, Connection]:
    """Start ``target(*before, conn, *after)`` in a new process; returns it and our end of the pipe."""
    parent, child = MP.Pipe()
    p = MP.Process(target=target, args=(*before, child, *after), daemon=True)
    # The worker inherits SIGINT=ignored: Ctrl-C reaches only this script, which stops workers by PID.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    _LIVE_WORKERS.append(p)
    child.close()
    return p, parent


def _recv(conn: Connection, timeout_s: float, what: str) -> Any:
    """The next message from a load worker, bounded by ``timeout_s``."""
    if not conn.poll(timeout_s):
        raise TimeoutError(f"load worker sent no {what} within {timeout_s:.0f}s")
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError(f"load worker exited before sending its {what}") from None


def _reap(procs: list[BaseProcess]) -> None:
    """Join finished load workers (terminating any that hang) and forget them."""
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join(3)
        with contextlib.suppress(ValueError):
            _LIVE_WORKERS.remove(p)


def wait_idle(pid: int, quiet_s: float = 0.3, max_s: float = 20.0) -> float:
    """Sleep until ``pid`` used < 5% CPU over ``quiet_s`` (the server has digested its requests)."""
    start = time.monotonic()
    last = proc_cpu_s(pid)
    while time.monotonic() - start < max_s:
        time.sleep(quiet_s)
        cur = proc_cpu_s(pid)
        if cur - last < 0.05 * quiet_s + 1.0 / CLK_TCK:
            break
        last = cur
    return time.monotonic() - start


# ------------------------------------------------------------------ throughput

def measure_throughput(server: Server, op: str, clients: int, procs: int, warmup_s: float,
                       duration_s: float) -> dict[str, Any]:
    """Requests/second for ``clients`` closed-loop clients spread over ``procs`` load processes."""
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers: list[tuple[BaseProcess, Connection]] = []
    first = 0
    for share in shares:
        workers.append(_spawn(_load.throughput_worker, (server.target, op, share, first),
                              (warmup_s, duration_s)))
        first += share
    try:
        for _, conn in workers:
            msg = _recv(conn, 60, "ready message")
            if msg[0] != "ready":
                raise RuntimeError(f"load worker failed: {msg[1].get('error')}")
        start_ns = now_ns() + int(0.1e9)
        for _, conn in workers:
            conn.send(start_ns)
        window_lo = start_ns + int(warmup_s * 1e9)
        time.sleep(max(0.0, (window_lo - now_ns()) / 1e9))
        cpu0, t0, (busy0, _) = proc_cpu_s(server.pid), now_ns(), host_cpu_s()
        wait0 = proc_sched_s(server.pid)[1]
        time.sleep(max(0.0, duration_s - 0.02))
        wall = max(1e-9, (now_ns() - t0) / 1e9)
        server_cpu = (proc_cpu_s(server.pid) - cpu0) / wall
        server_wait = (proc_sched_s(server.pid)[1] - wait0) / wall
        host_cpu = (host_cpu_s()[0] - busy0) / wall
        results = [_recv(conn, duration_s + 60, "result")[1] for _, conn in workers]
    finally:
        _reap([p for p, _ in workers])
    ok = sum(r.get("ok", 0) for r in results)
    errors = sum(r.get("errors", 0) for r in results)
    first_error = next((r["error"] for r in results if r.get("error")), "")
    return {"target": server.name, "op": op, "clients": clients, "load_procs": procs,
            "rps": ok / duration_s, "errors": errors, "error": first_error,
            "server_cpu": server_cpu, "server_cpu_wait": server_wait, "host_cpu": host_cpu, "client_cpu": [round(r.get("cpu", 0.0), 3) for r in results]}


def fill(server: Server) -> None:
    """Write the whole key space once so that every GET finds its key."""
    ok = asyncio.run(_load.fill_keys(server.target))
    if ok != _load.KEYSPACE:
        raise RuntimeError(f"{server.name}: only {ok}/{_load.KEYSPACE} keys written while filling")


# ------------------------------------------------------------------ fan-out

def _write_fan(server: Server, value: bytes) -> tuple[int, int]:
    """Write the fan-out key; returns (HTTP status, new index/revision)."""
    t = server.target
    if t.kind == "ctk":
        status, _, _ = http_call(t.base_url + "/v1/kv/" + FAN_KEY, "PUT", value)
        return status, 0
    body = json.dumps({"key": _load._b64(FAN_KEY), "value": _load._b64(value)}).encode()
    status, _, raw = http_call(t.base_url + t.prefix + "/kv/put", "POST", body)
    return status, int(json.loads(raw)["header"]["revision"]) if status == 200 else 0


def _pct(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan if empty)."""
    if not sorted_ms:
        return math.nan
    return sorted_ms[min(len(sorted_ms) - 1, max(0, math.ceil(q * len(sorted_ms)) - 1))]


def summarize_fanout(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from repeated runs: the median of each latency figure, the fewest woken."""
    if len(runs) == 1:
        return {**runs[0], "runs": 1}
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("p50_ms", "p99_ms", "max_ms", "write_ack_ms", "server_cpu_ms", "server_cpu_us_per_waiter",
                     "server_cpu_wait_ms", "client_cpu_ms")}
    errors = [e for r in runs for e in r["errors"]]
    return {**runs[0], **med, "woken": min(r["woken"] for r in runs), "ready": min(r["ready"] for r in runs),
            "errors": list(dict.fromkeys(errors))[:5], "runs": len(runs),
            "per_run": [{k: r[k] for k in ("p50_ms", "p99_ms", "max_ms", "woken", "write_ack_ms", "server_cpu_ms",
                                           "client_cpu_util", "settle_s")} for r in runs]}


class CpuSampler:
    """Samples a process's on-CPU and waiting-for-CPU seconds every few ms in a thread, so that its cost
    over any window can be read afterwards."""

    def __init__(self, pid: int, interval_s: float = 0.005, max_s: float = 120.0) -> None:
        self.pid, self.interval_s, self.max_s = pid, interval_s, max_s
        self.samples: list[tuple[int, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        """Record one (time, on-CPU, waiting) sample now."""
        run_s, wait_s = proc_sched_s(self.pid)
        if not math.isfinite(run_s):
            run_s = proc_cpu_s(self.pid)
        self.samples.append((now_ns(), run_s, wait_s))

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        deadline = time.monotonic() + 2.0
        while not self.samples and time.monotonic() < deadline:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()  # so that there is always a sample after the window

    def between(self, lo_ns: int, hi_ns: int) -> tuple[float, float]:
        """(on-CPU, waiting-for-CPU) seconds from the last sample at/before ``lo_ns`` to the first at/after
        ``hi_ns``."""
        before = [s for s in self.samples if s[0] <= lo_ns]
        after = [s for s in self.samples if s[0] >= hi_ns]
        if not before or not after:
            return math.nan, math.nan
        return after[0][1] - before[-1][1], after[0][2] - before[-1][2]


def measure_fanout(server: Server, n: int, procs: int, wake_timeout_s: float) -> dict[str, Any]:
    """N waiters on one key in ``procs`` processes, then one write; per-waiter wake-up latency."""
    _write_fan(server, b"before")
    index = 0
    if server.target.kind == "ctk":
        _, headers, _ = http_call(server.target.base_url + "/v1/kv/" + FAN_KEY)
        index = int(headers["x-consul-index"])
    procs = max(1, min(procs, n))
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    workers = [_spawn(_load.fanout_worker, (server.target, share, FAN_KEY, index), (wake_timeout_s,))
               for share in shares]
    try:
        ready, setup_errors = 0, []
        for _, conn in workers:
            msg = _recv(conn, _load.READY_TIMEOUT_S + 30, "ready message")
            if msg[0] == "result":
                setup_errors += msg[1].get("errors", [])
                continue
            ready += msg[1]
            setup_errors += msg[2]
        settle_s = wait_idle(server.pid)
        with CpuSampler(server.pid, max_s=wake_timeout_s + 60) as sampler:
            time.sleep(0.02)
            write_ns = now_ns()
            status, _ = _write_fan(server, b"after")
            ack_ms = (now_ns() - write_ns) / 1e6
            for _, conn in workers:
                with contextlib.suppress(OSError):
                    conn.send(write_ns)
            results = [_recv(conn, wake_timeout_s + 30, "result")[1] for _, conn in workers]
    finally:
        _reap([p for p, _ in workers])
    arrivals = [t for r in results for t in r.get("arrivals", [])]
    lat = sorted((t - write_ns) / 1e6 for t in arrivals)
    # Server CPU spent from the write to the last wake-up: how much of that window it was running.
    server_cpu_s, server_wait_s = sampler.between(write_ns, max(arrivals)) if arrivals else (math.nan, math.nan)
    errors = setup_errors + [e for r in results for e in r.get("errors", [])]
    client_util = [round(r.get("cpu_s", 0.0) / r.get("busy_s", 1.0), 2) for r in results if r.get("arrivals")]
    client_cpu_ms = sum(r.get("cpu_s", 0.0) for r in results) * 1e3
    return {"target": server.name, "n": n, "ready": ready, "woken": len(lat), "write_status": status,
            "write_ack_ms": ack_ms, "p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99),
            "max_ms": lat[-1] if lat else math.nan, "server_cpu_ms": server_cpu_s * 1e3,
            "server_cpu_us_per_waiter": server_cpu_s * 1e6 / max(1, len(lat)),
            "server_cpu_wait_ms": server_wait_s * 1e3, "client_cpu_ms": client_cpu_ms, "client_procs": procs, "settle_s": round(settle_s, 2),
            "client_cpu_util": client_util, "errors": errors[:5]}


# ------------------------------------------------------------------ output

def _fmt_rps(r: dict[str, Any] | None) -> str:
    """One throughput cell."""
    if r is None or not math.isfinite(r["rps"]):
        return "failed" if r else "-"
    return f"{r['rps']:.0f}" + (f" ({r['errors']} err)" if r["errors"] else "")


def print_throughput_row(op: str, clients: int, row: dict[str, dict[str, Any]], names: list[str]) -> None:
    """One ``KV PUT req/s clients=N`` line for every server, and its CPU line."""
    cells = "  ".join(f"{name}={_fmt_rps(row.get(name)):>7}" for name in names)
    print(f"KV {op.upper():<3} req/s  clients={clients:<3} {cells}", flush=True)
    cpu = "  ".join(
        f"{name}={row[name]['server_cpu'] * 100:.0f}(+{row[name]['server_cpu_wait'] * 100:.0f})"
        f"/{sum(row[name]['client_cpu']) * 100:.0f}/{row[name]['host_cpu'] * 100:.0f}"
        for name in names if name in row)
    print(f"    cpu% server(+waiting for a CPU)/clients/host  {cpu}", flush=True)
    for name in names:
        if name in row and row[name]["error"]:
            print(f"    {name}: first error: {row[name]['error']}", flush=True)


def print_fanout_row(r: dict[str, Any]) -> None:
    """One ``fan-out N=...`` line and its detail line."""
    print(f"fan-out N={r['n']:<5} {r['target']:<13} p50={r['p50_ms']:7.1f}ms  p99={r['p99_ms']:7.1f}ms  "
          f"max={r['max_ms']:7.1f}ms  woken={r['woken']}/{r['n']}", flush=True)
    extra = (", max per run " + "/".join(f"{x['max_ms']:.0f}" for x in r["per_run"]) + "ms") if r["runs"] > 1 else ""
    print(f"    write ack {r['write_ack_ms']:.1f}ms; from the write to the last wake-up the server ran "
          f"{r['server_cpu_ms']:.0f}ms ({r['server_cpu_us_per_waiter']:.0f}us/waiter) and waited "
          f"{r['server_cpu_wait_ms']:.0f}ms for a CPU; clients used {r['client_cpu_ms']:.0f}ms CPU "
          f"in {r['client_procs']} proc(s){extra}", flush=True)
    if r["woken"] < r["n"]:
        why = "; ".join(dict.fromkeys(r["errors"])) or "no error reported: waiters still waiting at the deadline"
        print(f"    not all woken ({r['ready']}/{r['n']} registered before the write): {why}", flush=True)


# ------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring and bench/README.md)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smaller N and durations (smoke run)")
    p.add_argument("--only", choices=["ctk", "etcd"], help="run only one side")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    p.add_argument("--load-procs", type=int, default=2,
                   help="load processes for the 64-client throughput runs (default 2)")
    p.add_argument("--fan-procs", type=int, default=0,
                   help="client processes for fan-out (default: one per 1,250 waiters, at least 1)")
    p.add_argument("--fan-n", help="comma-separated fan-out sizes (default 100,1000,5000; quick 50,200)")
    p.add_argument("--repeat", type=int, default=0,
                   help="fan-out runs per N and side, median reported (default 3; --quick 1)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput section")
    p.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd", help="etcd binary")
    return p.parse_args(argv)


def _failure(server: Server, err: Exception) -> str:
    """Why a measurement failed, naming a server that died under it."""
    msg = f"{type(err).__name__}: {err}"
    if server.proc.poll() is not None:
        msg += f" ({server.name} exited with {server.proc.returncode}: {server.tail()[-300:]!r})"
    return msg


def _note(msg: str, as_json: bool) -> None:
    """A remark about the run: in the table output, or on stderr when stdout is JSON."""
    if as_json:
        log(f"NOTE: {msg}")
    else:
        print(f"NOTE: {msg}", flush=True)


def _finite(v: Any) -> Any:
    """NaN/inf become null so that ``--json`` output is strict JSON."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _on_sigterm(_sig: int, _frame: object) -> None:
    """SIGTERM takes the Ctrl-C path, so that ``finally`` stops every child."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run both sections, print, stop everything; returns the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    soft, hard = _load.raise_nofile_limit()  # inherited by the agents, etcd and the load workers
    warmup_s, duration_s = (0.2, 1.0) if args.quick else (0.5, 3.0)
    fan_ns = [50, 200] if args.quick else [100, 1000, 5000]
    if args.fan_n:
        fan_ns = [int(x) for x in args.fan_n.split(",") if x.strip()]
    client_counts = [1, 64]
    repeat = args.repeat or (1 if args.quick else 3)
    notes: list[str] = []
    out: dict[str, Any] = {"meta": {}, "throughput": [], "fanout": [], "notes": notes}

    etcd_bin = args.etcd if os.access(args.etcd, os.X_OK) else None
    want_ctk = args.only in (None, "ctk")
    want_etcd = args.only in (None, "etcd")
    if want_etcd and etcd_bin is None:
        msg = ("etcd not found (install Debian package etcd-server: apt-get install -y etcd-server); "
               + ("running the ctk part only" if want_ctk else "nothing to run"))
        notes.append(msg)
        _note(msg, args.json)
        want_etcd = False
    if not (want_ctk or want_etcd):
        print("nothing to run", file=sys.stderr)
        return 1
    need_fds = max(fan_ns, default=0) + 200  # per process: the server holds one socket per waiter
    if soft < need_fds:
        msg = (f"fd limit {soft} (hard {hard}) is below the ~{need_fds} descriptors N={max(fan_ns, default=0)} needs: "
               "the largest fan-out will be partial; raise `ulimit -Hn`")
        notes.append(msg)
        _note(msg, args.json)

    workdir = Path(tempfile.mkdtemp(prefix="kv-bench-"))
    servers: list[Server] = []
    try:
        if want_ctk:
            try:
                log("starting ctk agent -dev ...")
                servers.append(start_ctk("ctk(dev)", False, workdir))
                log("starting ctk agent -server -bootstrap -data-dir ...")
                servers.append(start_ctk("ctk(durable)", True, workdir))
            except (RuntimeError, OSError, http.client.HTTPException) as err:
                print(f"ERROR: could not start a ctk agent: {err}", file=sys.stderr)
                return 1
        if want_etcd and etcd_bin:
            log("starting etcd ...")
            try:
                servers.append(start_etcd(etcd_bin, workdir))
            except (RuntimeError, OSError, http.client.HTTPException) as err:
                want_etcd = False
                msg = f"etcd failed to start ({err}); running without it".replace("\n", " ")
                notes.append(msg)
                _note(msg, args.json)
        if not servers:
            print("ERROR: no server to measure", file=sys.stderr)
            return 1
        names = [s.name for s in servers]
        meta = {"cpus": os.cpu_count(), "python": platform.python_version(),
                "aiohttp": __import__("aiohttp").__version__, "nofile": [soft, hard],
                "warmup_s": warmup_s, "duration_s": duration_s, "value_bytes": len(_load.VALUE),
                "keys": _load.KEYSPACE, "data_dir": str(workdir), "fanout_repeat": repeat,
                "loadavg_start": round(loadavg(), 2)}
        if etcd_bin and want_etcd:
            meta["etcd"] = etcd_version(etcd_bin)
            meta["etcd_gateway"] = servers[-1].extra.get("gateway", "")
        out["meta"] = meta
        if not args.json:
            print(f"kv_bench: {meta['cpus']} CPUs, Python {meta['python']}, aiohttp {meta['aiohttp']}"
                  + (f", etcd {meta['etcd']} (gateway {meta['etcd_gateway']})" if "etcd" in meta else "")
                  + f", fd limit {soft}, data dirs under {workdir}", flush=True)
        if meta["loadavg_start"] > 0.5 * (os.cpu_count() or 1):
            msg = (f"the machine is busy (load average {meta['loadavg_start']} on {meta['cpus']} CPUs): "
                   "other work competes for the CPUs, figures are noisy")
            notes.append(msg)
            _note(msg, args.json)
        if not args.json and not args.no_throughput:
            print(f"\n== KV throughput: req/s, {duration_s:g} s per run after {warmup_s:g} s warm-up, "
                  f"{len(_load.VALUE)}-byte values, {_load.KEYSPACE} keys, keep-alive ==", flush=True)

        for op in () if args.no_throughput else ("put", "get"):
            if op == "get":
                for s in servers:
                    fill(s)
            for clients in client_counts:
                row: dict[str, dict[str, Any]] = {}
                for s in servers:
                    log(f"throughput {op} clients={clients} {s.name} ...")
                    procs = 1 if clients == 1 else args.load_procs
                    try:
                        r = measure_throughput(s, op, clients, procs, warmup_s, duration_s)
                    except (RuntimeError, OSError) as err:  # includes TimeoutError; keep going
                        r = {"target": s.name, "op": op, "clients": clients, "rps": math.nan, "errors": 0,
                             "error": _failure(s, err), "server_cpu": math.nan, "server_cpu_wait": math.nan,
                             "host_cpu": math.nan,
                             "client_cpu": []}
                    row[s.name] = r
                    out["throughput"].append(r)
                if not args.json:
                    print_throughput_row(op, clients, row, names)

        if not args.json and fan_ns:
            print("\n== Blocking-query fan-out: N waiters on one key (ctk: GET ?index=&wait=60s, etcd: "
                  "/watch stream), then ONE write; latency from just before the write"
                  + (f"; median of {repeat} interleaved runs" if repeat > 1 else "") + " ==", flush=True)
        for n in fan_ns:
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
            for rep in range(repeat):
                for s in servers:  # interleaved, so that a busy spell on the host hits every side alike
                    procs = args.fan_procs or max(1, math.ceil(n / FAN_PER_PROC))
                    log(f"fan-out N={n} {s.name} run {rep + 1}/{repeat} ({procs} client procs) ...")
                    try:
                        r = measure_fanout(s, n, procs, wake_timeout_s=10.0 if args.quick else 30.0)
                    except (RuntimeError, OSError, http.client.HTTPException, KeyError, ValueError) as err:
                        r = {"target": s.name, "n": n, "ready": 0, "woken": 0, "write_status": 0,
                             "write_ack_ms": math.nan, "p50_ms": math.nan, "p99_ms": math.nan,
                             "max_ms": math.nan, "server_cpu_ms": math.nan, "server_cpu_us_per_waiter": math.nan,
                             "server_cpu_wait_ms": math.nan,
                             "client_cpu_ms": math.nan, "client_procs": procs, "settle_s": 0.0,
                             "client_cpu_util": [], "errors": [_failure(s, err)]}
                    runs[s.name].append(r)
            for s in servers:
                r = summarize_fanout(runs[s.name])
                out["fanout"].append(r)
                if not args.json:
                    print_fanout_row(r)
        meta["loadavg_end"] = round(loadavg(), 2)
        if not args.json:
            print(f"\nload average (1 min) at start {meta['loadavg_start']}, at end {meta['loadavg_end']} "
                  f"on {meta['cpus']} CPUs", flush=True)
        if args.json:
            print(json.dumps(_finite(out), indent=2, default=str))
        return 0
    except KeyboardInterrupt:
        log("interrupted; stopping everything this script started")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
