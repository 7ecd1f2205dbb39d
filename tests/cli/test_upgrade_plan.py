"""``ctk upgrade``: planning from fake API answers, and the runner's gates against a fake cluster on a fake clock.

No sleeps and no processes (except one ``sh -c`` for ``run_shell``): the fake cluster below answers the
same five HTTP reads as :class:`toolkit.ops.upgrade.HTTPCluster`, its state a function of ``FakeClock`` time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from toolkit.cli.app import run_app
from toolkit.client import ConsulError
from toolkit.ops.upgrade import (
    ExecResult,
    FakeClock,
    Gate,
    Member,
    Runner,
    RunOptions,
    Step,
    UpgradeError,
    build_plan,
    intermediate_versions,
    protocol_min_for,
    render_command,
    run_shell,
)

# ------------------------------------------------------------------ fake API answers


def member(name: str, ip: str, role: str = "consul", build: str = "0.1.0", status: int = 1,
           vsn: int = 2, vsn_min: int = 2) -> dict[str, Any]:
    tags = {"role": role, "build": f"{build}:ctk", "vsn": str(vsn), "vsn_min": str(vsn_min), "vsn_max": "3",
            "dc": "dc1"}
    if role == "consul":
        tags.update(port="8300", raft_vsn="3")
    return {"Name": name, "Addr": ip, "Port": 8301, "Tags": tags, "Status": status}


def raft(servers: dict[str, str], leader: str) -> dict[str, Any]:
    return {"Servers": [{"ID": f"id-{n}", "Node": n, "Address": f"{ip}:8300", "Leader": n == leader, "Voter": True}
                        for n, ip in servers.items()], "Index": 1}


def health(servers: dict[str, str], leader: str, tolerance: int = 1, sick: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"Healthy": not sick, "FailureTolerance": tolerance, "Servers": [
        {"ID": f"id-{n}", "Name": n, "Address": f"{ip}:8300", "Leader": n == leader, "LastIndex": 100,
         "Healthy": n not in sick, "Voter": True} for n, ip in servers.items()]}


SERVERS = {"s1": "10.0.0.1", "s2": "10.0.0.2", "s3": "10.0.0.3"}


def three_servers_one_client(build: str = "0.1.0", **kw: Any) -> list[dict[str, Any]]:
    return [member(n, ip, build=build, **kw) for n, ip in SERVERS.items()] + \
        [member("c1", "10.0.0.9", role="node", build=build, **kw)]


# ------------------------------------------------------------------ planning


def test_order_is_followers_then_leader_then_clients() -> None:
    """Consul's upgrade guide: servers one at a time, the leader last, then clients (PR#17758)."""
    members = three_servers_one_client() + [member("a0", "10.0.0.8", role="node")]
    plan = build_plan(members, raft(SERVERS, "s1"), health(SERVERS, "s1"), "10.0.0.1:8300", "0.2.0")
    assert [(s.node, s.role, s.leader) for s in plan.steps] == [
        ("s2", "server", False), ("s3", "server", False), ("s1", "server", True),
        ("a0", "client", False), ("c1", "client", False)]
    assert plan.leader == "s1" and plan.failure_tolerance == 1 and plan.servers == 3
    assert plan.warnings == ()


def test_nodes_at_the_target_are_skipped_and_left_members_ignored() -> None:
    members = three_servers_one_client()
    members[1] = member("s2", "10.0.0.2", build="0.2.0")
    members.append(member("old", "10.0.0.7", role="node", status=3))
    plan = build_plan(members, raft(SERVERS, "s1"), health(SERVERS, "s1"), "10.0.0.1:8300", "0.2.0")
    s2 = next(s for s in plan.steps if s.node == "s2")
    assert (s2.action, s2.note) == ("skip", "already at 0.2.0")
    assert [s.node for s in plan.pending] == ["s3", "s1", "c1"]
    assert "old" not in {s.node for s in plan.steps}


def test_leader_found_from_member_tags_when_raft_configuration_is_unreadable() -> None:
    plan = build_plan(three_servers_one_client(), None, None, "10.0.0.3:8300", "0.2.0")
    assert plan.leader == "s3" and plan.steps[2].node == "s3"
    assert {w.kind for w in plan.warnings} == {"health-unavailable"}


