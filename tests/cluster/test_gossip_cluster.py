"""Gossip in a real server cluster: members, failure → serfHealth critical, leave → node deregistered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.agentproc import ROOT
from tests.cluster.cluster import Cluster, settle

pytestmark = pytest.mark.slow


def members(url: str) -> dict[str, int]:
    return {m["Name"]: m["Status"] for m in httpx.get(url + "/v1/agent/members", timeout=5).json()}


def serf_health(url: str, node: str) -> str:
    checks = httpx.get(f"{url}/v1/health/node/{node}", timeout=5).json()
    return next((c["Status"] for c in checks if c["CheckID"] == "serfHealth"), "")


def test_members_failure_and_leave_through_gossip(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3).start() as c:
        s1, s2, s3 = c.servers
        settle(lambda: members(s1.url) == {"s1": 1, "s2": 1, "s3": 1})
        out = subprocess.run([sys.executable, "-m", "toolkit.cli.main", "members", "--json", f"-http-addr={s2.addr}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        rows = {r["Node"]: r for r in json.loads(out.stdout)}
        assert set(rows) == {"s1", "s2", "s3"}
        assert all(r["Type"] == "server" and r["Status"] == "alive" for r in rows.values())
        assert rows["s3"]["Address"] == f"{s3.ip}:8301"
        settle(lambda: all(serf_health(s1.url, n) == "passing" for n in ("s1", "s2", "s3")))
        # A crash: gossip marks it failed (LAN profile: ~5-7 s), the leader turns its serfHealth critical.
        s3.kill()
        settle(lambda: members(s1.url).get("s3") == 4, timeout_s=30)
        settle(lambda: serf_health(s1.url, "s3") == "critical", timeout_s=30)
        svc = httpx.get(s1.url + "/v1/health/service/consul?passing", timeout=5).json()
        assert {e["Node"]["Node"] for e in svc} == {"s1", "s2"}
        # Autopilot's cleanup_dead_servers: 2 of 3 still hold a majority, so the dead one is pruned.
        settle(lambda: len(httpx.get(s1.url + "/v1/status/peers", timeout=5).json()) == 2, timeout_s=30)
        # It comes back: alive again, passing again, and added back to Raft as a voter.
        s3.start(c.join_args())
        settle(lambda: members(s1.url).get("s3") == 1, timeout_s=30)
        settle(lambda: serf_health(s1.url, "s3") == "passing", timeout_s=30)
        settle(lambda: any(srv["Node"] == "s3" and srv["Voter"] for srv in httpx.get(
            s1.url + "/v1/operator/raft/configuration", timeout=5).json()["Servers"]), timeout_s=30)
        assert sorted(httpx.get(s3.url + "/v1/status/peers", timeout=5).json()) == sorted(
            s.server_addr for s in c.servers)
        # A graceful leave: member "left" (3), node gone from the catalog, out of Raft.
        c.wait_leader()
        assert httpx.put(s3.url + "/v1/agent/leave", timeout=30).status_code == 200
        s3.proc.wait(30)  # type: ignore[union-attr]
        settle(lambda: members(s1.url).get("s3") == 3, timeout_s=30)
        settle(lambda: "s3" not in {n["Node"] for n in httpx.get(s1.url + "/v1/catalog/nodes").json()},
               timeout_s=30)
        assert len(httpx.get(s1.url + "/v1/status/peers").json()) == 2


def test_force_leave_a_dead_server_and_join_cli(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3).start() as c:
        s1, s2, s3 = c.servers
        settle(lambda: members(s1.url) == {"s1": 1, "s2": 1, "s3": 1})
        s3.kill()
        settle(lambda: members(s1.url).get("s3") == 4, timeout_s=30)
        run = [sys.executable, "-m", "toolkit.cli.main"]
        fl = subprocess.run([*run, "force-leave", "s3", f"-http-addr={s1.addr}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
        assert fl.returncode == 0, fl.stderr
        settle(lambda: members(s1.url).get("s3") == 3, timeout_s=30)
        settle(lambda: len(httpx.get(s1.url + "/v1/status/peers").json()) == 2, timeout_s=30)
        j = subprocess.run([*run, "join", s2.ip, f"-http-addr={s1.addr}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
        assert j.returncode == 0 and "Successfully joined" in j.stdout
