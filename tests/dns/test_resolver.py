"""The DNS resolver and answer cache, without sockets: request bytes in, response bytes out.

Facts from Consul's ``docs/discovery/dns.mdx`` (see /work/shared/reference/consul-api.md §4).
"""

from __future__ import annotations

import itertools

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from agent.dns.resolver import Resolver, node_meta_txt, service_ttl
from agent.dns.responder import FORWARD
from agent.dns.wire import NXDOMAIN, SRV, A

from .helpers import Catalog, ask, config, query, rdatas, responder, rrs

NOW = 1_700_000_000.0


@pytest.fixture
def cat() -> Catalog:
    c = Catalog()
    c.node("agent-one", "10.0.0.1").node("agent-two", "10.0.0.2").node("agent-three", "10.0.0.3")
    c.service("agent-one", "web", 8080, tags=("rails",))
    c.service("agent-two", "web", 8081, tags=("rails", "v2"))
    c.service("agent-three", "web", 8082, tags=("django",))
    c.service("agent-one", "consul", 8300)
    return c


# ---------------------------------------------------------------------------- services


def test_srv_lists_instances_with_addresses_in_additional(cat: Catalog) -> None:
    reply = ask(responder(cat), "web.service.consul", "SRV")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
    srv = rrs(reply, "rr", "SRV")
    assert sorted((r.rdata.priority, r.rdata.weight, r.rdata.port, str(r.rdata.target)) for r in srv) == [
        (1, 1, 8080, "agent-one.node.dc1.consul."),
        (1, 1, 8081, "agent-two.node.dc1.consul."),
        (1, 1, 8082, "agent-three.node.dc1.consul."),
    ]
    additional = {str(r.rname): str(r.rdata) for r in rrs(reply, "ar", "A")}
    assert additional == {"agent-one.node.dc1.consul.": "10.0.0.1", "agent-two.node.dc1.consul.": "10.0.0.2",
                          "agent-three.node.dc1.consul.": "10.0.0.3"}
    assert all(str(r.rname) == "web.service.consul." for r in srv)


def test_a_query_answers_every_healthy_address(cat: Catalog) -> None:
    reply = ask(responder(cat), "web.service.consul", "A")
    assert rdatas(reply) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert reply.ar == [] and reply.auth == []


def test_tag_filter_and_dotted_tags(cat: Catalog) -> None:
    cat.service("agent-three", "api", 9000, tags=("blue.v1",))
    r = responder(cat)
    assert rdatas(ask(r, "rails.web.service.consul")) == ["10.0.0.1", "10.0.0.2"]
    assert rdatas(ask(r, "RAILS.web.service.consul")) == ["10.0.0.1", "10.0.0.2"]  # tags case-insensitive
    assert rdatas(ask(r, "django.web.service.consul")) == ["10.0.0.3"]
    assert rdatas(ask(r, "blue.v1.api.service.consul")) == ["10.0.0.3"]  # everything before the name is the tag
    missing = ask(r, "nosuchtag.web.service.consul")
    assert missing.header.rcode == RCODE.NXDOMAIN and rrs(missing, "auth", "SOA")


def test_rfc2782_forms(cat: Catalog) -> None:
    r = responder(cat)

    def ports(reply: DNSRecord) -> list[int]:
        return sorted(rr.rdata.port for rr in rrs(reply, "rr", "SRV"))

    assert ports(ask(r, "_web._rails.service.consul", "SRV")) == [8080, 8081]
    assert ports(ask(r, "_web._tcp.service.consul", "SRV")) == [8080, 8081, 8082]  # _tcp = no tag filter
    assert ports(ask(r, "_web._tcp.consul", "SRV")) == [8080, 8081, 8082]  # .service is optional
    assert ports(ask(r, "_web._tcp.service.dc1.consul", "SRV")) == [8080, 8081, 8082]
    assert ports(ask(r, "_web._django.dc1.consul", "SRV")) == [8082]
    assert ask(r, "_web._nope.service.consul", "SRV").header.rcode == RCODE.NXDOMAIN