@pytest.mark.parametrize(("current", "target", "via"), [
    ("0.1.0", "0.2.0", []),
    ("0.1.4", "0.1.9", []),
    ("0.1.0", "0.3.0", ["0.2.x"]),
    ("0.1.0", "0.4.2", ["0.2.x", "0.3.x"]),
    ("0.9.1", "1.0.0", []),
    ("0.9.1", "1.2.0", ["1.0.x", "1.1.x"]),
    ("0.1.0", "2.0.0", ["1.0.x"]),
    ("0.3.0", "0.1.0", []),  # a downgrade is its own warning
    ("dev", "0.2.0", []),
])
def test_intermediate_versions(current: str, target: str, via: list[str]) -> None:
    """ctk's rule: at most one minor version per step, or to the next major's .0."""
    assert intermediate_versions(current, target) == via


def test_version_jump_warns_and_blocks() -> None:
    members = three_servers_one_client()
    members[3] = member("c1", "10.0.0.9", role="node", build="0.2.5")
    plan = build_plan(members, raft(SERVERS, "s1"), health(SERVERS, "s1"), "10.0.0.1:8300", "0.3.0")
    (jump,) = [w for w in plan.warnings if w.kind == "version-jump"]
    assert jump.blocking
    assert jump.message == "0.1.0 → 0.3.0 skips releases (s1, s2, s3): upgrade through 0.2.x first"


def test_downgrade_warns() -> None:
    plan = build_plan(three_servers_one_client("0.3.0"), raft(SERVERS, "s1"), health(SERVERS, "s1"),
                      "10.0.0.1:8300", "0.2.0")
    assert [(w.kind, w.blocking) for w in plan.warnings] == [("downgrade", True)]


@pytest.mark.parametrize(("servers", "tolerance", "expect"), [
    (3, 1, False),
    (3, 0, True),  # one more failure during a restart would lose quorum
    (1, 0, True),  # a single server: unavailable while it restarts
])
def test_no_failure_tolerance_warns(servers: int, tolerance: int, expect: bool) -> None:
    names = dict(list(SERVERS.items())[:servers])
    members = [member(n, ip) for n, ip in names.items()]
    plan = build_plan(members, raft(names, "s1"), health(names, "s1", tolerance), "10.0.0.1:8300", "0.2.0")
    found = [w for w in plan.warnings if w.kind == "no-failure-tolerance"]
    assert bool(found) == expect
    assert not any(w.blocking for w in found)  # enforced per server step by run, not at plan time


def test_protocol_two_step_warning_then_second_step_restarts_pinned_members() -> None:
    """Consul's -protocol upgrade: new build pinned to the old protocol everywhere, then unpinned."""
    first = build_plan(three_servers_one_client(vsn=2), raft(SERVERS, "s1"), health(SERVERS, "s1"),
                       "10.0.0.1:8300", "0.2.0", target_vsn_min=3)
    (w,) = first.warnings
    assert (w.kind, w.blocking) == ("protocol", True)
    assert "-protocol=2" in w.message and "s1, s2, s3" in w.message and "then run again without the pin" in w.message
    # After the pinned pass: everyone runs 0.2.0 but still speaks 2 — restart again, nobody skipped.
    second = build_plan(three_servers_one_client("0.2.0", vsn=2), raft(SERVERS, "s1"), health(SERVERS, "s1"),
                        "10.0.0.1:8300", "0.2.0", target_vsn_min=3)
    assert {s.action for s in second.steps} == {"restart"}
    assert [(x.kind, x.blocking) for x in second.warnings] == [("protocol-second-step", False)]


def test_protocol_min_of_the_target() -> None:
    members = [Member.from_json(m) for m in three_servers_one_client()]
    newer = Member.from_json(member("s9", "10.0.0.99", build="0.2.0", vsn=3, vsn_min=3))
    assert protocol_min_for("0.2.0", [*members, newer]) == 3
    assert protocol_min_for("0.2.0", members, local=("0.2.0", 2)) == 2
    assert protocol_min_for("1.9.0", members, local=("0.2.0", 2)) is None


def test_failed_member_is_reported() -> None:
    members = three_servers_one_client()
    members[2] = member("s3", "10.0.0.3", status=4)
    plan = build_plan(members, raft(SERVERS, "s1"), health(SERVERS, "s1", 0, sick=("s3",)), "10.0.0.1:8300",
                      "0.2.0")
    assert {w.kind for w in plan.warnings} == {"not-alive", "no-failure-tolerance"}


def test_command_template_is_filled_and_quoted() -> None:
    step = Step("web 1", "10.0.0.5", "client", "0.1.0", "upgrade")
    assert render_command("ssh {address} restart {node}", step) == "ssh 10.0.0.5 restart 'web 1'"
    with pytest.raises(UpgradeError, match=r"unknown placeholder \{host\}; the placeholders are \{node\}"):
        render_command("restart {host}", step)
    with pytest.raises(UpgradeError, match="positional placeholder"):
        render_command("restart {}", step)


