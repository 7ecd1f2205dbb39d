"""``ctk services dedupe`` and ``register --unique/--replace`` against a real 3-server cluster.

Every server is a full agent with its own local state and anti-entropy, here with ``ae_interval`` 2s
(a full sync every 2-4s) so that "it came back" and "it stayed gone" take seconds, not minutes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agentproc import ctk
from tests.cluster.cluster import Cluster, Server, settle

pytestmark = pytest.mark.slow

AE_INTERVAL_S = 2.0


def _start(tmp: Path) -> Cluster:
    conf = tmp / "ae.json"
    conf.write_text(json.dumps({"ae_interval": f"{AE_INTERVAL_S:g}s"}))
    c = Cluster(tmp, 3)
    for s in c.servers:
        s.extra = ["-config-file", str(conf)]
    c.start()
    settle(lambda: all(len([m for m in s.get("/v1/agent/members").json() if m["Status"] == 1]) == 3
                       for s in c.servers))
    return c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with _start(tmp_path_factory.mktemp("dedupe")) as c:
        yield c


def register(s: Server, sid: str, name: str, address: str, port: int, **extra: object) -> None:
    body = {"ID": sid, "Name": name, "Address": address, "Port": port, **extra}
    r = httpx.put(f"{s.url}/v1/agent/service/register", json=body, timeout=10)
    assert r.status_code == 200, r.text


def copies(s: Server, name: str) -> set[tuple[str, str]]:
    """(node, service ID) of every catalog registration of ``name``."""
    return {(r["Node"], r["ServiceID"]) for r in s.get(f"/v1/catalog/service/{name}").json()}


def local_ids(s: Server) -> set[str]:
    """What the agent itself owns (what its anti-entropy writes back)."""
    return set(s.get("/v1/agent/services").json())


def test_dedupe_removes_copies_through_their_agents_and_they_stay_gone(cluster: Cluster) -> None:
    s1, s2, s3 = cluster.servers
    register(s1, "web-1", "web", "10.0.0.5", 8080)
    register(s2, "web-1", "web", "10.0.0.5", 8080)  # the same instance through another agent
    register(s3, "web-x", "web", "10.0.0.5", 8080)  # and again under another ID
    all3 = {("s1", "web-1"), ("s2", "web-1"), ("s3", "web-x")}
    settle(lambda: copies(s1, "web") == all3)
    before = s1.get("/v1/catalog/service/web").json()

    # Dry run: a plan, exit 2, nothing changed.
    dry = ctk("services", "dedupe", "web", "--http-addr", s1.addr)
    assert dry.returncode == 2, dry.stdout + dry.stderr
    assert "dry run: nothing changed; re-run with --yes" in dry.stdout
    assert dry.stdout.count("remove via agent") == 2 and "keep" in dry.stdout
    plan = json.loads(ctk("services", "dedupe", "--json", "--http-addr", s2.addr).stdout)
    assert plan["DryRun"] is True and plan["Duplicates"] == 2
    [group] = plan["Groups"]
    assert {(r["Node"], r["ID"]) for r in group["Remove"]} | {(group["Keep"]["Node"], group["Keep"]["ID"])} == all3
    assert s1.get("/v1/catalog/service/web").json() == before

    # The problem: a catalog delete of an agent-owned copy is undone by that agent's next full sync.
    r = httpx.put(f"{s1.url}/v1/catalog/deregister", json={"Node": "s2", "ServiceID": "web-1"}, timeout=10)
    assert r.status_code == 200 and r.json() is True
    assert ("s2", "web-1") not in copies(s1, "web")
    settle(lambda: copies(s1, "web") == all3, timeout_s=4 * AE_INTERVAL_S)

    # The fix: through the owning agents, then watched for a while.
    done = ctk("services", "dedupe", "web", "--yes", "--verify-wait", "5s", "--json", "--http-addr", s1.addr)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["OK"] is True and report["Verify"]["CameBack"] == [] and report["Verify"]["StillPresent"] == []
    assert sorted(o["Via"] for o in report["Removed"]) == ["agent", "agent"] and all(o["OK"] for o in report["Removed"])
    keep = (report["Groups"][0]["Keep"]["Node"], report["Groups"][0]["Keep"]["ID"])
    by_name = {s.name: s for s in cluster.servers}
    for o in report["Removed"]:
        assert o["ID"] not in local_ids(by_name[o["Node"]])  # gone from the owner's local state, not just the catalog
    time.sleep(4 * AE_INTERVAL_S)  # at least two full anti-entropy syncs on every agent
    assert copies(s1, "web") == {keep}
    assert copies(s3, "web") == {keep}
    again = ctk("services", "dedupe", "web", "--http-addr", s1.addr)
    assert again.returncode == 0 and "No duplicate service instances found." in again.stdout


def test_dedupe_reports_a_copy_that_comes_back(cluster: Cluster) -> None:
    """An app that keeps re-registering itself beats any removal; verification must say so (exit 1)."""
    s1, s2, _ = cluster.servers
    register(s1, "echo-1", "echo", "10.0.0.9", 7000)
    register(s2, "echo-1", "echo", "10.0.0.9", 7000)
    settle(lambda: copies(s1, "echo") == {("s1", "echo-1"), ("s2", "echo-1")})
    stop = threading.Event()

    def reregister() -> None:  # the misbehaving client: re-registers through both agents every 0.5s
        while not stop.wait(0.5):
            for s in (s1, s2):
                try:
                    register(s, "echo-1", "echo", "10.0.0.9", 7000)
                except (httpx.HTTPError, AssertionError):
                    pass

    t = threading.Thread(target=reregister, daemon=True)
    t.start()
    try:
        run = ctk("services", "dedupe", "echo", "--yes", "--verify-wait", "3s", "--http-addr", s1.addr)
    finally:
        stop.set()
        t.join(5)
    assert run.returncode == 1, run.stdout + run.stderr
    # Seen gone then back ("came back"), or re-registered before the first read ("still in the catalog").
    assert ("came back after it was removed" in run.stderr or "is still in the catalog" in run.stderr), run.stderr
    assert "Traceback" not in run.stderr
    ctk("services", "dedupe", "echo", "--yes", "--no-verify", "--http-addr", s1.addr)


def test_register_unique_refuses_and_replace_moves_the_id(cluster: Cluster) -> None:
    s1, s2, s3 = cluster.servers
    assert ctk("services", "register", "--name", "api", "--id", "api-1", "--address", "10.0.0.7", "--port", "9090",
               "--http-addr", s1.addr).returncode == 0
    settle(lambda: copies(s2, "api") == {("s1", "api-1")})

    refused = ctk("services", "register", "--unique", "--name", "api", "--id", "api-1", "--address", "10.0.0.7",
                  "--port", "9090", "--http-addr", s2.addr)
    assert refused.returncode == 1
    assert "already registered on node s1" in refused.stderr and "10.0.0.7:9090" in refused.stderr
    assert "api-1" not in local_ids(s2) and copies(s2, "api") == {("s1", "api-1")}
    same_node = ctk("services", "register", "--unique", "--name", "api", "--id", "api-1", "--address", "10.0.0.7",
                    "--port", "9091", "--http-addr", s1.addr)
    assert same_node.returncode == 0, same_node.stderr  # re-registering on its own node is an update

    moved = ctk("services", "register", "--replace", "--json", "--name", "api", "--id", "api-1", "--address",
                "10.0.0.8", "--port", "9090", "--http-addr", s2.addr)
    assert moved.returncode == 0, moved.stderr
    doc = json.loads(moved.stdout)
    assert doc["Registered"] == ["api-1"] and [(r["Node"], r["Via"]) for r in doc["Replaced"]] == [("s1", "agent")]
    assert "api-1" not in local_ids(s1) and "api-1" in local_ids(s2)
    settle(lambda: copies(s3, "api") == {("s2", "api-1")})
    time.sleep(3 * AE_INTERVAL_S)
    assert copies(s3, "api") == {("s2", "api-1")}

    # A critical copy elsewhere does not block --unique (it is noted, not refused).
    register(s3, "api-2", "api", "10.0.0.9", 9090, Check={"TTL": "30s"})  # TTL checks start critical
    settle(lambda: any(r["Service"]["ID"] == "api-2" and r["Checks"][-1]["Status"] == "critical"
                       for r in s1.get("/v1/health/service/api").json()))
    noted = ctk("services", "register", "--unique", "--name", "api", "--id", "api-2", "--address", "10.0.0.9",
                "--port", "9090", "--http-addr", s1.addr)
    assert noted.returncode == 0 and "critical copy of api-2 remains on s3" in noted.stderr


def test_copy_on_a_dead_agent_is_removed_from_the_catalog(tmp_path: Path) -> None:
    """A crashed node's copy: no agent to ask and none to re-sync it, so the catalog delete is the right one."""
    with _start(tmp_path) as c:
        s1, s2, s3 = c.servers
        register(s1, "db-1", "db", "10.0.0.3", 5432)
        register(s3, "db-1", "db", "10.0.0.3", 5432)
        settle(lambda: copies(s1, "db") == {("s1", "db-1"), ("s3", "db-1")})
        s3.kill()
        settle(lambda: any(m["Name"] == "s3" and m["Status"] == 4 for m in s1.get("/v1/agent/members").json()),
               timeout_s=30)
        run = ctk("services", "dedupe", "--yes", "--verify-wait", "3s", "--json", "--http-addr", s1.addr)
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["Groups"][0]["Keep"]["Node"] == "s1"
        [o] = report["Removed"]
        assert (o["Node"], o["Via"], o["OK"]) == ("s3", "catalog", True)
        assert copies(s2, "db") == {("s1", "db-1")}
