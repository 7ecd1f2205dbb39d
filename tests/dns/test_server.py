"""The DNS server over real sockets, queried with the real ``dig`` (Debian ``dnsutils``).

The server runs in the test's event loop, on a free port on 127.0.0.1; ``dig`` runs as a subprocess.
Recursor tests start two tiny asyncio DNS servers on 127.0.0.2 / 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from dnslib import RCODE, RR, DNSRecord

from agent.config import AgentConfig
from agent.dns.server import DNSServer

from .helpers import Catalog, config, query

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("dig") is None,
                       reason="dig is not installed (Debian package dnsutils; `make debs` installs it)"),
]


@dataclass
class Dig:
    status: str = ""
    flags: set[str] = field(default_factory=set)
    answer: list[list[str]] = field(default_factory=list)
    authority: list[list[str]] = field(default_factory=list)
    additional: list[list[str]] = field(default_factory=list)
    raw: str = ""

    def rdata(self, section: str = "answer", rtype: str | None = None) -> list[str]:
        return sorted(" ".join(r[4:]) for r in getattr(self, section) if rtype is None or r[3] == rtype)


async def dig(port: int, *args: str, server: str = "127.0.0.1") -> Dig:
    proc = await asyncio.create_subprocess_exec(
        "dig", f"@{server}", "-p", str(port), "+time=3", "+tries=1", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    result = Dig(raw=text)
    section: list[list[str]] | None = None
    for line in text.splitlines():
        if "->>HEADER<<-" in line:
            result.status = line.split("status: ")[1].split(",")[0]
        elif line.startswith(";; flags:"):
            result.flags = set(line.split(";")[2].split(":")[1].split())
        elif line.startswith(";; ANSWER SECTION"):
            section = result.answer
        elif line.startswith(";; AUTHORITY SECTION"):
            section = result.authority
        elif line.startswith(";; ADDITIONAL SECTION"):
            section = result.additional
        elif not line.strip() or line.startswith(";"):
            if not line.strip():
                section = None
        elif section is not None:
            section.append(line.split())
    return result


def _catalog() -> Catalog:
    c = Catalog()
    c.node("agent-one", "127.0.0.1").node("agent-two", "10.0.0.2").node("agent-three", "10.0.0.3")
    c.service("agent-one", "consul", 8300)
    c.service("agent-one", "web3", 8001, tags=("rails",))
    c.service("agent-two", "web3", 8002, tags=("django",))
    c.service("agent-three", "web3", 8003, tags=("rails",), address="192.0.2.10")
    for i in range(30):
        c.node(f"big-{i:02d}", f"10.2.0.{i + 1}")
        c.service(f"big-{i:02d}", "big", 9000 + i)
    return c


@pytest.fixture
async def dns() -> AsyncIterator[DNSServer]:
    server = DNSServer(_catalog().store, config(), rng=random.Random(3))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_srv_lists_instances_with_a_records_in_additional(dns: DNSServer) -> None:
    d = await dig(dns.port, "web3.service.consul", "SRV")
    assert d.status == "NOERROR" and "aa" in d.flags and "ra" not in d.flags
    assert d.rdata("answer", "SRV") == ["1 1 8001 agent-one.node.dc1.consul.",
                                        "1 1 8002 agent-two.node.dc1.consul.",
                                        "1 1 8003 c000020a.addr.dc1.consul."]
    assert {r[0]: r[4] for r in d.additional if r[3] == "A"} == {
        "agent-one.node.dc1.consul.": "127.0.0.1", "agent-two.node.dc1.consul.": "10.0.0.2",
        "c000020a.addr.dc1.consul.": "192.0.2.10"}


async def test_tag_filter_node_lookup_and_refused(dns: DNSServer) -> None:
    d = await dig(dns.port, "rails.web3.service.consul")
    assert d.rdata("answer", "A") == ["127.0.0.1", "192.0.2.10"]
    d = await dig(dns.port, "agent-two.node.consul")
    assert d.status == "NOERROR" and d.rdata("answer", "A") == ["10.0.0.2"]
    d = await dig(dns.port, "nope.service.consul")
    assert d.status == "NXDOMAIN" and d.rdata("authority", "SOA")[0].startswith("ns.consul. hostmaster.consul.")
    d = await dig(dns.port, "example.com")
    assert d.status == "REFUSED" and "aa" not in d.flags


async def test_udp_truncation_tcp_and_edns(dns: DNSServer) -> None:
    udp = await dig(dns.port, "big.service.consul", "SRV", "+noedns", "+ignore")
    assert "tc" in udp.flags and len(udp.answer) == 3 and len(udp.additional) == 3
    tcp = await dig(dns.port, "big.service.consul", "SRV", "+tcp")
    assert "tc" not in tcp.flags and len(tcp.answer) == 30 and len(tcp.additional) == 30
    big = await dig(dns.port, "big.service.consul", "SRV", "+bufsize=4096", "+ignore")
    assert len(big.answer) == 30 and "tc" not in big.flags and "udp: 4096" in big.raw
    retry = await dig(dns.port, "big.service.consul", "SRV", "+noedns")  # dig retries over TCP on TC
    assert len(retry.answer) == 30


def _udp_exchange(port: int, packet: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


async def test_malformed_packets_get_formerr_and_the_server_survives(dns: DNSServer) -> None:
    loop = asyncio.get_running_loop()
    bad = struct.pack("!6H", 77, 0x0100, 1, 0, 0, 0) + b"\x05ab"
    out = await loop.run_in_executor(None, _udp_exchange, dns.port, bad)
    assert out is not None and DNSRecord.parse(out).header.rcode == RCODE.FORMERR
    short = await loop.run_in_executor(None, _udp_exchange, dns.port, b"\x01\x02\x03", 0.3)
    assert short is None  # no header: dropped
    rng = random.Random(99)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(2000):
            s.sendto(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))), ("127.0.0.1", dns.port))
    # TCP: a bad frame, then a good query on the same connection
    reader, writer = await asyncio.open_connection("127.0.0.1", dns.port)
    good = query("web3.service.consul", "SRV")
    writer.write(struct.pack("!H", len(bad)) + bad + struct.pack("!H", len(good)) + good)
    await writer.drain()
    replies = []
    for _ in range(2):
        (n,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))
        replies.append(DNSRecord.parse(await reader.readexactly(n)))
    writer.close()
    assert replies[0].header.rcode == RCODE.FORMERR
    assert len(replies[1].rr) == 3
    d = await dig(dns.port, "web3.service.consul", "SRV")
    assert len(d.answer) == 3


# ------------------------------------------------------------------------- recursors


class _Upstream(asyncio.DatagramProtocol):
    """A tiny DNS server: answers every A query with ``address`` (or an rcode), or never answers."""

    def __init__(self, mode: str, address: str = "") -> None:
        self.mode = mode
        self.address = address
        self.seen = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def reply(self, data: bytes) -> bytes | None:
        self.seen += 1
        if self.mode == "silent":
            return None
        request = DNSRecord.parse(data)
        reply = request.reply(ra=1)
        if self.mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        else:
            reply.add_answer(*RR.fromZone(f"{request.q.qname} 60 IN A {self.address}"))
        return bytes(reply.pack())

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.reply(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


async def _start_upstream(host: str, mode: str, address: str = "") -> tuple[_Upstream, int, list[object]]:
    loop = asyncio.get_running_loop()
    proto = _Upstream(mode, address)

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
                out = proto.reply(await reader.readexactly(n))
                if out is None:
                    await asyncio.sleep(30)  # never answers
                    return
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    for _ in range(20):  # a free UDP port whose TCP twin is free too
        transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(host, 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(tcp, host, port)
        except OSError:
            transport.close()
            continue
        return proto, port, [transport, server]
    raise AssertionError("no free port pair")


def _loopback_alias_works(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _loopback_alias_works("127.0.0.2"), reason="127.0.0.2 is not bindable here")
async def test_recursor_failover_udp_and_tcp() -> None:
    silent, silent_port, h1 = await _start_upstream("127.0.0.2", "silent")
    good, good_port, h2 = await _start_upstream("127.0.0.3", "answer", "203.0.113.7")
    failing, failing_port, h3 = await _start_upstream("127.0.0.3", "servfail")
    cfg: AgentConfig = config(recursors=[f"127.0.0.2:{silent_port}", f"127.0.0.3:{failing_port}",
                                         f"127.0.0.3:{good_port}"], recursor_timeout_s=0.5)
    server = DNSServer(_catalog().store, cfg)
    all_bad = DNSServer(_catalog().store, replace(cfg, recursors=(f"127.0.0.2:{silent_port}",
                                                                  f"127.0.0.3:{failing_port}")))
    try:
        await server.start()
        d = await dig(server.port, "example.com")
        assert d.status == "NOERROR" and d.rdata("answer", "A") == ["203.0.113.7"] and "ra" in d.flags
        assert silent.seen == 1 and failing.seen == 1 and good.seen == 1  # in order, failing over
        d = await dig(server.port, "example.com", "+tcp")  # TCP in, TCP out
        assert d.rdata("answer", "A") == ["203.0.113.7"]
        assert good.seen == 2
        own = await dig(server.port, "web3.service.consul")
        assert "ra" in own.flags and "aa" in own.flags  # RA only because recursors are configured

        await all_bad.start()
        d = await dig(all_bad.port, "example.com")
        assert d.status == "SERVFAIL" and "ra" in d.flags
    finally:
        await server.close()
        await all_bad.close()
        for h in h1 + h2 + h3:
            h.close()  # type: ignore[attr-defined]


async def test_random_strategy_still_reaches_the_good_recursor() -> None:
    silent, silent_port, h1 = await _start_upstream("127.0.0.1", "silent")
    good, good_port, h2 = await _start_upstream("127.0.0.1", "answer", "198.51.100.1")
    cfg = config(recursors=[f"127.0.0.1:{silent_port}", f"127.0.0.1:{good_port}"],
                 recursor_timeout_s=0.3, recursor_strategy="random")
    server = DNSServer(_catalog().store, cfg, rng=random.Random(5))
    await server.start()
    try:
        for _ in range(4):
            d = await dig(server.port, "example.org")
            assert d.rdata("answer", "A") == ["198.51.100.1"]
        assert good.seen == 4 and 0 < silent.seen < 4  # some orders started with the silent one
    finally:
        await server.close()
        for h in h1 + h2:
            h.close()  # type: ignore[attr-defined]


async def test_disabled_and_ephemeral_ports() -> None:
    off = DNSServer(_catalog().store, config(port=-1))
    await off.start()
    assert off.port == 0 and off.addresses == []
    await off.close()
    on = DNSServer(_catalog().store, config())
    await on.start()
    assert on.port > 0 and on.addresses == [("127.0.0.1", on.port)]
    await on.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", on.port))  # released on close