def test_run_shell_checks_status_and_captures_output() -> None:
    done = run_shell("echo out; echo err >&2; exit 3", timeout_s=10)
    assert done.returncode == 3 and done.output.split() == ["out", "err"]


# ------------------------------------------------------------------ a fake cluster for the runner


@dataclass
class FakeNode:
    name: str
    ip: str
    server: bool
    build: str = "0.1.0"
    up_at: float | None = None  # None: running; inf: never comes back


class FakeCluster:
    """Answers the upgrade's HTTP reads from a model; ``execute`` restarts a node onto ``new_build``.

    A restart takes ``restart_s``; a restarted server is healthy ``catch_up_s`` later (until then it
    trails the leader's log by ``lag``); when the leader restarts, a new one is elected ``election_s`` later.
    """

    def __init__(self, clock: FakeClock, n_servers: int = 3, clients: tuple[str, ...] = ("c1",),
                 leader: str = "s1") -> None:
        self.clock = clock
        self.nodes = {f"s{i}": FakeNode(f"s{i}", f"10.0.0.{i}", True) for i in range(1, n_servers + 1)}
        self.nodes.update({c: FakeNode(c, f"10.0.1.{i}", False) for i, c in enumerate(clients, 1)})
        self._leader = leader
        self.new_build = "0.2.0"
        self.restart_s, self.catch_up_s, self.election_s, self.lag = 1.0, 2.0, 1.5, 500
        self.broken: set[str] = set()
        self.exit_codes: dict[str, ExecResult] = {}
        self.commands: list[str] = []
        self.leader_log: list[tuple[float, str]] = []
        self.unreachable_until = 0.0
        self.election_at = 0.0
        self.deposed = ""

    # the model
    def up(self, n: FakeNode) -> bool:
        return n.up_at is None or self.clock.now >= n.up_at

    def leader_name(self) -> str:
        """A restarted leader loses leadership; another server wins ``election_s`` later."""
        if self._leader:
            return self._leader
        if self.clock.now < self.election_at:
            return ""
        candidates = [n.name for n in self.nodes.values() if n.server and self.up(n) and n.name != self.deposed]
        if not candidates:
            return ""
        self._leader = candidates[0]
        self.leader_log.append((self.clock.now, self._leader))
        return self._leader

    def move_leader(self, name: str) -> None:
        self._leader = name
        self.leader_log.append((self.clock.now, name))

    def healthy(self, n: FakeNode) -> bool:
        return self.up(n) and (n.up_at is None or self.clock.now >= n.up_at + self.catch_up_s)

    def _check(self) -> None:
        if self.clock.now < self.unreachable_until:
            raise ConsulError("cannot reach the agent at 10.0.0.1:8500 (connection refused)")

    # ClusterAPI
    def members(self) -> list[dict[str, Any]]:
        self._check()
        return [member(n.name, n.ip, role="consul" if n.server else "node", build=n.build,
                       status=1 if self.up(n) else 4) for n in self.nodes.values()]

    def raft_configuration(self) -> dict[str, Any] | None:
        self._check()
        leader = self.leader_name()
        return raft({n.name: n.ip for n in self.nodes.values() if n.server}, leader) if leader else None

    def autopilot_health(self) -> dict[str, Any] | None:
        self._check()
        leader = self.leader_name()
        if not leader:
            return None
        servers = [n for n in self.nodes.values() if n.server]
        healthy = sum(self.healthy(n) for n in servers)
        out = health({n.name: n.ip for n in servers}, leader, max(0, healthy - (len(servers) // 2 + 1)),
                     sick=tuple(n.name for n in servers if not self.healthy(n)))
        for s in out["Servers"]:
            if s["Name"] in {n.name for n in servers if self.up(n) and not self.healthy(n)}:
                s["LastIndex"] -= self.lag
        return out

    def leader(self) -> str:
        self._check()
        name = self.leader_name()
        return f"{self.nodes[name].ip}:8300" if name else ""

    def snapshot(self) -> bytes:
        self._check()
        return b"snapshot-at-" + str(self.clock.now).encode()

    # Execute
    def execute(self, command: str, timeout_s: float) -> ExecResult:
        self.commands.append(command)
        name = command.split()[-1]
        if name in self.exit_codes:
            return self.exit_codes[name]
        n = self.nodes[name]
        if name == self._leader:
            self._leader, self.deposed, self.election_at = "", name, self.clock.now + self.election_s
        n.up_at = float("inf") if name in self.broken else self.clock.now + self.restart_s
        if name not in self.broken:
            n.build = self.new_build
        return ExecResult(0, f"restarted {name}\n")


def plan_of(fake: FakeCluster, target: str = "0.2.0") -> Any:
    return build_plan(fake.members(), fake.raft_configuration(), fake.autopilot_health(), fake.leader(), target)


def runner(fake: FakeCluster, clock: FakeClock, **kw: Any) -> Runner:
    opts = RunOptions(**{"target": "0.2.0", "exec_template": "restart {node}", "stabilize_s": 10.0,
                         "gate_timeout_s": 120.0, **kw})
    return Runner(fake, opts, clock=clock, execute=fake.execute)


def test_run_upgrades_every_node_leader_last_behind_the_gates(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = FakeCluster(clock)
    start = clock.now
    result = runner(fake, clock, snapshot_dir=tmp_path / "snaps").run(plan_of(fake))
    assert result.ok, result.error
    assert fake.commands == ["restart s2", "restart s3", "restart s1", "restart c1"]
    assert {n.build for n in fake.nodes.values()} == {"0.2.0"}
    by_node = {s.step.node: s for s in result.steps}
    assert [g.gate for g in by_node["s2"].gates] == [Gate.ALIVE, Gate.LEADER, Gate.CAUGHT_UP, Gate.STABLE]
    assert [g.gate for g in by_node["c1"].gates] == [Gate.ALIVE, Gate.LEADER, Gate.STABLE]
    assert all(g.passed for s in result.steps for g in s.gates)
    # The caught-up gate waited for the restarted server's log; stability held for the full 10 s.
    assert by_node["s2"].gates[2].seconds >= fake.catch_up_s
    assert all(s.gates[-1].seconds >= 10.0 for s in result.steps)
    # Restarting the leader cost one election; a new leader was found before the next step.
    assert [name for _, name in fake.leader_log] == ["s2"]
    snaps = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert len(snaps) == 4 and all(p.endswith(".snap") for p in snaps)
    assert {p.split("-")[0] for p in snaps} == {"s1", "s2", "s3", "c1"}
    assert clock.now - start < 4 * 20  # fake time only: nothing slept


def test_a_node_that_does_not_come_back_stops_the_run_at_the_alive_gate() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock)
    fake.broken.add("s3")
    result = runner(fake, clock, gate_timeout_s=30.0).run(plan_of(fake))
    assert not result.ok
    assert result.error.startswith("s3: gate 'alive with new build 0.2.0' not passed within 30s (s3 is failed")
    assert "stopped before the next node" in result.error
    assert fake.commands == ["restart s2", "restart s3"]  # s1 and c1 untouched
    assert fake.nodes["s1"].build == "0.1.0" and fake.nodes["c1"].build == "0.1.0"
    assert [s.result for s in result.steps] == ["upgraded", "failed"]
    assert result.steps[-1].gates[-1].seconds == pytest.approx(30.0)


def test_exec_failure_stops_with_its_status_and_output() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock)
    fake.exit_codes["s2"] = ExecResult(255, "ssh: connect to host 10.0.0.2 port 22: Connection refused\n")
    result = runner(fake, clock).run(plan_of(fake))
    assert result.error == ("s2: --exec exited with status 255: restart s2\n"
                            "ssh: connect to host 10.0.0.2 port 22: Connection refused")
    assert fake.commands == ["restart s2"]


def test_refuses_to_restart_a_server_with_zero_failure_tolerance_unless_forced() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock)
    fake.nodes["s3"].up_at = float("inf")  # already down: tolerance 0
    result = runner(fake, clock).run(plan_of(fake))
    assert result.error.startswith("refusing to restart s2: failure tolerance is 0 with 3 servers (unhealthy: s3)")
    assert fake.commands == []
    forced = runner(fake, clock, force=True, gate_timeout_s=5.0).run(plan_of(fake))
    assert fake.commands == ["restart s2"]  # --force goes on; the stable gate then fails on s3
    assert "s2: gate 'cluster stable'" in forced.error and "unhealthy: s3" in forced.error


