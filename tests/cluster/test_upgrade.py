"""``ctk upgrade run`` against real processes: 3 servers + 1 client, every agent restarted onto a new build.

The ``--exec`` command is a small script (written below) that does what ``ssh {address} sudo systemctl
restart ctk`` does on real hosts: stop the agent, start it again "upgraded" — same arguments, new
``CTK_BUILD_VERSION`` — in its own session, recording the new PID so the test stops it by PID at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.state.archive import read_archive
from tests.agentproc import ctk
from tests.cluster.cluster import Cluster, Server, settle

pytestmark = pytest.mark.slow

MAX_LEADERLESS_S = 3.0  # one election with -raft-multiplier 1, plus sampling slack

RESTART_SCRIPT = r'''
"""restart.py VERSION NODE: stop NODE's agent (PID in pids/NODE.pid), start it again on build VERSION."""
import os, signal, subprocess, sys, time
from pathlib import Path

here = Path(__file__).parent
version, node = sys.argv[1], sys.argv[2]
pid_file = here / "pids" / f"{node}.pid"
pid = int(pid_file.read_text())
argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
cwd = os.readlink(f"/proc/{pid}/cwd")


def gone() -> bool:  # exited, or a zombie its parent has not reaped yet
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


os.kill(pid, signal.SIGTERM)
deadline = time.monotonic() + 15
while not gone():
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
print(f"stopped {node} (pid {pid})")
if node in (here / "broken.txt").read_text().split():
    print(f"{node}: the new build does not start (injected failure)")
    sys.exit(0)
log = open(here / f"{node}.log", "ab")
new = subprocess.Popen([a.decode() for a in argv], cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                       stderr=subprocess.STDOUT, start_new_session=True,
                       env={**os.environ, "CTK_BUILD_VERSION": version, "PYTHONUNBUFFERED": "1"})
