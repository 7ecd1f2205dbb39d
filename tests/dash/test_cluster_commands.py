"""``ctk health``, ``ctk services`` and ``ctk top`` (piped) against a real 3-server ctk cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.agentproc import ctk, wait_for
from tests.cluster.cluster import Cluster

pytestmark = pytest.mark.slow


def _health(addr: str) -> subprocess.CompletedProcess[str]:
    return ctk("health", "--http-addr", addr, timeout_s=30)


def test_health_exit_codes_and_json_follow_a_server_failure(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3) as c:
        c.start()
        leader = c.wait_leader()
        watch, victim = [s for s in c.servers if s is not leader]
        seen: list[subprocess.CompletedProcess[str]] = []

        def exits(code: int) -> bool:
            seen[:] = [_health(watch.addr)]
            return seen[0].returncode == code

        try:
            wait_for(lambda: exits(0), timeout_s=30, interval_s=0.5)
        except AssertionError:
            raise AssertionError(f"never healthy: {seen[0].stdout}{seen[0].stderr}") from None
        assert seen[0].stdout.splitlines()[0].startswith("OK: leader present")
        doc = json.loads(ctk("health", "--json", "--http-addr", watch.addr).stdout)
        assert (doc["Status"], doc["ExitCode"], doc["Problems"]) == ("OK", 0, [])
        cluster = doc["Cluster"]
        assert cluster["Leader"]["Name"] == leader.name and cluster["FailureTolerance"] == 1
        assert sorted(s["Name"] for s in cluster["Servers"]) == ["s1", "s2", "s3"]
        assert [s["State"] for s in cluster["Servers"]].count("leader") == 1

        # `ctk services` and a piped `ctk top` work on the same cluster
        svc = json.loads(ctk("services", "--json", "--http-addr", watch.addr).stdout)
        assert {"Name": "consul", "Instances": 3, "Passing": 3, "Warning": 0, "Critical": 0} == {
            k: v for k, v in next(s for s in svc if s["Name"] == "consul").items()
            if k in ("Name", "Instances", "Passing", "Warning", "Critical")}
        piped = ctk("top", "--http-addr", watch.addr)
        assert piped.returncode == 0 and f"leader {leader.name}" in piped.stdout and "Servers" in piped.stdout

        victim.kill()
        try:
            wait_for(lambda: exits(2), timeout_s=30, interval_s=0.5)
        except AssertionError:
            raise AssertionError(f"never critical: {seen[0].stdout}{seen[0].stderr}") from None
        verdict = seen[0].stdout.splitlines()[0]
        assert verdict.startswith(f"CRITICAL: failed server {victim.name}"), verdict
        assert "failure tolerance 0" in verdict
        doc = json.loads(ctk("health", "--json", "--http-addr", watch.addr).stdout)
        assert doc["Status"] == "CRITICAL" and doc["ExitCode"] == 2
        assert {"Level": "CRITICAL", "Message": f"failed server {victim.name}"} in doc["Problems"]
        row = next(s for s in doc["Cluster"]["Servers"] if s["Name"] == victim.name)
        assert row["SerfStatus"] == "failed" and row["Healthy"] is False


def test_health_of_an_unreachable_agent_is_critical() -> None:
    r = _health("127.0.0.1:1")
    assert r.returncode == 2 and r.stdout.startswith("CRITICAL: cannot reach the agent at 127.0.0.1:1")
    assert "Traceback" not in r.stderr
