"""``GossipNode``: the asyncio driver that puts a ``GossipCore`` on real UDP and TCP sockets.

One (host, port) serves both transports, as Consul's ``-serf-lan-port`` (8301) does: UDP carries
probes and gossip, TCP carries push/pull (memberlist ``net_transport.go`` splits them the same way).

Everything that touches the core runs on one event loop, so the core needs no locks:

- a **timer task** sleeps until ``core.next_deadline()`` (monotonic clock) and ticks the core; an
  input that moves the deadline earlier wakes it. After a stall (a paused process, a long GC) the
  datagrams queued meanwhile are read first (so a waiting ack is not mistaken for a lost one),
  then one tick runs everything that fell due; the core's periodic jobs skip rather than burst.
- every **datagram** goes to ``core.receive_packet``;
- every **inbound TCP connection** carries one frame each way: read a frame, answer it with
  ``core.handle_stream``, write the reply frame, close;
- after *every* input the outbox is drained: ``SendPacket`` → ``sendto``; ``StreamRequest`` → a
  task that connects, writes our frame, reads the reply and feeds ``core.receive_stream``, all
  within ``tcp_timeout_s``; ``MemberEvent`` / ``UserEventReceived`` / ``LeaveComplete`` → the
  constructor's callbacks.

Stream framing: ``length:u32 big-endian | payload``, bounded by ``MAX_STREAM_BYTES`` (+ the
keyring's overhead), so a garbage peer cannot make us allocate without limit.

Hostile or broken input never reaches the core's state: a packet or frame that does not decode is
dropped and counted (:class:`NodeStats`), with decryption failures (wrong key, tampering, an
unencrypted sender) counted apart from other garbage; the core never parses what it cannot open.

Also here, because the agent needs them around the node: address parsing as Consul's ``-join`` /
``-retry-join`` take it, ``retry_join`` (``-retry-interval``, ``-retry-max``), and serf's member
snapshot (``<data-dir>/serf/local.snapshot``) with the rule that a node which *left* does not
rejoin its old peers on restart unless ``-rejoin``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.gossip.config import GossipConfig
from agent.gossip.core import (
    Address,
    GossipCore,
    GossipStats,
    LeaveComplete,
    Member,
    MemberEvent,
    MemberEventKind,
    MemberStatus,
    PacketSeal,
    SendPacket,
    StreamRequest,
    UserEventReceived,
)
from agent.gossip.errors import DecodeError, GossipError, LocalProtocolError
from agent.gossip.keyring import DecryptError
from agent.gossip.messages import MAX_STREAM_BYTES

__all__ = [
    "DEFAULT_SERF_LAN_PORT",
    "SNAPSHOT_FILE",
    "NodeStats",
    "GossipNode",
    "RetryJoinError",
    "MemberSnapshot",
    "parse_address",
    "format_address",
    "read_rejoin_addresses",
]

log = logging.getLogger(__name__)

DEFAULT_SERF_LAN_PORT = 8301
SNAPSHOT_FILE = Path("serf") / "local.snapshot"
"""serf's LAN snapshot, relative to the data dir."""

MAX_INBOUND_STREAMS = 64
"""Concurrent inbound push/pull connections; more are closed at once (and counted)."""

_LEN = struct.Struct(">I")
_MIN_SLEEP_S = 0.001
_BIND_ATTEMPTS = 32  # port 0: pick a TCP port, then try for UDP on the same number
_UDP_RECV_BUFFER = 2 * 1024 * 1024
_MAX_DATAGRAM_BYTES = 65536
_MAX_READS_PER_WAKEUP = 256  # then yield to the loop (timer, TCP) before reading on

MemberCallback = Callable[[MemberEvent], None]
UserEventCallback = Callable[[UserEventReceived], None]
LeaveCallback = Callable[[LeaveComplete], None]


class RetryJoinError(GossipError):
    """``retry_join`` used up ``max_attempts`` without a successful join (Consul exits 1)."""


