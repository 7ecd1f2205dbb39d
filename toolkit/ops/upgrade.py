"""Rolling upgrades that never lose quorum: the plan (pure) and the runner (clock, exec and API injected).

Consul's upgrade guide in code. Most failed upgrades restarted the leader before its followers, or the
next server before the previous one had rejoined and caught up (consul#2172, #2889, PR#17758), so:

* **Order.** Servers first — followers one at a time, the leader last, so it only ever replicates to
  same-or-newer peers — then clients. The leader is re-read before every server step: if leadership
  moved to a server still waiting its turn, that server goes last instead.
* **Gates** after every restart, each with its own timeout, in this order: the node is *alive* in the
  member list *with the new build*; a *leader* exists; (servers) the node's log has *caught up*
  (autopilot health: Healthy and LastIndex within ``max_lag`` of the leader's); the cluster has been
  *stable* (same leader, every server healthy) for ``stabilize_s``. The first gate that fails stops the
  run — the next node is never touched.
* **Refusals.** A server is never restarted while autopilot's FailureTolerance is 0 in a multi-server
  cluster (one more failure during the restart would lose quorum), and a plan with blocking warnings
  is not started, both unless ``force``.

ctk's version rule: one step may move one minor version (0.1.x → 0.2.x), or from any minor to the next
major's .0 (0.9.x → 1.0.x). A longer jump (0.1.x → 0.3.x) names the intermediate versions to pass
through; Consul itself only promises upgrades between adjacent releases (PR#8678, consul#4046).

Protocol versions (the ``vsn``/``vsn_min`` member tags): when the target's ``vsn_min`` is above what a
member speaks now, agents must be upgraded twice — first restarted on the new build pinned to the old
protocol (``-protocol=<old>``), then, once every agent runs the new build, restarted without the pin.
A member already at the target build but still speaking an old protocol gets a second restart
(``restart`` action) instead of being skipped.

Everything speaks the HTTP API only (members, Raft configuration, autopilot health, status/leader,
snapshot), so the same plan runs against HashiCorp Consul.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from agent.durations import format_duration
from toolkit.client import ConsulClient, ConsulError
from toolkit.dash.model import MEMBER_STATUS, int_or_none

__all__ = [
    "ALIVE", "ClusterAPI", "Clock", "ExecResult", "FakeClock", "Finding", "Gate", "GateResult", "HTTPCluster",
    "Member", "Plan", "Reporter", "RunOptions", "RunResult", "Runner", "Step", "StepResult", "UpgradeError",
    "build_plan", "intermediate_versions", "parse_version", "protocol_min_for", "render_command", "run_shell",
]

ALIVE = 1  # serf member status: 0 none, 1 alive, 2 leaving, 3 left, 4 failed
MAX_VERSION_STEPS = 20  # longer paths are summarised; nobody walks 20 releases in one sitting


class UpgradeError(Exception):
    """A plan or run that cannot go on; the message names the node and the reason, in one line."""


# ------------------------------------------------------------------ versions


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``"1.8.3"``, ``"v0.2"``, ``"1.9.0-beta1"`` → (major, minor, patch); None for anything else."""
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def same_build(a: str, b: str) -> bool:
    return a.strip().lstrip("v") == b.strip().lstrip("v")


def intermediate_versions(current: str, target: str) -> list[str]:
    """The releases to pass through on the way from ``current`` to ``target`` (ctk's rule, module doc).

    ``0.1.4 → 0.3.0`` gives ``["0.2.x"]``; ``0.9.1 → 1.2.0`` gives ``["1.0.x", "1.1.x"]``; an adjacent
    step, a downgrade or an unparseable version gives ``[]``.
    """
    cur, tgt = parse_version(current), parse_version(target)
    if cur is None or tgt is None or tgt[:2] <= cur[:2]:
        return []
    major, minor = cur[0], cur[1]
    steps: list[str] = []
    while len(steps) < MAX_VERSION_STEPS:
        if major == tgt[0]:
            if tgt[1] - minor <= 1:
                break
            minor += 1
        else:
            major, minor = major + 1, 0
            if (major, minor) == tgt[:2]:
                break
        steps.append(f"{major}.{minor}.x")
    return steps


