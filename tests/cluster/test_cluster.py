"""Raft clusters of real ctk processes: elections, SIGKILL under load, graceful leave, outage recovery."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.agentproc import ROOT
from tests.cluster.cluster import Cluster, keys, put, settle

pytestmark = pytest.mark.slow


class Writer(threading.Thread):
    """A steady write load spread over the live servers; records every acknowledged write."""

    def __init__(self, cluster: Cluster, prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.prefix = prefix
        self.acked: dict[str, bytes] = {}
        self.failed = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop_flag.is_set() and i < 100_000:
            live = self.cluster.live()
            if not live:
                break
            s = live[i % len(live)]
            key, value = f"{self.prefix}/{i:06d}", str(i).encode()
            try:
                if put(s, key, value, timeout_s=10):
                    self.acked[key] = value
                else:
                    self.failed += 1
            except httpx.HTTPError:
                self.failed += 1
            i += 1

    def halt(self) -> None:
        self.stop_flag.set()
        self.join(30)


@pytest.mark.parametrize("n", [3, 5])
def test_sigkill_leader_under_load_loses_no_acknowledged_write(tmp_path: Path, n: int) -> None:
    with Cluster(tmp_path, n).start() as c:
        writer = Writer(c, "load")
        writer.start()
        settle(lambda: len(writer.acked) >= 50)
        old = c.wait_leader()
        old.kill()
        new = c.wait_leader(not_addr=old.server_addr)
        assert new is not old
        before = len(writer.acked)
        settle(lambda: len(writer.acked) >= before + 50)  # writes succeed again through the new leader
        writer.halt()
        old.start(c.join_args())  # the crashed server comes back and catches up
        settle(lambda: keys(old, "load") == writer.acked, timeout_s=30)
        for s in c.live():
            got = keys(s, "load")
            missing = set(writer.acked) - set(got)
            assert not missing, f"{s.name} lost acknowledged writes: {sorted(missing)[:5]}"
            assert all(got[k] == v for k, v in writer.acked.items())


def test_graceful_leave_keeps_quorum_down_to_one(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3).start() as c:
        assert put(c.servers[0], "k/before", b"1")
        leader = c.wait_leader()
        follower = next(s for s in c.live() if s is not leader)
        assert httpx.put(follower.url + "/v1/agent/leave", timeout=30).status_code == 200
        follower.proc.wait(30)  # type: ignore[union-attr]
        rest = [s for s in c.servers if s is not follower]
        settle(lambda: len(rest[0].get("/v1/status/peers").json()) == 2)
        # Two servers left: still a quorum, still writes. Now the LEADER leaves.
        leader = c.wait_leader(among=rest)
        assert put(leader, "k/two", b"2")
        assert httpx.put(leader.url + "/v1/agent/leave", timeout=30).status_code == 200
        leader.proc.wait(30)  # type: ignore[union-attr]
        [last] = [s for s in rest if s is not leader]
        lone = c.wait_leader(among=[last])
        assert lone is last  # one server leads alone: no null peers.json, no stuck cluster
        assert last.get("/v1/status/peers").json() == [last.server_addr]
        assert put(last, "k/one", b"3")
        assert set(keys(last, "k")) == {"k/before", "k/two", "k/one"}


def test_two_servers_one_killed_has_no_leader_until_it_returns(tmp_path: Path) -> None:
    with Cluster(tmp_path, 2).start() as c:
        a, b = c.servers
        leader = c.wait_leader()
        other = b if leader is a else a
        other.kill()
        settle(lambda: leader.leader() == "", timeout_s=20)  # CheckQuorum: the leader steps down
        r = httpx.put(f"{leader.url}/v1/kv/x", content=b"1", timeout=15)
        assert r.status_code == 500 and "leader" in r.text.lower()
        other.start(c.join_args())
        c.wait_leader()
        assert put(leader, "x", b"1")


def _recover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit.cli.main", "recover", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_outage_two_of_three_lost_for_good_then_recover_peers(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3).start() as c:
        for i in range(20):
            assert put(c.servers[i % 3], f"data/{i}", str(i).encode())
        survivor, *lost = c.servers
        for s in lost:
            s.kill()
            c.wipe(s)
        settle(lambda: survivor.leader() == "", timeout_s=20)
        survivor.stop()
        dry = _recover("--peers", "--data-dir", str(survivor.data_dir), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["format"] == "v3" and not (survivor.data_dir / "raft/peers.json").exists()
        [peer] = report["peers"]
        assert peer["address"] == survivor.server_addr
        done = _recover("--peers", "--data-dir", str(survivor.data_dir))
        assert done.returncode == 0 and "Next steps" in done.stdout
        assert json.loads((survivor.data_dir / "raft/peers.json").read_text()) == report["peers"]
        survivor.start(c.join_args([survivor]))
        c.wait_leader(among=[survivor])
        assert "found" in survivor.log() and not (survivor.data_dir / "raft/peers.json").exists()
        verify = _recover("--verify", "--http-addr", survivor.addr, "--timeout", "30")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert keys(survivor, "data") == {f"data/{i}": str(i).encode() for i in range(20)}
        # New servers can join it.
        for s in lost:
            s.start(c.join_args([survivor]))
        settle(lambda: len(survivor.get("/v1/status/peers").json()) == 3, timeout_s=40)
        assert put(lost[0], "data/new", b"x")
        settle(lambda: keys(lost[1], "data").get("data/new") == b"x")


def test_whole_cluster_restarts_on_new_addresses(tmp_path: Path) -> None:
    """The container case: Consul is stuck (its configuration names the old IPs); ctk servers are
    known by node id, find each other again through -retry-join and elect by themselves."""
    with Cluster(tmp_path, 3).start() as c:
        for i in range(10):
            assert put(c.servers[0], f"cfg/{i}", b"v")
        c.stop()
        moved = Cluster(tmp_path, 3)  # same data dirs, a fresh address range
        for old, new in zip(c.servers, moved.servers, strict=True):
            new.data_dir = old.data_dir
        with moved:
            for s in moved.servers:
                s.start(moved.join_args())
            leader = moved.wait_leader(timeout_s=40)
            assert put(leader, "cfg/after", b"moved")
            peers = leader.get("/v1/status/peers").json()
            settle(lambda: set(leader.get("/v1/status/peers").json()) == {s.server_addr for s in moved.servers},
                   timeout_s=40)
            assert len(peers) == 3
            assert len(keys(moved.servers[2], "cfg")) == 11


def _ctk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_snapshot_save_restore_inspect_across_the_cluster(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3).start() as c:
        s1, s2, s3 = c.servers
        for i in range(30):
            assert put(s1, f"snap/{i}", str(i).encode())
        archive = tmp_path / "backup.snap"
        saved = _ctk("snapshot", "save", str(archive), f"-http-addr={s2.addr}")
        assert saved.returncode == 0, saved.stderr
        info = json.loads(_ctk("snapshot", "inspect", str(archive), "--json").stdout)
        assert info["KV"] == 30 and info["Index"] > 0
        assert httpx.delete(f"{s1.url}/v1/kv/snap/?recurse").json() is True
        assert put(s1, "snap/new", b"after-backup")
        restored = _ctk("snapshot", "restore", str(archive), f"-http-addr={s3.addr}")
        assert restored.returncode == 0, restored.stderr
        want = {f"snap/{i}": str(i).encode() for i in range(30)}
        for s in c.servers:
            settle(lambda s=s: keys(s, "snap") == want)  # type: ignore[misc]
        damaged = tmp_path / "damaged.snap"
        damaged.write_bytes(archive.read_bytes()[:-40])
        bad = _ctk("snapshot", "restore", str(damaged), f"-http-addr={s1.addr}")
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert keys(s1, "snap") == want


def test_autopilot_health_and_leave_refused_when_it_would_break_quorum(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3).start() as c:
        s1, s2, s3 = c.servers
        settle(lambda: s1.get("/v1/operator/autopilot/health").json().get("FailureTolerance") == 1)
        health = s2.get("/v1/operator/autopilot/health")  # a follower forwards to the leader
        assert health.status_code == 200
        body = health.json()
        assert body["Healthy"] is True and len(body["Servers"]) == 3
        assert {s["Name"] for s in body["Servers"]} == {"s1", "s2", "s3"}
        assert all(set(s) >= {"ID", "Name", "Address", "LastContact", "LastTerm", "LastIndex", "Healthy",
                              "Voter", "StableSince"} for s in body["Servers"])
        s3.kill()
        if c.wait_leader() is s3:  # pragma: no cover - the killed one cannot be the agreed leader
            raise AssertionError("a dead leader")
        settle(lambda: s1.get("/v1/operator/autopilot/health").status_code == 429)
        refused = _ctk("leave", f"-http-addr={s1.addr}")
        assert refused.returncode == 1 and "refusing to leave" in refused.stderr and "s3" in refused.stderr
        assert s1.alive() and put(s1, "still", b"up")
