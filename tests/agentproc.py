"""Real ``ctk agent`` processes for tests: started on free loopback ports, stopped by PID.

Lives beside the tests (not a mock): every API test talks HTTP to a real agent process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class AgentProcess:
    def __init__(self, *args: str, log_path: Path | None = None, host: str = "127.0.0.1") -> None:
        self.http_port = free_port(host)
        self.host = host
        self.args = list(args)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self, timeout_s: float = 15.0) -> AgentProcess:
        cmd = [sys.executable, "-m", "toolkit.cli.main", "agent", "-http-port", str(self.http_port),
               "-client", self.host, *self.args]
        if "-dns-port" not in self.args:
            cmd += ["-dns-port", "-1"]
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: {self.log()}")
            try:
                r = httpx.get(self.url + "/v1/status/leader", timeout=0.5)
                if r.status_code == 200 and r.json():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"agent did not come up in {timeout_s}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path and self.log_path.exists() else ""

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ctk(*args: str, env: dict[str, str] | None = None, input_: bytes | None = None,
        timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the ``ctk`` CLI as a user would; returns the completed process (text)."""
    return subprocess.run([sys.executable, "-m", "toolkit.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout_s,
                          input=input_.decode() if input_ is not None else None)


def wait_for(predicate: object, timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
    """Poll ``predicate()`` until true (for real-process tests only; unit tests never sleep)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def args_with(base: Sequence[str], **flags: str) -> list[str]:
    out = list(base)
    for k, v in flags.items():
        out += [f"-{k.replace('_', '-')}", v]
    return out
