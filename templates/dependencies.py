"""Dependency keys: what a template reads from Consul, and how to fetch and shape it.

Template functions *are* the dependency discovery (consul-template's n-pass model): each call
such as ``service "rails.web@dc1|passing,warning"`` parses its argument into one of the frozen,
hashable keys below. Equal strings give equal keys, so a watcher runs **one** blocking query
per distinct key, shared by every template that uses it.

Each key knows

* its canonical name (``health.service(rails.web@dc1|passing,warning)``, as consul-template
  logs it), used in logs and "waiting on" reports;
* the HTTP request it needs (:meth:`Dependency.request`: path + query parameters, without
  ``index``/``wait``/``stale``, which belong to the watcher);
* how to turn the JSON body into the value templates see (:meth:`Dependency.decode`), with
  consul-template's field names (``.ServiceMeta``, never ``.Meta`` on a health entry), sort
  orders and fallbacks (service address, else node address).

``decode(None)`` means "HTTP 404": a missing KV key decodes to ``None``, an empty prefix to ``[]``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote

from .errors import DependencyParseError

__all__ = [
    "Request",
    "Dependency",
    "HealthServiceDep",
    "CatalogServicesDep",
    "CatalogNodesDep",
    "CatalogNodeDep",
    "CatalogDatacentersDep",
    "KVGetDep",
    "KVListDep",
    "FileDep",
    "StrMap",
    "ServiceTags",
    "HealthCheck",
    "HealthChecks",
    "ServiceAddress",
    "Weights",
    "HealthService",
    "CatalogSnippet",
    "Node",
    "CatalogNodeService",
    "CatalogNode",
    "KeyPair",
    "parse_service",
    "parse_services",
    "parse_nodes",
    "parse_node",
    "parse_kv_get",
    "parse_kv_list",
    "datacenters_dep",
    "file_dep",
    "aggregated_status",
    "HEALTH_FILTERS",
]


# --------------------------------------------------------------------------------------------
# Values templates see. Field order = Go struct order (it shows in ``{{ . }}`` and toJSON).


class StrMap(dict[str, str]):
    """A Go ``map[string]string``: a missing key reads as ``""``, not ``<no value>``.

    consul-template runs text/template with ``missingkey=zero``, so ``{{ .ServiceMeta.nope }}``
    prints nothing while a missing key of a ``parseJSON`` map prints ``<no value>``.
    """

    _go_type: ClassVar[str] = "map[string]string"
    go_zero: ClassVar[str] = ""


class ServiceTags(list[str]):
    """Sorted service tags; Go's ``ServiceTags`` has a ``Contains`` method templates call."""

    _go_type: ClassVar[str] = "dependency.ServiceTags"
    _go_methods: ClassVar[frozenset[str]] = frozenset({"Contains"})

    def Contains(self, tag: str) -> bool:  # noqa: N802 - Go method name, called from templates
        """``{{ if .Tags.Contains "prod" }}``."""
        return tag in self


@dataclass(slots=True)
class HealthCheck:
    """One entry of ``.Checks`` (Consul's ``api.HealthCheck``)."""

    Node: str = ""
    CheckID: str = ""
    Name: str = ""
    Status: str = ""
    Notes: str = ""
    Output: str = ""
    ServiceID: str = ""
    ServiceName: str = ""
    ServiceTags: list[str] = field(default_factory=list)
    Type: str = ""
    Namespace: str = ""
    Partition: str = ""
    ExposedPort: int = 0
    Definition: dict[str, Any] = field(default_factory=dict)
    CreateIndex: int = 0
    ModifyIndex: int = 0

    _go_type: ClassVar[str] = "*api.HealthCheck"
    _go_pointer: ClassVar[bool] = True


class HealthChecks(list[HealthCheck]):
    """``.Checks``; Go's ``api.HealthChecks`` has ``AggregatedStatus``."""

    _go_type: ClassVar[str] = "api.HealthChecks"
    _go_methods: ClassVar[frozenset[str]] = frozenset({"AggregatedStatus"})

    def AggregatedStatus(self) -> str:  # noqa: N802 - Go method name
        """The single status Consul's API derives from all checks."""
        return aggregated_status(self)