def protocol_min_for(target: str, members: Iterable[Member], local: tuple[str, int] | None = None) -> int | None:
    """The gossip protocol (``vsn_min``) the target build requires, when it can be known.

    From a member that already runs the target build, else from ``local`` (this ctk's own version and
    protocol minimum) when the target is that version; None when nothing says.
    """
    for m in members:
        if same_build(m.build, target) and m.vsn_min is not None:
            return m.vsn_min
    if local is not None and same_build(local[0], target):
        return local[1]
    return None


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True, slots=True)
class Member:
    """One ``/v1/agent/members`` entry, reduced to what an upgrade needs."""

    name: str
    address: str
    role: str  # "server" (role=consul) | "client" (role=node, or anything else)
    build: str  # the ``build`` tag up to ":" ("" when absent)
    status: int
    vsn: int | None = None
    vsn_min: int | None = None
    vsn_max: int | None = None
    raft_vsn: int | None = None
    port: int | None = None  # the server RPC port tag (servers only)

    @classmethod
    def from_json(cls, m: dict[str, Any]) -> Member:
        tags = m.get("Tags") or {}
        return cls(name=str(m.get("Name", "")), address=str(m.get("Addr", "")),
                   role="server" if tags.get("role") == "consul" else "client",
                   build=str(tags.get("build", "")).split(":")[0], status=int(m.get("Status", 0)),
                   vsn=int_or_none(tags.get("vsn")), vsn_min=int_or_none(tags.get("vsn_min")), vsn_max=int_or_none(tags.get("vsn_max")),
                   raft_vsn=int_or_none(tags.get("raft_vsn")), port=int_or_none(tags.get("port")))

    @property
    def status_name(self) -> str:
        return MEMBER_STATUS.get(self.status, "unknown")


@dataclass(frozen=True, slots=True)
class Step:
    """One node's turn. ``action``: ``upgrade`` (restart onto the target), ``restart`` (already on the
    target build but pinned to an old protocol: restart without the pin) or ``skip`` (already there)."""

    node: str
    address: str
    role: str
    current: str
    action: str
    leader: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"Node": self.node, "Address": self.address, "Role": self.role, "Leader": self.leader,
                "Current": self.current, "Action": self.action, "Note": self.note}


@dataclass(frozen=True, slots=True)
class Finding:
    """A warning about the plan. ``blocking`` ones stop ``run`` unless ``--force``."""

    kind: str
    message: str
    blocking: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"Kind": self.kind, "Message": self.message, "Blocking": self.blocking}


@dataclass(frozen=True, slots=True)
class Plan:
    target: str
    steps: tuple[Step, ...]
    warnings: tuple[Finding, ...]
    leader: str = ""  # node name ("" when there is none)
    servers: int = 0  # servers in the Raft configuration
    failure_tolerance: int | None = None  # autopilot's, None when unreadable

    @property
    def pending(self) -> list[Step]:
        return [s for s in self.steps if s.action != "skip"]

    @property
    def blocking(self) -> list[Finding]:
        return [w for w in self.warnings if w.blocking]

    def to_json(self) -> dict[str, Any]:
        return {"Target": self.target, "Leader": self.leader, "Servers": self.servers,
                "FailureTolerance": self.failure_tolerance, "Steps": [s.to_json() for s in self.steps],
                "Warnings": [w.to_json() for w in self.warnings]}


def _names(nodes: Iterable[str]) -> str:
    return ", ".join(sorted(nodes))


