"""Forwarding queries outside the domain to ``recursors`` (``docs/agent/config/config-files.mdx``:
``recursors``, ``dns_config.recursor_strategy``, ``dns_config.recursor_timeout``).

Recursors are tried in order (``sequential``, the default) or in a random order (``random``), each
with ``recursor_timeout``. A reply whose rcode is NOERROR or NXDOMAIN is relayed as it is (a TC reply
too: the client retries over TCP); a timeout, a network error, or any other rcode (SERVFAIL, REFUSED,
...) moves on to the next recursor. When all fail the client gets SERVFAIL with RA set. The client's
transport is preserved: a UDP query is forwarded over UDP, a TCP query over TCP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
from collections.abc import Sequence

from .wire import NOERROR, NXDOMAIN, SERVFAIL, error_response, parse_query

__all__ = ["Recursors", "parse_recursor"]

_LEN = struct.Struct("!H")


def parse_recursor(spec: str) -> tuple[str, int]:
    """``"1.2.3.4"``, ``"1.2.3.4:5353"``, ``"[::1]:53"``, ``"::1"`` → (host, port); port 53 by default."""
    text = spec.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
        return host, port
    try:
        ipaddress.ip_address(text)
        return text, 53
    except ValueError:
        pass
    host, sep, port_text = text.rpartition(":")
    if sep and port_text.isdigit():
        return host, int(port_text)
    return text, 53


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        # Only a response to our query (same ID, QR set) counts; anything else is ignored.
        if len(data) >= 12 and data[:2] == self.qid and data[2] & 0x80 and not self.future.done():
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.future.done():
            self.future.set_exception(exc or ConnectionError("closed"))


class Recursors:
    """The configured upstreams; :meth:`forward` returns the reply bytes for the client."""

    def __init__(self, specs: Sequence[str], timeout_s: float = 2.0, strategy: str = "sequential",
                 rng: random.Random | None = None) -> None:
        self.upstreams = [parse_recursor(s) for s in specs if s.strip()]
        self.timeout_s = timeout_s
        self.strategy = strategy
        self.rng = rng or random.Random()
        self.exclude: set[tuple[str, int]] = set()  # our own listeners: never forward to ourselves

    def order(self) -> list[tuple[str, int]]:
        ups = [u for u in self.upstreams if u not in self.exclude]
        if self.strategy == "random":
            self.rng.shuffle(ups)
        return ups

    async def forward(self, query: bytes, tcp: bool) -> bytes:
        for host, port in self.order():
            try:
                reply = await asyncio.wait_for(
                    self._tcp(query, host, port) if tcp else self._udp(query, host, port), self.timeout_s)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError):
                continue
            if len(reply) >= 12 and reply[3] & 0x0F in (NOERROR, NXDOMAIN):
                return reply
        return self.servfail(query)

    @staticmethod
    def servfail(query: bytes) -> bytes:
        try:
            qend = parse_query(query)[0]
        except Exception:
            qend = 0
        return error_response(query, SERVFAIL, qend, ra=True)

    @staticmethod
    async def _udp(query: bytes, host: str, port: int) -> bytes:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneShot(query[:2]), remote_addr=(host, port))
        try:
            transport.sendto(query)
            return await proto.future
        finally:
            transport.close()

    @staticmethod
    async def _tcp(query: bytes, host: str, port: int) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(_LEN.pack(len(query)) + query)
            await writer.drain()
            while True:
                (length,) = _LEN.unpack(await reader.readexactly(2))
                reply = await reader.readexactly(length)
                if reply[:2] == query[:2] and len(reply) >= 12:
                    return reply
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass
