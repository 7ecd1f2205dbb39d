"""The ``ctk`` CLI as operators type it (Consul's spellings) against a real agent."""

from __future__ import annotations

import json

import pytest

from tests.agentproc import AgentProcess, ctk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(dev_agent: AgentProcess) -> dict[str, str]:
    return {"CONSUL_HTTP_ADDR": dev_agent.addr}


def test_kv_flow_from_the_tutorials(env: dict[str, str]) -> None:
    assert ctk("kv", "put", "redis/config/minconns", "1", env=env).stdout.strip() == \
        "Success! Data written to: redis/config/minconns"
    assert ctk("kv", "put", "-flags=42", "redis/config/users/admin", "abcd1234", env=env).returncode == 0
    detailed = ctk("kv", "get", "-detailed", "redis/config/minconns", env=env).stdout
    assert "Flags            0" in detailed and "Value            1" in detailed
    rec = ctk("kv", "get", "-recurse", "redis", env=env).stdout.splitlines()
    assert rec == ["redis/config/minconns:1", "redis/config/users/admin:abcd1234"]
    stale = ctk("kv", "put", "-cas", "-modify-index=716", "redis/config/minconns", "2", env=env)
    assert stale.returncode == 1 and "CAS failed" in stale.stderr and "Traceback" not in stale.stderr
    idx = json.loads(ctk("kv", "get", "--json", "redis/config/minconns", env=env).stdout)["ModifyIndex"]
    assert ctk("kv", "put", "-cas", f"-modify-index={idx}", "redis/config/minconns", "2", env=env).returncode == 0
    exported = ctk("kv", "export", "redis/", env=env).stdout
    assert ctk("kv", "delete", "-recurse", "redis", env=env).returncode == 0
    missing = ctk("kv", "get", "redis/config/minconns", env=env)
    assert missing.returncode == 1 and "No key exists" in missing.stderr
    assert ctk("kv", "import", env=env, input_=exported.encode()).returncode == 0
    assert ctk("kv", "get", "redis/config/minconns", env=env).stdout == "2\n"


def test_members_info_catalog_and_json(env: dict[str, str], dev_agent: AgentProcess) -> None:
    out = ctk("members", env=env).stdout
    assert out.split()[:9] == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    assert "n1" in out and "alive" in out and "server" in out
    [m] = json.loads(ctk("members", "--json", env=env).stdout)
    assert m["Node"] == "n1" and m["Status"] == "alive"
    assert ctk("members", "-status=failed", env=env).returncode == 2  # Consul: nothing matched
    info = ctk("info", env=env).stdout
    assert "raft:" in info and "\tstate = Leader" in info
    assert ctk("services", "register", "-name", "cli-svc", "-port", "7", "-tag", "x", env=env).returncode == 0
    assert json.loads(ctk("catalog", "services", "--json", env=env).stdout)["cli-svc"] == ["x"]
    assert "n1" in ctk("catalog", "nodes", "-service", "cli-svc", env=env).stdout
    assert ctk("services", "deregister", "cli-svc", env=env).returncode == 0
    assert "cli-svc" not in json.loads(ctk("catalog", "services", "--json", env=env).stdout)
    # --http-addr flag (both spellings) works as well as the env var
    assert ctk("members", f"-http-addr={dev_agent.addr}").returncode == 0


def test_errors_are_one_line_with_exit_codes() -> None:
    down = ctk("members", env={"CONSUL_HTTP_ADDR": "127.0.0.1:1"})
    assert down.returncode == 1 and "cannot reach the agent" in down.stderr and "Traceback" not in down.stderr
    bad = ctk("kv", "put", "k", "v", "-flags", "lots")
    assert bad.returncode == 2 and "flags" in bad.stderr and "Traceback" not in bad.stderr
    unknown = ctk("frobnicate")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
    agent_bad = ctk("agent", "-server")
    assert agent_bad.returncode == 1 and "-data-dir is required" in agent_bad.stdout


def test_version_and_help_are_fast_and_clean() -> None:
    assert ctk("version").stdout.startswith("ctk v")
    assert "kv" in ctk("--help").stdout


def test_maint_node_and_service(env: dict[str, str]) -> None:
    assert ctk("services", "register", "-name", "m-svc", "-port", "7", env=env).returncode == 0
    assert ctk("maint", "-enable", "-service", "m-svc", "-reason", "deploy 42", env=env).returncode == 0
    listed = json.loads(ctk("maint", "--json", env=env).stdout)
    assert {"Kind": "Service", "ID": "m-svc", "Reason": "deploy 42"} in listed
    ghost = ctk("maint", "-enable", "-service", "ghost", env=env)
    assert ghost.returncode == 1 and "No service registered" in ghost.stderr
    assert ctk("maint", "-enable", env=env).returncode == 0
    assert any(r["Kind"] == "Node" for r in json.loads(ctk("maint", "--json", env=env).stdout))
    assert ctk("maint", "-disable", env=env).returncode == 0
    assert ctk("maint", "-disable", "-service", "m-svc", env=env).returncode == 0
    assert json.loads(ctk("maint", "--json", env=env).stdout) == []
    assert ctk("services", "deregister", "m-svc", env=env).returncode == 0


def test_keygen_prints_a_32_byte_base64_key() -> None:
    import base64

    out = ctk("keygen")
    assert out.returncode == 0
    assert len(base64.b64decode(out.stdout.strip(), validate=True)) == 32
    assert len(base64.b64decode(json.loads(ctk("keygen", "--json").stdout)["Key"])) == 32


def test_kv_keys_are_escaped_not_reinterpreted(env: dict[str, str]) -> None:
    """``?``, ``#``, ``%`` and spaces are part of a key; ``..`` would silently address another key."""
    for key in ("odd key?x=1", "pct%41/frag#1"):
        assert ctk("kv", "put", key, "v", env=env).returncode == 0
        assert ctk("kv", "get", key, env=env).stdout == "v\n"
    keys = ctk("kv", "get", "-recurse", "odd", env=env).stdout
    assert keys == "odd key?x=1:v\n"
    bad = ctk("kv", "put", "a/../b", "v", env=env)
    assert bad.returncode == 1 and "'..'" in bad.stderr
