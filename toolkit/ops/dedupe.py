"""Duplicate service instances: find them, choose the copy to keep, remove the rest so they stay gone.

Why not just ``/v1/catalog/deregister``: every agent owns its node's registrations and writes them back
into the catalog at its next anti-entropy full sync (every 1-2 minutes), so a catalog delete of a copy
whose agent is alive comes back (consul#3169, #1188, #8930). A copy is therefore removed through the
agent that owns it (``PUT /v1/agent/service/deregister/<id>`` on that node's agent); the catalog endpoint is
used only when that agent is gone (member ``failed``/``left``/``none``, or not a member at all).

What counts as a duplicate, within one service name:

* the same endpoint (service address, or the node's address when empty, plus port) registered under
  different IDs or on different nodes; an explicit ID on several nodes is reported as the reason;
* the same *explicit* ID (one that differs from the service name) on several nodes with different
  endpoints, only with ``same_id_any_address``: by default this is reported, not removed, because IDs
  like ``<name>-<port>`` reused by every host are normal Consul practice;
* never an ID equal to the name (Consul's default ID, so every node running ``web`` has an ID ``web``),
  and never the servers' own ``consul`` service.

The copy kept is, in order: not failing (worst of its checks, node checks such as ``serfHealth``
included), on a live node (``serfHealth`` passing or gossip member ``alive``), passing rather than
warning, the newest ``ModifyIndex``; ``keep_node`` overrides all of that.

Pure part (plain API JSON in, no I/O): :func:`instances_from_health`, :func:`build_plan`, :class:`Verifier`,
:func:`copies_elsewhere`. I/O part: :func:`gather`, :func:`remove`, :func:`verify` over a ConsulClient.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from toolkit.client import ConsulError, Response
from toolkit.dash.model import MEMBER_STATUS, worst

__all__ = [
    "AGENT_GONE", "DedupeError", "Group", "IdConflict", "Instance", "Outcome", "Plan", "Removal", "Verifier",
    "build_plan", "copies_elsewhere", "gather", "instances_from_health", "member_statuses", "remove", "verify",
]

SERF_CHECK_ID = "serfHealth"
SKIP_SERVICES = frozenset({"consul"})  # every server's own registration: one ID on every server, by design
AGENT_GONE = frozenset({"failed", "left", "none", "absent"})  # "absent": not in /v1/agent/members at all


class DedupeError(Exception):
    """A plan that cannot be built as asked (e.g. ``--keep-node`` names no node with a duplicate)."""


class Client(Protocol):
    """The slice of :class:`toolkit.client.ConsulClient` the executor needs (a fake in unit tests)."""

    def get(self, path: str, **kw: Any) -> Response: ...
    def put(self, path: str, **kw: Any) -> Response: ...


@dataclass(frozen=True, slots=True)
class Instance:
    """One catalog registration: (node, service ID) is its identity."""

    service: str
    service_id: str
    node: str
    node_address: str
    address: str        # the service address, or the node's when the service has none
    port: int
    status: str         # worst of its checks and its node's checks: passing | warning | critical
    serf_health: str    # status of the node's serfHealth check; "" when the node has none (no agent)
    member: str         # gossip status of the node's agent: alive | leaving | left | failed | none | absent
    modify_index: int

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def node_alive(self) -> bool:
        return self.serf_health == "passing" or self.member == "alive"

    @property
    def via(self) -> str:
        """How to remove it: through its agent, or the catalog when no agent is left to re-sync it."""
        return "catalog" if self.member in AGENT_GONE else "agent"

    def to_json(self) -> dict[str, Any]:
        return {"Service": self.service, "ID": self.service_id, "Node": self.node, "NodeAddress": self.node_address,
                "Address": self.address, "Port": self.port, "Status": self.status, "SerfHealth": self.serf_health,
                "Member": self.member, "ModifyIndex": self.modify_index}


@dataclass(frozen=True, slots=True)
class Removal:
    instance: Instance
    reason: str  # what makes it a duplicate, in words

    @property
    def via(self) -> str:
        return self.instance.via

    def to_json(self) -> dict[str, Any]:
        return {**self.instance.to_json(), "Reason": self.reason, "Via": self.via}


@dataclass(frozen=True, slots=True)
class Group:
    """Copies of one instance: the one kept and the ones to remove."""

    service: str
    keep: Instance
    keep_reason: str
    removals: tuple[Removal, ...]

    def to_json(self) -> dict[str, Any]:
        return {"Service": self.service, "Keep": self.keep.to_json(), "KeepReason": self.keep_reason,
                "Remove": [r.to_json() for r in self.removals]}


@dataclass(frozen=True, slots=True)
class IdConflict:
    """One explicit ID on several nodes with different endpoints: reported, not removed (see module doc)."""

    service: str
    service_id: str
    copies: tuple[Instance, ...]

    def to_json(self) -> dict[str, Any]:
        return {"Service": self.service, "ID": self.service_id,
                "Copies": [{"Node": i.node, "Address": i.endpoint, "Status": i.status} for i in self.copies]}


@dataclass(frozen=True, slots=True)
class Plan:
    groups: tuple[Group, ...]
    id_conflicts: tuple[IdConflict, ...] = ()

    @property
    def removals(self) -> list[Removal]:
        return [r for g in self.groups for r in g.removals]

    def to_json(self) -> dict[str, Any]:
        return {"Groups": [g.to_json() for g in self.groups], "IDConflicts": [c.to_json() for c in self.id_conflicts],
                "Duplicates": len(self.removals)}


# ------------------------------------------------------------------- pure

def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def member_statuses(members: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``/v1/agent/members`` → {node name: alive|leaving|left|failed|none}."""
    return {str(m.get("Name", "")): MEMBER_STATUS.get(_int(m.get("Status")), "none") for m in members}