def test_datacenter_label(cat: Catalog) -> None:
    r = responder(cat)
    assert rdatas(ask(r, "web.service.dc1.consul")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert rdatas(ask(r, "web.service.DC1.consul")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert rdatas(ask(r, "web.service.dc1.dc.consul")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    other = ask(r, "web.service.dc2.consul")
    assert other.header.rcode == RCODE.NXDOMAIN and rrs(other, "auth", "SOA")


def test_service_address_wins_and_srv_targets_the_addr_name() -> None:
    c = Catalog().node("n1", "10.0.0.1").node("n2", "10.0.0.2")
    c.service("n1", "db", 5432, address="192.0.2.10")
    c.service("n2", "db", 5432, address="10.0.0.2")  # same as the node's: target stays the node name
    r = responder(c)
    assert rdatas(ask(r, "db.service.consul")) == ["10.0.0.2", "192.0.2.10"]
    reply = ask(r, "db.service.consul", "SRV")
    targets = sorted(str(rr.rdata.target) for rr in rrs(reply, "rr", "SRV"))
    assert targets == ["c000020a.addr.dc1.consul.", "n2.node.dc1.consul."]
    additional = {str(rr.rname): str(rr.rdata) for rr in reply.ar}
    assert additional == {"c000020a.addr.dc1.consul.": "192.0.2.10", "n2.node.dc1.consul.": "10.0.0.2"}


def test_ipv6_and_hostname_addresses() -> None:
    c = Catalog().node("n6", "2001:db8::1").node("n4", "10.0.0.4")
    c.service("n6", "v6", 80)
    c.service("n4", "ext", 443, address="example.com")
    r = responder(c)
    assert rdatas(ask(r, "v6.service.consul", "AAAA")) == ["2001:db8::1"]
    nodata = ask(r, "v6.service.consul", "A")
    assert nodata.header.rcode == RCODE.NOERROR and nodata.rr == [] and rrs(nodata, "auth", "SOA")
    srv = ask(r, "v6.service.consul", "SRV")
    assert rdatas(srv, "ar", "AAAA") == ["2001:db8::1"]
    cname = ask(r, "ext.service.consul")
    assert rdatas(cname, "rr", "CNAME") == ["example.com."]
    assert [str(rr.rdata.target) for rr in rrs(ask(r, "ext.service.consul", "SRV"), "rr", "SRV")] == ["example.com."]


def test_duplicate_addresses_are_answered_once() -> None:
    c = Catalog().node("n1", "10.0.0.1")
    c.service("n1", "web", 80, sid="web-1").service("n1", "web", 81, sid="web-2")
    r = responder(c)
    assert rdatas(ask(r, "web.service.consul")) == ["10.0.0.1"]
    assert len(rrs(ask(r, "web.service.consul", "SRV"), "rr", "SRV")) == 2  # different ports


# ---------------------------------------------------------------------------- health


def test_health_filtering() -> None:
    c = Catalog()
    for i, name in enumerate(("ok", "warn", "svc-critical", "serf-critical", "maint"), start=1):
        c.node(name, f"10.0.1.{i}", serf="critical" if name == "serf-critical" else "passing")
        c.service(name, "web", 80, weights={"Passing": 10, "Warning": 3},
                  status={"warn": "warning", "svc-critical": "critical"}.get(name, "passing"))
    c.check("maint", "_node_maintenance", "critical")
    r = responder(c)
    assert rdatas(ask(r, "web.service.consul")) == ["10.0.1.1", "10.0.1.2"]
    weights = {str(rr.rdata.target): rr.rdata.weight for rr in rrs(ask(r, "web.service.consul", "SRV"), "rr", "SRV")}
    assert weights == {"ok.node.dc1.consul.": 10, "warn.node.dc1.consul.": 3}
    strict = responder(c, config(only_passing=True))
    assert rdatas(ask(strict, "web.service.consul")) == ["10.0.1.1"]


def test_known_service_with_no_healthy_instance_is_nxdomain() -> None:
    """Consul's documented behaviour: all instances unhealthy → NXDOMAIN (with the SOA)."""
    c = Catalog().node("n1", "10.0.0.1").service("n1", "web", 80, status="critical")
    reply = ask(responder(c), "web.service.consul", "SRV")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert reply.rr == [] and len(rrs(reply, "auth", "SOA")) == 1


def test_soa_in_negative_answers() -> None:
    c = Catalog().node("agent-one", "10.0.0.1")
    cfg = config(soa_refresh=100, soa_retry=20, soa_expire=300, soa_min_ttl=7)
    reply = ask(responder(c, cfg), "missing.service.consul")
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.header.aa == 1
    (soa,) = rrs(reply, "auth", "SOA")
    assert str(soa.rname) == "consul." and soa.ttl == 7
    d = soa.rdata
    assert (str(d.mname), str(d.rname)) == ("ns.consul.", "hostmaster.consul.")
    assert d.times == (int(NOW), 100, 20, 300, 7)


@pytest.mark.parametrize("name", ["nonsense.consul", "x.query.consul", "a.b.unknown.consul", "web.connect.consul",
                                  "node.consul", "service.consul"])
def test_invalid_names_in_the_domain_are_nxdomain(cat: Catalog, name: str) -> None:
    reply = ask(responder(cat), name)
    assert reply.header.rcode == RCODE.NXDOMAIN and rrs(reply, "auth", "SOA")


def test_nodata_for_other_types(cat: Catalog) -> None:
    r = responder(cat)
    for name, qtype in (("web.service.consul", "AAAA"), ("web.service.consul", "MX"),
                        ("agent-one.node.consul", "MX"), ("agent-one.node.consul", "AAAA"),
                        ("agent-one.node.consul", "SRV")):
        reply = ask(r, name, qtype)
        assert reply.header.rcode == RCODE.NOERROR, (name, qtype)
        assert reply.rr == [] and len(rrs(reply, "auth", "SOA")) == 1, (name, qtype)


# ------------------------------------------------------------------------------- nodes


def test_node_lookups() -> None:
    c = Catalog().node("agent-two", "10.0.0.2", meta={"rack": "r1", "rfc1035-x": "raw", "a=b": "c"})
    c.node("web.frontend", "10.0.0.9").node("six", "2001:db8::6")
    r = responder(c)
    assert rdatas(ask(r, "agent-two.node.consul")) == ["10.0.0.2"]
    assert rdatas(ask(r, "agent-two.node.dc1.consul")) == ["10.0.0.2"]
    assert rdatas(ask(r, "AGENT-TWO.node.consul")) == ["10.0.0.2"]
    assert rdatas(ask(r, "web.frontend.node.consul")) == ["10.0.0.9"]  # node names may contain dots
    assert rdatas(ask(r, "six.node.consul", "AAAA")) == ["2001:db8::6"]
    txt = ask(r, "agent-two.node.consul", "TXT")
    assert [s.decode() for s in rrs(txt, "rr", "TXT")[0].rdata.data] == ["a`=b=c", "rack=r1", "raw"]
    anyq = ask(r, "agent-two.node.consul", "ANY")
    assert sorted(QTYPE[rr.rtype] for rr in anyq.rr) == ["A", "TXT"]
    missing = ask(r, "nobody.node.consul")
    assert missing.header.rcode == RCODE.NXDOMAIN and rrs(missing, "auth", "SOA")


def test_node_meta_txt_escaping() -> None:
    assert node_meta_txt({" k": "v", "x`y": "1", "rfc1035-z": "plain"}) == ("` k=v", "plain", "x``y=1")


def test_addr_names() -> None:
    r = responder(Catalog())
    assert rdatas(ask(r, "c000020a.addr.consul")) == ["192.0.2.10"]
    assert rdatas(ask(r, "C000020A.addr.dc1.consul")) == ["192.0.2.10"]
    v6 = "20010db8000000000000000000000001"
    assert rdatas(ask(r, f"{v6}.addr.consul", "AAAA")) == ["2001:db8::1"]
    for bad in ("c000020.addr.consul", "zz00020a.addr.consul", "a.c000020a.addr.consul", "addr.consul"):
        assert ask(r, bad).header.rcode == RCODE.NXDOMAIN, bad
    nodata = ask(r, "c000020a.addr.consul", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and nodata.rr == []


def test_apex_soa_and_ns(cat: Catalog) -> None:
    r = responder(cat)
    soa = ask(r, "consul", "SOA")
    assert rrs(soa, "rr", "SOA") and rdatas(soa, "auth", "NS") == ["agent-one.node.dc1.consul."]
    assert rdatas(soa, "ar", "A") == ["10.0.0.1"]
    ns = ask(r, "consul", "NS")
    assert rdatas(ns, "rr", "NS") == ["agent-one.node.dc1.consul."] and rdatas(ns, "ar", "A") == ["10.0.0.1"]
    a = ask(r, "consul", "A")
    assert a.header.rcode == RCODE.NOERROR and a.rr == [] and rrs(a, "auth", "SOA")
    assert ask(r, "consul", "AXFR", ).header.rcode == RCODE.NOTIMP


def test_apex_without_servers_uses_own_node() -> None:
    c = Catalog().node("agent-one", "10.9.9.9")
    ns = ask(responder(c), "consul", "NS")
    assert rdatas(ns, "rr", "NS") == ["agent-one.node.dc1.consul."] and rdatas(ns, "ar", "A") == ["10.9.9.9"]


def test_reverse_lookup(cat: Catalog) -> None:
    r = responder(cat)
    assert rdatas(ask(r, "2.0.0.10.in-addr.arpa", "PTR")) == ["agent-two.node.dc1.consul."]
    assert ask(r, "9.9.9.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN


# -------------------------------------------------------------------------------- TTLs


def test_service_ttl_rules() -> None:
    table = {"*": 5.0, "web*": 10.0, "web-api*": 20.0, "web": 30.0}
    assert service_ttl(table, "web") == 30
    assert service_ttl(table, "web-api-v2") == 20
    assert service_ttl(table, "webby") == 10
    assert service_ttl(table, "db") == 5
    assert service_ttl({}, "db") == 0
    assert service_ttl({"db*": 3.0}, "web") == 0


def test_ttls_in_answers(cat: Catalog) -> None:
    r = responder(cat, config(node_ttl_s=11.0, service_ttl_s={"web": 22.0, "*": 3.0}))
    assert {rr.ttl for rr in ask(r, "agent-one.node.consul").rr} == {11}
    srv = ask(r, "web.service.consul", "SRV")
    assert {rr.ttl for rr in srv.rr + srv.ar} == {22}
    assert {rr.ttl for rr in ask(r, "consul.service.consul").rr} == {3}
    assert {rr.ttl for rr in ask(r, "c000020a.addr.consul").rr} == {11}
    default = responder(cat)
    assert {rr.ttl for rr in ask(default, "web.service.consul").rr} == {0}


# ---------------------------------------------------------------------- limits, shuffle


def _many(n: int, prefix: str = "node") -> Catalog:
    c = Catalog()
    for i in range(n):
        c.node(f"{prefix}{i}", f"10.1.{i // 250}.{i % 250 + 1}")
        c.service(f"{prefix}{i}", "big", 9000 + i)
    return c


def test_a_record_limit_caps_a_but_not_srv() -> None:
    c = _many(6)
    r = responder(c, config(a_record_limit=2))
    for tcp in (False, True):
        reply = ask(r, "big.service.consul", tcp=tcp)
        assert len(reply.rr) == 2 and reply.header.tc == 0
    assert len(ask(r, "big.service.consul", "SRV", tcp=True).rr) == 6


def test_answers_are_shuffled_per_query(cat: Catalog) -> None:
    r = responder(cat)
    orders = {tuple(str(rr.rdata) for rr in ask(r, "web.service.consul").rr) for _ in range(200)}
    assert len(orders) == 6  # every permutation of 3 shows up
    big = responder(_many(12))
    firsts = {str(ask(big, "big.service.consul", tcp=True).rr[0].rdata) for _ in range(300)}
    assert len(firsts) == 12


def test_udp_without_edns_caps_answers_and_sets_tc() -> None:
    r = responder(_many(30))
    udp = ask(r, "big.service.consul", "SRV")
    assert len(udp.rr) == 3 and len(udp.ar) == 3 and udp.header.tc == 1
    assert {str(a.rname) for a in udp.ar} == {str(s.rdata.target) for s in udp.rr}  # extras follow the answers
    tcp = ask(r, "big.service.consul", "SRV", tcp=True)
    assert len(tcp.rr) == 30 and len(tcp.ar) == 30 and tcp.header.tc == 0
    edns = ask(r, "big.service.consul", "SRV", edns=4096)
    assert len(edns.rr) == 30 and edns.header.tc == 0
    assert [QTYPE[rr.rtype] for rr in edns.ar].count("OPT") == 1
    small = ask(r, "big.service.consul", "SRV", edns=1232)
    assert 3 < len(small.rr) < 30 and small.header.tc == 1
    assert len(r.handle(query("big.service.consul", "SRV", edns=1232))) <= 1232  # type: ignore[arg-type]


def test_udp_answer_limit_setting_and_small_services() -> None:
    r = responder(_many(5), config(udp_answer_limit=1))
    reply = ask(r, "big.service.consul")
    assert len(reply.rr) == 1 and reply.header.tc == 1
    three = responder(_many(3))
    assert ask(three, "big.service.consul").header.tc == 0


def test_512_byte_limit_trims_long_answers() -> None:
    c = _many(3, prefix="n" * 60 + "-")  # long node names: 3 SRV + 3 A do not fit in 512 bytes
    r = responder(c)
    out = r.handle(query("big.service.consul", "SRV"))
    assert isinstance(out, bytes) and len(out) <= 512
    from dnslib import DNSRecord

    reply = DNSRecord.parse(out)
    assert 0 < len(reply.rr) < 3 and reply.header.tc == 1
    assert len(ask(r, "big.service.consul", "SRV", tcp=True).rr) == 3


def test_edns_version_1_gets_badvers() -> None:
    from dnslib import EDNS0, DNSRecord

    q = DNSRecord.question("web.service.consul")
    q.add_ar(EDNS0(udp_len=4096, version=1))
    out = responder(Catalog()).handle(bytes(q.pack()))
    assert isinstance(out, bytes)
    reply = DNSRecord.parse(out)
    (opt,) = reply.ar
    assert (opt.ttl >> 24) == 1 and reply.header.rcode == 0  # extended rcode 16 = BADVERS


# ------------------------------------------------------------------- case and flags


def test_case_insensitive_names_and_question_echo() -> None:
    c = Catalog().node("Agent-Two", "10.0.0.2").service("Agent-Two", "Web", 80)
    r = responder(c)
    reply = ask(r, "wEb.SeRvIcE.CoNsUl")
    assert rdatas(reply) == ["10.0.0.2"]
    assert str(reply.q.qname) == "wEb.SeRvIcE.CoNsUl."  # question echoed as sent (0x20 clients)
    assert rdatas(ask(r, "agent-two.node.consul")) == ["10.0.0.2"]


def test_flags_rd_ra_aa(cat: Catalog) -> None:
    r = responder(cat)
    reply = ask(r, "web.service.consul", rd=False)
    assert (reply.header.aa, reply.header.rd, reply.header.ra, reply.header.qr) == (1, 0, 0, 1)
    assert reply.header.id == 4242
    reply = ask(r, "web.service.consul", rd=True)
    assert reply.header.rd == 1
    with_recursors = responder(cat, config(recursors=["127.0.0.1:1"]))
    assert ask(with_recursors, "web.service.consul").header.ra == 1


def test_outside_domain_refused_or_forwarded(cat: Catalog) -> None:
    refused = ask(responder(cat), "example.com")
    assert refused.header.rcode == RCODE.REFUSED and refused.header.aa == 0 and refused.header.ra == 0
    assert ask(responder(cat), "consul.example.com").header.rcode == RCODE.REFUSED
    fwd = responder(cat, config(recursors=["127.0.0.1:1"]))
    assert fwd.handle(query("example.com")) is FORWARD
    assert fwd.handle(query("9.9.9.10.in-addr.arpa", "PTR")) is FORWARD


def test_custom_domain() -> None:
    c = Catalog().node("n1", "10.0.0.1").service("n1", "web", 80)
    cfg = config()
    from dataclasses import replace

    r = responder(c, replace(cfg, domain="ctk.internal."))
    assert rdatas(ask(r, "web.service.ctk.internal")) == ["10.0.0.1"]
    assert ask(r, "web.service.consul").header.rcode == RCODE.REFUSED
    (soa,) = rrs(ask(r, "nope.service.ctk.internal"), "auth", "SOA")
    assert str(soa.rdata.mname) == "ns.ctk.internal."


def test_disable_compression_still_parses(cat: Catalog) -> None:
    plain = responder(cat, config(disable_compression=True))
    packed = responder(cat)
    a = plain.handle(query("web.service.consul", "SRV"))
    b = packed.handle(query("web.service.consul", "SRV"))
    assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) > len(b)
    assert b"\xc0\x0c" not in a[40:]  # no pointer back to the question
    assert len(ask(plain, "web.service.consul", "SRV").rr) == 3


def test_names_that_cannot_be_dns_names_are_skipped() -> None:
    c = Catalog().node("x" * 70, "10.0.0.1").node("ok", "10.0.0.2")
    c.service("x" * 70, "web", 80).service("ok", "web", 80)
    reply = ask(responder(c), "web.service.consul", "SRV")
    assert [str(rr.rdata.target) for rr in reply.rr] == ["ok.node.dc1.consul."]


# ------------------------------------------------------------------------------ cache


def test_answers_are_encoded_once_per_change(cat: Catalog) -> None:
    r = responder(cat)
    for _ in range(50):
        ask(r, "web.service.consul", "SRV")
        ask(r, "web.service.consul", "SRV", tcp=True)
        ask(r, "WEB.service.consul", "SRV", edns=4096)
    assert r.encodes == 1
    cat.apply({"op": "kv", "verb": "set", "key": "k", "value": b"v", "flags": 0, "index": 0, "session": "",
               "now": 0.0})
    cat.service("agent-one", "other", 1)  # another service: not this answer's business
    ask(r, "web.service.consul", "SRV")
    assert r.encodes == 1
    cat.check("agent-two", "serfHealth", "critical")  # health of an instance changes
    reply = ask(r, "web.service.consul", "SRV")
    assert r.encodes == 2
    assert sorted(rr.rdata.port for rr in reply.rr) == [8080, 8082]


def test_cache_follows_node_address_and_deregistration(cat: Catalog) -> None:
    r = responder(cat)
    assert "10.0.0.1" in rdatas(ask(r, "web.service.consul", "SRV"), "ar")
    assert rdatas(ask(r, "agent-one.node.consul")) == ["10.0.0.1"]
    cat.node("agent-one", "10.0.0.99")
    assert "10.0.0.99" in rdatas(ask(r, "web.service.consul", "SRV"), "ar")
    assert rdatas(ask(r, "agent-one.node.consul")) == ["10.0.0.99"]
    cat.deregister("agent-one", "web").deregister("agent-two", "web").deregister("agent-three", "web")
    assert ask(r, "web.service.consul").header.rcode == RCODE.NXDOMAIN


def test_cache_notices_a_new_service_in_another_case() -> None:
    c = Catalog().node("n1", "10.0.0.1").node("n2", "10.0.0.2")
    r = responder(c)
    assert ask(r, "web.service.consul").header.rcode == RCODE.NXDOMAIN
    c.service("n1", "WEB", 80)  # only the "WEB" spelling exists
    assert rdatas(ask(r, "web.service.consul")) == ["10.0.0.1"]
    c.service("n2", "web", 80)
    assert rdatas(ask(r, "web.service.consul")) == ["10.0.0.1", "10.0.0.2"]
    assert ask(r, "n3.node.consul").header.rcode == RCODE.NXDOMAIN
    c.node("N3", "10.0.0.3")
    assert rdatas(ask(r, "n3.node.consul")) == ["10.0.0.3"]


def test_soa_serial_follows_the_clock() -> None:
    now = [NOW]
    import random

    c = Catalog()
    res = Resolver(c.store, config(), clock=lambda: now[0])
    from agent.dns.responder import Responder

    r = Responder(res, rng=random.Random(1), clock=lambda: now[0])

    def serial() -> int:
        return int(rrs(ask(r, "x.service.consul"), "auth", "SOA")[0].rdata.times[0])

    assert serial() == int(NOW)
    now[0] += 0.5
    assert serial() == int(NOW) and r.encodes == 1
    now[0] += 1
    assert serial() == int(NOW) + 1 and r.encodes == 2


def test_cache_is_bounded() -> None:
    c = Catalog().node("n1", "10.0.0.1").service("n1", "web", 80)
    from agent.dns.responder import Responder

    r = Responder(Resolver(c.store, config()), max_entries=10)
    for i in range(50):
        ask(r, f"s{i}.service.consul")
        ask(r, "web.service.consul")
    assert len(r) <= 10
    c.service("n1", "web", 81, sid="web2")
    assert len(rrs(ask(r, "web.service.consul", "SRV"), "rr", "SRV")) == 2
    r.clear()
    assert len(r) == 0 and c.store.hub.watcher_count() <= 2  # only the name-index watches remain


def test_resolver_answer_description(cat: Catalog) -> None:
    """The pure resolver's output, before any encoding."""
    res = Resolver(cat.store, config(), clock=lambda: NOW)
    ans = res.resolve_name("web.service.consul.", SRV)
    assert ans.rcode == 0 and ans.authoritative and ans.shuffle
    assert len(ans.answer) == 3 and len(ans.all_additional) == 3
    assert "service:web" in ans.topics and ("service", "web") in ans.names
    miss = res.resolve_name("nope.service.consul", A)
    assert miss.rcode == NXDOMAIN and miss.timed and len(miss.authority) == 1
    assert res.resolve_name("example.com", A).rcode == 5


def test_every_permutation_is_prebuilt_for_small_answers(cat: Catalog) -> None:
    r = responder(cat)
    seen = set()
    for _ in itertools.repeat(None, 300):
        out = r.handle(query("web.service.consul", "SRV"))
        assert isinstance(out, bytes)
        seen.add(out)
    assert len(seen) == 6 and r.encodes == 1


def test_cache_follows_a_snapshot_restore(cat: Catalog) -> None:
    r = responder(cat)
    assert len(ask(r, "web.service.consul").rr) == 3
    other = Catalog().node("solo", "10.5.5.5").service("solo", "web", 1)
    cat.store.restore(other.store.snapshot())  # wakes every watcher
    assert rdatas(ask(r, "web.service.consul")) == ["10.5.5.5"]
    assert ask(r, "agent-two.node.consul").header.rcode == RCODE.NXDOMAIN


def test_parse_recursor_addresses() -> None:
    from agent.dns.recursor import parse_recursor

    assert parse_recursor("8.8.8.8") == ("8.8.8.8", 53)
    assert parse_recursor("127.0.0.2:5353") == ("127.0.0.2", 5353)
    assert parse_recursor("[::1]:5300") == ("::1", 5300)
    assert parse_recursor("::1") == ("::1", 53)
    assert parse_recursor("dns.example") == ("dns.example", 53)
