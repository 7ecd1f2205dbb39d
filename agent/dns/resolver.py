"""The DNS resolver: a question plus the state store → what the answer is. Pure: no sockets, no wire.

Follows Consul's DNS interface (``website/content/docs/discovery/dns.mdx``,
``docs/services/discovery/dns-static-lookups.mdx``):

* ``[TAG.]NAME.service[.DC].DOMAIN`` and RFC 2782 ``_NAME._TAG[.service][.DC].DOMAIN`` (``_tcp`` means
  "no tag filter") → A/AAAA (or CNAME for hostname addresses), SRV with the target's address in
  Additional. The service address wins over the node address.
* ``NAME.node[.DC].DOMAIN`` → A/AAAA (CNAME for a hostname) and, for TXT/ANY, the node meta as
  RFC 1464 TXT strings.
* ``HEX.addr[.DC].DOMAIN`` → the address spelled in hex (8 digits: A, 32 digits: AAAA).
* ``DOMAIN`` → SOA and NS (the servers: nodes running the ``consul`` service).
* ``IP.in-addr.arpa`` / ``ip6.arpa`` PTR → the nodes (and service addresses) with that address.

The ``.DC.dc`` canonical form of newer Consul is accepted as well as ``.DC``.

Health: an instance is left out if **any** of its checks (node checks, including ``serfHealth`` and
``_node_maintenance``, or its service checks) is critical; ``dns_config.only_passing`` also leaves out
warning. SRV weight is ``Weights.Warning`` for an instance with a warning check, else
``Weights.Passing``; priority is 1.

Negative answers — the choice ctk makes, which is Consul's documented behaviour: an unknown name,
service, node or datacenter, **and a known service with no healthy instance** (or none with the tag),
give NXDOMAIN with the SOA in Authority. A name that exists but has no record of the asked type
(AAAA for an IPv4-only service, MX for a node) gives NOERROR, an empty answer and the SOA in Authority
(RFC 2308 NODATA), so that negative caching uses ``soa.min_ttl`` — for node lookups too, where older
Consul versions sent no SOA.

Not implemented (answer NXDOMAIN): prepared queries (``.query``), ``.connect``, ``.ingress``,
``.virtual``, peers/partitions/namespaces, ``alt_domain``; node-meta TXT records are not added to the
Additional section of SRV answers (``enable_additional_node_meta_txt``), keeping UDP answers small;
hostname addresses get a CNAME but no recursive A lookup.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agent.config import AgentConfig
from agent.state.store import Store
from agent.state.structs import CRITICAL, PASSING, WARNING, HealthCheck, Node, ServiceInstance

from .wire import (
    AAAA,
    ANY,
    AXFR,
    CNAME,
    IXFR,
    NOERROR,
    NOTIMP,
    NS,
    NXDOMAIN,
    PTR,
    REFUSED,
    SOA,
    SRV,
    TXT,
    A,
    Record,
    SOAData,
    SRVData,
)

__all__ = ["Answer", "Group", "Resolver", "CatalogNames", "service_ttl", "SERVER_SERVICE"]

SERVER_SERVICE = "consul"  # every server appears as the service "consul"
_KINDS = frozenset({"service", "node", "addr", "query", "connect", "ingress", "virtual"})
_MAX_NS = 3  # Consul returns up to three servers as NS records


@dataclass(frozen=True, slots=True)
class Group:
    """Answer records that travel together with their Additional records (an SRV and its target's
    address). Groups are the unit that is shuffled and trimmed."""

    answer: tuple[Record, ...]
    additional: tuple[Record, ...] = ()


@dataclass(frozen=True)
class Answer:
    """The description of a response.

    ``shuffle``: groups are shuffled per query. ``record_limit``: at most this many groups
    (``a_record_limit``; 0 = no limit). ``forward``: outside the domain and recursors are configured.
    ``timed``: contains an SOA whose serial is the current time. ``topics``: store watch topics this
    answer depends on; ``names``: ``(kind, lowercase name)`` whose case-insensitive match it depends on.
    """

    rcode: int = NOERROR
    authoritative: bool = True
    groups: tuple[Group, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    shuffle: bool = False
    record_limit: int = 0
    forward: bool = False
    timed: bool = False
    topics: frozenset[str] = frozenset()
    names: frozenset[tuple[str, str]] = frozenset()

    @property
    def answer(self) -> tuple[Record, ...]:
        return tuple(r for g in self.groups for r in g.answer)

    @property
    def all_additional(self) -> tuple[Record, ...]:
        return tuple(r for g in self.groups for r in g.additional) + self.additional


def service_ttl(table: Mapping[str, float], name: str) -> int:
    """``dns_config.service_ttl``: the exact name wins, then the longest ``prefix*``, ``"*"`` last."""
    lowered = name.lower()
    for key, value in table.items():
        if not key.endswith("*") and key.lower() == lowered:
            return int(value)
    best: tuple[int, float] | None = None
    for key, value in table.items():
        if key.endswith("*") and lowered.startswith(key[:-1].lower()):
            if best is None or len(key) > best[0]:
                best = (len(key), value)
    return int(best[1]) if best else 0


class CatalogNames:
    """Lowercase → catalog spellings of service and node names (DNS names are case-insensitive).

    Rebuilt lazily after the store's ``services`` / ``nodes`` tables change (``stale``); every rebuild
    adds the ``(kind, lowercase name)`` keys whose spellings changed to ``changed``, which the answer
    cache drains to drop what it holds for those names.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.services: dict[str, tuple[str, ...]] = {}
        self.nodes: dict[str, tuple[str, ...]] = {}
        self.changed: set[tuple[str, str]] = set()
        self.stale = True
        self._svc_stale = True
        self._node_stale = True

    def _mark_services(self) -> None:
        self._svc_stale = self.stale = True

    def _mark_nodes(self) -> None:
        self._node_stale = self.stale = True

    def refresh(self) -> None:
        hub = self._store.hub
        if self._svc_stale:
            self._svc_stale = False
            hub.watch(self._mark_services, topics=["services"])
            spelled: dict[str, set[str]] = {}
            for table in self._store.services.values():
                for svc in table.values():
                    spelled.setdefault(svc.service.lower(), set()).add(svc.service)
            new = {k: tuple(sorted(v)) for k, v in spelled.items()}
            self.changed |= {("service", k) for k in _diff(self.services, new)}
            self.services = new
        if self._node_stale:
            self._node_stale = False
            hub.watch(self._mark_nodes, topics=["nodes"])
            nodes: dict[str, set[str]] = {}
            for name in self._store.nodes:
                nodes.setdefault(name.lower(), set()).add(name)
            new_nodes = {k: tuple(sorted(v)) for k, v in nodes.items()}
            self.changed |= {("node", k) for k in _diff(self.nodes, new_nodes)}
            self.nodes = new_nodes
        self.stale = False