class _FrameError(Exception):
    """A stream frame whose length prefix is out of bounds: the peer is not speaking our protocol."""


@dataclass(slots=True)
class NodeStats:
    """Transport counters; monotonic, never reset. The core's own counters are ``core_stats``."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    decode_errors: int = 0
    """Packets and stream frames that opened (or needed no key) but are not valid gossip, plus
    frames with an out-of-range length prefix."""
    decrypt_failures: int = 0
    """Packets and stream frames no installed key could open: dropped before parsing."""
    send_errors: int = 0
    streams_in: int = 0
    """Inbound push/pulls answered."""
    streams_out: int = 0
    """Outbound push/pulls completed (reply merged)."""
    stream_failures: int = 0
    """Outbound push/pulls that failed: connect, timeout, reset, or a reply we could not use."""
    inbound_stream_errors: int = 0
    """Inbound connections that timed out, reset, or were refused for being over the limit."""
    callback_errors: int = 0


def parse_address(
    text: str, default_port: int = DEFAULT_SERF_LAN_PORT, *, allow_any_port: bool = False
) -> tuple[str, int]:
    """A join address as Consul takes it: ``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a
    bare IPv6 literal. ``ValueError`` if empty or the port is not 1..65535 (0 too, for a bind
    address, with ``allow_any_port``)."""
    t = text.strip()
    if not t:
        raise ValueError("empty address")
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed address {text!r}")
        port_text = rest[1:] if rest else ""
    elif t.count(":") == 1:
        host, _, port_text = t.partition(":")
    else:
        host, port_text = t, ""  # a name, an IPv4 address, or a bare IPv6 literal
    if not host:
        raise ValueError(f"malformed address {text!r}")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"malformed port in address {text!r}") from None
    if not (0 if allow_any_port else 1) <= port < 65536:
        raise ValueError(f"port out of range in address {text!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts bracketed (what ``consul members`` shows)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unspecified(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


async def _read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if not 0 < length <= max_bytes:
        raise _FrameError(f"stream frame length {length} out of bounds (1..{max_bytes})")
    return await reader.readexactly(length)


def _frame(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


# --- serf's member snapshot -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Replay:
    alive: dict[str, Address]
    left: bool


def _replay(path: Path, rejoin_after_leave: bool) -> _Replay:
    """Replay a snapshot file. A ``leave`` record forgets the members before it unless
    ``rejoin_after_leave`` (serf ``snapshot.go``; Consul's ``-rejoin``). Bad lines are skipped."""
    alive: dict[str, Address] = {}
    left = False
    try:
        text = path.read_text()
    except FileNotFoundError:
        return _Replay(alive, left)
    except OSError as exc:
        log.warning("cannot read gossip snapshot %s: %s", path, exc)
        return _Replay(alive, left)
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if isinstance(rec.get("alive"), str) and isinstance(rec.get("addr"), str) and isinstance(rec.get("port"), int):
            alive[rec["alive"]] = (rec["addr"], rec["port"])
            left = False
        elif isinstance(rec.get("not_alive"), str):
            alive.pop(rec["not_alive"], None)
        elif rec.get("leave") is True:
            left = True
            if not rejoin_after_leave:
                alive.clear()
    return _Replay(alive, left)


def read_rejoin_addresses(path: Path, *, local_name: str = "", rejoin_after_leave: bool = False) -> list[str]:
    """Addresses of the members a restarting node should rejoin, from its snapshot file.

    Empty after a graceful leave unless ``rejoin_after_leave`` (Consul's ``-rejoin``); a node
    that crashed (failed) rejoins its old peers.
    """
    state = _replay(Path(path), rejoin_after_leave)
    return [format_address(*addr) for name, addr in sorted(state.alive.items()) if name != local_name]


class MemberSnapshot:
    """serf's snapshot, simplified: JSON lines appended to ``<data-dir>/serf/local.snapshot``.

    Records ``{"alive": name, "addr", "port"}`` when a member joins or changes address,
    ``{"not_alive": name}`` when it fails, leaves or is reaped, and ``{"leave": true}`` on our
    graceful leave. On open the file is replayed (see :func:`read_rejoin_addresses`) and
    compacted to the surviving state; it is compacted again when it grows past 4× that state.
    File mode 0600. The local node is never recorded.
    """

    def __init__(self, path: Path, local_name: str, *, rejoin_after_leave: bool = False) -> None:
        self.path = Path(path)
        self.local_name = local_name
        state = _replay(self.path, rejoin_after_leave)
        self._alive = state.alive
        self._alive.pop(local_name, None)
        self.previous_leave = state.left
        self._initial = dict(self._alive)
        self._lines = 0
        self._fh: Any = None
        self._compact()

    def rejoin_addresses(self) -> list[str]:
        """Members alive when the file was opened (after the leave rule), as ``host:port``."""
        return [format_address(*a) for _, a in sorted(self._initial.items())]

    def member_event(self, event: MemberEvent) -> None:
        m = event.member
        if m.name == self.local_name:
            return
        if event.kind in (MemberEventKind.JOIN, MemberEventKind.UPDATE) and m.status in (
            MemberStatus.ALIVE, MemberStatus.SUSPECT,
        ):
            addr = (m.addr, m.port)
            if self._alive.get(m.name) != addr:
                self._alive[m.name] = addr
                self._append({"alive": m.name, "addr": m.addr, "port": m.port})
        elif event.kind in (MemberEventKind.FAILED, MemberEventKind.LEAVE, MemberEventKind.REAP):
            if self._alive.pop(m.name, None) is not None:
                self._append({"not_alive": m.name})

    def record_leave(self) -> None:
        """Our graceful leave: a restart will not rejoin these members unless ``-rejoin``."""
        self._append({"leave": True}, sync=True)

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def _append(self, rec: dict[str, Any], sync: bool = False) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._fh.flush()
            if sync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            log.warning("cannot write gossip snapshot %s: %s", self.path, exc)
            return
        self._lines += 1
        if self._lines > 4 * len(self._alive) + 1024:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the file as the current alive set (atomically) and reopen it for appending."""
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".compact")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                for name, (addr, port) in sorted(self._alive.items()):
                    fh.write(json.dumps({"alive": name, "addr": addr, "port": port}, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a")
        except OSError as exc:
            log.warning("cannot write gossip snapshot %s: %s", self.path, exc)
            self._fh = None
        self._lines = len(self._alive)


# --- the driver -----------------------------------------------------------------------------------


class GossipNode:
    """One gossip member on real sockets. See the module docstring.

    ``bind`` is the (host, port) for UDP and TCP; port 0 picks a free port usable for both.
    ``advertise`` is the address other members are told (default: the bound one; required when
    binding to 0.0.0.0/::). ``seal`` is the keyring (``agent.gossip.keyring.Keyring``) or None for
    plaintext gossip. Callbacks run on the event loop, synchronously, and must not block; an
    exception in one is logged and counted, never propagated into the protocol.

    ``snapshot_path`` (``<data-dir>/serf/local.snapshot``) enables serf's member snapshot;
    ``rejoin_after_leave`` is Consul's ``-rejoin``. ``default_join_port`` is the port assumed by a
    join address without one: memberlist uses its own bind port, which is 8301 by default.
    """

    def __init__(
        self,
        config: GossipConfig,
        name: str,
        bind: Address,
        *,
        advertise: Address | None = None,
        tags: Mapping[str, str] | None = None,
        seal: PacketSeal | None = None,
        on_member_event: MemberCallback | None = None,
        on_user_event: UserEventCallback | None = None,
        on_leave_complete: LeaveCallback | None = None,
        snapshot_path: Path | None = None,
        rejoin_after_leave: bool = False,
        default_join_port: int | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config.validate()
        self.name = name
        self.bind = bind
        self.seal = seal
        self.stats = NodeStats()
        self._advertise = advertise
        self._tags = dict(tags or {})
        self._on_member_event = on_member_event
        self._on_user_event = on_user_event
        self._on_leave_complete = on_leave_complete
        self._snapshot_path = Path(snapshot_path) if snapshot_path is not None else None
        self._rejoin_after_leave = rejoin_after_leave
        self._default_join_port = default_join_port
        self._rng = rng or random.Random()
        self._clock = clock
        self._core: GossipCore | None = None
        self._snapshot: MemberSnapshot | None = None
        self._udp: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._sleep_until = float("inf")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inbound: set[asyncio.Task[Any]] = set()
        self._leave_future: asyncio.Future[LeaveComplete] | None = None
        self._closed = False
        self._max_frame = MAX_STREAM_BYTES + (seal.overhead_bytes if seal else 0)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP + TCP on ``bind``, create the core, start the timer. ``OSError`` if the port
        is taken (for either protocol)."""
        if self._core is not None or self._closed:
            raise LocalProtocolError("GossipNode.start() may be called once")
        host, port = await self._bind_sockets()
        self.bind = (host, port)
        advertise = self._advertise or (host, port)
        if _unspecified(advertise[0]):
            await self._close_sockets()
            raise ValueError(f"bound to {host!r}: an advertise address is required")
        if advertise[1] == 0:
            advertise = (advertise[0], port)
        if self._snapshot_path is not None:
            self._snapshot = MemberSnapshot(
                self._snapshot_path, self.name, rejoin_after_leave=self._rejoin_after_leave
            )
        self._core = GossipCore(
            self.config, self.name, advertise, rng=self._rng, now_s=self._clock(), tags=self._tags, seal=self.seal
        )
        self._drain()
        self._timer = asyncio.create_task(self._run_timer(), name=f"gossip-timer:{self.name}")
        log.info("gossip: %s listening on %s (udp+tcp), advertising %s%s", self.name,
                 format_address(host, port), format_address(*advertise), ", encrypted" if self.seal else "")

    async def _bind_sockets(self) -> Address:
        host, want = self.bind
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        last: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if want == 0 else 1):
            server = await asyncio.start_server(self._on_connection, host or None, want, family=family,
                                                reuse_address=True)
            port = server.sockets[0].getsockname()[1]
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.setblocking(False)
                with contextlib.suppress(OSError):  # memberlist asks for 2 MB; the kernel may cap it
                    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RECV_BUFFER)
                udp.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
            except OSError as exc:
                last = exc
                udp.close()
                server.close()
                await server.wait_closed()
                continue
            asyncio.get_running_loop().add_reader(udp.fileno(), self._read_udp)
            self._server, self._udp = server, udp
            return host, port
        assert last is not None
        raise last

    async def close(self) -> None:
        """Stop at once: no leave is sent (to the others this looks like a crash). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._core is not None:
            self._core.shutdown()
        self._wakeup()
        tasks = [t for t in (self._timer, *self._tasks, *self._inbound) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_sockets()
        if self._snapshot is not None:
            self._snapshot.close()
        if self._leave_future is not None and not self._leave_future.done():
            self._leave_future.set_result(LeaveComplete(timed_out=True))  # closed before it finished

    async def _close_sockets(self) -> None:
        if self._udp is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def leave(self, timeout_s: float | None = None) -> bool:
        """Graceful leave (serf Leave): broadcast it and wait for ``LeaveComplete``.

        Returns True if the broadcast went out its full count and ``leave_propagate_delay_s``
        passed; False if it timed out (the core's ``broadcast_timeout_s`` or ``timeout_s``). The
        snapshot records the leave, so a restart will not rejoin unless ``-rejoin``. Call
        :meth:`close` afterwards.
        """
        core = self._running_core()
        if self._leave_future is None:
            self._leave_future = asyncio.get_running_loop().create_future()
            if self._snapshot is not None:
                self._snapshot.record_leave()
            core.leave(self._clock())
            self._drain()
        cfg = self.config
        wait_s = timeout_s if timeout_s is not None else cfg.broadcast_timeout_s + cfg.leave_propagate_delay_s + 1.0
        try:
            done = await asyncio.wait_for(asyncio.shield(self._leave_future), wait_s)
        except TimeoutError:
            return False
        return not done.timed_out

    # --- commands -----------------------------------------------------------------------------

    async def join(self, addresses: Iterable[str]) -> int:
        """Push/pull with each address (``consul join``); how many succeeded.

        Names are resolved (every address of a name is tried, as memberlist does). Each push/pull
        is bounded by ``tcp_timeout_s``; failures are logged and counted, not raised.
        """
        core = self._running_core()
        default_port = self._default_join_port or self.bind[1] or DEFAULT_SERF_LAN_PORT
        targets: list[Address] = []
        for text in addresses:
            try:
                host, port = parse_address(text, default_port)
            except ValueError as exc:
                log.warning("gossip: bad join address %r: %s", text, exc)
                continue
            for addr in await self._resolve(host, port):
                if addr not in targets:
                    targets.append(addr)
        if not targets:
            return 0
        core.join(self._clock(), targets)
        joins = self._drain()
        results = await asyncio.gather(*joins, return_exceptions=True)
        n = sum(1 for r in results if r is True)
        log.info("gossip: join to %d address(es): %d succeeded", len(targets), n)
        return n

    async def retry_join(self, addresses: Sequence[str], interval_s: float = 30.0, max_attempts: int = 0) -> int:
        """Consul's ``-retry-join``: join until one address answers, every ``interval_s``
        (``-retry-interval``, default 30 s). ``max_attempts`` (``-retry-max``) 0 means forever;
        exhausting it raises :class:`RetryJoinError` (the agent exits 1). Returns the join count.
        """
        if not addresses:
            return 0
        attempt = 0
        while True:
            attempt += 1
            n = await self.join(addresses)
            if n > 0:
                log.info("gossip: join cluster completed, synced with %d initial agents", n)
                return n
            if max_attempts and attempt >= max_attempts:
                raise RetryJoinError(
                    f"max join retry exhausted after {attempt} attempt(s) to {', '.join(addresses)}, exiting"
                )
            log.warning("gossip: join cluster failed (attempt %d), will retry in %.1fs", attempt, interval_s)
            await asyncio.sleep(interval_s)
            self._running_core()  # raises once closed: never outlive the node

    def rejoin_addresses(self) -> list[str]:
        """Members to rejoin from the snapshot (empty after a graceful leave unless ``-rejoin``)."""
        return self._snapshot.rejoin_addresses() if self._snapshot is not None else []

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace our tags and gossip them (serf SetTags); ``EncodeError`` if too large."""
        core = self._running_core()
        core.set_tags(self._clock(), tags)
        self._tags = dict(tags)
        self._drain()

    def user_event(self, name: str, payload: bytes = b"", coalesce: bool = True) -> int:
        """Fire a user event cluster-wide (``consul event``); its Lamport time."""
        core = self._running_core()
        ltime = core.user_event(self._clock(), name, payload, coalesce)
        self._drain()
        return ltime

    def force_leave(self, node: str, prune: bool = False) -> None:
        """``consul force-leave [-prune] node``; ``UnknownMember`` if not known."""
        core = self._running_core()
        core.force_leave(self._clock(), node, prune)
        self._drain()

    # --- queries ------------------------------------------------------------------------------

    @property
    def core(self) -> GossipCore:
        """The protocol core (for queries only; commands go through the node)."""
        if self._core is None:
            raise LocalProtocolError("GossipNode is not started")
        return self._core

    @property
    def core_stats(self) -> GossipStats:
        return self.core.stats

    @property
    def address(self) -> Address:
        """The advertised (host, port)."""
        return self.core.address

    @property
    def encrypted(self) -> bool:
        return self.seal is not None

    @property
    def running(self) -> bool:
        return self._core is not None and not self._closed

    def members(self) -> list[Member]:
        return self.core.members()

    def member(self, name: str) -> Member | None:
        return self.core.member(name)

    def local_member(self) -> Member:
        return self.core.local_member()

    @property
    def health_score(self) -> int:
        return self.core.health_score

    @property
    def event_ltime(self) -> int:
        return self.core.event_ltime

    # --- inputs -------------------------------------------------------------------------------

    def _running_core(self) -> GossipCore:
        if self._core is None or self._closed:
            raise LocalProtocolError("gossip node is not running")
        return self._core

    def _read_udp(self) -> None:
        """Read every queued datagram (bounded per call), each fed to the core as it comes.

        Own non-blocking socket rather than an asyncio datagram transport, which reads one datagram
        per loop pass: the timer calls this before each tick, so after a stall the acks already
        waiting in the buffer are seen before probe deadlines are judged.
        """
        sock = self._udp
        for _ in range(_MAX_READS_PER_WAKEUP):
            if sock is None or self._closed:
                return
            try:
                data, peer = sock.recvfrom(_MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                self.stats.send_errors += 1
                log.debug("gossip: UDP receive error: %s", exc)
                continue
            self._on_packet(data, (str(peer[0]), int(peer[1])))

    def _on_packet(self, data: bytes, addr: Address) -> None:
        core = self._core
        if core is None or self._closed:
            return
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        try:
            core.receive_packet(self._clock(), addr, data)
        except DecryptError as exc:
            self.stats.decrypt_failures += 1
            log.debug("gossip: undecryptable packet from %s: %s", format_address(*addr), exc)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.debug("gossip: bad packet from %s: %s", format_address(*addr), exc)
        self._drain()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername") or ("?", 0)
        addr: Address = (str(peer[0]), int(peer[1]))
        if self._core is None or self._closed or len(self._inbound) >= MAX_INBOUND_STREAMS:
            self.stats.inbound_stream_errors += 1
            writer.close()
            return
        if task is not None:
            self._inbound.add(task)
        try:
            async with asyncio.timeout(self.config.tcp_timeout_s):
                frame = await _read_frame(reader, self._max_frame)
                reply = self._answer_stream(addr, frame)
                if reply is None:
                    return
                writer.write(_frame(reply))
                await writer.drain()
                self.stats.streams_in += 1
        except _FrameError as exc:
            self.stats.decode_errors += 1
            log.debug("gossip: bad stream frame from %s: %s", format_address(*addr), exc)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.stats.inbound_stream_errors += 1
            log.debug("gossip: inbound stream from %s failed: %r", format_address(*addr), exc)
        finally:
            writer.close()
            if task is not None:
                self._inbound.discard(task)

    def _answer_stream(self, addr: Address, frame: bytes) -> bytes | None:
        core = self._core
        if core is None or self._closed:
            return None
        try:
            return core.handle_stream(self._clock(), addr, frame)
        except DecryptError as exc:
            self.stats.decrypt_failures += 1
            log.debug("gossip: undecryptable stream from %s: %s", format_address(*addr), exc)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            log.debug("gossip: bad stream from %s: %s", format_address(*addr), exc)
        finally:
            self._drain()
        return None

    async def _push_pull(self, req: StreamRequest) -> bool:
        """Carry one ``StreamRequest``: connect, write, read the reply, merge it. True on success."""
        host, port = req.addr
        local = None if _unspecified(self.bind[0]) else (self.bind[0], 0)
        try:
            async with asyncio.timeout(self.config.tcp_timeout_s):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local)
                try:
                    writer.write(_frame(req.payload))
                    await writer.drain()
                    reply = await _read_frame(reader, self._max_frame)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _FrameError) as exc:
            self.stats.stream_failures += 1
            log.debug("gossip: push/pull with %s failed: %r", format_address(host, port), exc)
            return False
        core = self._core
        if core is None or self._closed:
            return False
        try:
            core.receive_stream(self._clock(), req.addr, reply)
        except DecryptError as exc:
            self.stats.decrypt_failures += 1
            self.stats.stream_failures += 1
            log.debug("gossip: undecryptable push/pull reply from %s: %s", format_address(host, port), exc)
            return False
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self.stats.stream_failures += 1
            log.debug("gossip: bad push/pull reply from %s: %s", format_address(host, port), exc)
            return False
        finally:
            self._drain()
        self.stats.streams_out += 1
        return True

    async def _resolve(self, host: str, port: int) -> list[Address]:
        if _is_ip(host):
            return [(host, port)]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.tcp_timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            log.warning("gossip: cannot resolve %s: %s", host, exc)
            return []
        out: list[Address] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            addr = (str(sockaddr[0]), int(sockaddr[1]))
            if addr not in out:
                out.append(addr)
        return out

    # --- timer --------------------------------------------------------------------------------

    async def _run_timer(self) -> None:
        """Tick the core at its deadlines. Each pass ticks or sleeps, so the loop cannot spin."""
        loop = asyncio.get_running_loop()
        core = self._running_core()
        while not self._closed:
            now = self._clock()
            deadline = core.next_deadline()
            if deadline <= now:
                self._sleep_until = float("-inf")  # awake: inputs need not wake us
                self._read_udp()  # packets that arrived before the deadline come first
                now = self._clock()
                core.tick(now)
                self._drain()
                # Let I/O in between ticks; a deadline that did not move must not spin the loop.
                await asyncio.sleep(_MIN_SLEEP_S if core.next_deadline() <= now else 0)
                continue
            wake = self._wake = loop.create_future()
            self._sleep_until = deadline
            handle = loop.call_later(deadline - now, _resolve_future, wake)
            try:
                await wake
            finally:
                handle.cancel()
                self._wake = None

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # --- outputs ------------------------------------------------------------------------------

    def _drain(self) -> list[asyncio.Task[bool]]:
        """Perform everything the core asked for; returns the tasks of join push/pulls."""
        core = self._core
        if core is None:
            return []
        joins: list[asyncio.Task[bool]] = []
        for out in core.take_outputs():
            if type(out) is SendPacket:
                self._send(out)
            elif type(out) is StreamRequest:
                if self._closed:
                    continue
                task = self._spawn(self._push_pull(out), f"gossip-push-pull:{format_address(*out.addr)}")
                if out.join:
                    joins.append(task)
            elif type(out) is MemberEvent:
                if self._snapshot is not None:
                    self._snapshot.member_event(out)
                self._callback(self._on_member_event, out)
            elif type(out) is UserEventReceived:
                self._callback(self._on_user_event, out)
            elif type(out) is LeaveComplete:
                fut = self._leave_future
                if fut is not None and not fut.done():
                    fut.set_result(out)
                self._callback(self._on_leave_complete, out)
        if not self._closed and core.next_deadline() < self._sleep_until:
            self._wakeup()
        return joins

    def _send(self, out: SendPacket) -> None:
        udp = self._udp
        if udp is None or self._closed:
            return
        try:
            udp.sendto(out.data, out.addr)
        except (OSError, ValueError) as exc:  # includes a full send buffer: UDP may drop anyway
            self.stats.send_errors += 1
            log.debug("gossip: send to %s failed: %s", format_address(*out.addr), exc)
            return
        self.stats.packets_out += 1
        self.stats.bytes_out += len(out.data)

    def _spawn(self, coro: Coroutine[Any, Any, bool], name: str) -> asyncio.Task[bool]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _callback(self, fn: Callable[[Any], None] | None, arg: Any) -> None:
        if fn is None:
            return
        try:
            fn(arg)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("gossip: event callback failed")


def _resolve_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
