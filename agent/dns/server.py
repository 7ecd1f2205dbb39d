"""The DNS server: asyncio UDP and TCP listeners on ``client_addr:ports.dns`` around a
:class:`~agent.dns.responder.Responder` (``docs/discovery/dns.mdx``: the agent answers DNS on port
8600 over UDP and TCP; ``ports.dns = -1`` disables it).

* UDP: one :class:`asyncio.DatagramProtocol`; each datagram is answered synchronously from the
  answer cache. Packets without a 12-byte header, and responses, are dropped; anything else that
  cannot be parsed gets FORMERR.
* TCP: 2-byte length framing (RFC 1035 §4.2.2), several queries per connection (RFC 7766), idle
  connections closed after :data:`TCP_IDLE_S`.
* Outside the domain: REFUSED, or forwarded to ``recursors`` (:mod:`agent.dns.recursor`) when set.

Wiring::

    dns = DNSServer(store, config, node_address="10.0.0.5")
    await dns.start()       # binds; .port / .addresses tell where
    ...
    await dns.close()
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.config import AgentConfig
from agent.state.store import Store

from .recursor import Recursors
from .resolver import Resolver
from .responder import FORWARD, Responder
from .wire import SERVFAIL, error_response

__all__ = ["DNSServer", "TCP_IDLE_S", "MAX_FORWARDS"]

log = logging.getLogger("ctk.dns")

TCP_IDLE_S = 10.0
MAX_FORWARDS = 1024  # forwarded queries in flight; beyond that, SERVFAIL at once
UDP_RCVBUF = 4 << 20
_LEN = struct.Struct("!H")


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.handle = server.responder.handle
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.server.remote is not None:
            if self.transport is not None:
                sendto = self.transport.sendto
                self.server._spawn_remote(data, False, lambda reply: sendto(reply, addr))
            return
        try:
            out = self.handle(data, False)
        except Exception:  # the responder never raises; this is the last line of defence
            log.exception("dns: unexpected error answering a UDP query")
            out = error_response(data, SERVFAIL) if len(data) >= 12 else None
        if out is None:
            return
        transport = self.transport
        if transport is None:
            return
        if out is FORWARD:
            self.server._spawn_forward(data, False, lambda reply: transport.sendto(reply, addr))
        else:
            transport.sendto(out, addr)  # type: ignore[arg-type]

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from clients that went away


class DNSServer:
    """Serves ``store`` over DNS as configured by ``config`` (domain, datacenter, ports, dns_config).

    ``node_address``: this agent's address, used for NS glue when the catalog has no server yet.
    ``rng`` and ``clock`` are injectable for tests. After :meth:`start`, :attr:`port` is the bound
    port (useful with ``ports.dns = 0``) and :attr:`addresses` lists every (host, port) bound.
    """

    def __init__(self, store: Store, config: AgentConfig, node_address: str = "", *,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.time,
                 remote: Callable[[bytes, bool], Awaitable[bytes]] | None = None) -> None:
        self.config = config
        self.remote = remote  # a client agent: every query is answered by a server (agent/client.py)
        self.rng = rng or random.Random()
        self.resolver = Resolver(store, config, clock=clock, node_address=node_address)
        self.responder = Responder(self.resolver, rng=self.rng, clock=clock)
        dns = config.dns_config
        self.recursors = Recursors(config.recursors, dns.recursor_timeout_s, dns.recursor_strategy, self.rng)
        self.port = 0
        self.addresses: list[tuple[str, int]] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def enabled(self) -> bool:
        return self.config.ports.dns >= 0

    async def start(self) -> None:
        if not self.enabled:
            return
        hosts = self.config.client_addr.split() or ["127.0.0.1"]
        port = self.config.ports.dns
        try:
            for host in hosts:
                transport, server, port = await self._bind(host, port)  # every address on one port
                self._udp.append(transport)
                self._tcp.append(server)
                self.addresses.append((host, port))
        except BaseException:
            await self.close()
            raise
        self.port = port
        self.recursors.exclude = set(self.addresses)
        log.info("listening on %s (udp+tcp)", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    async def _bind(self, host: str, port: int) -> tuple[asyncio.DatagramTransport, asyncio.Server, int]:
        loop = asyncio.get_running_loop()
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: _UDP(self), local_addr=(host, port))
            except OSError as err:
                raise OSError(err.errno, f"dns: cannot listen on udp {host}:{port}: {err.strerror}") from err
            bound = int(transport.get_extra_info("sockname")[1])
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:  # bursts of queries queue in the kernel instead of being dropped
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                except OSError:
                    pass
            try:
                server = await asyncio.start_server(self._tcp_client, host, bound)
            except OSError as err:
                transport.close()
                if attempt + 1 < attempts:
                    continue  # the TCP side of a random UDP port is taken: pick another
                raise OSError(err.errno, f"dns: cannot listen on tcp {host}:{bound}: {err.strerror}") from err
            return transport, server, bound
        raise OSError(f"dns: no free port on {host}")

    async def close(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        for server in self._tcp:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except (TimeoutError, OSError):
                pass
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._udp.clear()
        self._tcp.clear()
        self.responder.clear()

    # -------------------------------------------------------------- forwarding

    async def answer(self, data: bytes, tcp: bool) -> bytes:
        """One query's answer as bytes (a client agent's forwarded query; b"" means no answer)."""
        out = self.responder.handle(data, tcp)
        if out is None:
            return b""
        if out is FORWARD:
            try:
                return await self.recursors.forward(data, tcp)
            except Exception:
                log.exception("dns: forwarding failed")
                return self.recursors.servfail(data)
        return out  # type: ignore[return-value]

    def _spawn_remote(self, data: bytes, tcp: bool, reply: Callable[[bytes], object]) -> None:
        assert self.remote is not None
        self._spawn(self.remote, data, tcp, reply)

    def _spawn_forward(self, data: bytes, tcp: bool, reply: Callable[[bytes], object]) -> None:
        self._spawn(self.recursors.forward, data, tcp, reply)

    def _spawn(self, ask: Callable[[bytes, bool], Awaitable[bytes]], data: bytes, tcp: bool,
               reply: Callable[[bytes], object]) -> None:
        """Answer ``data`` from ``ask`` (a recursor, or a server for a client agent) in the background."""
        if len(self._tasks) >= MAX_FORWARDS:
            reply(self.recursors.servfail(data))
            return
        task = asyncio.get_running_loop().create_task(self._relay(ask, data, tcp, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, ask: Callable[[bytes, bool], Awaitable[bytes]], data: bytes, tcp: bool,
                     reply: Callable[[bytes], object]) -> None:
        try:
            out = await ask(data, tcp)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # no upstream answered: SERVFAIL, as Consul answers then
            log.warning("dns: no answer from upstream: %s", err)
            out = self.recursors.servfail(data)
        if out:
            try:
                reply(out)
            except (OSError, RuntimeError):
                pass

    # --------------------------------------------------------------------- TCP

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(reply: bytes) -> None:
            if not writer.is_closing():
                writer.write(_LEN.pack(len(reply)) + reply)

        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                    (length,) = _LEN.unpack(head)
                    data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_S)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                if self.remote is not None:
                    self._spawn_remote(data, True, send)
                    continue
                try:
                    out = self.responder.handle(data, True)
                except Exception:
                    log.exception("dns: unexpected error answering a TCP query")
                    out = error_response(data, SERVFAIL) if len(data) >= 12 else None
                if out is None:
                    return  # not DNS: hang up
                if out is FORWARD:
                    self._spawn_forward(data, True, send)
                    continue
                send(out)  # type: ignore[arg-type]
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
