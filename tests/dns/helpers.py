"""Builders shared by the DNS tests: a catalog filled through ``Store.apply`` and DNS packets."""

from __future__ import annotations

import random
from typing import Any

from dnslib import EDNS0, QTYPE, DNSRecord

from agent.config import AgentConfig, DNSConfig, Ports
from agent.dns.resolver import Resolver
from agent.dns.responder import Responder
from agent.state import commands
from agent.state.store import Store


class Catalog:
    """A state store fed by consecutive log indexes, as Raft would."""

    def __init__(self) -> None:
        self.store = Store()
        self.index = 0

    def apply(self, cmd: dict[str, Any]) -> None:
        self.index += 1
        out = self.store.apply(self.index, cmd)
        assert out is True, out

    def node(self, name: str, address: str, *, meta: dict[str, str] | None = None,
             serf: str = "passing") -> Catalog:
        checks = [{"check_id": "serfHealth", "name": "Serf Health Status", "status": serf}] if serf else []
        self.apply(commands.register({"node": name, "address": address, "meta": meta or {}}, checks=checks))
        return self

    def service(self, node: str, name: str, port: int = 80, *, sid: str = "", tags: tuple[str, ...] = (),
                address: str = "", weights: dict[str, int] | None = None, status: str | None = None) -> Catalog:
        rec: dict[str, Any] = {"id": sid or name, "service": name, "port": port, "tags": list(tags),
                               "address": address}
        if weights is not None:
            rec["weights"] = weights
        checks = []
        if status is not None:
            checks.append({"check_id": f"service:{sid or name}", "name": f"{name} check", "status": status,
                           "service_id": sid or name})
        self.apply(commands.register({"node": node}, service=rec, checks=checks, skip_node_update=True))
        return self

    def check(self, node: str, check_id: str, status: str, service_id: str = "") -> Catalog:
        self.apply(commands.register({"node": node}, checks=[
            {"check_id": check_id, "name": check_id, "status": status, "service_id": service_id}],
            skip_node_update=True))
        return self

    def deregister(self, node: str, service_id: str = "") -> Catalog:
        self.apply(commands.deregister(node, service_id=service_id))
        return self


def config(**dns: Any) -> AgentConfig:
    recursors = dns.pop("recursors", ())
    port = dns.pop("port", 0)
    return AgentConfig(node_name="agent-one", datacenter="dc1", ports=Ports(dns=port),
                       recursors=tuple(recursors), dns_config=DNSConfig(**dns))


def responder(catalog: Catalog, cfg: AgentConfig | None = None, *, seed: int = 7,
              now: float = 1_700_000_000.0) -> Responder:
    clock = lambda: now  # noqa: E731
    res = Resolver(catalog.store, cfg or config(), clock=clock)
    return Responder(res, rng=random.Random(seed), clock=clock)


def query(name: str, qtype: str = "A", *, edns: int = 0, rd: bool = True, qid: int = 4242) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    q.header.rd = int(rd)
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    return bytes(q.pack())


def ask(r: Responder, name: str, qtype: str = "A", *, tcp: bool = False, edns: int = 0,
        rd: bool = True) -> DNSRecord:
    out = r.handle(query(name, qtype, edns=edns, rd=rd), tcp)
    assert isinstance(out, bytes), out
    return DNSRecord.parse(out)


def rrs(reply: DNSRecord, section: str = "rr", rtype: str | None = None) -> list[Any]:
    return [rr for rr in getattr(reply, section) if rtype is None or QTYPE[rr.rtype] == rtype]


def rdatas(reply: DNSRecord, section: str = "rr", rtype: str | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in rrs(reply, section, rtype))