def build_plan(members_json: list[dict[str, Any]], raft_json: dict[str, Any] | None,
               health_json: dict[str, Any] | None, leader_addr: str, target: str,
               target_vsn_min: int | None = None) -> Plan:
    """The upgrade order and its warnings, from the four API answers (pure: no I/O, no clock).

    ``raft_json``/``health_json`` may be None (unreadable: no leader, or a Consul without autopilot);
    ``leader_addr`` is ``/v1/status/leader`` ("" when there is no leader).
    """
    members = [Member.from_json(m) for m in members_json]
    members = [m for m in members if m.status != 3]  # left: gone for good, nothing to upgrade
    raft_servers = list((raft_json or {}).get("Servers") or [])
    leader = _leader_node(leader_addr, raft_servers, members)
    warnings: list[Finding] = []

    servers = [m for m in members if m.role == "server"]
    clients = [m for m in members if m.role != "server"]
    voter = {str(s.get("Node", "")): bool(s.get("Voter", True)) for s in raft_servers}
    followers = sorted((m for m in servers if m.name != leader), key=lambda m: (voter.get(m.name, True), m.name))
    ordered = followers + [m for m in servers if m.name == leader] + sorted(clients, key=lambda m: m.name)

    pinned = {m.name for m in members if target_vsn_min is not None and m.vsn is not None
              and m.vsn < target_vsn_min}
    steps = []
    for m in ordered:
        is_leader = m.name == leader
        if same_build(m.build, target) and m.name in pinned:
            steps.append(Step(m.name, m.address, m.role, m.build, "restart", is_leader,
                              f"on {target} but speaking protocol {m.vsn}: restart without the -protocol pin"))
        elif same_build(m.build, target):
            steps.append(Step(m.name, m.address, m.role, m.build, "skip", is_leader, f"already at {target}"))
        else:
            steps.append(Step(m.name, m.address, m.role, m.build or "?", "upgrade", is_leader,
                              "leader last" if is_leader and len(servers) > 1 else ""))

    # (a) version jumps and downgrades, grouped by the version members run now.
    by_version: dict[str, list[str]] = {}
    for m in members:
        if not same_build(m.build, target):
            by_version.setdefault(m.build, []).append(m.name)
    tgt = parse_version(target)
    for version, nodes in sorted(by_version.items()):
        cur = parse_version(version)
        if cur is None or tgt is None:
            warnings.append(Finding("unknown-version", f"cannot compare build {version or '(none)'!r} with "
                                    f"{target!r} ({_names(nodes)}): check the release notes by hand"))
        elif tgt < cur:
            warnings.append(Finding("downgrade", f"{_names(nodes)} run {version}, newer than {target}: "
                                    "downgrades are not supported (restore a snapshot instead)", blocking=True))
        elif via := intermediate_versions(version, target):
            warnings.append(Finding("version-jump", f"{version} → {target} skips releases ({_names(nodes)}): "
                                    f"upgrade through {', '.join(via)} first", blocking=True))

    # (b) failure tolerance: a restart is a failure the cluster must survive.
    tolerance = int_or_none((health_json or {}).get("FailureTolerance")) if health_json is not None else None
    n_servers = len(raft_servers) or len(servers)
    if n_servers == 1:
        warnings.append(Finding("no-failure-tolerance", "a single server: the cluster is unavailable while "
                                "it restarts (add servers for a rolling upgrade without downtime)"))
    elif tolerance == 0:
        warnings.append(Finding("no-failure-tolerance", f"failure tolerance is 0 with {n_servers} servers: "
                                "restarting any server would lose quorum; fix the unhealthy servers first "
                                "(run refuses unless --force)"))
    elif health_json is None and n_servers > 1:
        warnings.append(Finding("health-unavailable", "autopilot health is unreadable: failure tolerance "
                                "unknown (run refuses to restart servers unless --force)"))
    if not leader:
        warnings.append(Finding("no-leader", "the cluster has no leader: fix that before upgrading", blocking=True))

    # (c) protocol: the two-step -protocol upgrade.
    old = {m.name: m.vsn for m in members if m.name in pinned and not same_build(m.build, target)}
    if old:
        speaks = sorted({v for v in old.values() if v is not None})
        warnings.append(Finding(
            "protocol", f"{target} needs gossip protocol ≥ {target_vsn_min} but {_names(old)} speak "
            f"{'/'.join(map(str, speaks))}: two-step upgrade — first restart every agent on {target} pinned "
            f"with -protocol={speaks[0]} (run --force with a pinning --exec), then run again without the pin",
            blocking=True))
    elif pinned:
        warnings.append(Finding("protocol-second-step", f"{_names(pinned)} run {target} pinned to an old "
                                "protocol: the second step restarts them without -protocol"))

    for m in members:
        if m.status != ALIVE:
            warnings.append(Finding("not-alive", f"{m.name} is {m.status_name}: it counts against the "
                                    "failure tolerance until it is back"))
    known = {m.name for m in servers} | {m.address for m in servers}
    for s in raft_servers:
        if str(s.get("Node", "")) not in known and str(s.get("Address", "")).rpartition(":")[0] not in known:
            warnings.append(Finding("unknown-server", f"Raft server {s.get('Node') or s.get('ID')} "
                                    f"({s.get('Address')}) is not in the member list: it will not be upgraded"))
    return Plan(target, tuple(steps), tuple(warnings), leader, n_servers, tolerance)


