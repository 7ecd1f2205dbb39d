"""Real multi-process ctk server clusters on loopback, one 127.x.y.z address per server.

Each server binds its own address with Consul's default ports (HTTP 8500, serf 8301, server 8300),
as on real hosts. Every test cluster gets its own 127.<n>.<m>.0/24 range so clusters never collide.
Processes are stopped by PID, always.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.agentproc import ROOT, wait_for

_ranges = itertools.count(random.Random(os.getpid()).randrange(0, 2000))


def _next_range() -> str:
    n = next(_ranges) % 4000
    return f"127.{100 + n // 250}.{n % 250}"


class Server:
    role_flags = ["-server"]

    def __init__(self, name: str, ip: str, data_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.ip = ip
        self.data_dir = data_dir
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.ip}:8500"

    @property
    def addr(self) -> str:
        return f"{self.ip}:8500"

    @property
    def server_addr(self) -> str:
        return f"{self.ip}:8300"

    def start(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "toolkit.cli.main", "agent", *self.role_flags, "-data-dir", str(self.data_dir),
               "-node", self.name, "-bind", self.ip, "-client", self.ip, "-dns-port", "-1",
               "-raft-multiplier", "1", "-retry-interval", "1s", *args, *self.extra]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash. The server stays in the Raft configuration."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kw)  # type: ignore[arg-type]

    def leader(self) -> str:
        try:
            r = httpx.get(self.url + "/v1/status/leader", timeout=1)
            return str(r.json()) if r.status_code == 200 else ""
        except httpx.HTTPError:
            return ""

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""


class Client(Server):
    """A client agent (no ``-server``): gossip + its own services; state lives on the servers."""

    role_flags: list[str] = []


class Cluster:
    def __init__(self, tmp: Path, n: int, *, expect: int | None = None) -> None:
        self.base = base = _next_range()
        self.tmp = tmp
        self.servers = [Server(f"s{i + 1}", f"{base}.{i + 1}", tmp / f"s{i + 1}", tmp) for i in range(n)]
        self.clients: list[Client] = []
        self.expect = n if expect is None else expect

    def add_client(self, name: str, *args: str) -> Client:
        """Start a client agent on the next free address of this cluster's range, joined to the servers."""
        c = Client(name, f"{self.base}.{101 + len(self.clients)}", self.tmp / name, self.tmp)
        self.clients.append(c)
        c.start([*self.join_args(), *args])
        return c

    def join_args(self, servers: list[Server] | None = None) -> list[str]:
        out: list[str] = []
        for s in servers or self.servers:
            out += ["-retry-join", s.ip]
        return out

    def start(self, timeout_s: float = 30.0) -> Cluster:
        for s in self.servers:
            s.start(["-bootstrap-expect", str(self.expect), *self.join_args()])
        self.wait_leader(timeout_s=timeout_s)
        return self

    def live(self) -> list[Server]:
        return [s for s in self.servers if s.alive()]

    def wait_leader(self, among: list[Server] | None = None, timeout_s: float = 30.0,
                    not_addr: str = "") -> Server:
        """Wait until every live server (or ``among``) agrees on one leader; returns it."""
        group = among or self.live()
        found: list[Server] = []

        def agreed() -> bool:
            views = {s.leader() for s in group}
            if len(views) != 1:
                return False
            addr = views.pop()
            if not addr or addr == not_addr:
                return False
            found[:] = [s for s in self.servers if s.server_addr == addr]
            return bool(found) and found[0].alive()

        try:
            wait_for(agreed, timeout_s=timeout_s, interval_s=0.1)
        except AssertionError:
            raise AssertionError("no agreed leader; logs:\n" + "\n".join(f"== {s.name}\n{s.log()}" for s in group)) from None
        return found[0]

    def stop(self) -> None:
        for s in [*self.clients, *self.servers]:
            s.stop()

    def wipe(self, s: Server) -> None:
        shutil.rmtree(s.data_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for s in [*self.clients, *self.servers]:
            s.kill()


def put(s: Server, key: str, value: bytes, timeout_s: float = 5.0) -> bool:
    r = httpx.put(f"{s.url}/v1/kv/{key}", content=value, timeout=timeout_s)
    return r.status_code == 200 and r.json() is True


def keys(s: Server, prefix: str, stale: bool = True) -> dict[str, bytes]:
    import base64

    params = {"recurse": ""}
    if stale:
        params["stale"] = ""
    r = httpx.get(f"{s.url}/v1/kv/{prefix}", params=params, timeout=5)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {e["Key"]: base64.b64decode(e["Value"] or "") for e in r.json()}


def settle(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll until true; a server that is still starting (connection refused) counts as 'not yet'."""

    def attempt() -> bool:
        try:
            return predicate()
        except httpx.HTTPError:
            return False

    wait_for(attempt, timeout_s=timeout_s, interval_s=0.1)


def now() -> float:
    return time.monotonic()