@dataclass(slots=True)
class ServiceAddress:
    """A value of ``.ServiceTaggedAddresses`` (``api.ServiceAddress``)."""

    Address: str = ""
    Port: int = 0

    _go_type: ClassVar[str] = "api.ServiceAddress"


@dataclass(slots=True)
class Weights:
    """``.Weights`` (``api.AgentWeights``)."""

    Passing: int = 1
    Warning: int = 1

    _go_type: ClassVar[str] = "api.AgentWeights"


@dataclass(slots=True)
class HealthService:
    """One instance returned by ``service`` / ``connect`` (consul-template 0.42's fields, in order)."""

    Node: str = ""
    NodeID: str = ""
    NodeAddress: str = ""
    NodeTaggedAddresses: StrMap = field(default_factory=StrMap)
    NodeMeta: StrMap = field(default_factory=StrMap)
    ServiceMeta: StrMap = field(default_factory=StrMap)
    Address: str = ""
    ServiceTaggedAddresses: dict[str, ServiceAddress] = field(default_factory=dict)
    ID: str = ""
    Name: str = ""
    Tags: ServiceTags = field(default_factory=ServiceTags)
    Checks: HealthChecks = field(default_factory=HealthChecks)
    Status: str = ""
    Port: int = 0
    Weights: Weights = field(default_factory=Weights)

    _go_type: ClassVar[str] = "*dependency.HealthService"
    _go_pointer: ClassVar[bool] = True


@dataclass(slots=True)
class CatalogSnippet:
    """One entry of ``services``: a service name and the union of its tags."""

    Name: str = ""
    Tags: ServiceTags = field(default_factory=ServiceTags)

    _go_type: ClassVar[str] = "*dependency.CatalogSnippet"
    _go_pointer: ClassVar[bool] = True


@dataclass(slots=True)
class Node:
    """One entry of ``nodes`` (and ``.Node`` of ``node``)."""

    ID: str = ""
    Node: str = ""
    Address: str = ""
    Datacenter: str = ""
    TaggedAddresses: StrMap = field(default_factory=StrMap)
    Meta: StrMap = field(default_factory=StrMap)

    _go_type: ClassVar[str] = "*dependency.Node"
    _go_pointer: ClassVar[bool] = True


@dataclass(slots=True)
class CatalogNodeService:
    """One entry of ``(node).Services``."""

    ID: str = ""
    Service: str = ""
    Tags: ServiceTags = field(default_factory=ServiceTags)
    Meta: StrMap = field(default_factory=StrMap)
    Port: int = 0
    Address: str = ""
    EnableTagOverride: bool = False

    _go_type: ClassVar[str] = "*dependency.CatalogNodeService"
    _go_pointer: ClassVar[bool] = True


@dataclass(slots=True)
class CatalogNode:
    """What ``node`` returns: the node and its services (sorted by name, then ID)."""

    Node: Node | None = None
    Services: list[CatalogNodeService] = field(default_factory=list)

    _go_type: ClassVar[str] = "*dependency.CatalogNode"
    _go_pointer: ClassVar[bool] = True


@dataclass(slots=True)
class KeyPair:
    """One entry of ``ls`` / ``tree``: ``Key`` is relative to the prefix, ``Path`` is the full key."""

    Path: str = ""
    Key: str = ""
    Value: str = ""
    CreateIndex: int = 0
    ModifyIndex: int = 0
    LockIndex: int = 0
    Flags: int = 0
    Session: str = ""

    _go_type: ClassVar[str] = "*dependency.KeyPair"
    _go_pointer: ClassVar[bool] = True


# --------------------------------------------------------------------------------------------
# Helpers for decoding Consul JSON


_ABSENT = object()