def _diff(old: dict[str, tuple[str, ...]], new: dict[str, tuple[str, ...]]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(addr)
    except ValueError:
        return None


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _hex_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return ip.packed.hex()


def _txt_escape_key(key: str) -> str:
    out = key.replace("`", "``").replace("=", "`=")
    stripped = out.lstrip(" ")
    out = "` " * (len(out) - len(stripped)) + stripped
    stripped = out.rstrip(" ")
    return stripped + "` " * (len(out) - len(stripped))


def node_meta_txt(meta: dict[str, str]) -> tuple[str, ...]:
    """RFC 1464 ``key=value`` strings; keys starting ``rfc1035-`` give the bare value (as Consul)."""
    out = []
    for key in sorted(meta):
        value = meta[key]
        out.append(value if key.startswith("rfc1035-") else f"{_txt_escape_key(key)}={value}")
    return tuple(out)


@dataclass
class _Ctx:
    topics: set[str] = field(default_factory=set)
    names: set[tuple[str, str]] = field(default_factory=set)


class Resolver:
    """Answers one question from the store: :meth:`resolve` (labels) or :meth:`resolve_name` (text).

    ``clock`` gives the SOA serial (unix time); ``node_address`` is this agent's address, used for NS
    glue when no server is in the catalog.
    """

    def __init__(self, store: Store, config: AgentConfig, *, clock: Callable[[], float] = time.time,
                 node_address: str = "") -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.node_address = node_address
        self.names = CatalogNames(store)
        domain = config.domain.lower().strip(".")
        self.domain_labels: tuple[str, ...] = tuple(domain.split(".")) if domain else ()
        self.domain = domain + "."
        self.dc = config.datacenter
        self._dc_lower = config.datacenter.lower()
        self._dns = config.dns_config
        self._service_ttls = dict(config.dns_config.service_ttl_s)
        self._recursion = bool(config.recursors)

    # --------------------------------------------------------------- entry points

    def resolve_name(self, qname: str, qtype: int) -> Answer:
        text = qname[:-1] if qname.endswith(".") else qname
        return self.resolve(tuple(text.split(".")) if text else (), qtype)

    def resolve(self, labels: Sequence[str], qtype: int) -> Answer:
        if self.names.stale:
            self.names.refresh()
        lab = tuple(x.lower() for x in labels)
        ctx = _Ctx()
        d = len(self.domain_labels)
        if len(lab) < d or lab[len(lab) - d:] != self.domain_labels:
            answer = self._outside(lab, qtype, ctx)
        elif qtype in (AXFR, IXFR):
            answer = Answer(rcode=NOTIMP, authoritative=False)
        else:
            answer = self._inside(lab[: len(lab) - d], ".".join(lab) + ".", qtype, ctx)
        if ctx.topics or ctx.names:
            return replace(answer, topics=frozenset(ctx.topics), names=frozenset(ctx.names))
        return answer

    # ------------------------------------------------------------------- helpers

    def _soa(self) -> Record:
        dns = self._dns
        return Record(self.domain, SOA, dns.soa_min_ttl, SOAData(
            "ns." + self.domain, "hostmaster." + self.domain, int(self.clock()),
            dns.soa_refresh, dns.soa_retry, dns.soa_expire, dns.soa_min_ttl))

    def _nxdomain(self) -> Answer:
        return Answer(rcode=NXDOMAIN, authority=(self._soa(),), timed=True)

    def _nodata(self) -> Answer:
        return Answer(rcode=NOERROR, authority=(self._soa(),), timed=True)

    def _node_fqdn(self, node: str) -> str:
        return f"{node}.node.{self.dc}.{self.domain}"

    def _address_records(self, owner: str, addr: str, ttl: int, qtype: int) -> tuple[Record, ...]:
        """A/AAAA for an IP of the asked family (ANY: either), CNAME for a hostname."""
        ip = _ip(addr)
        if ip is None:
            return (Record(owner, CNAME, ttl, _fqdn(addr)),) if addr and qtype in (A, AAAA, ANY) else ()
        rtype = A if ip.version == 4 else AAAA
        if qtype == rtype or qtype == ANY:
            return (Record(owner, rtype, ttl, str(ip)),)
        return ()

    def _glue(self, owner: str, addr: str, ttl: int) -> tuple[Record, ...]:
        ip = _ip(addr)
        if ip is None:
            return (Record(owner, CNAME, ttl, _fqdn(addr)),) if addr else ()
        return (Record(owner, A if ip.version == 4 else AAAA, ttl, str(ip)),)

    # ------------------------------------------------------------------- dispatch

    def _inside(self, rest: tuple[str, ...], owner: str, qtype: int, ctx: _Ctx) -> Answer:
        if not rest:
            return self._apex(qtype, ctx)
        kind: str | None = None
        dc: str | None = None
        parts: tuple[str, ...] = ()
        if rest[-1] in _KINDS:
            kind, parts = rest[-1], rest[:-1]
        elif len(rest) >= 2 and rest[-2] in _KINDS:
            kind, parts, dc = rest[-2], rest[:-2], rest[-1]
        elif len(rest) >= 3 and rest[-1] == "dc" and rest[-3] in _KINDS:
            kind, parts, dc = rest[-3], rest[:-3], rest[-2]
        elif len(rest) in (2, 3) and rest[0].startswith("_") and rest[1].startswith("_"):
            # RFC 2782 without the optional "service" label: _name._tag[.dc].consul
            kind, parts, dc = "service", rest[:2], (rest[2] if len(rest) == 3 else None)
        if kind is None or not parts or (dc is not None and dc != self._dc_lower):
            return self._nxdomain()
        if kind == "service":
            return self._service(parts, owner, qtype, ctx)
        if kind == "node":
            return self._node(".".join(parts), owner, qtype, ctx)
        if kind == "addr":
            return self._addr(parts, owner, qtype)
        return self._nxdomain()

    # ------------------------------------------------------------------- services

    def healthy_instances(self, lower_name: str, tag: str, ctx: _Ctx | None = None
                          ) -> list[tuple[Node, ServiceInstance, list[HealthCheck]]]:
        """Instances of the service (any spelling) passing the DNS health filter, catalog order."""
        if self.names.stale:
            self.names.refresh()
        out: list[tuple[Node, ServiceInstance, list[HealthCheck]]] = []
        spellings = self.names.services.get(lower_name, ())
        if ctx is not None:
            ctx.names.add(("service", lower_name))
            ctx.topics.update("service:" + s for s in spellings)
        only_passing = self._dns.only_passing
        for actual in spellings:
            _, rows = self.store.health_service(actual, tags=(tag,) if tag else ())
            for node, svc, checks in rows:
                if any(c.status == CRITICAL for c in checks):
                    continue
                if only_passing and any(c.status != PASSING for c in checks):
                    continue
                out.append((node, svc, checks))
        return out

    def _service(self, parts: tuple[str, ...], owner: str, qtype: int, ctx: _Ctx) -> Answer:
        if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
            name, tag = parts[0][1:], parts[1][1:]
            if tag == "tcp":
                tag = ""
        else:
            name, tag = parts[-1], ".".join(parts[:-1])
        if not name:
            return self._nxdomain()
        rows = self.healthy_instances(name, tag, ctx)
        if not rows:
            return self._nxdomain()
        ttl = service_ttl(self._service_ttls, rows[0][1].service)
        if qtype == SRV:
            return Answer(groups=self._srv_groups(owner, rows, ttl), shuffle=True)
        if qtype in (A, AAAA, ANY):
            groups: list[Group] = []
            seen: set[str] = set()
            for node, svc, _ in rows:
                addr = svc.address or node.address
                if addr in seen:
                    continue
                seen.add(addr)
                recs = self._address_records(owner, addr, ttl, qtype)
                if recs:
                    groups.append(Group(recs))
            if not groups:
                return self._nodata()
            return Answer(groups=tuple(groups), shuffle=True, record_limit=max(self._dns.a_record_limit, 0))
        return self._nodata()

    def _srv_groups(self, owner: str, rows: list[tuple[Node, ServiceInstance, list[HealthCheck]]],
                    ttl: int) -> tuple[Group, ...]:
        groups: list[Group] = []
        seen: set[tuple[str, str, int]] = set()
        for node, svc, checks in rows:
            addr = svc.address or node.address
            key = (node.node, addr, svc.port)
            if key in seen:
                continue
            seen.add(key)
            status = WARNING if any(c.status == WARNING for c in checks) else PASSING
            weights = svc.weights or {}
            weight = weights.get("Warning" if status == WARNING else "Passing", 1)
            weight = min(max(int(weight if weight is not None else 1), 0), 0xFFFF)
            ip = _ip(svc.address) if svc.address else None
            if svc.address and svc.address != node.address:
                if ip is not None:
                    target = f"{_hex_ip(ip)}.addr.{self.dc}.{self.domain}"
                    extra = self._glue(target, svc.address, ttl)
                else:
                    target, extra = _fqdn(svc.address), ()
            else:
                target = self._node_fqdn(node.node)
                extra = self._glue(target, node.address, ttl)
            srv = Record(owner, SRV, ttl, SRVData(1, weight, svc.port & 0xFFFF, target))
            groups.append(Group((srv,), extra))
        return tuple(groups)

    # ---------------------------------------------------------------------- nodes

    def _node(self, name: str, owner: str, qtype: int, ctx: _Ctx) -> Answer:
        lower = name.lower()
        ctx.names.add(("node", lower))
        spellings = self.names.nodes.get(lower, ())
        ctx.topics.update("node:" + s for s in spellings)
        node = next((self.store.nodes[s] for s in spellings if s in self.store.nodes), None)
        if node is None:
            return self._nxdomain()
        ttl = int(self._dns.node_ttl_s)
        recs = list(self._address_records(owner, node.address, ttl, qtype))
        if qtype in (TXT, ANY) and node.meta:
            recs.append(Record(owner, TXT, ttl, node_meta_txt(node.meta)))
        if not recs:
            return self._nodata()
        return Answer(groups=(Group(tuple(recs)),))

    def _addr(self, parts: tuple[str, ...], owner: str, qtype: int) -> Answer:
        if len(parts) != 1 or len(parts[0]) not in (8, 32):
            return self._nxdomain()
        try:
            raw = bytes.fromhex(parts[0])
        except ValueError:
            return self._nxdomain()
        ip = ipaddress.ip_address(raw)
        rtype = A if ip.version == 4 else AAAA
        if qtype not in (rtype, ANY):
            return self._nodata()
        return Answer(groups=(Group((Record(owner, rtype, int(self._dns.node_ttl_s), str(ip)),)),))

    # ----------------------------------------------------------------------- apex

    def servers(self, ctx: _Ctx | None = None) -> list[tuple[str, str]]:
        """(node, address) of the servers: instances of ``consul``, else this agent's own node."""
        if ctx is not None:
            ctx.topics.update(("service:" + SERVER_SERVICE, "node:" + self.config.node_name))
        _, rows = self.store.health_service(SERVER_SERVICE)
        found = sorted({(n.node, n.address) for n, _, _ in rows})
        if found:
            return found
        own = self.store.nodes.get(self.config.node_name)
        return [(self.config.node_name, own.address if own else self.node_address)]

    def _apex(self, qtype: int, ctx: _Ctx) -> Answer:
        if qtype not in (SOA, NS, ANY):
            return self._nodata()
        ttl = int(self._dns.node_ttl_s)
        ns_groups = []
        for node, addr in self.servers(ctx)[:_MAX_NS]:
            target = self._node_fqdn(node)
            ns_groups.append(Group((Record(self.domain, NS, ttl, target),), self._glue(target, addr, ttl)))
        if qtype == NS:
            return Answer(groups=tuple(ns_groups), shuffle=True)
        soa = Group((self._soa(),))
        if qtype == ANY:
            return Answer(groups=(Group(soa.answer + tuple(r for g in ns_groups for r in g.answer),
                                        tuple(r for g in ns_groups for r in g.additional)),), timed=True)
        return Answer(groups=(soa,), authority=tuple(r for g in ns_groups for r in g.answer),
                      additional=tuple(r for g in ns_groups for r in g.additional), timed=True)

    # -------------------------------------------------------------------- outside

    def _outside(self, lab: tuple[str, ...], qtype: int, ctx: _Ctx) -> Answer:
        if qtype in (PTR, ANY) and len(lab) > 2 and lab[-1] == "arpa" and lab[-2] in ("in-addr", "ip6"):
            ptr = self._reverse(lab, qtype, ctx)
            if ptr is not None:
                return ptr
        if self._recursion:
            return Answer(rcode=NOERROR, authoritative=False, forward=True, topics=frozenset(ctx.topics))
        if len(lab) > 2 and lab[-1] == "arpa" and lab[-2] in ("in-addr", "ip6"):
            return Answer(rcode=NXDOMAIN, authoritative=False)
        return Answer(rcode=REFUSED, authoritative=False)

    def _reverse(self, lab: tuple[str, ...], qtype: int, ctx: _Ctx) -> Answer | None:
        ctx.topics.update(("nodes", "services"))
        digits = lab[:-2]
        try:
            if lab[-2] == "in-addr":
                if len(digits) != 4:
                    return None
                ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                    ".".join(reversed(digits)))
            else:
                if len(digits) != 32 or any(len(x) != 1 for x in digits):
                    return None
                ip = ipaddress.IPv6Address(bytes.fromhex("".join(reversed(digits))))
        except ValueError:
            return None
        owner = ".".join(lab) + "."
        ttl = int(self._dns.node_ttl_s)
        targets: list[str] = []
        for name in sorted(self.store.nodes):
            if _ip(self.store.nodes[name].address) == ip:
                targets.append(self._node_fqdn(name))
        for table in self.store.services.values():
            for svc in table.values():
                if svc.address and _ip(svc.address) == ip:
                    t = f"{svc.service}.service.{self.dc}.{self.domain}"
                    if t not in targets:
                        targets.append(t)
        if not targets:
            return None
        return Answer(groups=tuple(Group((Record(owner, PTR, ttl, t),)) for t in targets))
