"""``ctk services`` (list, -service detail) and ``ctk health`` on a real dev agent with TTL checks."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.agentproc import AgentProcess, ctk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(dev_agent: AgentProcess) -> AgentProcess:
    for sid, verb in (("web-1", "pass"), ("web-2", "warn"), ("db-1", "fail")):
        name = sid.split("-")[0]
        httpx.put(f"{dev_agent.url}/v1/agent/service/register",
                  json={"Name": name, "ID": sid, "Port": 8000, "Tags": ["v1"],
                        "Check": {"TTL": "600s", "CheckID": f"ttl-{sid}"}}).raise_for_status()
        httpx.put(f"{dev_agent.url}/v1/agent/check/{verb}/ttl-{sid}",
                  params={"note": f"{verb} from the test"}).raise_for_status()
    return dev_agent


def test_list_counts_instances_by_status(agent: AgentProcess) -> None:
    rows = {s["Name"]: s for s in json.loads(ctk("services", "--json", "--http-addr", agent.addr).stdout)}
    assert (rows["web"]["Instances"], rows["web"]["Passing"], rows["web"]["Warning"], rows["web"]["Critical"]) \
        == (2, 1, 1, 0)
    assert (rows["db"]["Critical"], rows["db"]["Status"]) == (1, "critical")
    text = ctk("services", "--http-addr", agent.addr).stdout.splitlines()
    assert text[0].split() == ["Service", "Instances", "Passing", "Warning", "Critical", "Tags"]
    assert next(line for line in text if line.startswith("web ")).split() == ["web", "2", "1", "1", "0", "v1"]
    unhealthy = ctk("services", "list", "--unhealthy", "--http-addr", agent.addr).stdout
    assert "db " in unhealthy and "web " in unhealthy and "consul" not in unhealthy


def test_detail_shows_each_instance_with_check_output(agent: AgentProcess) -> None:
    out = ctk("services", "-service", "web", f"-http-addr={agent.addr}").stdout
    assert out.splitlines()[0] == "web  2 instances: 1 passing, 1 warning, 0 critical"
    assert "warn from the test" in out and "Serf Health Status" in out
    doc = json.loads(ctk("services", "-service", "web", "--json", "--http-addr", agent.addr).stdout)
    assert [(n["ID"], n["Status"]) for n in doc["Nodes"]] == [("web-1", "passing"), ("web-2", "warning")]
    missing = ctk("services", "-service", "nope", "--http-addr", agent.addr)
    assert missing.returncode == 1 and "No service named 'nope'" in missing.stderr


def test_register_and_deregister_still_work_and_group_options_are_not_swallowed(agent: AgentProcess) -> None:
    env = {"CONSUL_HTTP_ADDR": agent.addr}
    assert ctk("services", "register", "-name", "extra", "-port", "1", env=env).returncode == 0
    assert "extra" in ctk("services", env=env).stdout
    assert ctk("services", "deregister", "extra", env=env).returncode == 0
    misplaced = ctk("services", "--http-addr", agent.addr, "register", "-name", "x")
    assert misplaced.returncode == 1 and "must come after the subcommand" in misplaced.stderr


def test_health_on_a_single_server_with_a_critical_check(agent: AgentProcess) -> None:
    r = ctk("health", "--http-addr", agent.addr)
    assert r.returncode == 2
    first = r.stdout.splitlines()[0]
    assert first.startswith("CRITICAL: 1 critical instance: db on n1") and "failure tolerance 0" in first
    try:
        httpx.put(f"{agent.url}/v1/agent/check/pass/ttl-db-1").raise_for_status()
        httpx.put(f"{agent.url}/v1/agent/check/pass/ttl-web-2").raise_for_status()
        r = ctk("health", "--http-addr", agent.addr)
        # one server: nothing failing, but losing it loses the cluster, which is a warning
        assert r.returncode == 1 and r.stdout.startswith("WARNING: failure tolerance 0"), r.stdout
    finally:  # back to the module's starting state
        httpx.put(f"{agent.url}/v1/agent/check/fail/ttl-db-1").raise_for_status()
        httpx.put(f"{agent.url}/v1/agent/check/warn/ttl-web-2", params={"note": "warn from the test"})