pid_file.write_text(str(new.pid))
print(f"started {node} on {version} (pid {new.pid})")
'''


def _members(agent: Server) -> dict[str, tuple[int, str]]:
    return {m["Name"]: (m["Status"], m["Tags"].get("build", "")) for m in agent.get("/v1/agent/members").json()}


def _running(pid: str | int) -> bool:
    """True while the process exists and is not a zombie (an exited child its parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stop_pid(pid: int, node: str) -> None:
    """Stop a restarted agent (not our child) by PID, after checking the PID is still that agent."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return
    if node.encode() not in cmdline or b"agent" not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class LeaderSampler:
    """Samples /v1/status/leader on every server from a thread; reports the longest leaderless stretch.

    A leader counts only when a server names itself: followers keep naming a stopped leader until their
    election timeout, which would hide the gap.
    """

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.seen: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if any(s.leader() == s.server_addr for s in self.servers):
                self.seen.append(time.monotonic())
            self._stop.wait(0.1)

    def __enter__(self) -> LeaderSampler:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.end = time.monotonic()

    def longest_gap_s(self) -> float:
        marks = [self.start, *self.seen, self.end]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """3 servers + client c1; the PIDs of restarted agents live in tmp_path/pids and are stopped at the end."""
    (tmp_path / "pids").mkdir()
    (tmp_path / "broken.txt").write_text("")
    (tmp_path / "restart.py").write_text(RESTART_SCRIPT)
    c = Cluster(tmp_path, 3)
    try:
        c.start()
        c.add_client("c1")
        for agent in [*c.servers, *c.clients]:
            assert agent.proc is not None
            (tmp_path / "pids" / f"{agent.name}.pid").write_text(str(agent.proc.pid))
        yield c
    finally:
        for agent in [*c.servers, *c.clients]:
            pid_file = tmp_path / "pids" / f"{agent.name}.pid"
            if pid_file.exists() and (agent.proc is None or int(pid_file.read_text()) != agent.proc.pid):
                _stop_pid(int(pid_file.read_text()), agent.name)
        c.stop()


def test_rolling_upgrade_keeps_a_leader_and_stops_at_a_node_that_does_not_come_back(
        tmp_path: Path, cluster: Cluster) -> None:
    s1 = cluster.servers[0]
    names = {"s1", "s2", "s3", "c1"}
    settle(lambda: _members(s1) == {n: (1, "0.1.0:ctk") for n in names}, timeout_s=30)
    addr = ["--http-addr", s1.addr]

    def pid_files() -> dict[str, str]:
        return {p.stem: p.read_text() for p in (tmp_path / "pids").glob("*.pid")}

    def exec_for(version: str) -> str:
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(tmp_path / 'restart.py'))} {version} {{node}}"

    # The plan: followers, the leader last, then the client.
    leader = cluster.wait_leader()
    plan = json.loads(ctk("upgrade", "plan", "--to", "0.2.0", "--json", *addr).stdout)
    order = [s["Node"] for s in plan["Steps"]]
    assert order[2:] == [leader.name, "c1"] and set(order[:2]) == names - {leader.name, "c1"}
    assert plan["FailureTolerance"] == 1 and plan["Warnings"] == []
    before = pid_files()
    dry = ctk("upgrade", "run", "--to", "0.2.0", "--dry-run", "--exec", exec_for("0.2.0"), *addr)
    assert dry.returncode == 0 and dry.stdout.count("would run for") == 4
    assert pid_files() == before  # nothing restarted

    # The run: every member ends on 0.2.0; the cluster never lost its leader for more than one election.
    with LeaderSampler(cluster.servers) as sampler:
        run = ctk("upgrade", "run", "--to", "0.2.0", "--exec", exec_for("0.2.0"), "--stabilize", "2s",
                  "--gate-timeout", "30s", "--snapshot-dir", str(tmp_path / "snaps"), *addr, timeout_s=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Every member is at 0.2.0: 4 restarted, 0 already there." in run.stdout
    assert sampler.longest_gap_s() <= MAX_LEADERLESS_S, f"leaderless for {sampler.longest_gap_s():.1f}s"
    settle(lambda: _members(s1) == {n: (1, "0.2.0:ctk") for n in names}, timeout_s=15)
    assert s1.get("/v1/agent/self").json()["Config"]["Version"] == "0.2.0"
    health = s1.get("/v1/operator/autopilot/health").json()
    assert {srv["Version"] for srv in health["Servers"]} == {"0.2.0"}  # each server's own build
    snaps = sorted((tmp_path / "snaps").glob("*.snap"))
    assert sorted(p.name.split("-")[0] for p in snaps) == sorted(names)
    assert all(read_archive(p.read_bytes()).meta["Index"] > 0 for p in snaps)  # real, verified archives
    again = json.loads(ctk("upgrade", "plan", "--to", "0.2.0", "--json", *addr).stdout)
    assert {(s["Action"], s["Note"]) for s in again["Steps"]} == {("skip", "already at 0.2.0")}

    # An injected failure: the second node's new build never starts. The run stops at its "alive" gate.
    # (Asked through the leader, which the plan restarts last: the agent we ask stays up.)
    plan = json.loads(ctk("upgrade", "plan", "--to", "0.3.0", "--json", *addr).stdout)
    order = [s["Node"] for s in plan["Steps"]]
    first, broken, untouched = order[0], order[1], order[2:]
    watcher = next(s for s in cluster.servers if s.name == order[2])
    (tmp_path / "broken.txt").write_text(broken)
    before = pid_files()
    failed = ctk("upgrade", "run", "--to", "0.3.0", "--exec", exec_for("0.3.0"), "--stabilize", "1s",
                 "--gate-timeout", "6s", "--http-addr", watcher.addr, timeout_s=120)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"Error: {broken}: gate 'alive with new build 0.3.0' not passed within 6s" in failed.stderr
    assert "Traceback" not in failed.stderr
    members = _members(watcher)
    assert members[first] == (1, "0.3.0:ctk")
    assert members[broken][1] == "0.2.0:ctk" and not _running(before[broken])
    assert {n: members[n] for n in untouched} == {n: (1, "0.2.0:ctk") for n in untouched}
    after = pid_files()
    assert {n: after[n] for n in untouched} == {n: before[n] for n in untouched}  # never restarted
    assert watcher.leader()  # two servers still hold the quorum