def _get(d: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    """Field read; Consul's JSON is CamelCase, a lower-case spelling is accepted as a fallback."""
    if not d:
        return default
    v = d.get(key, _ABSENT)
    if v is _ABSENT:
        v = d.get(key.lower(), _ABSENT)
        if v is _ABSENT:
            return default
    return default if v is None else v


def _str(v: Any) -> str:
    return "" if v is None else str(v)


def _int(v: Any) -> int:
    if type(v) is int:
        return v
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def _strmap(v: Any) -> StrMap:
    if not v or not isinstance(v, Mapping):
        return StrMap()
    return StrMap({str(k): _str(x) for k, x in v.items()})


def _tags(v: Any) -> ServiceTags:
    if not v or not isinstance(v, list):
        return ServiceTags()
    return ServiceTags(sorted([t if type(t) is str else _str(t) for t in v]))


_NODE_MAINT = "_node_maintenance"
_SERVICE_MAINT_PREFIX = "_service_maintenance:"


def aggregated_status(checks: Iterable[HealthCheck | Mapping[str, Any]]) -> str:
    """Consul API's ``HealthChecks.AggregatedStatus``.

    maintenance > critical > warning > passing; no checks = passing; an unknown status = "".
    """
    passing = warning = critical = maintenance = False
    for c in checks:
        if isinstance(c, HealthCheck):
            cid, status = c.CheckID, c.Status
        else:
            cid, status = _str(_get(c, "CheckID")), _str(_get(c, "Status"))
        if cid == _NODE_MAINT or cid.startswith(_SERVICE_MAINT_PREFIX):
            maintenance = True
            continue
        if status == "passing":
            passing = True
        elif status == "warning":
            warning = True
        elif status == "critical":
            critical = True
        else:
            return ""
    if maintenance:
        return "maintenance"
    if critical:
        return "critical"
    if warning:
        return "warning"
    _ = passing
    return "passing"


def _check(c: Mapping[str, Any]) -> HealthCheck:
    g = c.get
    defn = g("Definition")
    return HealthCheck(
        g("Node") or "",
        g("CheckID") or "",
        g("Name") or "",
        g("Status") or "",
        g("Notes") or "",
        g("Output") or "",
        g("ServiceID") or "",
        g("ServiceName") or "",
        list(g("ServiceTags") or ()),
        g("Type") or "",
        g("Namespace") or "",
        g("Partition") or "",
        _int(g("ExposedPort")),
        dict(defn) if isinstance(defn, Mapping) else {},
        _int(g("CreateIndex")),
        _int(g("ModifyIndex")),
    )


def _node(n: Mapping[str, Any]) -> Node:
    g = n.get
    return Node(
        g("ID") or "",
        g("Node") or "",
        g("Address") or "",
        g("Datacenter") or "",
        _strmap(g("TaggedAddresses")),
        _strmap(g("Meta")),
    )


def _near_sorted(items: list[Any], near: str, key: Any) -> list[Any]:
    """Consul's RTT order is kept with ``~near``; otherwise consul-template sorts."""
    if near:
        return items
    return sorted(items, key=key)


# --------------------------------------------------------------------------------------------
# Requests and dependency keys


@dataclass(slots=True)
class Request:
    """An HTTP GET against the Consul API; ``params`` with value ``""`` render as bare flags."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    blocking: bool = True

    def query_string(self) -> str:
        """``tag=rails&dc=dc1&passing`` (presence flags stay bare, like Consul's docs)."""
        parts = []
        for k, v in self.params:
            parts.append(
                quote(k, safe="-_.") if v == "" else f"{quote(k, safe='-_.')}={quote(v, safe='-_.:,')}"
            )
        return "&".join(parts)

    def url(self) -> str:
        """Path plus query string, ready to append ``index``/``wait``/``stale``."""
        qs = self.query_string()
        return f"{self.path}?{qs}" if qs else self.path


def _q(name: str) -> str:
    return quote(name, safe="/-_.~@:")


@dataclass(frozen=True, slots=True)
class Dependency:
    """Base class of every dependency key (frozen, hashable, ordered by canonical name)."""

    kind: ClassVar[str] = "dependency"

    def name(self) -> str:
        """The canonical name consul-template uses in logs (``kv.block(foo@dc1)``)."""
        raise NotImplementedError

    def request(self, local_node: str | None = None) -> Request | None:
        """The Consul request that feeds this key (``None`` for local sources like files)."""
        raise NotImplementedError

    def decode(self, body: Any) -> Any:
        """Turn a parsed JSON body (``None`` = HTTP 404) into the template-facing value."""
        raise NotImplementedError

    @property
    def blocking(self) -> bool:
        """Whether the endpoint supports blocking queries (``index``/``wait``)."""
        req = self.request("_")
        return req is not None and req.blocking

    def __str__(self) -> str:
        return self.name()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Dependency):
            return NotImplemented
        return self.name() < other.name()


def _common_params(
    dc: str, ns: str = "", partition: str = "", peer: str = "", sameness_group: str = ""
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if dc:
        out.append(("dc", dc))
    if ns:
        out.append(("ns", ns))
    if partition:
        out.append(("partition", partition))
    if peer:
        out.append(("peer", peer))
    if sameness_group:
        out.append(("sameness-group", sameness_group))
    return out


def _query_suffix(dep: Any) -> str:
    """``?ns=x&partition=y`` part of a canonical name (only non-empty options)."""
    parts = []
    for key, attr in (
        ("ns", "ns"),
        ("partition", "partition"),
        ("peer", "peer"),
        ("sameness-group", "sameness_group"),
    ):
        v = getattr(dep, attr, "")
        if v:
            parts.append(f"{key}={v}")
    for nm in getattr(dep, "node_meta", ()):
        parts.append(f"node-meta={nm}")
    return ("?" + "&".join(parts)) if parts else ""


HEALTH_FILTERS = frozenset({"any", "passing", "warning", "critical", "maintenance"})


@dataclass(frozen=True, slots=True)
class HealthServiceDep(Dependency):
    """``service "tag.name?query@dc~near|filter"`` (``connect`` when ``connect`` is true).

    No filter = passing only, asked of the server (``?passing``); any other filter list is
    applied here on each entry's aggregated status (comma = OR, ``any`` keeps everything).
    """

    service: str
    tag: str = ""
    dc: str = ""
    near: str = ""
    filters: tuple[str, ...] = ("passing",)
    ns: str = ""
    partition: str = ""
    peer: str = ""
    sameness_group: str = ""
    node_meta: tuple[str, ...] = ()
    connect: bool = False

    kind: ClassVar[str] = "health.service"

    @property
    def passing_only(self) -> bool:
        """True when the server can do the filtering (``?passing``)."""
        return self.filters == ("passing",)

    def name(self) -> str:
        s = self.service
        if self.tag:
            s = f"{self.tag}.{s}"
        s += _query_suffix(self)
        if self.dc:
            s += f"@{self.dc}"
        if self.near:
            s += f"~{self.near}"
        if self.filters:
            s += "|" + ",".join(self.filters)
        return f"health.{'connect' if self.connect else 'service'}({s})"

    def request(self, local_node: str | None = None) -> Request:
        kind = "connect" if self.connect else "service"
        params: list[tuple[str, str]] = []
        if self.tag:
            params.append(("tag", self.tag))
        if self.dc:
            params.append(("dc", self.dc))
        if self.near:
            params.append(("near", self.near))
        params.extend(("node-meta", nm) for nm in self.node_meta)
        params.extend(_common_params("", self.ns, self.partition, self.peer, self.sameness_group))
        if self.passing_only:
            params.append(("passing", ""))
        return Request(f"/v1/health/{kind}/{_q(self.service)}", tuple(params))

    def accepts(self, status: str) -> bool:
        """Client-side filter on an aggregated status."""
        return any(f == "any" or f == status for f in self.filters)

    def decode(self, body: Any) -> list[HealthService]:
        out: list[HealthService] = []
        for entry in body or []:
            node = entry.get("Node") or {}
            svc = entry.get("Service") or {}
            checks = HealthChecks([_check(c) for c in entry.get("Checks") or ()])
            status = aggregated_status(checks)
            if not self.accepts(status):
                continue
            node_addr = node.get("Address") or ""
            tagged = svc.get("TaggedAddresses")
            weights = svc.get("Weights") or {}
            out.append(
                HealthService(
                    node.get("Node") or "",
                    node.get("ID") or "",
                    node_addr,
                    _strmap(node.get("TaggedAddresses")),
                    _strmap(node.get("Meta")),
                    _strmap(svc.get("Meta")),
                    svc.get("Address") or node_addr,
                    {
                        str(k): ServiceAddress(v.get("Address") or "", _int(v.get("Port")))
                        for k, v in tagged.items()
                    }
                    if isinstance(tagged, Mapping)
                    else {},
                    svc.get("ID") or "",
                    svc.get("Service") or "",
                    _tags(svc.get("Tags")),
                    checks,
                    status,
                    _int(svc.get("Port")),
                    Weights(_int(weights.get("Passing", 1)), _int(weights.get("Warning", 1))),
                )
            )
        return _near_sorted(out, self.near, key=lambda s: (s.Node, s.ID))


@dataclass(frozen=True, slots=True)
class CatalogServicesDep(Dependency):
    """``services "?query@dc"``: every service name with the union of its tags, sorted by name."""

    dc: str = ""
    ns: str = ""
    partition: str = ""
    peer: str = ""
    node_meta: tuple[str, ...] = ()

    kind: ClassVar[str] = "catalog.services"

    def name(self) -> str:
        s = _query_suffix(self) + (f"@{self.dc}" if self.dc else "")
        return f"catalog.services({s})" if s else "catalog.services"

    def request(self, local_node: str | None = None) -> Request:
        params = _common_params(self.dc, self.ns, self.partition, self.peer)
        params.extend(("node-meta", nm) for nm in self.node_meta)
        return Request("/v1/catalog/services", tuple(params))

    def decode(self, body: Any) -> list[CatalogSnippet]:
        if not isinstance(body, Mapping):
            return []
        return [CatalogSnippet(Name=str(k), Tags=_tags(v)) for k, v in sorted(body.items())]


@dataclass(frozen=True, slots=True)
class CatalogNodesDep(Dependency):
    """``nodes "?query@dc~near"``: every node, sorted by name unless ``~near``."""

    dc: str = ""
    near: str = ""
    ns: str = ""
    partition: str = ""
    node_meta: tuple[str, ...] = ()

    kind: ClassVar[str] = "catalog.nodes"

    def name(self) -> str:
        s = _query_suffix(self) + (f"@{self.dc}" if self.dc else "") + (f"~{self.near}" if self.near else "")
        return f"catalog.nodes({s})" if s else "catalog.nodes"

    def request(self, local_node: str | None = None) -> Request:
        params = _common_params(self.dc, self.ns, self.partition)
        if self.near:
            params.append(("near", self.near))
        params.extend(("node-meta", nm) for nm in self.node_meta)
        return Request("/v1/catalog/nodes", tuple(params))

    def decode(self, body: Any) -> list[Node]:
        nodes = [_node(n) for n in (body or [])]
        return _near_sorted(nodes, self.near, key=lambda n: n.Node)


@dataclass(frozen=True, slots=True)
class CatalogNodeDep(Dependency):
    """``node "name?query@dc"``; no name = the local agent's node (``local_node``)."""

    node: str = ""
    dc: str = ""
    ns: str = ""
    partition: str = ""

    kind: ClassVar[str] = "catalog.node"

    @property
    def needs_local_node(self) -> bool:
        """The watcher must look up ``/v1/agent/self`` → ``Config.NodeName`` first."""
        return not self.node

    def name(self) -> str:
        s = self.node + _query_suffix(self) + (f"@{self.dc}" if self.dc else "")
        return f"catalog.node({s})"

    def request(self, local_node: str | None = None) -> Request:
        node = self.node or local_node
        if not node:
            raise ValueError("catalog.node: the local agent's node name is needed (GET /v1/agent/self)")
        return Request(
            f"/v1/catalog/node/{_q(node)}", tuple(_common_params(self.dc, self.ns, self.partition))
        )

    def decode(self, body: Any) -> CatalogNode:
        if not isinstance(body, Mapping):
            return CatalogNode()  # unknown node: an empty object, not nil
        services_raw = _get(body, "Services", {})
        items = services_raw.values() if isinstance(services_raw, Mapping) else (services_raw or [])
        services = [
            CatalogNodeService(
                ID=_str(_get(s, "ID")),
                Service=_str(_get(s, "Service")),
                Tags=_tags(_get(s, "Tags")),
                Meta=_strmap(_get(s, "Meta")),
                Port=_int(_get(s, "Port")),
                Address=_str(_get(s, "Address")),
                EnableTagOverride=bool(_get(s, "EnableTagOverride", False)),
            )
            for s in items
        ]
        services.sort(key=lambda s: (s.Service, s.ID))
        return CatalogNode(Node=_node(_get(body, "Node", {})), Services=services)


@dataclass(frozen=True, slots=True)
class CatalogDatacentersDep(Dependency):
    """``datacenters [ignore_failing]``; not a blocking endpoint (re-polled, 15s upstream)."""

    ignore_failing: bool = False

    kind: ClassVar[str] = "catalog.datacenters"
    poll_interval_s: ClassVar[float] = 15.0

    def name(self) -> str:
        return "catalog.datacenters" + ("(ignore-failing)" if self.ignore_failing else "")

    def request(self, local_node: str | None = None) -> Request:
        return Request("/v1/catalog/datacenters", (), blocking=False)

    def decode(self, body: Any) -> list[str]:
        return sorted(str(x) for x in (body or []))


def _kv_value(raw: Any) -> str:
    if raw is None:
        return ""
    try:
        return base64.b64decode(raw).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return str(raw)


@dataclass(frozen=True, slots=True)
class KVGetDep(Dependency):
    """``key`` (``block=True``: the template waits until the key exists), ``keyExists``,
    ``keyOrDefault`` (``block=False``). Decodes to the value string, or ``None`` if absent."""

    path: str
    dc: str = ""
    ns: str = ""
    partition: str = ""
    block: bool = False

    kind: ClassVar[str] = "kv.get"

    def name(self) -> str:
        s = self.path + _query_suffix(self) + (f"@{self.dc}" if self.dc else "")
        return f"kv.{'block' if self.block else 'get'}({s})"

    def request(self, local_node: str | None = None) -> Request:
        return Request(f"/v1/kv/{_q(self.path)}", tuple(_common_params(self.dc, self.ns, self.partition)))

    def decode(self, body: Any) -> str | None:
        if not body:
            return None
        entry = body[0] if isinstance(body, list) else body
        if not isinstance(entry, Mapping):
            return None
        return _kv_value(_get(entry, "Value"))


@dataclass(frozen=True, slots=True)
class KVListDep(Dependency):
    """``ls`` and ``tree`` (one shared key, ``kv.list(prefix)``); ``?recurse`` on the prefix.

    Decodes to every pair under the prefix, ``Key`` relative to it (leading ``/`` trimmed); the
    functions then keep direct children (``ls``) or drop folder keys (``tree``). As in
    consul-template the prefix is a plain string prefix: ``tree "app"`` also sees ``apple/x``;
    write ``tree "app/"`` to stay inside the folder.
    """

    prefix: str
    dc: str = ""
    ns: str = ""
    partition: str = ""

    kind: ClassVar[str] = "kv.list"

    def name(self) -> str:
        return f"kv.list({self.prefix}{_query_suffix(self)}{'@' + self.dc if self.dc else ''})"

    def request(self, local_node: str | None = None) -> Request:
        params = [("recurse", ""), *_common_params(self.dc, self.ns, self.partition)]
        return Request(f"/v1/kv/{_q(self.prefix)}", tuple(params))

    def decode(self, body: Any) -> list[KeyPair]:
        out: list[KeyPair] = []
        for entry in body or []:
            full = _str(_get(entry, "Key"))
            rel = full[len(self.prefix) :] if full.startswith(self.prefix) else full
            out.append(
                KeyPair(
                    Path=full,
                    Key=rel.lstrip("/"),
                    Value=_kv_value(_get(entry, "Value")),
                    CreateIndex=_int(_get(entry, "CreateIndex")),
                    ModifyIndex=_int(_get(entry, "ModifyIndex")),
                    LockIndex=_int(_get(entry, "LockIndex")),
                    Flags=_int(_get(entry, "Flags")),
                    Session=_str(_get(entry, "Session")),
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class FileDep(Dependency):
    """``file "/path"``: a local file, watched by stat (size/mtime) rather than by Consul."""

    path: str

    kind: ClassVar[str] = "file"
    poll_interval_s: ClassVar[float] = 2.0

    def name(self) -> str:
        return f"file({self.path})"

    def request(self, local_node: str | None = None) -> None:
        return None

    def decode(self, body: Any) -> str:
        return _str(body)

    def read(self) -> str:
        """The file's current contents (raises ``OSError`` if unreadable)."""
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stat_key(self) -> tuple[int, int] | None:
        """(size, mtime_ns) for change detection; ``None`` if the file is missing."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# Parsing dependency strings (regexes follow consul-template's documented syntax)

_SERVICE_RE = re.compile(
    r"\A(?:(?P<tag>[A-Za-z0-9_=:.\-]+)\.)?"
    r"(?P<name>[A-Za-z0-9_\-]+)"
    r"(?:\?(?P<query>[^@~|]*))?"
    r"(?:@(?P<dc>[A-Za-z0-9_.\-]+))?"
    r"(?:~(?P<near>[A-Za-z0-9_.\-]+))?"
    r"(?:\|(?P<filter>[A-Za-z0-9_, ]*))?\Z"
)
_SERVICES_RE = re.compile(r"\A(?:\?(?P<query>[^@]*))?(?:@(?P<dc>[A-Za-z0-9_.\-]+))?\Z")
_NODES_RE = re.compile(
    r"\A(?:\?(?P<query>[^@~]*))?(?:@(?P<dc>[A-Za-z0-9_.\-]+))?(?:~(?P<near>[A-Za-z0-9_.\-]+))?\Z"
)
_NODE_RE = re.compile(r"\A(?P<name>[A-Za-z0-9_.\-]*)(?:\?(?P<query>[^@]*))?(?:@(?P<dc>[A-Za-z0-9_.\-]+))?\Z")
_KV_RE = re.compile(r"\A/?(?P<path>[^@?]+)(?:\?(?P<query>[^@]*))?(?:@(?P<dc>[A-Za-z0-9_.\-]+))?\Z")
_KV_PREFIX_RE = re.compile(r"\A/?(?P<path>[^@?]*)(?:\?(?P<query>[^@]*))?(?:@(?P<dc>[A-Za-z0-9_.\-]+))?\Z")


@dataclass(frozen=True)
class _Query:
    ns: str = ""
    partition: str = ""
    peer: str = ""
    sameness_group: str = ""
    node_meta: tuple[str, ...] = ()


def _parse_query(kind: str, raw: str | None, allowed: frozenset[str], original: str) -> _Query:
    """The ``?ns=..&partition=..`` part. Unknown keys are errors, never silently dropped."""
    if not raw:
        return _Query()
    values: dict[str, str] = {}
    node_meta: list[str] = []
    for k, v in parse_qsl(raw, keep_blank_values=True):
        if k not in allowed:
            raise DependencyParseError(f"{kind}: invalid query parameter {k!r} in {original!r}")
        if k == "node-meta":
            if ":" not in v:
                raise DependencyParseError(f"{kind}: node-meta must be key:value, got {v!r} in {original!r}")
            node_meta.append(v)
        else:
            values[k] = v
    if values.get("peer") and values.get("sameness-group"):
        raise DependencyParseError(f"{kind}: peer and sameness-group are mutually exclusive in {original!r}")
    return _Query(
        ns=values.get("ns", ""),
        partition=values.get("partition", ""),
        peer=values.get("peer", ""),
        sameness_group=values.get("sameness-group", ""),
        node_meta=tuple(sorted(node_meta)),
    )


_SERVICE_QUERY_KEYS = frozenset({"ns", "partition", "peer", "sameness-group", "node-meta"})
_CATALOG_QUERY_KEYS = frozenset({"ns", "partition", "peer", "node-meta"})
_NODES_QUERY_KEYS = frozenset({"ns", "partition", "node-meta"})
_KV_QUERY_KEYS = frozenset({"ns", "partition"})


@functools.lru_cache(maxsize=4096)
def parse_service(query: str, connect: bool = False) -> HealthServiceDep:
    """``"tag.name?query@dc~near|filter"`` → :class:`HealthServiceDep`.

    The tag is greedy (``a.b.web`` = tag ``a.b``, name ``web``), so service names with dots are
    not expressible, exactly as in consul-template.
    """
    kind = "health.connect" if connect else "health.service"
    m = _SERVICE_RE.match(query.strip())
    if not m:
        raise DependencyParseError(f"{kind}: invalid format: {query!r}")
    filters: list[str] = []
    raw_filter = m.group("filter")
    if raw_filter:
        for f in raw_filter.split(","):
            f = f.strip()
            if not f:
                continue
            if f not in HEALTH_FILTERS:
                raise DependencyParseError(f"{kind}: invalid filter: {f!r} in {query!r}")
            if f not in filters:
                filters.append(f)
    if not filters:
        filters = ["passing"]
    q = _parse_query(kind, m.group("query"), _SERVICE_QUERY_KEYS, query)
    return HealthServiceDep(
        service=m.group("name"),
        tag=m.group("tag") or "",
        dc=m.group("dc") or "",
        near=m.group("near") or "",
        filters=tuple(sorted(filters)),
        ns=q.ns,
        partition=q.partition,
        peer=q.peer,
        sameness_group=q.sameness_group,
        node_meta=q.node_meta,
        connect=connect,
    )


@functools.lru_cache(maxsize=256)
def parse_services(query: str = "") -> CatalogServicesDep:
    """``"?query@dc"`` → :class:`CatalogServicesDep`."""
    m = _SERVICES_RE.match(query.strip())
    if not m:
        raise DependencyParseError(f"catalog.services: invalid format: {query!r}")
    q = _parse_query("catalog.services", m.group("query"), _CATALOG_QUERY_KEYS, query)
    return CatalogServicesDep(
        dc=m.group("dc") or "", ns=q.ns, partition=q.partition, peer=q.peer, node_meta=q.node_meta
    )


@functools.lru_cache(maxsize=256)
def parse_nodes(query: str = "") -> CatalogNodesDep:
    """``"?query@dc~near"`` → :class:`CatalogNodesDep`."""
    m = _NODES_RE.match(query.strip())
    if not m:
        raise DependencyParseError(f"catalog.nodes: invalid format: {query!r}")
    q = _parse_query("catalog.nodes", m.group("query"), _NODES_QUERY_KEYS, query)
    return CatalogNodesDep(
        dc=m.group("dc") or "",
        near=m.group("near") or "",
        ns=q.ns,
        partition=q.partition,
        node_meta=q.node_meta,
    )


@functools.lru_cache(maxsize=1024)
def parse_node(query: str = "") -> CatalogNodeDep:
    """``"name?query@dc"`` → :class:`CatalogNodeDep` (empty name = the local agent's node)."""
    m = _NODE_RE.match(query.strip())
    if not m:
        raise DependencyParseError(f"catalog.node: invalid format: {query!r}")
    q = _parse_query("catalog.node", m.group("query"), _KV_QUERY_KEYS, query)
    return CatalogNodeDep(node=m.group("name") or "", dc=m.group("dc") or "", ns=q.ns, partition=q.partition)


@functools.lru_cache(maxsize=4096)
def parse_kv_get(query: str, block: bool = False) -> KVGetDep:
    """``"path?query@dc"`` → :class:`KVGetDep` (leading ``/`` dropped)."""
    m = _KV_RE.match(query)
    if not m:
        raise DependencyParseError(f"kv.get: invalid format: {query!r}")
    q = _parse_query("kv.get", m.group("query"), _KV_QUERY_KEYS, query)
    return KVGetDep(path=m.group("path"), dc=m.group("dc") or "", ns=q.ns, partition=q.partition, block=block)


@functools.lru_cache(maxsize=1024)
def parse_kv_list(query: str) -> KVListDep:
    """``"prefix?query@dc"`` → :class:`KVListDep` (shared by ``ls`` and ``tree``)."""
    m = _KV_PREFIX_RE.match(query)
    if not m:
        raise DependencyParseError(f"kv.list: invalid format: {query!r}")
    q = _parse_query("kv.list", m.group("query"), _KV_QUERY_KEYS, query)
    return KVListDep(prefix=m.group("path"), dc=m.group("dc") or "", ns=q.ns, partition=q.partition)


def datacenters_dep(ignore_failing: bool = False) -> CatalogDatacentersDep:
    """The ``datacenters`` key."""
    return CatalogDatacentersDep(ignore_failing=bool(ignore_failing))


def file_dep(path: str) -> FileDep:
    """The ``file`` key."""
    return FileDep(path=path)


def to_plain(v: Any) -> Any:
    """Values → JSON-like Python (structs become dicts in field order); used by tests and dumps."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: to_plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_plain(x) for x in v]
    return v