def test_blocking_warnings_stop_the_run_before_anything_happens() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock)
    result = runner(fake, clock, target="0.3.0").run(plan_of(fake, "0.3.0"))
    assert result.error.startswith("refusing to start: 0.1.0 → 0.3.0 skips releases")
    assert fake.commands == []


def test_stability_restarts_counting_when_the_leader_changes() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock, clients=())
    plan = plan_of(fake)

    class Flip:  # move the leadership 5 s into s2's stable gate
        def step_started(self, step: Step, command: str) -> None: ...
        def step_finished(self, result: Any) -> None: ...
        def gate_finished(self, step: Step, result: Any) -> None: ...

        def gate_waiting(self, step: Step, gate: Gate, elapsed_s: float, detail: str) -> None:
            if step.node == "s2" and gate is Gate.STABLE and elapsed_s >= 5.0 and not fake.leader_log:
                fake.move_leader("s3")

    opts = RunOptions(target="0.2.0", exec_template="restart {node}", stabilize_s=10.0)
    result = Runner(fake, opts, clock=clock, execute=fake.execute, reporter=Flip()).run(plan)
    assert result.ok, result.error
    s2 = result.steps[0]
    assert s2.gates[-1].gate is Gate.STABLE and s2.gates[-1].seconds >= 15.0
    # s3 became leader, so s1 (the old leader, now a follower) goes before it: leader last still holds.
    assert fake.commands == ["restart s2", "restart s1", "restart s3"]


