"""The getting-started curl flow, with Consul's exact field names, headers and error codes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.agentproc import SHARED, AgentProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http(dev_agent: AgentProcess) -> httpx.Client:
    return httpx.Client(base_url=dev_agent.url, timeout=10)


def test_register_fixture_body_and_catalog_shape(http: httpx.Client) -> None:
    body = json.loads(Path(SHARED / "fixtures/http/register-userService.json").read_text())
    r = http.put("/v1/agent/service/register", json=body)
    assert r.status_code == 200 and r.content == b""
    r = http.get("/v1/catalog/service/userService")
    assert r.status_code == 200
    assert int(r.headers["X-Consul-Index"]) >= 1
    assert r.headers["X-Consul-KnownLeader"] == "true"
    assert r.headers["X-Consul-LastContact"] == "0"
    [entry] = r.json()
    assert set(entry) >= {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "ServiceID",
                          "ServiceName", "ServiceTags", "ServiceAddress", "ServiceWeights", "ServiceMeta",
                          "ServicePort", "ServiceEnableTagOverride", "CreateIndex", "ModifyIndex"}
    assert entry["ServiceID"] == "userServiceId" and entry["ServiceTags"] == ["primary", "v1"]
    assert entry["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    r = http.get("/v1/health/service/userService")
    [h] = r.json()
    assert set(h) == {"Node", "Service", "Checks"}
    check = next(c for c in h["Checks"] if c["CheckID"] == "service:userServiceId")
    assert check["Status"] == "critical" and check["Type"] == "http"
    assert check["Definition"]["DeregisterCriticalServiceAfter"] == "1h30m0s"
    assert check["Definition"]["HTTP"] == "http://127.0.0.1:8000/health"
    assert http.get("/v1/health/service/userService?passing").json() == []
    svc = http.get("/v1/agent/service/userServiceId").json()
    assert svc["ID"] == "userServiceId" and svc["ContentHash"]


def test_kv_flags_cas_and_missing_key_headers(http: httpx.Client) -> None:
    assert http.put("/v1/kv/web/key1?flags=42", content=b"test").json() is True
    [e] = http.get("/v1/kv/web/key1").json()
    assert set(e) == {"LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"}
    assert e["Flags"] == 42 and e["Value"] == "dGVzdA=="
    r = http.put(f"/v1/kv/web/key1?cas={e['ModifyIndex'] + 100}", content=b"x")
    assert r.status_code == 200 and r.json() is False
    r = http.get("/v1/kv/does/not/exist")
    assert r.status_code == 404 and r.content == b"" and int(r.headers["X-Consul-Index"]) >= 1
    r = http.get("/v1/kv/web/key1?raw")
    assert r.content == b"test" and r.headers["Content-Type"].startswith("text/plain")


def test_bad_input_is_a_consul_style_400(http: httpx.Client) -> None:
    cases = [
        ("PUT", "/v1/agent/service/register", b"{not json", 400, "Request decode failed"),
        ("PUT", "/v1/agent/service/register", b'{"Port": 80}', 400, "Missing service name"),
        ("PUT", "/v1/agent/check/register", b'{"Name": "x", "TTL": "10s", "Interval": "5s", "HTTP": "http://x"}',
         400, "Invalid check"),
        ("GET", "/v1/kv/a?index=abc", b"", 400, "Invalid index"),
        ("GET", "/v1/kv/a?wait=forever", b"", 400, "Invalid wait time"),
        ("GET", "/v1/kv/a?stale&consistent", b"", 400, "conflicting semantics"),
        ("PUT", "/v1/kv/a?cas=1&acquire=x", b"", 400, "Conflicting flags"),
        ("GET", "/v1/kv/", b"", 400, "Missing key name"),
        ("PUT", "/v1/agent/check/update/nope", b'{"Status": "great"}', 400, "Invalid check status"),
        ("PUT", "/v1/agent/maintenance?enable=maybe", b"", 400, "Invalid value for enable"),
        ("GET", "/v1/health/service/x?passing=maybe", b"", 400, "Invalid value for ?passing"),
        ("GET", "/v1/health/state/", b"", 400, "Missing check state"),
        ("PUT", "/v1/kv/a/%2E%2E/etc/passwd", b"", 400, "Invalid key name"),
        ("PUT", "/v1/session/create", b'{"TTL": "1s"}', 400, "Invalid Session TTL"),
        ("PUT", "/v1/txn", b'[{"KV": {"Verb": "nope", "Key": "a"}}]', 400, "unknown KV verb"),
    ]
    for method, path, body, status, text in cases:
        r = http.request(method, path, content=body)
        assert (r.status_code, text in r.text) == (status, True), (method, path, r.status_code, r.text)
        assert "Traceback" not in r.text


def test_404_405_413(http: httpx.Client) -> None:
    r = http.get("/v1/nothing/here")
    assert r.status_code == 404 and "not a recognized HTTP API endpoint" in r.text
    r = http.get("/v1/agent/service/register")
    assert r.status_code == 405 and "PUT" in r.headers["Allow"]
    r = http.put("/v1/kv/big", content=b"x" * (512 * 1024 + 1))
    assert r.status_code == 413
    assert http.put("/v1/kv/big", content=b"x" * (512 * 1024)).json() is True


def test_agent_endpoints(http: httpx.Client, dev_agent: AgentProcess) -> None:
    me = http.get("/v1/agent/self").json()
    assert me["Config"]["NodeName"] == "n1" and me["Config"]["Datacenter"] == "dc1"
    assert me["Stats"]["raft"]["state"] == "Leader"
    [m] = http.get("/v1/agent/members").json()
    assert m["Name"] == "n1" and m["Status"] == 1 and m["Tags"]["role"] == "consul"
    assert http.put("/v1/agent/service/maintenance/userServiceId?enable=true&reason=deploy").status_code == 200
    checks = http.get("/v1/agent/checks").json()
    maint = checks["_service_maintenance:userServiceId"]
    assert maint["Status"] == "critical" and maint["Notes"] == "deploy"
    r = http.get("/v1/agent/health/service/id/userServiceId?format=text")
    assert (r.status_code, r.text) == (503, "maintenance")
    http.put("/v1/agent/service/maintenance/userServiceId?enable=false")
    assert "_service_maintenance:userServiceId" not in http.get("/v1/agent/checks").json()
    assert http.put("/v1/agent/service/maintenance/ghost?enable=true").status_code == 404
    # Script checks are refused over HTTP unless the agent enables them: the RCE hole stays shut.
    r = http.put("/v1/agent/check/register", json={"Name": "pwn", "Args": ["sh", "-c", "id"], "Interval": "10s"})
    assert r.status_code == 400 and "Scripts are disabled" in r.text
    assert "pwn" not in http.get("/v1/agent/checks").json()


def test_catalog_deregister_of_agent_service_comes_back(http: httpx.Client) -> None:
    """Anti-entropy: the agent owns its services; a catalog-level removal is undone by the next sync."""
    http.put("/v1/agent/service/register", json={"Name": "owned", "Port": 1})
    assert http.put("/v1/catalog/deregister", json={"Node": "n1", "ServiceID": "owned"}).json() is True
    http.put("/v1/agent/check/register", json={"Name": "kick", "TTL": "30s"})  # any local change triggers a sync
    assert [s["ServiceID"] for s in http.get("/v1/catalog/service/owned").json()] == ["owned"]


def test_status_and_raft_configuration(http: httpx.Client) -> None:
    leader = http.get("/v1/status/leader").json()
    cfg = http.get("/v1/operator/raft/configuration").json()
    [server] = cfg["Servers"]
    assert server["Leader"] is True and server["Voter"] is True and server["Address"] == leader