def instances_from_health(entries: Iterable[Mapping[str, Any]], members: Mapping[str, str]) -> list[Instance]:
    """Instances from ``/v1/health/service/<name>`` entries (Node, Service, Checks incl. the node's)."""
    out = []
    for e in entries:
        node, svc = e.get("Node") or {}, e.get("Service") or {}
        checks = e.get("Checks") or []
        name = str(node.get("Node", ""))
        serf = next((str(c.get("Status", "")) for c in checks
                     if c.get("CheckID") == SERF_CHECK_ID and not c.get("ServiceID")), "")
        node_addr = str(node.get("Address") or "")
        out.append(Instance(
            service=str(svc.get("Service", "")), service_id=str(svc.get("ID", "")), node=name,
            node_address=node_addr, address=str(svc.get("Address") or node_addr), port=_int(svc.get("Port")),
            status=worst(str(c.get("Status", "")) for c in checks), serf_health=serf,
            member=members.get(name, "absent"), modify_index=_int(svc.get("ModifyIndex"))))
    return out


def _rank(i: Instance) -> tuple[bool, bool, bool, int]:
    """Higher is better: not failing, node alive, passing (not warning), newest."""
    return i.status != "critical", i.node_alive, i.status == "passing", i.modify_index


_RANK_WORDS = ("not failing", "its node is alive", "passing", "newest registration")


def _keep_reason(keep: Instance, others: list[Instance]) -> str:
    """Why ``keep`` beat the best of the others: the first rank component where it is ahead."""
    if not others:
        return "only copy"
    best = max(others, key=_rank)
    for word, mine, theirs in zip(_RANK_WORDS, _rank(keep), _rank(best), strict=True):
        if mine != theirs:
            return f"{word} (ModifyIndex {keep.modify_index})" if word == _RANK_WORDS[-1] else word
    return "tie: first by node name"


def _relation(a: Instance, b: Instance, explicit_id: bool) -> str:
    same_id = a.service_id == b.service_id and explicit_id
    same_ep = a.endpoint == b.endpoint
    if same_id and same_ep:
        return f"same ID and address as {b.service_id} on {b.node}"
    if same_ep:
        return f"same address {a.endpoint} as {b.service_id} on {b.node}"
    if same_id:
        return f"same ID as the copy on {b.node} ({b.endpoint})"
    return ""


