"""Wire format: parsing requests, malformed input (FORMERR / NOTIMP / dropped), fuzzing, encoding."""

from __future__ import annotations

import random
import struct

import pytest
from dnslib import RCODE, RR, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dns.responder import FORWARD, Responder
from agent.dns.wire import (
    SRV,
    A,
    MalformedQuery,
    NameCompressor,
    Record,
    SRVData,
    encode_record,
    name_labels,
    parse_query,
)

from .helpers import Catalog, config, query, responder


@pytest.fixture(scope="module")
def r() -> Responder:
    c = Catalog().node("n1", "10.0.0.1").service("n1", "web", 80)
    return responder(c)


@pytest.fixture(scope="module")
def r_fwd() -> Responder:
    c = Catalog().node("n1", "10.0.0.1").service("n1", "web", 80)
    return responder(c, config(recursors=["127.0.0.1:1"]))


def test_parse_plain_and_edns() -> None:
    plain = query("web.service.consul", "SRV")
    assert parse_query(plain) == (12 + 20 + 4, 33, 0, 0)
    edns = query("web.service.consul", "SRV", edns=4096)
    assert parse_query(edns)[2:] == (4096, 0)
    assert parse_query(query("x.consul", edns=100))[2] == 512  # below 512 counts as 512 (RFC 6891)


def test_parse_general_path_finds_opt_after_other_records() -> None:
    q = DNSRecord.parse(query("web.service.consul", edns=2048))
    q.add_auth(RR.fromZone("x.consul. 0 IN A 1.2.3.4")[0])  # an authority record before the OPT
    assert parse_query(bytes(q.pack()))[2] == 2048


@pytest.mark.parametrize("packet, rcode", [
    (struct.pack("!6H", 1, 0x0100, 0, 0, 0, 0), RCODE.FORMERR),  # no question
    (struct.pack("!6H", 1, 0x0100, 2, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01" * 2, RCODE.FORMERR),
    (struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\x05ab", RCODE.FORMERR),  # label runs off
    (struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\x01a\x00\x00", RCODE.FORMERR),  # no qtype/qclass
    (struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01", RCODE.FORMERR),  # pointer
    (struct.pack("!6H", 1, 0x0100, 1, 0, 0, 1) + b"\x01a\x00\x00\x01\x00\x01", RCODE.FORMERR),  # AR missing
    (struct.pack("!6H", 1, 0x2000, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01", RCODE.NOTIMP),  # opcode 4
])
def test_malformed_requests_get_an_error(r: Responder, packet: bytes, rcode: int) -> None:
    out = r.handle(packet)
    assert isinstance(out, bytes)
    reply = DNSRecord.parse(out)
    assert reply.header.rcode == rcode and reply.header.id == 1 and reply.header.qr == 1


def test_two_opt_records_are_formerr(r: Responder) -> None:
    q = query("web.service.consul", edns=1232)
    opt = q[-11:]
    packet = q[:10] + b"\x00\x02" + q[12:] + opt
    out = r.handle(packet)
    assert isinstance(out, bytes) and DNSRecord.parse(out).header.rcode == RCODE.FORMERR


def test_dropped_without_header_or_when_a_response(r: Responder) -> None:
    assert r.handle(b"") is None
    assert r.handle(b"\x00" * 11) is None
    reply = r.handle(query("web.service.consul"))
    assert isinstance(reply, bytes)
    assert r.handle(reply) is None  # never answer a response (reflection loops)


def test_long_names_are_formerr(r: Responder) -> None:
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 bytes
    packet = struct.pack("!6H", 9, 0, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    out = r.handle(packet)
    assert isinstance(out, bytes) and DNSRecord.parse(out).header.rcode == RCODE.FORMERR


def _check_reply(out: object, packet: bytes) -> None:
    if out is None or out is FORWARD:
        return
    assert isinstance(out, bytes) and len(out) >= 12
    assert out[:2] == packet[:2] and out[2] & 0x80
    _walk(out)  # whatever we send is well formed (dnslib rejects binary labels, so walk it ourselves)


def _walk_name(data: bytes, pos: int) -> int:
    while True:
        ln = data[pos]
        if ln == 0:
            return pos + 1
        if ln & 0xC0 == 0xC0:
            assert (((ln & 0x3F) << 8) | data[pos + 1]) < pos  # pointers go backwards
            return pos + 2
        assert ln <= 63
        pos += 1 + ln


def _walk(data: bytes) -> None:
    qd, an, ns, ar = struct.unpack_from("!4H", data, 4)
    pos = 12
    for _ in range(qd):
        pos = _walk_name(data, pos) + 4
    for _ in range(an + ns + ar):
        pos = _walk_name(data, pos)
        (rdlen,) = struct.unpack_from("!H", data, pos + 8)
        pos += 10 + rdlen
    assert pos == len(data)


def test_fuzz_random_bytes(r: Responder, r_fwd: Responder) -> None:
    rng = random.Random(20240601)
    base = [query("web.service.consul", "SRV"), query("web.service.consul", edns=4096), query("example.com")]
    for i in range(20000):
        if i % 2:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:  # flip a few bytes of a valid query
            b = bytearray(rng.choice(base))
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.getrandbits(8)
            packet = bytes(b[: rng.randrange(len(b) + 1)] if rng.random() < 0.3 else b)
        for resp in (r, r_fwd):
            _check_reply(resp.handle(packet), packet)
            _check_reply(resp.handle(packet, True), packet)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_fuzz_hypothesis(packet: bytes) -> None:
    c = Catalog().node("n1", "10.0.0.1").service("n1", "web", 80)
    resp = responder(c)
    _check_reply(resp.handle(packet), packet)


def test_name_labels_validation() -> None:
    assert name_labels("a.B.consul.") == (b"a", b"B", b"consul")
    assert name_labels(".") == ()
    for bad in ("a..b", "x" * 64 + ".consul", ".".join(["abcdefgh"] * 40)):
        with pytest.raises(ValueError):
            name_labels(bad)


def test_compression_points_only_into_the_question() -> None:
    comp = NameCompressor((b"web", b"service", b"consul"))
    assert comp.encode("web.service.consul.") == b"\xc0\x0c"
    assert comp.encode("WEB.service.consul.") == b"\xc0\x0c"
    assert comp.encode("n1.node.dc1.consul.") == b"\x02n1\x04node\x03dc1\xc0\x18"  # "consul" at 12+4+8
    srv = encode_record(Record("web.service.consul.", SRV, 5, SRVData(1, 2, 80, "n1.node.dc1.consul.")), comp)
    assert srv.endswith(b"\x02n1\x04node\x03dc1\x06consul\x00")  # SRV targets are never compressed
    a = encode_record(Record("web.service.consul.", A, 0, "10.0.0.1"), NameCompressor(None))
    assert a.startswith(b"\x03web\x07service\x06consul\x00")


def test_malformed_query_carries_rcode() -> None:
    with pytest.raises(MalformedQuery) as err:
        parse_query(struct.pack("!6H", 1, 0x2800, 1, 0, 0, 0))
    assert err.value.rcode == RCODE.NOTIMP