def test_leadership_moving_to_a_pending_server_sends_it_last() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock, clients=())
    plan = plan_of(fake)  # s2, s3, s1
    fake.move_leader("s2")
    result = runner(fake, clock, stabilize_s=1.0).run(plan)
    assert result.ok, result.error
    assert fake.commands == ["restart s3", "restart s1", "restart s2"]
    assert result.steps[-1].step.leader and "moved here" in result.steps[-1].step.note


def test_agent_unreachable_while_restarting_counts_as_not_yet() -> None:
    """The --http-addr agent may be the one restarting: connection refused is "wait", not "fail"."""
    clock = FakeClock()
    fake = FakeCluster(clock, clients=())

    def execute(command: str, timeout_s: float) -> ExecResult:
        fake.unreachable_until = clock.now + 3.0
        return fake.execute(command, timeout_s)

    opts = RunOptions(target="0.2.0", exec_template="restart {node}", stabilize_s=1.0)
    result = Runner(fake, opts, clock=clock, execute=execute).run(plan_of(fake))
    assert result.ok, result.error
    assert result.steps[0].gates[0].seconds >= 3.0


def test_dry_run_renders_commands_and_touches_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = FakeCluster(clock)
    result = runner(fake, clock, dry_run=True, snapshot_dir=tmp_path,
                    exec_template="ssh {address} sudo systemctl restart ctk").run(plan_of(fake))
    assert result.ok
    assert [(s.step.node, s.result, s.command) for s in result.steps] == [
        ("s2", "dry-run", "ssh 10.0.0.2 sudo systemctl restart ctk"),
        ("s3", "dry-run", "ssh 10.0.0.3 sudo systemctl restart ctk"),
        ("s1", "dry-run", "ssh 10.0.0.1 sudo systemctl restart ctk"),
        ("c1", "dry-run", "ssh 10.0.1.1 sudo systemctl restart ctk")]
    assert fake.commands == [] and list(tmp_path.iterdir()) == []


def test_json_shape_of_a_run() -> None:
    clock = FakeClock()
    fake = FakeCluster(clock, clients=())
    fake.nodes["s2"].build = "0.2.0"
    data = runner(fake, clock, stabilize_s=0.0).run(plan_of(fake)).to_json()
    assert data["Completed"] is True and data["Error"] == ""
    assert [(s["Node"], s["Result"]) for s in data["Steps"]] == [("s2", "skipped"), ("s3", "upgraded"),
                                                                  ("s1", "upgraded")]
    assert [g["Gate"] for g in data["Steps"][1]["Gates"]] == [
        "alive with new build", "leader elected", "log caught up", "cluster stable"]


# ------------------------------------------------------------------ CLI flag errors (no agent needed)


@pytest.mark.parametrize(("args", "message"), [
    (["upgrade", "run", "--exec", "x", "--stabilize", "soon"], "--stabilize: time: invalid duration 'soon'"),
    (["upgrade", "run", "--exec", "x", "--gate-timeout", "-1s"], "--gate-timeout: must not be negative"),
    (["upgrade", "plan", "--to", "latest"], "--to 'latest': expected a version such as 1.2.3"),
    (["upgrade", "run", "--exec", "ssh {host} restart"], "--exec 'ssh {host} restart': unknown placeholder {host}"),
])
def test_bad_flags_are_one_line_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