def build_plan(instances: Iterable[Instance], *, keep_node: str = "", same_id_any_address: bool = False) -> Plan:
    """Group duplicates per service, choose each group's keeper, and list what to remove and why.

    ``keep_node`` keeps, in every group that has a copy there, the (best) copy on that node; it is an
    error when no group has one (a typo must not silently fall back to the automatic choice everywhere).
    """
    by_service: dict[str, list[Instance]] = defaultdict(list)
    for i in instances:
        if i.service not in SKIP_SERVICES:
            by_service[i.service].append(i)
    groups: list[Group] = []
    conflicts: list[IdConflict] = []
    keep_node_used = False
    for service in sorted(by_service):
        items = sorted(by_service[service], key=lambda i: (i.node, i.service_id))
        links: list[tuple[int, int]] = []
        first_by_endpoint: dict[str, int] = {}
        by_id: dict[str, list[int]] = defaultdict(list)
        for n, i in enumerate(items):
            links.append((n, first_by_endpoint.setdefault(i.endpoint, n)))
            if i.service_id != i.service:
                by_id[i.service_id].append(n)
        for sid, idx in sorted(by_id.items()):
            if len(idx) < 2 or len({items[n].endpoint for n in idx}) < 2:
                continue
            if same_id_any_address:
                links.extend((n, idx[0]) for n in idx[1:])
            else:
                conflicts.append(IdConflict(service, sid, tuple(items[n] for n in idx)))
        for members in _components(items, links):
            if len(members) < 2:
                continue
            ordered = sorted(members, key=lambda i: (tuple(-int(x) for x in _rank(i)), i.node, i.service_id))
            pinned = [i for i in ordered if keep_node and i.node == keep_node]
            keep = pinned[0] if pinned else ordered[0]
            keep_node_used = keep_node_used or bool(pinned)
            others = [i for i in ordered if i is not keep]
            reason = f"--keep-node {keep_node}" if pinned else _keep_reason(keep, others)
            removals = []
            for i in others:
                why = _relation(i, keep, i.service_id != i.service) or next(
                    (r for o in members if o is not i and (r := _relation(i, o, i.service_id != i.service))), "")
                removals.append(Removal(i, why))
            groups.append(Group(service, keep, reason, tuple(removals)))
    if keep_node and groups and not keep_node_used:
        raise DedupeError(f"--keep-node {keep_node}: no duplicate has a copy on that node "
                          f"(nodes with duplicates: {', '.join(sorted({i.node for g in groups for i in _all(g)}))})")
    return Plan(tuple(groups), tuple(conflicts))


