"""A real ``ctk agent -dev`` process answering ``dig`` (once agent/server.py wires in agent/dns)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agentproc import AgentProcess, free_port, wait_for

from .helpers import query

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dig") is None,
                       reason="dig is not installed (Debian package dnsutils; `make debs` installs it)"),
]


def _answers_dns(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        try:
            s.sendto(query("consul", "SOA"), ("127.0.0.1", port))
            return len(s.recv(4096)) >= 12
        except OSError:
            return False


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, int]]:
    port = free_port()
    log = Path(tmp_path_factory.mktemp("agent")) / "agent.log"
    with AgentProcess("-dev", "-node", "agent-two", "-dns-port", str(port), log_path=log) as proc:
        deadline = time.monotonic() + 3
        while not _answers_dns(port):
            if time.monotonic() > deadline:
                pytest.skip("the agent does not answer DNS yet (agent/server.py has to start agent.dns.DNSServer)")
        yield proc, port


def _dig(port: int, *args: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), "+time=3", "+tries=1", *args],
                          capture_output=True, text=True, timeout=20).stdout


def test_agent_answers_node_and_service_queries(agent: tuple[AgentProcess, int]) -> None:
    proc, port = agent
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        r = http.put("/v1/agent/service/register",
                     json={"Name": "web3", "Port": 8080, "Tags": ["rails"], "Address": "192.0.2.10"})
        assert r.status_code == 200, r.text
    out = _dig(port, "agent-two.node.consul", "+short")
    assert out.strip() == "127.0.0.1"
    wait_for(lambda: "c000020a.addr.dc1.consul." in _dig(port, "web3.service.consul", "SRV"))  # anti-entropy
    out = _dig(port, "web3.service.consul", "SRV")
    assert "192.0.2.10" in out.split("ADDITIONAL SECTION")[1]
    assert _dig(port, "rails.web3.service.consul", "+short").split() == ["192.0.2.10"]
    assert "status: NXDOMAIN" in _dig(port, "django.web3.service.consul")
