"""End to end: a real nginx in front of two real backends registered in a real ``ctk agent -dev``.

Uses the files of ``examples/nginx`` as shipped (template, nginx.conf, check script, HCL config);
only the ports are changed to free ones. Scenario:

1. both backends healthy → upstream.conf lists both, nginx was reloaded, requests reach both;
2. one backend stops → its HTTP check turns critical → within the wait the file no longer lists
   it, nginx was reloaded again, requests only reach the healthy one;
3. the template is edited into one that renders an invalid nginx config → the check refuses it:
   the file is unchanged, nginx keeps serving, ``ctk template`` keeps running and reports the
   error in its status file.

Every process is started here and stopped by PID in ``finally``; nginx runs with its own ``-p``
prefix under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agentproc import ROOT, AgentProcess, free_port, wait_for

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "nginx"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
ENV_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout_s: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Stack:
    """The processes of one run, for cleanup."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agent: AgentProcess | None = None

    def start(self, args: list[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(args, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            stop(p)
        if self.agent is not None:
            self.agent.stop(signal.SIGKILL)


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        yield s
    finally:
        s.stop_all()


def ask(port: int, client_net: int) -> str:
    """One request through nginx; ``X-Forwarded-For`` varies the ip_hash key (see nginx.conf)."""
    r = httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": f"10.{client_net}.1.1"}, timeout=5)
    return r.text.strip() if r.status_code == 200 else f"HTTP {r.status_code}"


def spread(port: int) -> set[str]:
    return {ask(port, i) for i in range(1, 41)}


def reloads(work: Path) -> int:
    log = work / "logs" / "error.log"
    return log.read_text().count("reconfiguring") if log.exists() else 0


def status_of(work: Path) -> dict[str, object]:
    path = work / "status.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian package nginx)")
@pytest.mark.timeout(180)
def test_nginx_follows_consul_health_and_never_installs_a_broken_config(tmp_path: Path, stack: Stack) -> None:
    work = tmp_path / "nginx"
    (work / "logs").mkdir(parents=True)
    (work / "tmp").mkdir()
    nginx_port, port_a, port_b = free_port(), free_port(), free_port()

    # the example's files, with free ports
    (work / "nginx.conf").write_text((EXAMPLE / "nginx.conf").read_text().replace("18080", str(nginx_port)))
    for name in ("upstream.ctmpl", "nginx-check.sh", "ctk-template.hcl"):
        shutil.copy(EXAMPLE / name, work / name)
    (work / "upstream.conf").write_text("upstream backend {\n    ip_hash;\n    server 127.0.0.1:65535 down;\n}\n")

    agent = AgentProcess("-dev", "-node", "n1", log_path=tmp_path / "agent.log")
    stack.agent = agent
    agent.start()
    backends = {}
    for name, port in (("a", port_a), ("b", port_b)):
        backends[name] = stack.start([sys.executable, str(EXAMPLE / "backend.py"), "--name", name, "--port", str(port)])
        svc = json.loads((EXAMPLE / "services" / f"backend-{name}.json").read_text())["service"]
        default_port = svc["port"]
        svc["port"] = port
        svc["checks"][0]["http"] = svc["checks"][0]["http"].replace(str(default_port), str(port))
        r = httpx.put(f"{agent.url}/v1/agent/service/register", json=svc)
        assert r.status_code == 200, r.text

    env = {**os.environ, "PATH": ENV_PATH, "PYTHONPATH": str(ROOT)}
    stack.start([NGINX, "-p", f"{work}/", "-e", str(work / "logs" / "error.log"), "-c", str(work / "nginx.conf"),
                 "-g", "daemon off;"], cwd=work, env=env, stderr=(tmp_path / "nginx.stderr").open("wb"))
    wait_for(lambda: ask(nginx_port, 1) == "HTTP 502", 15)  # placeholder upstream: nginx is up

    ctk_log = tmp_path / "ctk.log"
    ctk = stack.start(
        [sys.executable, "-m", "toolkit.cli.main", "template", "-config", "ctk-template.hcl",
         "-consul-addr", agent.addr, "-status-file", "status.json"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=ctk_log.open("wb"),
    )
    upstream = work / "upstream.conf"

    # 1. both healthy: both listed, nginx reloaded, requests reach both
    wait_for(lambda: f":{port_a};" in upstream.read_text() and f":{port_b};" in upstream.read_text(), 30)
    wait_for(lambda: spread(nginx_port) == {"backend a", "backend b"}, 20)
    assert reloads(work) >= 1
    reloads_before = reloads(work)
    assert (work / "upstream.conf.bak").exists()  # backup = true

    # 2. backend b goes down → its check turns critical → removed, nginx reloaded
    stop(backends["b"])
    wait_for(lambda: f":{port_b};" not in upstream.read_text(), 30)
    assert f":{port_a};" in upstream.read_text()
    wait_for(lambda: reloads(work) > reloads_before, 15)
    wait_for(lambda: spread(nginx_port) == {"backend a"}, 15)
    good = upstream.read_text()

    # 3. an edit that renders an invalid nginx config is refused by the check
    (work / "upstream.ctmpl").write_text(
        (EXAMPLE / "upstream.ctmpl").read_text().replace("ip_hash;", "ip_hash;\n    no_such_directive on;")
    )

    def refused() -> bool:
        tmpl = status_of(work).get("templates") or [{}]
        return "check failed" in str(tmpl[0].get("last_error"))  # type: ignore[index,union-attr]

    wait_for(refused, 30)
    st = status_of(work)
    err = str(st["templates"][0]["last_error"])  # type: ignore[index]
    assert "no_such_directive" in err and "the current file was not touched" in err
    assert st["templates"][0]["last_action"] == "check_failed"  # type: ignore[index]
    assert upstream.read_text() == good
    assert spread(nginx_port) == {"backend a"}  # nginx keeps serving
    assert ctk.poll() is None  # the daemon keeps running
    assert not list(work.glob(".ctk-*"))  # no staged leftovers
    log = ctk_log.read_text()
    assert "check failed (exit status 1)" in log and "wrote" in log

    stop(ctk, signal.SIGTERM, 20)
    assert ctk.returncode == 0
