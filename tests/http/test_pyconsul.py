"""A real Consul client library (py-consul) against a real ``ctk agent -dev`` process."""

from __future__ import annotations

import threading
import time

import consul
import pytest

from tests.agentproc import AgentProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def c(dev_agent: AgentProcess) -> consul.Consul:
    return consul.Consul(host=dev_agent.host, port=dev_agent.http_port)


def test_register_service_with_checks_and_discover(c: consul.Consul) -> None:
    c.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=8080, tags=["rails", "v1"],
                             meta={"team": "a"}, check=consul.Check.ttl("30s"))
    c.agent.service.register("web", service_id="web-2", address="127.0.0.2", port=8080, tags=["v1"],
                             check=consul.Check.ttl("30s"))
    assert set(c.agent.services()) >= {"web-1", "web-2"}
    _, nodes = c.catalog.service("web")
    assert sorted(n["ServiceID"] for n in nodes) == ["web-1", "web-2"]
    _, tagged = c.catalog.service("web", tag="rails")
    assert [n["ServiceID"] for n in tagged] == ["web-1"]
    # TTL checks start critical: nothing passes until the application reports in.
    _, passing = c.health.service("web", passing=True)
    assert passing == []
    c.agent.check.ttl_pass("service:web-1", notes="all good")
    _, passing = c.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["web-1"]
    entry = passing[0]
    checks = {ch["CheckID"]: ch for ch in entry["Checks"]}
    assert checks["service:web-1"]["Output"] == "all good"
    assert checks["serfHealth"]["Status"] == "passing"
    c.agent.check.ttl_warn("service:web-1")
    assert c.health.service("web", passing=True)[1] == []
    assert len(c.health.service("web")[1]) == 2
    c.agent.service.deregister("web-2")
    assert [n["ServiceID"] for n in c.catalog.service("web")[1]] == ["web-1"]


def test_kv_get_put_cas_recurse_delete(c: consul.Consul) -> None:
    assert c.kv.put("app/config/a", "1") is True
    assert c.kv.put("app/config/b", "2", flags=42) is True
    index, item = c.kv.get("app/config/b")
    assert item["Value"] == b"2" and item["Flags"] == 42 and int(index) >= item["ModifyIndex"]
    assert c.kv.put("app/config/b", "3", cas=item["ModifyIndex"] + 1000) is False
    assert c.kv.put("app/config/b", "3", cas=item["ModifyIndex"]) is True
    assert c.kv.put("app/config/new", "x", cas=0) is True
    assert c.kv.put("app/config/new", "y", cas=0) is False
    _, items = c.kv.get("app/", recurse=True)
    assert [i["Key"] for i in items] == ["app/config/a", "app/config/b", "app/config/new"]
    _, keys = c.kv.get("app/", keys=True, separator="/")
    assert keys == ["app/config/"]
    _, missing = c.kv.get("app/nope")
    assert missing is None
    assert c.kv.delete("app/config/a") is True
    assert c.kv.delete("app/", recurse=True) is True
    assert c.kv.get("app/", recurse=True)[1] is None


def test_sessions_acquire_release(c: consul.Consul) -> None:
    s1 = c.session.create(name="leader-election", ttl=15)
    s2 = c.session.create(name="contender", lock_delay=0)
    assert c.kv.put("service/leader", "node-a", acquire=s1) is True
    assert c.kv.put("service/leader", "node-b", acquire=s2) is False
    _, item = c.kv.get("service/leader")
    assert item["Session"] == s1 and item["LockIndex"] == 1
    assert c.kv.put("service/leader", "node-a", release=s1) is True
    assert c.kv.put("service/leader", "node-b", acquire=s2) is True
    _, info = c.session.info(s1)
    assert info["Name"] == "leader-election" and info["TTL"] == "15s" and info["Behavior"] == "release"
    renewed = c.session.renew(s1)
    assert renewed["ID"] == s1
    assert c.session.destroy(s2) is True
    _, item = c.kv.get("service/leader")
    assert "Session" not in item  # destroying the holder released the lock
    ids = [s["ID"] for s in c.session.list()[1]]
    assert s1 in ids and s2 not in ids
    c.session.destroy(s1)


def test_events_fire_and_list(c: consul.Consul) -> None:
    body = c.event.fire("deploy", "v42")
    assert body["Name"] == "deploy" and body["ID"]
    _, events = c.event.list(name="deploy")
    assert events[-1]["Payload"] == b"v42"


def test_blocking_query_returns_as_soon_as_data_changes(c: consul.Consul) -> None:
    c.kv.put("watch/me", "0")
    index = int(c.kv.get("watch/me")[0])  # py-consul hands back the header text
    results: dict[str, object] = {}

    def waiter() -> None:
        t0 = time.monotonic()
        new_index, item = c.kv.get("watch/me", index=index, wait="30s")
        results.update(elapsed=time.monotonic() - t0, index=new_index, value=item["Value"])

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.3)
    assert th.is_alive()  # it is really blocking
    c.kv.put("watch/me", "1")
    th.join(10)
    assert not th.is_alive()
    assert results["value"] == b"1" and int(results["index"]) > index  # type: ignore[call-overload]
    # Returned because of the write, not because the 30 s wait ran out.
    assert float(results["elapsed"]) < 29  # type: ignore[arg-type]


def test_blocking_query_on_health_wakes_on_check_change(c: consul.Consul) -> None:
    c.agent.service.register("api", service_id="api-1", port=9000, check=consul.Check.ttl("30s"))
    index, entries = c.health.service("api", passing=True)
    assert entries == []
    done = threading.Event()
    seen: list[list[dict]] = []

    def waiter() -> None:
        _, e = c.health.service("api", passing=True, index=index, wait="30s")
        seen.append(e)
        done.set()

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.2)
    c.agent.check.ttl_pass("service:api-1")
    assert done.wait(10)
    assert [e["Service"]["ID"] for e in seen[0]] == ["api-1"]


def test_catalog_register_and_nodes(c: consul.Consul) -> None:
    assert c.catalog.register("external", "10.1.2.3", service={"Service": "redis", "ID": "redis-ext", "Port": 6379})
    _, nodes = c.catalog.nodes()
    assert {"external", "n1"} <= {n["Node"] for n in nodes}
    _, svc = c.catalog.service("redis")
    assert svc[0]["Address"] == "10.1.2.3" and svc[0]["ServicePort"] == 6379
    assert c.catalog.deregister("external")
    assert c.catalog.service("redis")[1] == []


def test_txn(c: consul.Consul) -> None:
    import base64

    res = c.txn.put([
        {"KV": {"Verb": "set", "Key": "txn/a", "Value": base64.b64encode(b"1").decode()}},
        {"KV": {"Verb": "set", "Key": "txn/b", "Value": base64.b64encode(b"2").decode()}},
        {"KV": {"Verb": "get", "Key": "txn/a"}},
    ])
    assert [r["KV"]["Key"] for r in res["Results"]] == ["txn/a", "txn/b", "txn/a"]
    assert base64.b64decode(res["Results"][2]["KV"]["Value"]) == b"1"


def test_status(c: consul.Consul) -> None:
    assert c.status.leader().endswith(":8300")
    assert c.status.peers() == [c.status.leader()]