def _leader_node(leader_addr: str, raft_servers: list[dict[str, Any]], members: list[Member]) -> str:
    if not leader_addr:
        return ""
    for s in raft_servers:
        if s.get("Address") == leader_addr and s.get("Node"):
            return str(s["Node"])
    ip, _, port = leader_addr.rpartition(":")
    for m in members:
        if m.role == "server" and m.address == ip and (m.port is None or str(m.port) == port):
            return m.name
    for s in raft_servers:  # a Consul that answers configuration with Leader flags only
        if s.get("Leader"):
            return str(s.get("Node", ""))
    return ""


# ------------------------------------------------------------------ I/O seams


class ClusterAPI(Protocol):
    """The five HTTP reads an upgrade needs. :class:`HTTPCluster` is the real one."""

    def members(self) -> list[dict[str, Any]]: ...

    def raft_configuration(self) -> dict[str, Any] | None: ...

    def autopilot_health(self) -> dict[str, Any] | None: ...

    def leader(self) -> str: ...

    def snapshot(self) -> bytes: ...


class HTTPCluster:
    """:class:`ClusterAPI` over :class:`ConsulClient`: works against ctk's agent and HashiCorp Consul."""

    POLL_TIMEOUT_S = 5.0  # one gate poll must not hang on an agent that is restarting

    def __init__(self, client: ConsulClient) -> None:
        self.client = client

    def members(self) -> list[dict[str, Any]]:
        return self.client.members()

    def raft_configuration(self) -> dict[str, Any] | None:
        """Read with ``?stale`` so a leaderless cluster can still be planned (and shown as such)."""
        r = self.client.get("/v1/operator/raft/configuration", params={"stale": ""}, ok=(200, 404, 500),
                            timeout_s=self.POLL_TIMEOUT_S)
        return r.json() if r.status == 200 else None  # type: ignore[no-any-return]

    def autopilot_health(self) -> dict[str, Any] | None:
        """None when there is no answer to use (no leader: 500; a Consul without autopilot: 404)."""
        r = self.client.get("/v1/operator/autopilot/health", ok=(200, 429, 404, 500), timeout_s=self.POLL_TIMEOUT_S)
        return r.json() if r.status in (200, 429) else None  # type: ignore[no-any-return]

    def leader(self) -> str:
        return str(self.client.get("/v1/status/leader", timeout_s=self.POLL_TIMEOUT_S).json() or "")

    def snapshot(self) -> bytes:
        return self.client.get("/v1/snapshot", timeout_s=120).body


@dataclass(frozen=True, slots=True)
class ExecResult:
    returncode: int
    output: str


Execute = Callable[[str, float], ExecResult]


def run_shell(command: str, timeout_s: float) -> ExecResult:
    """Run ``command`` with ``sh -c``; stdout and stderr together. A background process the command
    starts must not keep stdout open (redirect it), or this waits for it until the timeout."""
    try:
        p = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else ""
        return ExecResult(-1, out + f"\n(timed out after {timeout_s:g}s)")
    return ExecResult(p.returncode, p.stdout.decode(errors="replace"))


