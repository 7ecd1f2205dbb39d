#!/usr/bin/env python3
"""A 3-server ctk cluster side by side with a 3-member etcd cluster, on loopback, in one run.

Starts three durable ctk servers (``-raft-multiplier 1``, one 127.x.y.z address each, Consul's default
ports) and three etcd members (static ``--initial-cluster``, default 100 ms heartbeat / 1000 ms
election), then measures KV PUT throughput (clients pinned to the members, and leader only), PUT
latency, and leader failover after SIGKILL. Load comes from separate processes (``_load.py``). Every
process it starts is stopped by PID, whatever happens; temp dirs are removed. ``--json`` prints the
same figures as JSON.

    .venv/bin/python bench/raft_bench.py [--quick] [--only ctk|etcd] [--json] [--rounds N]
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import http.client
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _load  # noqa: E402  (sibling helper; bench/ is not a package)
import kv_bench  # noqa: E402  (process plumbing shared with kv_bench.py)
from _load import Target, now_ns  # noqa: E402
from kv_bench import (  # noqa: E402
    _die_with_parent,
    _finite,
    _pct,
    _reap,
    _recv,
    _spawn,
    etcd_version,
    host_cpu_s,
    loadavg,
    log,
    proc_sched_s,
)

ROOT = Path(__file__).resolve().parents[1]
CTK_PORTS = {"tcp": (8500, 8300, 8301, 8302), "udp": (8301, 8302)}  # HTTP, Raft/RPC, serf LAN, serf WAN
ETCD_PORTS = {"tcp": (2379, 2380), "udp": ()}
# What the two configurations mean for elections (printed in the header, so the comparison is honest).
CTK_TIMING = ("-raft-multiplier 1: 50 ms tick, heartbeat every tick, election timeout random in "
              "[0.5, 1.0) s, PreVote + CheckQuorum, 250 ms leader lease; writes to followers forwarded "
              "(held up to 7 s without a leader); every write fsynced (group commit)")
ETCD_DEFAULT_TIMING_MS = (100, 1000)  # etcd's defaults: --heartbeat-interval, --election-timeout


def etcd_timing(heartbeat_ms: int, election_ms: int) -> str:
    """What etcd's two timing flags mean for elections (etcd's raft randomises in [election, 2 x election))."""
    default = " (defaults)" if (heartbeat_ms, election_ms) == ETCD_DEFAULT_TIMING_MS else " (NOT the defaults)"
    return (f"--heartbeat-interval {heartbeat_ms} --election-timeout {election_ms}{default}: election timeout "
            f"random in [{election_ms / 1000:g}, {2 * election_ms / 1000:g}) s, pre-vote off (3.4 default); "
            "followers forward proposals; WAL fsynced per batch")


# Every member this script starts is listed here and stopped by PID in ``cleanup()``.
_LIVE_MEMBERS: list[Member] = []


# ------------------------------------------------------------------ members and clusters

def http_call(url: str, method: str = "GET", body: bytes | None = None,
              timeout_s: float = 5.0) -> tuple[int, bytes]:
    """One small synchronous request to a loopback member (setup, probes, markers; never load)."""
    assert url.startswith("http://127."), url
    hostport, _, path = url[len("http://"):].partition("/")
    host, port = hostport.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        c.request(method, "/" + path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _ports_free(ip: str, ports: dict[str, tuple[int, ...]]) -> bool:
    """Whether every port we are about to use on ``ip`` can be bound now."""
    for kind, nums in ports.items():
        for port in nums:
            typ = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, typ) as s:
                try:
                    s.bind((ip, port))
                except OSError:
                    return False
    return True


def pick_range(ports: dict[str, tuple[int, ...]], first_octet: int, tries: int = 50) -> str:
    """A ``127.a.b`` prefix whose ``.1``-``.3`` have all ``ports`` free (random, so runs don't collide)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(tries):
        prefix = f"127.{first_octet + rng.randrange(0, 20)}.{rng.randrange(1, 250)}"
        if all(_ports_free(f"{prefix}.{i}", ports) for i in (1, 2, 3)):
            return prefix
    raise RuntimeError(f"no free 127.{first_octet}.x.0/24 range with ports {ports} after {tries} tries")


@dataclass
class Member:
    """One ctk server or etcd member this script started; can be SIGKILLed and started again."""

    name: str
    ip: str
    cmd: list[str]
    target: Target
    data_dir: Path
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    member_id: str = ""  # etcd's member id (decimal string)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (or restart, same data dir) in its own session; it dies if this script dies."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        if self not in _LIVE_MEMBERS:
            _LIVE_MEMBERS.append(self)

    def kill(self) -> None:
        """SIGKILL by PID (a crash) and reap it."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL after ``timeout_s``."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 1500) -> str:
        """The end of the member's log, for error messages."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def sched(self) -> tuple[float, float]:
        """(on-CPU, waiting-for-CPU) seconds so far; (0, 0) if not running."""
        if not self.alive():
            return 0.0, 0.0
        run_s, wait_s = proc_sched_s(self.pid)
        return (run_s, wait_s) if math.isfinite(run_s) else (0.0, 0.0)


class Cluster:
    """Three members of one kind: how to find the leader, write a marker, read it back locally."""

    kind = ""

    def __init__(self, name: str, members: list[Member]) -> None:
        self.name = name
        self.members = members
        self.marker_seq = 0

    def live(self) -> list[Member]:
        return [m for m in self.members if m.alive()]

    def leader_of(self, m: Member) -> str:
        """Which member ``m`` believes leads (its name), "" if none or unreachable."""
        raise NotImplementedError

    def put(self, m: Member, key: str, value: str, timeout_s: float = 5.0) -> bool:
        raise NotImplementedError

    def local_get(self, m: Member, key: str) -> str | None:
        """``key`` as ``m`` has applied it (stale / serializable read), None if absent or unreachable."""
        raise NotImplementedError

    def agreed_leader(self, among: list[Member] | None = None) -> Member | None:
        """The leader every live member (or ``among``) names, if they agree and it is alive."""
        group = among or self.live()
        views = {self.leader_of(m) for m in group}
        if len(views) != 1:
            return None
        name = views.pop()
        found = [m for m in self.members if m.name == name and m.alive()]
        return found[0] if found else None

    def wait_leader(self, timeout_s: float, not_member: Member | None = None) -> Member:
        """Poll until the live members agree on a leader (other than ``not_member``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_running()
            leader = self.agreed_leader()
            if leader is not None and leader is not not_member:
                return leader
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no agreed leader within {timeout_s:.0f}s\n" + self._tails())

    def wait_whole(self, timeout_s: float) -> Member:
        """Until all three run, agree on a leader, and each has applied a fresh marker write."""
        deadline = time.monotonic() + timeout_s
        leader = self.wait_leader(timeout_s)
        self.marker_seq += 1
        token = f"{uuid.uuid4().hex}-{self.marker_seq}"
        while time.monotonic() < deadline:
            self._check_running()
            leader = self.agreed_leader(self.members) or leader
            try:
                if self.put(leader, "raft-bench/marker", token, timeout_s=2.0):
                    break
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{self.name}: marker write failed for {timeout_s:.0f}s\n" + self._tails())
        while time.monotonic() < deadline:
            self._check_running()
            try:
                seen = all(self.local_get(m, "raft-bench/marker") == token for m in self.members)
            except (OSError, http.client.HTTPException, ValueError):
                seen = False
            if seen:
                final = self.agreed_leader(self.members)
                if final is not None:
                    return final
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not whole within {timeout_s:.0f}s\n" + self._tails())

    def _check_running(self) -> None:
        dead = [m for m in self.members if m.proc is not None and m.proc.poll() is not None
                and m.proc.returncode != -signal.SIGKILL]
        if dead:
            m = dead[0]
            assert m.proc is not None
            raise RuntimeError(f"{m.name} exited with {m.proc.returncode}:\n{m.tail()}")

    def _tails(self) -> str:
        return "\n".join(f"== {m.name} ({'up' if m.alive() else 'down'})\n{m.tail(600)}" for m in self.members)


class CtkCluster(Cluster):
    """Three durable ctk servers, ``-bootstrap-expect 3``, each on its own 127.a.b.N with default ports."""

    kind = "ctk"

    def __init__(self, prefix: str, workdir: Path) -> None:
        ips = [f"{prefix}.{i}" for i in (1, 2, 3)]
        joins = [a for ip in ips for a in ("-retry-join", ip)]
        members = []
        for i, ip in enumerate(ips, 1):
            data_dir = workdir / f"ctk-s{i}"
            data_dir.mkdir()
            cmd = [sys.executable, "-m", "toolkit.cli.main", "agent", "-server", "-data-dir", str(data_dir),
                   "-node", f"s{i}", "-bind", ip, "-client", ip, "-dns-port", "-1", "-raft-multiplier", "1",
                   "-retry-interval", "1s", "-bootstrap-expect", "3", "-log-level", "warn", *joins]
            members.append(Member(f"s{i}", ip, cmd, Target("ctk", f"http://{ip}:8500"), data_dir,
                                  workdir / f"ctk-s{i}.log", env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        super().__init__("ctk", members)

    def leader_of(self, m: Member) -> str:
        if not m.alive():
            return ""
        try:
            status, body = http_call(m.target.base_url + "/v1/status/leader", timeout_s=1.0)
            addr = str(json.loads(body)) if status == 200 else ""
        except (OSError, http.client.HTTPException, ValueError):
            return ""
        ip = addr.rpartition(":")[0]
        return next((x.name for x in self.members if x.ip == ip), "")

    def put(self, m: Member, key: str, value: str, timeout_s: float = 5.0) -> bool:
        status, body = http_call(m.target.base_url + "/v1/kv/" + key, "PUT", value.encode(), timeout_s)
        return status == 200 and json.loads(body) is True

    def local_get(self, m: Member, key: str) -> str | None:
        status, body = http_call(m.target.base_url + f"/v1/kv/{key}?stale&raw", timeout_s=2.0)
        return body.decode() if status == 200 else None


class EtcdCluster(Cluster):
    """Three etcd members with a static ``--initial-cluster`` on 127.a.b.N:2379/2380, own data dirs."""

    kind = "etcd"

    def __init__(self, binary: str, prefix: str, workdir: Path,
                 timing_ms: tuple[int, int] = ETCD_DEFAULT_TIMING_MS) -> None:
        ips = [f"{prefix}.{i}" for i in (1, 2, 3)]
        initial = ",".join(f"e{i}=http://{ip}:2380" for i, ip in enumerate(ips, 1))
        token = f"raft-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        members = []
        for i, ip in enumerate(ips, 1):
            data_dir = workdir / f"etcd-e{i}"
            cmd = [binary, "--name", f"e{i}", "--data-dir", str(data_dir),
                   "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
                   "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", token, "--heartbeat-interval", str(timing_ms[0]),
                   "--election-timeout", str(timing_ms[1]),
                   "--quota-backend-bytes", str(2 * 1024**3), "--auto-compaction-retention", "1",
                   "--logger", "zap", "--log-level", "error", "--log-outputs", "stderr"]
            members.append(Member(f"e{i}", ip, cmd, Target("etcd", f"http://{ip}:2379"), data_dir,
                                  workdir / f"etcd-e{i}.log"))
        super().__init__("etcd", members)
        self.prefix = "/v3"
        self.timing = etcd_timing(*timing_ms)

    def probe_gateway(self) -> str:
        """etcd 3.4 serves the gRPC gateway under /v3/ (and /v3beta/); use whichever answers."""
        m = self.members[0]
        for prefix in ("/v3", "/v3beta", "/v3alpha"):
            body = json.dumps({"key": _b64("raft-bench/ready"), "value": _b64("1")}).encode()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_call(m.target.base_url + prefix + "/kv/put", "POST", body)[0] == 200:
                    self.prefix = prefix
                    for x in self.members:
                        x.target = Target("etcd", x.target.base_url, prefix)
                    return prefix + "/"
        raise RuntimeError("etcd's HTTP gateway answers neither /v3/ nor /v3beta/ nor /v3alpha/")

    def _status(self, m: Member) -> dict[str, Any]:
        status, body = http_call(m.target.base_url + self.prefix + "/maintenance/status", "POST", b"{}",
                                 timeout_s=1.0)
        return json.loads(body) if status == 200 else {}

    def leader_of(self, m: Member) -> str:
        if not m.alive():
            return ""
        try:
            st = self._status(m)
        except (OSError, http.client.HTTPException, ValueError):
            return ""
        m.member_id = str(st.get("header", {}).get("member_id", m.member_id))
        leader_id = str(st.get("leader", ""))
        if not leader_id or leader_id == "0":
            return ""
        if not all(x.member_id for x in self.members):
            for x in self.members:  # learn every member's id once (they never change)
                with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                    if x.alive() and not x.member_id:
                        x.member_id = str(self._status(x).get("header", {}).get("member_id", ""))
        return next((x.name for x in self.members if x.member_id == leader_id), "")

    def put(self, m: Member, key: str, value: str, timeout_s: float = 5.0) -> bool:
        body = json.dumps({"key": _b64(key), "value": _b64(value)}).encode()
        return http_call(m.target.base_url + self.prefix + "/kv/put", "POST", body, timeout_s)[0] == 200

    def local_get(self, m: Member, key: str) -> str | None:
        body = json.dumps({"key": _b64(key), "serializable": True}).encode()
        status, raw = http_call(m.target.base_url + self.prefix + "/kv/range", "POST", body, timeout_s=2.0)
        kvs = json.loads(raw).get("kvs", []) if status == 200 else []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def start_cluster(cluster: Cluster, timeout_s: float = 60.0) -> Member:
    """Start all three members and wait until the cluster is whole; returns the leader."""
    for m in cluster.members:
        m.start()
    if isinstance(cluster, EtcdCluster):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                cluster.probe_gateway()
                break
            except RuntimeError:
                cluster._check_running()
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not come up\n" + cluster._tails()) from None
                time.sleep(0.2)
    return cluster.wait_whole(timeout_s)


def cleanup() -> None:
    """Stop every load worker (kv_bench's list) and every member this script started, by PID."""
    kv_bench.cleanup()
    for m in _LIVE_MEMBERS:
        m.stop()
    _LIVE_MEMBERS.clear()


def idle_cpu(clusters: list[Cluster], seconds: float) -> dict[str, float]:
    """Each cluster's CPU (3 members summed, 100% = one core) while nothing is sent to it."""
    before = {c.name: sum(m.sched()[0] for m in c.members) for c in clusters}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {c.name: (sum(m.sched()[0] for m in c.members) - before[c.name]) / wall for c in clusters}


# ------------------------------------------------------------------ throughput

def _cpu_snapshot(cluster: Cluster, leader: Member) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(leader run/wait, followers' run/wait summed, host busy) seconds so far."""
    lr = leader.sched()
    fr = [m.sched() for m in cluster.members if m is not leader]
    return lr, (sum(x[0] for x in fr), sum(x[1] for x in fr)), host_cpu_s()[0]


def measure_put(cluster: Cluster, clients: int, spread: bool, procs: int, warmup_s: float,
                duration_s: float, on_start: Callable[[Member], None] | None = None) -> dict[str, Any]:
    """PUT req/s for ``clients`` closed-loop clients, pinned round-robin to [follower, follower, leader]
    (``spread``) or all on the leader, in ``procs`` load processes; with latencies and CPU.
    ``on_start(leader)`` is called as the load starts (used to attach a profiler)."""
    leader = cluster.wait_leader(30.0)
    followers = [m for m in cluster.members if m is not leader]
    order = [*followers, leader] if spread else [leader]
    assign = [order[c % len(order)] for c in range(clients)]
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers: list[tuple[BaseProcess, Connection]] = []
    first = 0
    for share in shares:
        workers.append(_spawn(_load.cluster_throughput_worker,
                              ([m.target for m in assign[first:first + share]], first), (warmup_s, duration_s)))
        first += share
    try:
        for _, conn in workers:
            msg = _recv(conn, 60, "ready message")
            if msg[0] != "ready":
                raise RuntimeError(f"load worker failed: {msg[1].get('error')}")
        start_ns = now_ns() + int(0.1e9)
        for _, conn in workers:
            conn.send(start_ns)
        if on_start is not None:
            on_start(leader)
        window_lo = start_ns + int(warmup_s * 1e9)
        time.sleep(max(0.0, (window_lo - now_ns()) / 1e9))
        t0 = now_ns()
        (l_run0, l_wait0), (f_run0, f_wait0), busy0 = _cpu_snapshot(cluster, leader)
        time.sleep(max(0.0, duration_s - 0.02))
        (l_run1, l_wait1), (f_run1, f_wait1), busy1 = _cpu_snapshot(cluster, leader)
        wall = max(1e-9, (now_ns() - t0) / 1e9)
        results = [_recv(conn, duration_s + 60, "result")[1] for _, conn in workers]
    finally:
        _reap([p for p, _ in workers])
    ok = sum(r.get("ok", 0) for r in results)
    lat = sorted(x for r in results for x in r.get("lat_ms", []))
    return {"side": cluster.name, "clients": clients, "spread": "all members" if spread else "leader only",
            "on_leader": sum(1 for m in assign if m is leader), "on_followers": sum(1 for m in assign if m is not leader),
            "leader": leader.name, "load_procs": procs, "rps": ok / duration_s,
            "errors": sum(r.get("errors", 0) for r in results),
            "error": next((r["error"] for r in results if r.get("error")), ""),
            "p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99), "max_ms": lat[-1] if lat else math.nan,
            "leader_cpu": (l_run1 - l_run0) / wall, "leader_cpu_wait": (l_wait1 - l_wait0) / wall,
            "followers_cpu": (f_run1 - f_run0) / wall, "followers_cpu_wait": (f_wait1 - f_wait0) / wall,
            "client_cpu": sum(r.get("cpu", 0.0) for r in results), "host_cpu": (busy1 - busy0) / wall,
            "cpu_us_per_put": (l_run1 - l_run0 + f_run1 - f_run0) / wall / max(1e-9, ok / duration_s) * 1e6}


# ------------------------------------------------------------------ failover

def failover_round(cluster: Cluster, whole_timeout_s: float) -> dict[str, Any]:
    """SIGKILL the leader while a client writes continuously to every member; the time from the kill to
    the first acknowledged write started after it; then restart the member and wait until whole."""
    old = cluster.wait_whole(whole_timeout_s)
    proc, conn = _spawn(_load.failover_worker, ([m.target for m in cluster.members],), ())
    try:
        msg = _recv(conn, _load.READY_TIMEOUT_S + 10, "ready message")
        if msg[0] != "ready":
            raise RuntimeError(f"failover client failed: {msg[1].get('error')}")
        time.sleep(0.3)  # steady writes before the kill
        old = cluster.agreed_leader(cluster.members) or old
        kill_ns = now_ns()
        os.kill(old.pid, signal.SIGKILL)
        conn.send(kill_ns)
        assert old.proc is not None
        old.proc.wait(10)
        # The survivors' view of the new leader, polled here while the client keeps writing.
        seen_ns = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = cluster.agreed_leader()
            if new is not None and new is not old:
                seen_ns = now_ns()
                break
            time.sleep(0.01)
        result = _recv(conn, 45, "result")[1]
    finally:
        _reap([proc])
    new_leader = cluster.wait_leader(30.0, not_member=old)
    old.start()
    t_restart = time.monotonic()
    cluster.wait_whole(whole_timeout_s)
    rejoin_s = time.monotonic() - t_restart
    out: dict[str, Any] = {"side": cluster.name, "killed": old.name, "new_leader": new_leader.name,
                           "ok": bool(result.get("ok")), "rejoin_s": round(rejoin_s, 2),
                           "writes_sent": result.get("sent", 0), "errors": result.get("errors", {}),
                           "leader_seen_ms": (seen_ns - kill_ns) / 1e6 if seen_ns else math.nan}
    if result.get("ok"):
        out["failover_ms"] = (result["ack_ns"] - kill_ns) / 1e6
        out["ack_member"] = next((m.name for m in cluster.members if m.target.base_url == result["member"]), "?")
    else:
        out["failover_ms"] = math.nan
        out["error"] = result.get("error", "")
    return out


def summarize_failover(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of the rounds that succeeded."""
    ms = [r["failover_ms"] for r in rounds if math.isfinite(r["failover_ms"])]
    seen = [r["leader_seen_ms"] for r in rounds if math.isfinite(r["leader_seen_ms"])]
    return {"side": rounds[0]["side"] if rounds else "", "rounds": len(rounds), "ok": len(ms),
            "median_ms": statistics.median(ms) if ms else math.nan, "min_ms": min(ms, default=math.nan),
            "max_ms": max(ms, default=math.nan),
            "leader_seen_median_ms": statistics.median(seen) if seen else math.nan, "per_round": rounds}


# ------------------------------------------------------------------ profiling (optional)

def start_py_spy(pid: int, seconds: float, out: Path, gil: bool = False) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` (raw collapsed stacks) on ``pid`` for ``seconds``; None if py-spy is missing.
    ``gil``: only samples where a thread holds the GIL (Python work, not syscalls or waiting)."""
    exe = Path(sys.executable).with_name("py-spy")
    binary = str(exe) if exe.exists() else shutil.which("py-spy")
    if not binary:
        return None
    cmd = [binary, "record", "-p", str(pid), "--rate", "250", "--format", "raw", "-o", str(out),
           "-d", str(max(1, math.ceil(seconds))), "--nonblocking", *(["--gil"] if gil else [])]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent)


def _py_spy_hook(out: Path, seconds: float, gil: bool,
                 started: list[subprocess.Popen[bytes] | None]) -> Callable[[Member], None]:
    """A ``measure_put`` start hook that attaches py-spy to the leader and appends it to ``started``."""
    def attach(leader: Member) -> None:
        started.append(start_py_spy(leader.pid, seconds, out, gil))
        log(f"py-spy recording ctk leader {leader.name} (pid {leader.pid}) -> {out}"
            if started[-1] else "py-spy not found; not profiling")

    return attach


def summarize_profile(path: Path, top: int = 25) -> list[str]:
    """The top frames of a py-spy raw profile by self and inclusive share, as ``file:function`` lines."""
    self_n: collections.Counter[str] = collections.Counter()
    incl_n: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            threads["event loop" if "BaseEventLoop.run_forever" in stack else "other threads"] += n
            frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")
                      and not f.startswith("thread ")]
            if frames:
                self_n[frames[-1]] += n
            for f in dict.fromkeys(frames):
                incl_n[f] += n
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples (" + ", ".join(f"{k} {v * 100 / total:.0f}%" for k, v in threads.most_common())
             + "); self time:"]
    lines += [f"  {n * 100 / total:5.1f}%  {f}" for f, n in self_n.most_common(top)]
    lines.append("inclusive (own code, agent/ and toolkit/):")
    own = [(f, n) for f, n in incl_n.most_common() if f.startswith(("agent/", "toolkit/"))]
    lines += [f"  {n * 100 / total:5.1f}%  {f}" for f, n in own[:top]]
    return lines


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` as ``file.py:func`` (relative to the project where possible)."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    root = str(ROOT) + "/"
    if path.startswith(root):
        path = path[len(root):]
    elif "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    elif "/lib/python" in path:
        path = "stdlib/" + path.split("/lib/python", 1)[1].split("/", 1)[-1]
    return f"{path}:{func}"


# ------------------------------------------------------------------ output

def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    if not math.isfinite(r["rps"]):
        return "failed"
    return f"{r['rps']:.0f}" + (f" ({r['errors']} err)" if r["errors"] else "")


def print_put_row(clients: int, spread: bool, row: dict[str, dict[str, Any]], names: list[str],
                  latency: bool) -> None:
    """One ``KV PUT`` line per (clients, placement), its CPU line and (at 16 clients) latency line."""
    where = "all members" if spread else "leader only"
    cells = "  ".join(f"{n}={_cell(row.get(n)):>7}" for n in names)
    print(f"KV PUT req/s  clients={clients:<3} {where:<12} {cells}", flush=True)
    placed = "  ".join(f"{n}: {row[n]['on_followers']} on followers + {row[n]['on_leader']} on leader {row[n]['leader']}"
                       for n in names if n in row and math.isfinite(row[n]["rps"]))
    if placed:
        print(f"    clients {placed}", flush=True)
    cpu = "  ".join(
        f"{n}={r['leader_cpu'] * 100:.0f}(+{r['leader_cpu_wait'] * 100:.0f})/{r['followers_cpu'] * 100:.0f}"
        f"(+{r['followers_cpu_wait'] * 100:.0f})/{r['client_cpu'] * 100:.0f}/{r['host_cpu'] * 100:.0f}"
        for n in names if (r := row.get(n)) and math.isfinite(r["rps"]))
    if cpu:
        print(f"    cpu% leader(+waiting for a CPU)/2 followers(+waiting)/clients/host  {cpu}", flush=True)
        per = "  ".join(f"{n}={r['cpu_us_per_put']:.0f}" for n in names if (r := row.get(n)) and math.isfinite(r["rps"]))
        print(f"    server CPU per PUT, 3 members summed (us; the figure least moved by a busy host)  {per}",
              flush=True)
    if latency:
        lat = "  ".join(f"{n}={r['p50_ms']:.1f}/{r['p99_ms']:.1f}" for n in names if (r := row.get(n)))
        print(f"    PUT latency p50/p99 ms  {lat}", flush=True)
    for n in names:
        if n in row and row[n]["error"]:
            print(f"    {n}: first error: {row[n]['error']}", flush=True)


def print_failover(s: dict[str, Any]) -> None:
    """One summary line per side and its per-round detail."""
    def f(v: float) -> str:
        return f"{v:.0f}" if math.isfinite(v) else "-"

    print(f"failover {s['side']:<5} median={f(s['median_ms']):>5} ms  min={f(s['min_ms']):>5} ms  "
          f"max={f(s['max_ms']):>5} ms  ({s['ok']}/{s['rounds']} rounds; new leader visible on both "
          f"survivors: median {f(s['leader_seen_median_ms'])} ms)", flush=True)
    for i, r in enumerate(s["per_round"], 1):
        errs = ", ".join(f"{k} x{v}" for k, v in sorted(r["errors"].items())) or "none"
        extra = f"; {r['error']}" if r.get("error") else ""
        print(f"    round {i}: killed {r['killed']} -> {r['new_leader']}: first ack {f(r['failover_ms'])} ms "
              f"(via {r.get('ack_member', '-')}), leader seen {f(r['leader_seen_ms'])} ms; "
              f"failed writes meanwhile: {errs}; restarted member whole again after {r['rejoin_s']:.1f} s{extra}",
              flush=True)


# ------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (see the module docstring and bench/README.md)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short runs, 2 failover rounds (smoke run)")
    p.add_argument("--only", choices=["ctk", "etcd"], help="run only one side")
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    p.add_argument("--rounds", type=int, default=0, help="failover rounds per side (default 5; --quick 2)")
    p.add_argument("--clients", default="1,16,64", help="client counts for the spread runs (default 1,16,64)")
    p.add_argument("--load-procs", type=int, default=2, help="load processes for runs with >1 client (default 2)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput section")
    p.add_argument("--no-failover", action="store_true", help="skip the failover section")
    p.add_argument("--py-spy", metavar="FILE", help="record the ctk leader with py-spy (raw stacks to FILE) "
                   "during the ctk 64-client all-members run and print a summary on stderr")
    p.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: only GIL-holding samples")
    p.add_argument("--etcd-timing", default="100,1000", metavar="HB,ELECTION",
                   help="etcd --heartbeat-interval,--election-timeout in ms (default 100,1000 = etcd's defaults; "
                   "50,500 matches ctk's -raft-multiplier 1)")
    p.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd", help="etcd binary")
    return p.parse_args(argv)


def _note(msg: str, as_json: bool, notes: list[str]) -> None:
    """A remark about the run: in the table output, or on stderr when stdout is JSON."""
    notes.append(msg)
    if as_json:
        log(f"NOTE: {msg}")
    else:
        print(f"NOTE: {msg}", flush=True)


def _on_sigterm(_sig: int, _frame: object) -> None:
    """SIGTERM takes the Ctrl-C path, so that ``finally`` stops every child."""
    raise KeyboardInterrupt


def _failed_put(c: Cluster, clients: int, spread: bool, err: Exception) -> dict[str, Any]:
    msg = f"{type(err).__name__}: {err}".replace("\n", " ")[:400]
    nan = math.nan
    return {"side": c.name, "clients": clients, "spread": "all members" if spread else "leader only",
            "rps": nan, "errors": 0, "error": msg, "p50_ms": nan, "p99_ms": nan, "on_leader": 0,
            "on_followers": 0, "leader": "", "leader_cpu": nan, "leader_cpu_wait": nan, "followers_cpu": nan,
            "followers_cpu_wait": nan, "client_cpu": nan, "host_cpu": nan, "cpu_us_per_put": nan}


def run(args: argparse.Namespace, workdir: Path, out: dict[str, Any]) -> int:
    """Start the clusters, run the sections, print; the caller cleans up."""
    notes: list[str] = out["notes"]
    warmup_s, duration_s = (0.3, 1.0) if args.quick else (1.0, 5.0)
    rounds = args.rounds or (2 if args.quick else 5)
    whole_timeout_s = 60.0
    client_counts = [int(x) for x in args.clients.split(",") if x.strip()]
    hb_ms, _, el_ms = args.etcd_timing.partition(",")
    timing_ms = (int(hb_ms), int(el_ms or 10 * int(hb_ms)))
    etcd_bin = args.etcd if os.access(args.etcd, os.X_OK) else None
    want_ctk, want_etcd = args.only in (None, "ctk"), args.only in (None, "etcd")
    if want_etcd and etcd_bin is None:
        _note("etcd not found (install Debian package etcd-server); "
              + ("running the ctk part only" if want_ctk else "nothing to run"), args.json, notes)
        want_etcd = False
    if not (want_ctk or want_etcd):
        print("nothing to run", file=sys.stderr)
        return 1

    clusters: list[Cluster] = []
    if want_ctk:
        k = CtkCluster(pick_range(CTK_PORTS, 180), workdir)
        log(f"starting 3 ctk servers on {k.members[0].ip[:-2]}.{{1,2,3}} ...")
        t = time.monotonic()
        start_cluster(k)
        log(f"ctk cluster whole after {time.monotonic() - t:.1f} s")
        clusters.append(k)
    if want_etcd and etcd_bin:
        e = EtcdCluster(etcd_bin, pick_range(ETCD_PORTS, 200), workdir, timing_ms)
        log(f"starting 3 etcd members on {e.members[0].ip[:-2]}.{{1,2,3}} ...")
        try:
            start_cluster(e)
            clusters.append(e)
        except RuntimeError as err:
            _note(f"etcd failed to start ({err}); running without it".replace("\n", " ")[:600], args.json, notes)
            for m in e.members:
                m.stop()
    names = [c.name for c in clusters]
    meta: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "aiohttp": __import__("aiohttp").__version__, "warmup_s": warmup_s,
                            "duration_s": duration_s, "value_bytes": len(_load.VALUE), "keys": _load.KEYSPACE,
                            "failover_rounds": rounds, "loadavg_start": round(loadavg(), 2), "workdir": str(workdir)}
    for c in clusters:
        meta[c.name] = {"members": {m.name: m.target.base_url for m in c.members},
                        "timing": c.timing if isinstance(c, EtcdCluster) else CTK_TIMING}
        if isinstance(c, EtcdCluster) and etcd_bin:
            meta[c.name]["version"] = etcd_version(etcd_bin)
            meta[c.name]["gateway"] = c.prefix + "/"
    out["meta"] = meta
    if not args.json:
        print(f"raft_bench: {meta['cpus']} CPUs, Python {meta['python']}, aiohttp {meta['aiohttp']}, "
              f"loopback, data dirs under {workdir}", flush=True)
        for c in clusters:
            ips = f"{c.members[0].ip[:-2]}.{{1,2,3}}"
            if isinstance(c, EtcdCluster):
                print(f"etcd: {meta[c.name]['version']}, 3 members on {ips} (gateway :2379{c.prefix}/), "
                      f"{c.timing}", flush=True)
            else:
                print(f"ctk : 3 durable servers on {ips} (HTTP :8500), {CTK_TIMING}", flush=True)
    meta["idle_cpu"] = idle_cpu(clusters, 1.0 if args.quick else 3.0)
    if not args.json:
        print("idle CPU of each cluster (3 members, nothing sent to them; the idle one keeps running while the "
              "other is measured): " + ", ".join(f"{n} {v * 100:.1f}%" for n, v in meta["idle_cpu"].items()),
              flush=True)
    if meta["loadavg_start"] > 0.5 * (os.cpu_count() or 1):
        _note(f"the machine is busy (load average {meta['loadavg_start']} on {meta['cpus']} CPUs): other work "
              "competes for the CPUs, figures are noisy", args.json, notes)

    # ---- throughput
    if not args.no_throughput:
        if not args.json:
            print(f"\n== KV PUT throughput: req/s, {duration_s:g} s per run after {warmup_s:g} s warm-up, "
                  f"{len(_load.VALUE)}-byte values, {_load.KEYSPACE} keys, keep-alive; clients pinned "
                  "round-robin to follower, follower, leader (\"all members\") or all on the leader ==",
                  flush=True)
        plan = [(n, True) for n in client_counts] + [(max(client_counts), False)]
        for clients, spread in plan:
            row: dict[str, dict[str, Any]] = {}
            for c in clusters:  # interleaved, so that a busy spell on the host hits every side alike
                where = "all members" if spread else "leader only"
                log(f"PUT clients={clients} {where} {c.name} ...")
                procs = 1 if clients == 1 else args.load_procs
                spy: list[subprocess.Popen[bytes] | None] = []
                profile = bool(args.py_spy) and c.kind == "ctk" and spread and clients == max(client_counts)
                hook = _py_spy_hook(Path(args.py_spy or "-"), duration_s + warmup_s, args.py_spy_gil, spy)
                try:
                    r = measure_put(c, clients, spread, procs, warmup_s, duration_s, hook if profile else None)
                except (RuntimeError, OSError) as err:  # includes TimeoutError; keep going
                    r = _failed_put(c, clients, spread, err)
                if spy and spy[0] is not None:
                    try:
                        spy[0].wait(30)
                    except subprocess.TimeoutExpired:
                        spy[0].kill()
                        spy[0].wait(5)
                    for line in summarize_profile(Path(args.py_spy)):
                        log(f"py-spy: {line}")
                row[c.name] = r
                out["throughput"].append(r)
            if not args.json:
                print_put_row(clients, spread, row, names, latency=(clients == 16 and spread))

    # ---- failover
    if not args.no_failover:
        if not args.json:
            print(f"\n== Leader failover: SIGKILL the leader while a client writes to every member (one PUT "
                  f"every 10 ms, open loop); time from the kill to the first write acknowledged by the new "
                  f"leader; {rounds} rounds, interleaved; the killed member is restarted and the cluster "
                  "whole again before the next round ==", flush=True)
        per_side: dict[str, list[dict[str, Any]]] = {c.name: [] for c in clusters}
        for i in range(rounds):
            for c in clusters:
                log(f"failover {c.name} round {i + 1}/{rounds} ...")
                try:
                    r = failover_round(c, whole_timeout_s)
                except (RuntimeError, OSError) as err:
                    r = {"side": c.name, "killed": "?", "new_leader": "?", "ok": False, "failover_ms": math.nan,
                         "leader_seen_ms": math.nan, "rejoin_s": math.nan, "errors": {},
                         "error": f"{type(err).__name__}: {err}".replace("\n", " ")[:400]}
                    for m in c.members:  # put the cluster back together for the next round
                        if not m.alive():
                            with contextlib.suppress(OSError):
                                m.start()
                log(f"  {c.name}: {r['failover_ms']:.0f} ms, {r['killed']} -> {r['new_leader']}")
                per_side[c.name].append(r)
        for c in clusters:
            s = summarize_failover(per_side[c.name])
            out["failover"].append(s)
            if not args.json:
                print_failover(s)

    meta["loadavg_end"] = round(loadavg(), 2)
    if not args.json:
        print(f"\nload average (1 min) at start {meta['loadavg_start']}, at end {meta['loadavg_end']} "
              f"on {meta['cpus']} CPUs", flush=True)
    else:
        print(json.dumps(_finite(out), indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run everything, then stop every process this script started and remove its temp dir."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _load.raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="raft-bench-"))
    out: dict[str, Any] = {"meta": {}, "throughput": [], "failover": [], "notes": []}
    try:
        return run(args, workdir, out)
    except KeyboardInterrupt:
        log("interrupted; stopping everything this script started")
        return 130
    except RuntimeError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
