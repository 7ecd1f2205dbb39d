"""What the dashboard knows about a cluster, computed from plain HTTP API answers (pure: no I/O, no clock).

:class:`Sources` holds the raw answers (``None`` = that source could not be read); :meth:`ClusterView.build`
turns them into a view; :func:`assess` turns a view into one verdict with an exit code; :func:`diff` and
:class:`Timeline` turn successive views into a bounded list of timestamped changes. Everything here works
on the shapes HashiCorp Consul returns, which ctk's agent returns too.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CRITICAL", "OK", "WARNING", "CheckState", "ClusterView", "Event", "Instance", "Member", "Problem",
    "Server", "ServiceSummary", "Sources", "Timeline", "Verdict", "assess", "diff", "instances_from_health",
    "worst",
]

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
CHECK_RANK = {"passing": 0, "warning": 1, "critical": 2}
MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
MEMBER_ORDER = ("alive", "leaving", "left", "failed")
MAX_EVENTS_PER_KIND = 20  # one refresh that changes more than this is summarised, not listed line by line


def worst(statuses: Iterable[str]) -> str:
    """The worst of some check statuses (``passing`` when there are none); unknown values count as critical."""
    rank = max((CHECK_RANK.get(s, 2) for s in statuses), default=0)
    return ("passing", "warning", "critical")[rank]


@dataclass
class Sources:
    """Raw API answers. ``None`` means "not read" (error, ACL, not supported); ``errors`` says why."""

    agent: str = ""
    reachable: bool = True
    leader: str | None = None                      # /v1/status/leader: "ip:port", "" = no leader
    raft: dict[str, Any] | None = None             # /v1/operator/raft/configuration?stale
    autopilot: dict[str, Any] | None = None        # /v1/operator/autopilot/health (200 or 429 body)
    agent_self: dict[str, Any] | None = None       # /v1/agent/self
    members: list[dict[str, Any]] | None = None    # /v1/agent/members
    services: dict[str, list[str]] | None = None   # /v1/catalog/services
    instances: list[dict[str, Any]] | None = None  # /v1/catalog/service/<name> entries of every service
    checks: list[dict[str, Any]] | None = None     # /v1/health/state/any
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    address: str
    state: str                 # leader | follower | unknown
    voter: bool
    serf: str                  # alive | failed | left | leaving | unknown
    healthy: bool | None       # autopilot's opinion; None when autopilot could not be read
    last_contact: str = ""
    last_term: int | None = None
    last_index: int | None = None
    trails_by: int | None = None  # leader's commit index − this server's last log index
    stable_since: str = ""

    @property
    def failed(self) -> bool:
        return self.serf == "failed"

    def to_json(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name, "Address": self.address, "State": self.state,
                "Voter": self.voter, "SerfStatus": self.serf, "Healthy": self.healthy,
                "LastContact": self.last_contact, "LastTerm": self.last_term, "LastIndex": self.last_index,
                "TrailsBy": self.trails_by, "StableSince": self.stable_since}


@dataclass(frozen=True)
class Member:
    name: str
    address: str
    status: str
    role: str  # server | client | unknown

    def to_json(self) -> dict[str, Any]:
        return {"Name": self.name, "Address": self.address, "Status": self.status, "Type": self.role}


@dataclass(frozen=True)
class CheckState:
    node: str
    check_id: str
    name: str
    status: str
    output: str = ""
    service_id: str = ""
    service_name: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.node, self.check_id

    def to_json(self) -> dict[str, Any]:
        return {"Node": self.node, "CheckID": self.check_id, "Name": self.name, "Status": self.status,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": self.service_name}


@dataclass(frozen=True)
class Instance:
    service: str
    id: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    status: str                     # worst of its own checks and its node's checks
    checks: tuple[CheckState, ...]  # node checks first, then the service's

    @property
    def key(self) -> tuple[str, str]:
        return self.node, self.id

    def to_json(self) -> dict[str, Any]:
        return {"Service": self.service, "ID": self.id, "Node": self.node, "Address": self.address,
                "Port": self.port, "Tags": list(self.tags), "Status": self.status,
                "Checks": [c.to_json() for c in self.checks]}


@dataclass(frozen=True)
class ServiceSummary:
    name: str
    tags: tuple[str, ...]
    instances: tuple[Instance, ...]

    def count(self, status: str) -> int:
        return sum(1 for i in self.instances if i.status == status)

    @property
    def status(self) -> str:
        return worst(i.status for i in self.instances)

    def to_json(self, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"Name": self.name, "Tags": list(self.tags), "Instances": len(self.instances),
                               "Passing": self.count("passing"), "Warning": self.count("warning"),
                               "Critical": self.count("critical"), "Status": self.status}
        if detail:
            out["Nodes"] = [i.to_json() for i in self.instances]
        return out


def int_or_none(v: Any) -> int | None:
    """A JSON/tag value as an int, None when absent or not a number (tags are strings)."""
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _member_role(tags: dict[str, Any]) -> str:
    role = tags.get("role", "")
    return "server" if role == "consul" else "client" if role == "node" else "unknown"


@dataclass(frozen=True)
class ClusterView:
    """One consistent picture of the cluster at ``taken_at`` (unix seconds)."""

    taken_at: float
    agent: str = ""
    reachable: bool = True
    leader_address: str | None = None   # None: unknown (not read); "": no leader
    leader_name: str = ""
    term: int | None = None
    commit_index: int | None = None
    autopilot_healthy: bool | None = None
    failure_tolerance: int | None = None
    tolerance_source: str = ""          # autopilot | computed
    voters: int = 0
    quorum: int = 0
    healthy_voters: int = 0
    servers: tuple[Server, ...] = ()
    members: tuple[Member, ...] | None = None
    services: tuple[ServiceSummary, ...] | None = None
    checks: tuple[CheckState, ...] | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def has_leader(self) -> bool:
        return bool(self.leader_address)

    @property
    def quorum_ok(self) -> bool:
        return self.voters == 0 or self.healthy_voters >= self.quorum

    def members_by_status(self) -> dict[str, list[Member]]:
        out: dict[str, list[Member]] = {s: [] for s in MEMBER_ORDER}
        for m in self.members or ():
            out.setdefault(m.status, []).append(m)
        return out

    def instances(self) -> list[Instance]:
        return [i for s in self.services or () for i in s.instances]

    def service(self, name: str) -> ServiceSummary | None:
        return next((s for s in self.services or () if s.name == name), None)

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, src: Sources, now: float) -> ClusterView:
        stats = ((src.agent_self or {}).get("Stats") or {}).get("raft") or {}
        local_is_leader = str(stats.get("state", "")).lower() == "leader"
        servers, leader_commit = _servers(src, stats, local_is_leader)
        voters = [s for s in servers if s.voter]
        quorum = len(voters) // 2 + 1 if voters else 0
        healthy_voters = sum(1 for s in voters if _counts_healthy(s))
        ap = src.autopilot
        if ap is not None and ap.get("FailureTolerance") is not None:
            tolerance: int | None = int(ap["FailureTolerance"])
            source = "autopilot"
        elif voters:
            tolerance, source = healthy_voters - quorum, "computed"
        else:
            tolerance, source = None, ""
        term = int_or_none(stats.get("term"))
        if term is None:
            term = next((s.last_term for s in servers if s.state == "leader" and s.last_term), None)
        members = None
        if src.members is not None:
            members = tuple(sorted(
                (Member(str(m.get("Name", "")), f"{m.get('Addr', '')}:{m.get('Port', '')}",
                        MEMBER_STATUS.get(int_or_none(m.get("Status")) or 0, "unknown"), _member_role(m.get("Tags") or {}))
                 for m in src.members), key=lambda m: (m.role != "server", m.name)))
        checks = None
        if src.checks is not None:
            checks = tuple(CheckState(str(c.get("Node", "")), str(c.get("CheckID", "")), str(c.get("Name", "")),
                                      str(c.get("Status", "")), str(c.get("Output") or ""),
                                      str(c.get("ServiceID") or ""), str(c.get("ServiceName") or ""))
                           for c in src.checks)
        leader_name = ""
        if src.leader:
            leader_name = next((s.name for s in servers if s.address == src.leader and s.name), src.leader)
        return cls(
            taken_at=now, agent=src.agent, reachable=src.reachable, leader_address=src.leader,
            leader_name=leader_name, term=term, commit_index=leader_commit,
            autopilot_healthy=None if ap is None else bool(ap.get("Healthy")),
            failure_tolerance=tolerance, tolerance_source=source, voters=len(voters), quorum=quorum,
            healthy_voters=healthy_voters, servers=tuple(servers), members=members,
            services=_services(src, checks), checks=checks, errors=dict(src.errors))

    # ------------------------------------------------------------------- json

    def to_json(self) -> dict[str, Any]:
        by_status = self.members_by_status()
        return {
            "Agent": self.agent,
            "Reachable": self.reachable,
            "TakenAt": self.taken_at,
            "Leader": {"Address": self.leader_address, "Name": self.leader_name},
            "Term": self.term,
            "CommitIndex": self.commit_index,
            "Healthy": self.autopilot_healthy,
            "FailureTolerance": self.failure_tolerance,
            "FailureToleranceSource": self.tolerance_source,
            "Voters": self.voters,
            "Quorum": self.quorum,
            "HealthyVoters": self.healthy_voters,
            "Servers": [s.to_json() for s in self.servers],
            "Members": None if self.members is None else {
                "Counts": {k: len(v) for k, v in by_status.items()},
                "Failed": [m.to_json() for m in by_status.get("failed", [])],
                "All": [m.to_json() for m in self.members],
            },
            "Services": None if self.services is None else [s.to_json() for s in self.services],
            "Errors": self.errors,
        }


def _counts_healthy(s: Server) -> bool:
    if s.healthy is not None:
        return s.healthy
    return s.serf not in ("failed", "left")  # without autopilot: a voter counts unless gossip says it is gone


def _servers(src: Sources, stats: dict[str, Any], local_is_leader: bool) -> tuple[list[Server], int | None]:
    """Raft configuration (who is a server, who votes) merged with autopilot health and gossip status."""
    ap_servers = {str(s.get("ID", "")): s for s in (src.autopilot or {}).get("Servers") or []}
    members = {str(m.get("Name", "")): m for m in src.members or [] if (m.get("Tags") or {}).get("role") == "consul"}
    member_by_id = {str((m.get("Tags") or {}).get("id", "")): m for m in members.values()}
    if src.raft is not None:
        base = [{"ID": s.get("ID", ""), "Name": s.get("Node", ""), "Address": s.get("Address", ""),
                 "Voter": s.get("Voter", True)} for s in src.raft.get("Servers") or []]
    elif ap_servers:
        base = [{"ID": s.get("ID", ""), "Name": s.get("Name", ""), "Address": s.get("Address", ""),
                 "Voter": s.get("Voter", True)} for s in ap_servers.values()]
    else:
        base = []
    leader_commit = int_or_none(stats.get("commit_index")) if local_is_leader else None
    if leader_commit is None:
        leader_ap = next((s for s in ap_servers.values() if s.get("Leader")), None)
        leader_commit = int_or_none(leader_ap.get("LastIndex")) if leader_ap else int_or_none(stats.get("commit_index"))
    out = []
    for b in base:
        sid, name = str(b["ID"]), str(b["Name"])
        ap = ap_servers.get(sid)
        if ap and (not name or name == "(unknown)"):
            name = str(ap.get("Name") or name)
        member = member_by_id.get(sid) or members.get(name)
        serf = "unknown"
        if ap and ap.get("SerfStatus"):
            serf = str(ap["SerfStatus"])
        if member is not None:
            mstatus = MEMBER_STATUS.get(int_or_none(member.get("Status")) or 0, "unknown")
            if serf == "unknown" or mstatus == "failed":
                serf = mstatus
        address = str(b["Address"])
        is_leader = bool(src.leader) and address == src.leader
        state = "leader" if is_leader else "unknown" if src.leader is None else "follower"
        last_index = int_or_none(ap.get("LastIndex")) if ap else None
        reachable = ap is not None and serf != "failed" and (bool(last_index) or is_leader)
        trails = None
        if reachable and leader_commit is not None and last_index is not None:
            trails = max(0, leader_commit - last_index)
        out.append(Server(
            id=sid, name=name, address=address, state=state, voter=bool(b["Voter"]), serf=serf,
            healthy=None if ap is None else bool(ap.get("Healthy")),
            last_contact=str(ap.get("LastContact") or "") if ap else "",
            last_term=(int_or_none(ap.get("LastTerm")) or None) if ap else None, last_index=last_index, trails_by=trails,
            stable_since=str(ap.get("StableSince") or "") if ap else ""))
    out.sort(key=lambda s: (s.state != "leader", s.name))
    return out, leader_commit


def _services(src: Sources, checks: tuple[CheckState, ...] | None) -> tuple[ServiceSummary, ...] | None:
    if src.instances is None and src.services is None:
        return None
    node_checks: dict[str, list[CheckState]] = {}
    svc_checks: dict[tuple[str, str], list[CheckState]] = {}
    for c in checks or ():
        if c.service_id:
            svc_checks.setdefault((c.node, c.service_id), []).append(c)
        else:
            node_checks.setdefault(c.node, []).append(c)
    by_name: dict[str, list[Instance]] = {name: [] for name in src.services or {}}
    for e in src.instances or []:
        node = str(e.get("Node", ""))
        sid = str(e.get("ServiceID") or e.get("ServiceName") or "")
        mine = tuple(node_checks.get(node, ())) + tuple(svc_checks.get((node, sid), ()))
        name = str(e.get("ServiceName", ""))
        by_name.setdefault(name, []).append(Instance(
            service=name, id=sid, node=node, address=str(e.get("ServiceAddress") or e.get("Address") or ""),
            port=int_or_none(e.get("ServicePort")) or 0, tags=tuple(e.get("ServiceTags") or ()),
            status=worst(c.status for c in mine), checks=mine))
    return tuple(ServiceSummary(name, tuple(sorted(set((src.services or {}).get(name) or ()))),
                                tuple(sorted(insts, key=lambda i: (i.node, i.id))))
                 for name, insts in sorted(by_name.items()))


def instances_from_health(entries: Iterable[dict[str, Any]]) -> list[Instance]:
    """Instances from ``/v1/health/service/<name>`` entries (each has Node, Service and all its Checks)."""
    out = []
    for e in entries:
        node, svc = e.get("Node") or {}, e.get("Service") or {}
        checks = tuple(CheckState(str(c.get("Node", "")), str(c.get("CheckID", "")), str(c.get("Name", "")),
                                  str(c.get("Status", "")), str(c.get("Output") or ""),
                                  str(c.get("ServiceID") or ""), str(c.get("ServiceName") or ""))
                       for c in e.get("Checks") or [])
        checks = tuple(sorted(checks, key=lambda c: bool(c.service_id)))
        out.append(Instance(service=str(svc.get("Service", "")), id=str(svc.get("ID", "")),
                            node=str(node.get("Node", "")),
                            address=str(svc.get("Address") or node.get("Address") or ""),
                            port=int_or_none(svc.get("Port")) or 0, tags=tuple(svc.get("Tags") or ()),
                            status=worst(c.status for c in checks), checks=checks))
    return sorted(out, key=lambda i: (i.node, i.id))


# ------------------------------------------------------------------ verdict

@dataclass(frozen=True)
class Problem:
    level: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"Level": LEVEL_NAMES[self.level], "Message": self.message}


@dataclass(frozen=True)
class Verdict:
    """One answer to "is my cluster OK?": ``code`` 0 OK, 1 WARNING, 2 CRITICAL, and the reasons."""

    code: int
    problems: tuple[Problem, ...]

    @property
    def status(self) -> str:
        return LEVEL_NAMES[self.code]

    def line(self, limit: int = 3) -> str:
        if not self.problems:
            return "OK: leader present, quorum healthy, no failed servers, no critical checks"
        shown = [p.message for p in self.problems[:limit]]
        more = len(self.problems) - limit
        return f"{self.status}: " + "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        return {"Status": self.status, "ExitCode": self.code, "Verdict": self.line(),
                "Problems": [p.to_json() for p in self.problems]}


def _names(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" +{len(items) - limit} more" if len(items) > limit else "")


def assess(view: ClusterView) -> Verdict:
    """Critical: unreachable agent, no leader, a failed server, quorum lost, critical checks.
    Warning: failure tolerance 0, an unhealthy (lagging) server, warning checks, failed clients,
    unreadable Raft/autopilot data."""
    p: list[Problem] = []
    if not view.reachable:
        why = view.errors.get("agent", "") or f"agent {view.agent} unreachable"
        return Verdict(CRITICAL, (Problem(CRITICAL, why),))
    if view.leader_address == "":
        p.append(Problem(CRITICAL, "no cluster leader"))
    elif view.leader_address is None:
        p.append(Problem(WARNING, "leader unknown: " + view.errors.get("leader", "not read")))
    failed_servers = [s for s in view.servers if s.failed]
    if failed_servers:
        p.append(Problem(CRITICAL, f"failed server{'s' if len(failed_servers) > 1 else ''} "
                                   + _names(s.name or s.address for s in failed_servers)))
    if view.voters and not view.quorum_ok:
        p.append(Problem(CRITICAL, f"quorum lost: {view.healthy_voters} of {view.voters} voters healthy, "
                                   f"{view.quorum} needed"))
    elif view.failure_tolerance is not None and view.failure_tolerance < 0:
        p.append(Problem(CRITICAL, f"quorum at risk: failure tolerance {view.failure_tolerance}"))
    elif view.failure_tolerance == 0 and view.voters:
        p.append(Problem(WARNING, "failure tolerance 0: losing one more server loses quorum"))
    unhealthy = [s for s in view.servers if s.healthy is False and not s.failed]
    if unhealthy:
        p.append(Problem(WARNING, "unhealthy server" + ("s " if len(unhealthy) > 1 else " ")
                         + _names(f"{s.name} (trails by {s.trails_by})" if s.trails_by else s.name
                                  for s in unhealthy)))
    if view.autopilot_healthy is False and not failed_servers and not unhealthy:
        p.append(Problem(WARNING, "autopilot reports the cluster unhealthy"))
    if view.leader_address and view.tolerance_source == "" and not view.servers:
        p.append(Problem(WARNING, "cannot read Raft or autopilot state: "
                         + (view.errors.get("raft") or view.errors.get("autopilot") or "no data")))
    members = view.members_by_status()
    failed_clients = [m for m in members.get("failed", []) if m.role != "server"]
    failed_server_names = {s.name for s in failed_servers}
    failed_server_members = [m for m in members.get("failed", []) if m.role == "server"
                             and m.name not in failed_server_names]
    if failed_server_members:
        p.append(Problem(CRITICAL, "failed server member" + ("s " if len(failed_server_members) > 1 else " ")
                         + _names(m.name for m in failed_server_members)))
    covered = {m.name for m in members.get("failed", [])}
    crit_instances = [i for i in view.instances() if i.status == "critical"]
    if crit_instances:
        p.append(Problem(CRITICAL, f"{len(crit_instances)} critical instance{'s' if len(crit_instances) > 1 else ''}: "
                         + _names(f"{i.service} on {i.node}" for i in crit_instances)))
    in_instances = {(c.node, c.check_id) for i in crit_instances for c in i.checks}
    crit_checks = [c for c in view.checks or () if c.status == "critical" and c.key not in in_instances
                   and not (c.check_id == "serfHealth" and c.node in covered)]
    if crit_checks:
        p.append(Problem(CRITICAL, f"{len(crit_checks)} critical check{'s' if len(crit_checks) > 1 else ''}: "
                         + _names(f"{c.name or c.check_id} on {c.node}" for c in crit_checks)))
    if failed_clients:
        p.append(Problem(WARNING, f"failed client{'s' if len(failed_clients) > 1 else ''} "
                         + _names(m.name for m in failed_clients)))
    warn_checks = [c for c in view.checks or () if c.status == "warning"]
    if warn_checks:
        p.append(Problem(WARNING, f"{len(warn_checks)} warning check{'s' if len(warn_checks) > 1 else ''}: "
                         + _names(f"{c.name or c.check_id} on {c.node}" for c in warn_checks)))
    p.sort(key=lambda x: -x.level)
    return Verdict(max((x.level for x in p), default=OK), tuple(p))


# ----------------------------------------------------------------- timeline

@dataclass(frozen=True)
class Event:
    at: float
    kind: str      # leader | server | member | instance | check | agent
    level: str     # info | ok | warning | critical
    message: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"At": self.at, "Kind": self.kind, "Level": self.level, "Message": self.message,
                "Detail": self.detail}


def _first_line(text: str, limit: int = 100) -> str:
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _check_level(status: str) -> str:
    return {"passing": "ok", "warning": "warning"}.get(status, "critical")


def diff(old: ClusterView, new: ClusterView, last_leader: str = "") -> list[Event]:
    """What changed from ``old`` to ``new``, stamped ``new.taken_at``. Parts unread in either view are skipped.

    ``last_leader`` names the leader before a leaderless gap, so a gap still reads "leader changed: A → B".
    """
    at = new.taken_at
    ev: list[Event] = []
    if old.leader_address is not None and new.leader_address is not None and old.leader_address != new.leader_address:
        if new.leader_address:
            before = old.leader_name or last_leader or "none"
            ev.append(Event(at, "leader", "warning", f"leader changed: {before} → {new.leader_name}",
                            f"term {new.term}" if new.term else ""))
        else:
            ev.append(Event(at, "leader", "critical", f"leader lost (was {old.leader_name})"))
    ev += _server_events(old, new, at)
    if old.members is not None and new.members is not None:
        before_m = {m.name: m for m in old.members}
        after_m = {m.name: m for m in new.members}
        group: list[Event] = []
        for name, m in sorted(after_m.items()):
            prev = before_m.get(name)
            if prev is None:
                group.append(Event(at, "member", "info", f"member {name} joined ({m.status})"))
            elif prev.status != m.status:
                level = "critical" if m.status == "failed" else "ok" if m.status == "alive" else "info"
                group.append(Event(at, "member", level, f"member {name}: {prev.status} → {m.status}"))
        for name in sorted(before_m.keys() - after_m.keys()):
            group.append(Event(at, "member", "info", f"member {name} reaped"))
        ev += _capped(group, "member changes")
    if old.services is not None and new.services is not None:
        before_i = {(i.service, *i.key): i for i in old.instances()}
        after_i = {(i.service, *i.key): i for i in new.instances()}
        group = [Event(at, "instance", "info", f"registered {k[0]} ({k[2]} on {k[1]})")
                 for k in sorted(after_i.keys() - before_i.keys())]
        group += [Event(at, "instance", "warning", f"deregistered {k[0]} ({k[2]} on {k[1]})")
                  for k in sorted(before_i.keys() - after_i.keys())]
        ev += _capped(group, "instance changes")
    if old.checks is not None and new.checks is not None:
        before_c = {c.key: c for c in old.checks}
        group = []
        for c in sorted(new.checks, key=lambda c: c.key):
            was = before_c.get(c.key)
            if was is not None and was.status != c.status:
                where = f"{c.node}" + (f" ({c.service_id})" if c.service_id else "")
                group.append(Event(at, "check", _check_level(c.status),
                                   f"check {c.name or c.check_id} on {where}: {was.status} → {c.status}",
                                   _first_line(c.output)))
        ev += _capped(group, "check status changes")
    return ev


def _server_events(old: ClusterView, new: ClusterView, at: float) -> list[Event]:
    ev: list[Event] = []
    before = {s.id: s for s in old.servers}
    after = {s.id: s for s in new.servers}
    if not before or not after:
        return ev  # one side could not read the Raft configuration: nothing to compare
    for sid, s in after.items():
        prev = before.get(sid)
        if prev is None:
            ev.append(Event(at, "server", "info", f"server {s.name} added to Raft ({'voter' if s.voter else 'non-voter'})"))
            continue
        if prev.serf != s.serf and "unknown" not in (prev.serf, s.serf):
            level = "critical" if s.serf == "failed" else "ok" if s.serf == "alive" else "info"
            ev.append(Event(at, "server", level, f"server {s.name}: {prev.serf} → {s.serf}"))
        if prev.healthy is not None and s.healthy is not None and prev.healthy != s.healthy:
            ev.append(Event(at, "server", "ok" if s.healthy else "warning",
                            f"server {s.name} {'healthy again' if s.healthy else 'unhealthy'}"))
        if prev.voter != s.voter:
            ev.append(Event(at, "server", "info", f"server {s.name} is now a {'voter' if s.voter else 'non-voter'}"))
    for sid in before.keys() - after.keys():
        ev.append(Event(at, "server", "warning", f"server {before[sid].name} removed from Raft"))
    return ev


def _capped(events: list[Event], what: str) -> list[Event]:
    if len(events) <= MAX_EVENTS_PER_KIND:
        return events
    keep = events[: MAX_EVENTS_PER_KIND - 1]
    rest = events[MAX_EVENTS_PER_KIND - 1:]
    levels = Counter(e.level for e in rest)
    level = next((lv for lv in ("critical", "warning", "info", "ok") if levels[lv]), "info")
    return keep + [Event(rest[0].at, rest[0].kind, level, f"… and {len(rest)} more {what}")]


class Timeline:
    """The last ``maxlen`` changes, oldest first, computed by diffing each view with the last readable one."""

    def __init__(self, maxlen: int = 200) -> None:
        self.events: deque[Event] = deque(maxlen=maxlen)
        self.baseline: ClusterView | None = None
        self.last_leader = ""
        self._unreachable = False

    def add(self, event: Event) -> None:
        self.events.append(event)

    def observe(self, view: ClusterView) -> list[Event]:
        """Record what changed since the previous readable view; the first view only sets the baseline."""
        new: list[Event] = []
        if not view.reachable:
            if not self._unreachable:
                new.append(Event(view.taken_at, "agent", "critical", f"agent {view.agent} unreachable",
                                 _first_line(view.errors.get("agent", ""))))
            self._unreachable = True
        else:
            if self._unreachable:
                new.append(Event(view.taken_at, "agent", "ok", f"agent {view.agent} reachable again"))
                self._unreachable = False
            if self.baseline is not None:
                new += diff(self.baseline, view, self.last_leader)
            self.baseline = view
            if view.leader_name:
                self.last_leader = view.leader_name
        self.events.extend(new)
        return new