def render_command(template: str, step: Step) -> str:
    """Fill ``{node}`` and ``{address}`` (shell-quoted). Raises UpgradeError for any other placeholder."""
    try:
        return template.format_map({"node": shlex.quote(step.node), "address": shlex.quote(step.address)})
    except KeyError as err:
        why = f"unknown placeholder {{{err.args[0]}}}"
    except ValueError as err:  # "{}" (positional) or an unmatched brace
        why = "positional placeholder {}" if "positional" in str(err) else \
            f"{err} (write a literal brace as {{{{ or }}}})"
    raise UpgradeError(f"--exec {template!r}: {why}; the placeholders are {{node}} and {{address}}")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """For tests: ``sleep`` advances time instantly, so a two-minute gate timeout costs nothing."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


# ------------------------------------------------------------------ the runner


class Gate(StrEnum):
    ALIVE = "alive with new build"
    LEADER = "leader elected"
    CAUGHT_UP = "log caught up"
    STABLE = "cluster stable"


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: Gate
    passed: bool
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"Gate": str(self.gate), "Passed": self.passed, "Seconds": round(self.seconds, 3),
                "Detail": self.detail}


@dataclass
class StepResult:
    step: Step
    result: str  # upgraded | restarted | skipped | dry-run | failed | refused
    command: str = ""
    snapshot: str = ""
    gates: list[GateResult] = field(default_factory=list)
    output: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**self.step.to_json(), "Result": self.result, "Command": self.command, "Snapshot": self.snapshot,
                "Gates": [g.to_json() for g in self.gates], "Output": self.output, "Error": self.error}


@dataclass
class RunResult:
    target: str
    steps: list[StepResult] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_json(self) -> dict[str, Any]:
        return {"Target": self.target, "Completed": self.ok, "Error": self.error,
                "Steps": [s.to_json() for s in self.steps]}


class Reporter(Protocol):
    """Progress for people; called on the runner's thread, in order. ``step_started`` comes just before
    ``--exec`` runs (after the quorum check and the snapshot); ``step_finished`` once per step, skips too."""

    def step_started(self, step: Step, command: str) -> None: ...

    def step_finished(self, result: StepResult) -> None: ...

    def gate_waiting(self, step: Step, gate: Gate, elapsed_s: float, detail: str) -> None: ...

    def gate_finished(self, step: Step, result: GateResult) -> None: ...


class NullReporter:
    def step_started(self, step: Step, command: str) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        pass

    def gate_waiting(self, step: Step, gate: Gate, elapsed_s: float, detail: str) -> None:
        pass

    def gate_finished(self, step: Step, result: GateResult) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RunOptions:
    target: str
    exec_template: str
    snapshot_dir: Path | None = None
    gate_timeout_s: float = 120.0  # per gate, and for the --exec command itself
    stabilize_s: float = 10.0  # leader unchanged and every server healthy for this long
    max_lag: int = 10  # a restarted server's LastIndex may trail the leader's by this many entries
    poll_s: float = 0.5
    force: bool = False
    dry_run: bool = False


class Runner:
    """Performs a :class:`Plan`, one node at a time; never continues after a failure.

    ``api``, ``clock`` and ``execute`` are the only ways out, so tests drive it with fakes and no sleeps.
    """

    def __init__(self, api: ClusterAPI, options: RunOptions, *, clock: Clock | None = None,
                 execute: Execute = run_shell, reporter: Reporter | None = None) -> None:
        self.api = api
        self.opts = options
        self.clock: Clock = clock or SystemClock()
        self.execute = execute
        self.reporter: Reporter = reporter or NullReporter()

    def run(self, plan: Plan) -> RunResult:
        result = RunResult(plan.target)
        for step in plan.steps:  # fail on a bad template before anything happens
            render_command(self.opts.exec_template, step)
        if plan.blocking and not self.opts.force and not self.opts.dry_run:
            result.error = "refusing to start: " + "; ".join(w.message for w in plan.blocking) + " (or use --force)"
            return result
        queue = list(plan.steps)
        while queue:
            step = self._next(queue)
            if step.action == "skip":
                sr = StepResult(step, "skipped")
                self.reporter.step_finished(sr)
                result.steps.append(sr)
                continue
            sr = self._do_step(step)
            result.steps.append(sr)
            self.reporter.step_finished(sr)
            if sr.error:
                result.error = sr.error
                break
        return result

    def _next(self, queue: list[Step]) -> Step:
        """Pop the next step; a pending server that has become the leader meanwhile goes last among servers."""
        step = queue[0]
        pending_servers = [s for s in queue if s.role == "server" and s.action != "skip"]
        if step.role == "server" and step.action != "skip" and len(pending_servers) > 1 and not self.opts.dry_run:
            leader = self._leader_name()
            if leader == step.node:
                queue.remove(step)
                last = queue.index(pending_servers[-1])
                queue.insert(last + 1, replace(step, leader=True,
                                               note="leader last (leadership moved here during the run)"))
                step = queue[0]
        queue.remove(step)
        return step

    def _leader_name(self) -> str:
        try:
            addr = self.api.leader()
            raft = self.api.raft_configuration()
        except ConsulError:
            return ""
        for s in (raft or {}).get("Servers") or []:
            if s.get("Address") == addr:
                return str(s.get("Node", ""))
        return ""

    def _do_step(self, step: Step) -> StepResult:
        command = render_command(self.opts.exec_template, step)
        sr = StepResult(step, "dry-run", command)
        if self.opts.dry_run:
            return sr
        if step.role == "server" and not self.opts.force:
            refusal = self._quorum_refusal(step)
            if refusal:
                sr.result, sr.error = "refused", refusal
                return sr
        try:
            sr.snapshot = self._snapshot(step)
        except (ConsulError, OSError) as err:
            sr.result, sr.error = "failed", f"{step.node}: snapshot before the restart failed: {err}"
            return sr
        self.reporter.step_started(step, command)
        done = self.execute(command, self.opts.gate_timeout_s)
        sr.output = done.output
        if done.returncode != 0:
            tail = "\n".join(done.output.strip().splitlines()[-20:])
            sr.result = "failed"
            sr.error = f"{step.node}: --exec exited with status {done.returncode}: {command}" + (
                f"\n{tail}" if tail else "")
            return sr
        gates = [Gate.ALIVE, Gate.LEADER] + ([Gate.CAUGHT_UP] if step.role == "server" else []) + [Gate.STABLE]
        for gate in gates:
            gr = self._wait(step, gate)
            sr.gates.append(gr)
            self.reporter.gate_finished(step, gr)
            if not gr.passed:
                sr.result = "failed"
                sr.error = (f"{step.node}: gate '{self._label(gate)}' not passed within "
                            f"{_fmt_s(self.opts.gate_timeout_s)} ({gr.detail}); stopped before the next node")
                return sr
        sr.result = "upgraded" if step.action == "upgrade" else "restarted"
        return sr

    def _label(self, gate: Gate) -> str:
        return f"{gate} {self.opts.target}" if gate is Gate.ALIVE else str(gate)

    def _quorum_refusal(self, step: Step) -> str:
        try:
            health = self.api.autopilot_health()
        except ConsulError as err:
            return f"refusing to restart {step.node}: cannot read autopilot health ({err}); use --force to go on"
        if health is None:
            return (f"refusing to restart {step.node}: autopilot health is unavailable, failure tolerance "
                    "unknown; use --force to go on")
        servers = len(health.get("Servers") or [])
        if servers > 1 and int_or_none(health.get("FailureTolerance")) == 0:
            sick = [s.get("Name") or s.get("Address") for s in health.get("Servers") or [] if not s.get("Healthy")]
            why = f" (unhealthy: {_names(map(str, sick))})" if sick else ""
            return (f"refusing to restart {step.node}: failure tolerance is 0 with {servers} servers{why}; "
                    "a restart now would lose quorum. Use --force to go on anyway")
        return ""

    def _snapshot(self, step: Step) -> str:
        if self.opts.snapshot_dir is None:
            return ""
        blob = self.api.snapshot()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock.time()))
        path = self.opts.snapshot_dir / f"{step.node}-{stamp}.snap"
        self.opts.snapshot_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
        return str(path)

    def _wait(self, step: Step, gate: Gate) -> GateResult:
        """Poll one gate until it passes or ``gate_timeout_s`` runs out. API errors (the agent we ask may be
        the one restarting) count as "not yet", with the error as the detail."""
        checks: dict[Gate, Callable[[], tuple[bool, str]]] = {
            Gate.ALIVE: lambda: self._alive(step),
            Gate.LEADER: self._has_leader,
            Gate.CAUGHT_UP: lambda: self._caught_up(step),
            Gate.STABLE: _Stability(self.api, self.clock, self.opts.stabilize_s),
        }
        check = checks[gate]
        start = self.clock.monotonic()
        deadline = start + self.opts.gate_timeout_s
        detail = ""
        while True:
            try:
                ok, detail = check()
            except ConsulError as err:
                ok, detail = False, str(err)
            now = self.clock.monotonic()
            if ok:
                return GateResult(gate, True, now - start, detail)
            if now >= deadline:
                return GateResult(gate, False, now - start, detail)
            self.reporter.gate_waiting(step, gate, now - start, detail)
            self.clock.sleep(min(self.opts.poll_s, max(deadline - now, 0.0)))

    def _alive(self, step: Step) -> tuple[bool, str]:
        for m in map(Member.from_json, self.api.members()):
            if m.name == step.node:
                ok = m.status == ALIVE and same_build(m.build, self.opts.target)
                return ok, f"{m.name} is {m.status_name}, build {m.build or '?'}"
        return False, f"{step.node} is not in the member list"

    def _has_leader(self) -> tuple[bool, str]:
        leader = self.api.leader()
        return bool(leader), f"leader {leader}" if leader else "no leader"

    def _caught_up(self, step: Step) -> tuple[bool, str]:
        health = self.api.autopilot_health()
        if health is None:
            return False, "autopilot health unavailable"
        servers = health.get("Servers") or []
        me = next((s for s in servers if s.get("Name") == step.node), None) or next(
            (s for s in servers if str(s.get("Address", "")).rpartition(":")[0] == step.address), None)
        top = next((s for s in servers if s.get("Leader")), None)
        if me is None or top is None:
            return False, f"{step.node} not in autopilot health" if me is None else "no leader in autopilot health"
        lag = int(top.get("LastIndex") or 0) - int(me.get("LastIndex") or 0)
        ok = bool(me.get("Healthy")) and lag <= self.opts.max_lag
        return ok, f"{'healthy' if me.get('Healthy') else 'unhealthy'}, {lag} entries behind the leader"


class _Stability:
    """Gate 4: the same leader and every server healthy, continuously, for ``stabilize_s``."""

    def __init__(self, api: ClusterAPI, clock: Clock, stabilize_s: float) -> None:
        self.api, self.clock, self.stabilize_s = api, clock, stabilize_s
        self.leader = ""
        self.since: float | None = None

    def __call__(self) -> tuple[bool, str]:
        try:
            leader = self.api.leader()
            health = self.api.autopilot_health()
        except ConsulError as err:  # unobserved is not stable: start counting again
            self.leader, self.since = "", None
            return False, str(err)
        servers = (health or {}).get("Servers") or []
        sick = [str(s.get("Name") or s.get("Address")) for s in servers if not s.get("Healthy")]
        now = self.clock.monotonic()
        if not leader or health is None or sick or leader != self.leader:
            self.since = now if leader and health is not None and not sick else None
        self.leader = leader
        if self.since is None:
            why = "no leader" if not leader else "autopilot health unavailable" if health is None else \
                f"unhealthy: {_names(sick)}"
            return False, why
        stable_s = now - self.since
        return stable_s >= self.stabilize_s, f"stable for {stable_s:.1f}s of {_fmt_s(self.stabilize_s)}"


def _fmt_s(seconds: float) -> str:
    return format_duration(seconds)