def _components(items: list[Instance], links: Iterable[tuple[int, int]]) -> list[list[Instance]]:
    """Connected components of ``items`` under ``links`` (index pairs): union-find with path halving."""
    parent = list(range(len(items)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[find(a)] = find(b)
    out: dict[int, list[Instance]] = defaultdict(list)
    for n, i in enumerate(items):
        out[find(n)].append(i)
    return list(out.values())


def _all(g: Group) -> list[Instance]:
    return [g.keep, *(r.instance for r in g.removals)]


def copies_elsewhere(instances: Iterable[Instance], service_id: str, local_node: str) -> list[Instance]:
    """Registrations of ``service_id`` on nodes other than ``local_node`` (what ``register --unique`` guards)."""
    return sorted((i for i in instances if i.service_id == service_id and i.node != local_node),
                  key=lambda i: i.node)


@dataclass
class Verifier:
    """Watches removed instances across catalog reads: did each go away, and did it stay away?

    "came back" = seen gone, then present again (a re-sync or a client re-registering); "still present"
    = never seen gone by the last read. Feed every read to :meth:`observe`; read :attr:`came_back` /
    :attr:`still_present` after the last one.
    """

    targets: list[Instance]
    _gone: set[tuple[str, str]] = field(default_factory=set)
    _present: set[tuple[str, str]] = field(default_factory=set)
    came_back: list[Instance] = field(default_factory=list)
    reads: int = 0

    def observe(self, present: set[tuple[str, str]]) -> None:
        """``present``: (node, service ID) pairs of the services concerned, as one catalog read shows them."""
        self.reads += 1
        for i in self.targets:
            key = (i.node, i.service_id)
            if key in present:
                if key in self._gone and i not in self.came_back:
                    self.came_back.append(i)
            else:
                self._gone.add(key)
        self._present = present

    @property
    def still_present(self) -> list[Instance]:
        return [i for i in self.targets if (i.node, i.service_id) in self._present and i not in self.came_back]

    @property
    def ok(self) -> bool:
        return self.reads > 0 and not self.came_back and not self.still_present


# -------------------------------------------------------------------- I/O

def gather(c: Client, services: list[str]) -> tuple[list[Instance], str, list[str]]:
    """Read what a plan needs: (instances of the given services or of all, the agent's node, unknown names)."""
    names = services or sorted(set(c.get("/v1/catalog/services").json() or {}) - SKIP_SERVICES)
    members = member_statuses(c.get("/v1/agent/members", params={"segment": "_all"}).json() or [])
    local_node = str(((c.get("/v1/agent/self").json() or {}).get("Config") or {}).get("NodeName", ""))
    instances: list[Instance] = []
    missing = []
    for name in names:
        entries = c.get(f"/v1/health/service/{quote(name, safe='')}").json() or []
        if not entries:
            missing.append(name)
        instances.extend(instances_from_health(entries, members))
    return instances, local_node, missing


@dataclass(frozen=True, slots=True)
class Outcome:
    instance: Instance
    ok: bool
    via: str     # what was actually used: agent | catalog
    detail: str  # the error, or a note (e.g. why the catalog was used)

    def to_json(self) -> dict[str, Any]:
        return {"Node": self.instance.node, "ID": self.instance.service_id, "Service": self.instance.service,
                "OK": self.ok, "Via": self.via, "Detail": self.detail}


def remove(i: Instance, catalog: Client, agent_for: Callable[[Instance], tuple[Client, str]]) -> Outcome:
    """Remove one copy: through its own agent when that agent is alive, else from the catalog.

    ``agent_for`` returns a client for the node's agent and its URL (for messages). The agent must say it
    *is* that node before it is asked to deregister: an agent reached by mistake (wrong port, shared
    address) would otherwise drop its own copy of the same ID, which may be the one being kept.
    An agent that does not list the ID among its own services (``/v1/agent/services``; a copy written
    onto its node through the catalog) cannot write it back, so the catalog delete is the right one;
    asking such an agent to deregister is a no-op on older agents and a 404 on newer ones. An owning
    agent that cannot be reached is an error, never a catalog delete: that would come back at its next sync.
    """
    sid = quote(i.service_id, safe="")
    if i.via == "catalog":
        return _catalog_remove(i, catalog, f"agent of {i.node} is {i.member}")
    agent, url = agent_for(i)
    try:
        me = str(((agent.get("/v1/agent/self").json() or {}).get("Config") or {}).get("NodeName", ""))
        if me != i.node:
            return Outcome(i, False, "agent", f"the agent at {url} is node {me!r}, not {i.node!r}; "
                                              f"pass --agent-port with the agents' HTTP port")
        owned = i.service_id in (agent.get("/v1/agent/services").json() or {})
        r = agent.put(f"/v1/agent/service/deregister/{sid}", ok=(200, 404)) if owned else None
    except ConsulError as err:
        return Outcome(i, False, "agent", f"{err}; the owning agent must remove it: run "
                                          f"'ctk services deregister {i.service_id}' on {i.node}, or pass --agent-port")
    if r is None or r.status == 404:
        return _catalog_remove(i, catalog, f"the agent of {i.node} does not own it (catalog registration)")
    return Outcome(i, True, "agent", url)


def _catalog_remove(i: Instance, catalog: Client, why: str) -> Outcome:
    try:
        catalog.put("/v1/catalog/deregister", json_body={"Node": i.node, "ServiceID": i.service_id})
    except ConsulError as err:
        return Outcome(i, False, "catalog", str(err))
    return Outcome(i, True, "catalog", why)


def verify(c: Client, targets: list[Instance], wait_s: float, *, poll_s: float = 2.0,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Verifier:
    """Re-read the catalog until ``wait_s`` has passed (and once at the end); see :class:`Verifier`."""
    v = Verifier(list(targets))
    services = sorted({i.service for i in targets})
    deadline = clock() + wait_s
    while True:
        present: set[tuple[str, str]] = set()
        for name in services:
            for row in c.get(f"/v1/catalog/service/{quote(name, safe='')}").json() or []:
                present.add((str(row.get("Node", "")), str(row.get("ServiceID", ""))))
        v.observe(present)
        left = deadline - clock()
        if left <= 0:
            return v
        sleep(min(poll_s, left))
