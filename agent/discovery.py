"""How servers find each other before gossip exists: a small hello protocol on the LAN (serf) port.

``-join``/``-retry-join`` name another agent's LAN address, exactly as in Consul (``127.0.0.3`` means
port 8301, ``127.0.0.3:8311`` a given port), so the same flags keep working when SWIM gossip takes
this port over. Every agent answers a hello with what it knows (itself and the servers it has heard
of, each with its node id, name, datacenter, server address and ``bootstrap_expect``); every server
polls its join addresses and the servers it learned of. Servers are identified by **node id**: when
one comes back on a new address, the others learn the new address here, which is what lets a whole
cluster that restarted on new IPs elect a leader again.

The seam: :class:`ServerDirectory` is all the rest of the agent sees (``servers()``, ``on_change``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import msgpack

__all__ = ["ServerInfo", "ServerDirectory", "parse_join_address"]

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_HELLO_BYTES = 1024 * 1024
PROBE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ServerInfo:
    id: str
    name: str
    datacenter: str
    server_addr: str  # ip:port of Raft/RPC
    serf_addr: str  # ip:port of this protocol
    expect: int = 0
    bootstrapped: bool = False
    leader_addr: str = ""
    is_server: bool = True
    seen_at: float = 0.0


def parse_join_address(text: str, default_port: int = 8301) -> str:
    """``127.0.0.3`` → ``127.0.0.3:8301``; ``127.0.0.3:8311`` and ``[::1]:8301`` kept."""
    t = text.strip()
    if not t:
        raise ValueError("empty join address")
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
        return f"[{host}]:{int(port)}"
    if t.count(":") == 1:
        host, port = t.split(":")
        return f"{host}:{int(port)}"
    if t.count(":") > 1:
        return f"[{t}]:{default_port}"
    return f"{t}:{default_port}"


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class ServerDirectory:
    def __init__(self, me: Callable[[], ServerInfo], bind: str, port: int, join: list[str],
                 retry_interval_s: float = 30.0, on_change: Callable[[], None] | None = None) -> None:
        self.me = me
        self.bind = bind
        self.port = port
        self.join = [parse_join_address(j) for j in join]
        self.retry_interval_s = retry_interval_s
        self.on_change = on_change or (lambda: None)
        self.known: dict[str, ServerInfo] = {}
        self.joined = False
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def servers(self) -> list[ServerInfo]:
        """Every server known, this one included, sorted by id."""
        me = self.me()
        out = {me.id: me}
        for info in self.known.values():
            if info.is_server and info.id != me.id:
                out[info.id] = info
        return [out[k] for k in sorted(out)]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.bind, self.port, reuse_address=True)
        self._task = asyncio.create_task(self._probe_loop(), name="server-discovery")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._server is not None:
            self._server.close()

    async def join_now(self, addresses: list[str]) -> int:
        """``ctk join`` / ``/v1/agent/join``: hello each address now; returns how many answered."""
        ok = 0
        for a in addresses:
            addr = parse_join_address(a)
            if addr not in self.join:
                self.join.append(addr)
            if await self._hello(addr):
                ok += 1
        return ok

    # ----------------------------------------------------------- protocol

    def _payload(self) -> dict[str, Any]:
        me = self.me()
        return {"me": asdict(me), "known": [asdict(i) for i in self.known.values()]}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(self._read(reader), 5.0)
            self._learn(data)
            body = msgpack.packb(self._payload(), use_bin_type=True)
            writer.write(_LEN.pack(len(body)) + body)
            await writer.drain()
        except Exception as err:  # garbage from a stranger: drop the connection, nothing else
            log.debug("discovery: bad hello: %s", err)
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Any:
        (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
        if length > MAX_HELLO_BYTES:
            raise ValueError("hello too large")
        return msgpack.unpackb(await reader.readexactly(length), raw=False)

    async def _hello(self, addr: str) -> bool:
        try:
            host, port = _split(addr)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (OSError, TimeoutError, ValueError):
            return False
        try:
            body = msgpack.packb(self._payload(), use_bin_type=True)
            writer.write(_LEN.pack(len(body)) + body)
            await writer.drain()
            data = await asyncio.wait_for(self._read(reader), 5.0)
            self._learn(data)
            return True
        except Exception as err:
            log.debug("discovery: hello to %s failed: %s", addr, err)
            return False
        finally:
            writer.close()

    def _learn(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise ValueError("hello is not a map")
        me = self.me()
        changed = False
        now = time.time()
        fields = set(ServerInfo.__dataclass_fields__)
        entries = [data.get("me")] + list(data.get("known") or [])
        for i, raw in enumerate(entries):
            if not isinstance(raw, dict):
                continue
            info = ServerInfo(**{k: v for k, v in raw.items() if k in fields})
            if info.id == me.id or info.datacenter != me.datacenter:
                continue
            if i > 0 and info.id in self.known:
                continue  # second-hand news never overrides what a server said about itself
            if i == 0:
                info = ServerInfo(**{**asdict(info), "seen_at": now})
            old = self.known.get(info.id)
            if old is None or (old.server_addr, old.serf_addr, old.bootstrapped, old.leader_addr) != \
                    (info.server_addr, info.serf_addr, info.bootstrapped, info.leader_addr):
                if old is not None and old.server_addr != info.server_addr:
                    log.info("server %s (%s) is now at %s (was %s)", info.name, info.id, info.server_addr,
                             old.server_addr)
                self.known[info.id] = info
                changed = True
        if changed:
            self.on_change()

    async def _probe_loop(self) -> None:
        while True:
            targets = set(self.join) | {i.serf_addr for i in self.known.values() if i.is_server}
            me = self.me()
            targets.discard(me.serf_addr)
            results = await asyncio.gather(*(self._hello(a) for a in sorted(targets)))
            if any(results) and not self.joined:
                self.joined = True
                log.info("joined: %d server(s) known", len(self.servers()))
            # Fast while forming a cluster, then at the retry interval once settled.
            settled = me.bootstrapped and self.joined
            await asyncio.sleep(self.retry_interval_s if settled and not self.join else PROBE_INTERVAL_S)
