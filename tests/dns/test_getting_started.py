"""Consul's getting-started flow, end to end: real HTTP backends, real checks, a real agent, real dig."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agentproc import AgentProcess, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) not installed")]


class Backend:
    """A tiny HTTP service answering /health with 200 until stopped."""

    def __init__(self) -> None:
        self.port = free_port()
        handler = type("H", (http.server.BaseHTTPRequestHandler,), {
            "do_GET": lambda self: (self.send_response(200), self.end_headers(), self.wfile.write(b"ok")),
            "log_message": lambda self, *a: None,
        })
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def dig(port: int, *args: str) -> str:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=15)
    return out.stdout


def section(output: str, name: str) -> list[str]:
    lines, inside = [], False
    for line in output.splitlines():
        if line.startswith(";; ") and "SECTION" in line:
            inside = name in line
            continue
        if inside and line.strip() and not line.startswith(";"):
            lines.append(line)
    return lines


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[tuple[AgentProcess, int, list[Backend]]]:
    backends = [Backend(), Backend()]
    conf = tmp_path / "conf"
    conf.mkdir()
    for i, b in enumerate(backends, 1):
        (conf / f"web3-{i}.json").write_text(json.dumps({"service": {
            "name": "web3", "id": f"web3-{i}", "tags": ["master"], "address": "127.0.0.1", "port": b.port,
            "checks": [{"http": f"http://127.0.0.1:{b.port}/health", "interval": "1s"}]}}))
    (conf / "web.json").write_text(json.dumps({"service": {
        "name": "web", "tags": ["rails"], "port": 80,
        "check": {"http": f"http://127.0.0.1:{backends[0].port}/health", "interval": "1s"}}}))
    dns_port = free_port()
    agent = AgentProcess("-dev", "-node", "agent-one", "-config-dir", str(conf), "-dns-port", str(dns_port),
                         log_path=tmp_path / "agent.log").start()
    try:
        yield agent, dns_port, backends
    finally:
        agent.stop()
        for b in backends:
            try:
                b.stop()
            except OSError:
                pass


def test_getting_started_with_dig(scenario: tuple[AgentProcess, int, list[Backend]]) -> None:
    agent, port, backends = scenario
    passing = agent.url + "/v1/health/service/web3?passing"
    wait_for(lambda: len(httpx.get(passing).json()) == 2, timeout_s=15)

    out = dig(port, "web3.service.consul", "SRV")
    answers = section(out, "ANSWER")
    assert len(answers) == 2 and all("SRV" in a for a in answers)
    assert {int(a.split()[-2]) for a in answers} == {b.port for b in backends}
    additional = section(out, "ADDITIONAL")
    assert any(a.split()[3] == "A" and a.split()[4] == "127.0.0.1" for a in additional)

    # One backend dies: after its check interval it is gone from DNS and from ?passing.
    backends[0].stop()
    wait_for(lambda: len(httpx.get(passing).json()) == 1, timeout_s=15)
    [left] = httpx.get(passing).json()
    assert left["Service"]["Port"] == backends[1].port
    wait_for(lambda: len(section(dig(port, "web3.service.consul", "SRV"), "ANSWER")) == 1, timeout_s=10)

    # Tag filter, and a service whose only instance is unhealthy (web's check used the dead backend;
    # its own 1 s check fails on its own schedule, so wait for it rather than assume it ran already).
    wait_for(lambda: httpx.get(agent.url + "/v1/health/service/web?passing").json() == [], timeout_s=15)
    assert "NXDOMAIN" in dig(port, "rails.web.service.consul")
    assert "NXDOMAIN" in dig(port, "nosuchtag.web3.service.consul")
    assert section(dig(port, "master.web3.service.consul"), "ANSWER")

    # A second node, as agent-two would be: the node lookup answers its address.
    httpx.put(agent.url + "/v1/catalog/register", json={"Node": "agent-two", "Address": "127.0.0.9"})
    node_answer = section(dig(port, "agent-two.node.consul"), "ANSWER")
    assert node_answer and node_answer[0].split()[-1] == "127.0.0.9"


def test_rails_tag_answers_while_healthy(scenario: tuple[AgentProcess, int, list[Backend]]) -> None:
    agent, port, _ = scenario
    wait_for(lambda: len(httpx.get(agent.url + "/v1/health/service/web?passing").json()) == 1, timeout_s=15)
    answers = section(dig(port, "rails.web.service.consul"), "ANSWER")
    assert answers and answers[0].split()[-1] == "127.0.0.1"  # no service address: the node's address
