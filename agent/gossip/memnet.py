"""In-memory twins of the gossip driver: ``FakeClock`` and ``InMemoryNetwork``.

``InMemoryNetwork`` plays the asyncio driver's part for any number of ``GossipCore`` s in one thread:
it ticks each core at its ``next_deadline()``, carries ``SendPacket`` s after a seeded latency
(dropping some with a configurable probability, per network or per link), performs push/pull
``StreamRequest`` s as a request and a reply one latency apart, and records member and user events.
It is discrete-event: time jumps from one due event to the next, so a 1,000-member cluster runs
simulated minutes in seconds and every run with the same seed is identical.

Faults: ``set_loss`` / ``set_link_loss`` (lossy paths), ``partition`` / ``heal`` (groups that cannot
reach each other), ``kill`` (a node stops responding: no ticks, inbound traffic dropped, as after
SIGKILL).

It lives beside the real code, not in tests, so agent tests, ``-dev`` experiments and users' own
tests can all use it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.gossip.config import GossipConfig
from agent.gossip.core import (
    Address,
    GossipCore,
    LeaveComplete,
    MemberEvent,
    MemberStatus,
    Output,
    SendPacket,
    StreamRequest,
    UserEventReceived,
)
from agent.gossip.errors import DecodeError

__all__ = ["FakeClock", "InMemoryNetwork", "NetworkStats"]

_TICK, _PACKET, _STREAM_REQUEST, _STREAM_REPLY = 0, 1, 2, 3
_INF = float("inf")

Event = MemberEvent | UserEventReceived | LeaveComplete


class FakeClock:
    """A clock that moves only when told to: ``now()`` for the core, ``advance()`` for the test."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now(self) -> float:
        return self._now_s

    def advance(self, dt_s: float) -> float:
        if dt_s < 0:
            raise ValueError("a clock cannot go backwards")
        self._now_s += dt_s
        return self._now_s

    def set(self, t_s: float) -> None:
        if t_s < self._now_s:
            raise ValueError("a clock cannot go backwards")
        self._now_s = t_s


@dataclass(slots=True)
class NetworkStats:
    packets_sent: int = 0
    packets_dropped: int = 0
    packets_delivered: int = 0
    bad_packets: int = 0
    streams_opened: int = 0
    streams_failed: int = 0


class InMemoryNetwork:
    """A seeded, discrete-event network connecting ``GossipCore`` s (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: FakeClock | None = None,
        latency_s: float = 0.001,
        jitter_s: float = 0.0005,
        loss: float = 0.0,
        record_events: bool = True,
        on_event: Callable[[Address, Event], None] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock or FakeClock()
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.stats = NetworkStats()
        self.nodes: dict[Address, GossipCore] = {}
        self.events: dict[Address, list[Event]] = {}
        self._record = record_events
        self._on_event = on_event
        self._link_loss: dict[tuple[Address, Address], float] = {}
        self._group: dict[Address, int] = {}
        self._killed: set[Address] = set()
        self._heap: list[tuple[float, int, int, Address, Address, bytes]] = []
        self._seq = 0
        self._scheduled: dict[Address, float] = {}
        self._node_seq = 0

    # --- building a cluster ---------------------------------------------------------------------

    def add_node(
        self, name: str | None = None, config: GossipConfig | None = None, *, tags: Mapping[str, str] | None = None
    ) -> GossipCore:
        """Create a core on a fresh address (10.x.y.z:8301) with its own seeded rng, and add it."""
        i = self._node_seq
        self._node_seq += 1
        addr = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 8301)
        core = GossipCore(
            config or GossipConfig.fast(),
            name or f"node-{i}",
            addr,
            rng=random.Random(self.rng.getrandbits(64)),
            now_s=self.clock.now(),
            tags=tags,
        )
        self.add(core)
        return core

    def add_nodes(self, count: int, config: GossipConfig | None = None) -> list[GossipCore]:
        """``count`` fresh nodes (see ``add_node``), not yet joined to anything."""
        return [self.add_node(config=config) for _ in range(count)]

    def add(self, core: GossipCore) -> None:
        """Attach an existing core at its own address."""
        self.nodes[core.address] = core
        self.events.setdefault(core.address, [])
        self._after_call(core.address, core)

    def restart(self, core: GossipCore) -> None:
        """Put a fresh core at the address of a killed node (the process came back)."""
        self._killed.discard(core.address)
        self.add(core)

    def join(self, addr: Address, seeds: Iterable[Address]) -> None:
        core = self.nodes[addr]
        core.join(self.clock.now(), seeds)
        self._after_call(addr, core)

    def leave(self, addr: Address) -> None:
        core = self.nodes[addr]
        core.leave(self.clock.now())
        self._after_call(addr, core)

    def user_event(self, addr: Address, name: str, payload: bytes = b"") -> int:
        core = self.nodes[addr]
        ltime = core.user_event(self.clock.now(), name, payload)
        self._after_call(addr, core)
        return ltime

    def call(self, addr: Address, fn: Callable[[GossipCore, float], object]) -> object:
        """Run ``fn(core, now)`` against one node and route whatever it outputs."""
        core = self.nodes[addr]
        result = fn(core, self.clock.now())
        self._after_call(addr, core)
        return result

    # --- faults ---------------------------------------------------------------------------------

    def kill(self, addr: Address) -> None:
        """The node stops responding, as after SIGKILL: no more ticks, inbound traffic dropped."""
        self._killed.add(addr)
        self._scheduled.pop(addr, None)

    def is_alive(self, addr: Address) -> bool:
        return addr in self.nodes and addr not in self._killed

    def set_loss(self, probability: float) -> None:
        """Drop every packet with this probability (streams are TCP and unaffected)."""
        self.loss = probability

    def set_link_loss(self, a: Address, b: Address, probability: float, both_ways: bool = True) -> None:
        """Drop packets from a to b (and b to a) with this probability; 1.0 cuts the UDP path."""
        self._link_loss[(a, b)] = probability
        if both_ways:
            self._link_loss[(b, a)] = probability

    def partition(self, *groups: Iterable[Address]) -> None:
        """Split the network: nodes reach only nodes of their own group; unlisted nodes form one more."""
        self._group = {addr: i + 1 for i, group in enumerate(groups) for addr in group}

    def heal(self) -> None:
        """Undo ``partition`` and every link loss."""
        self._group = {}
        self._link_loss = {}

    def reachable(self, src: Address, dst: Address) -> bool:
        if dst in self._killed or src in self._killed:
            return False
        return not self._group or self._group.get(src, 0) == self._group.get(dst, 0)

    # --- running --------------------------------------------------------------------------------

    def run_until(self, t_s: float) -> None:
        """Process every event due up to ``t_s``, then leave the clock at ``t_s``."""
        heap = self._heap
        clock = self.clock
        nodes = self.nodes
        while heap and heap[0][0] <= t_s:
            at, _, kind, dst, src, data = heapq.heappop(heap)
            if at > clock.now():
                clock.set(at)
            now = clock.now()
            if dst in self._killed:
                if kind == _STREAM_REQUEST:
                    self.stats.streams_failed += 1
                continue
            core = nodes[dst]
            if kind == _TICK:
                if self._scheduled.get(dst) != at:
                    continue  # superseded by an earlier wake-up
                del self._scheduled[dst]
                core.tick(now)
            elif kind == _PACKET:
                self.stats.packets_delivered += 1
                try:
                    core.receive_packet(now, src, data)
                except DecodeError:
                    self.stats.bad_packets += 1
            elif kind == _STREAM_REQUEST:
                try:
                    reply = core.handle_stream(now, src, data)
                except DecodeError:
                    self.stats.streams_failed += 1
                    continue
                if self.reachable(dst, src):
                    self._push(now + self._delay(), _STREAM_REPLY, src, dst, reply)
                else:
                    self.stats.streams_failed += 1
            else:
                try:
                    core.receive_stream(now, src, data)
                except DecodeError:
                    self.stats.streams_failed += 1
            self._after_call(dst, core)
        if t_s > clock.now():
            clock.set(t_s)

    def run_for(self, dt_s: float) -> None:
        self.run_until(self.clock.now() + dt_s)

    def run_until_true(self, predicate: Callable[[], bool], timeout_s: float, check_every_s: float) -> bool:
        """Run in steps of ``check_every_s`` until ``predicate()`` holds (True) or time runs out."""
        deadline = self.clock.now() + timeout_s
        while True:
            if predicate():
                return True
            if self.clock.now() >= deadline:
                return False
            self.run_until(min(deadline, self.clock.now() + check_every_s))

    def live_nodes(self) -> list[GossipCore]:
        return [c for a, c in self.nodes.items() if a not in self._killed]

    def converged(self) -> bool:
        """Every live node sees every live node as alive (and nothing else as alive)."""
        live = self.live_nodes()
        names = {c.name for c in live}
        for core in live:
            if core.count(MemberStatus.ALIVE) != len(names):
                return False
        alive = MemberStatus.ALIVE
        return all(core.status_of(name) is alive for core in live for name in names)

    # --- plumbing -------------------------------------------------------------------------------

    def _delay(self) -> float:
        return self.latency_s + (self.rng.random() * self.jitter_s if self.jitter_s else 0.0)

    def _push(self, at: float, kind: int, dst: Address, src: Address, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, dst, src, data))

    def _after_call(self, addr: Address, core: GossipCore) -> None:
        outputs = core.take_outputs()
        if outputs:
            self._route(addr, outputs)
        if addr in self._killed:
            return
        deadline = core.next_deadline()
        now = self.clock.now()
        if deadline < now:
            deadline = now
        if deadline < self._scheduled.get(addr, _INF):
            self._scheduled[addr] = deadline
            self._push(deadline, _TICK, addr, addr, b"")

    def _route(self, src: Address, outputs: list[Output]) -> None:
        now = self.clock.now()
        rng = self.rng
        for out in outputs:
            if type(out) is SendPacket:
                self.stats.packets_sent += 1
                dst = out.addr
                if dst not in self.nodes or not self.reachable(src, dst):
                    self.stats.packets_dropped += 1
                    continue
                p = self.loss
                if self._link_loss:
                    p = max(p, self._link_loss.get((src, dst), 0.0))
                if p and rng.random() < p:
                    self.stats.packets_dropped += 1
                    continue
                self._push(now + self._delay(), _PACKET, dst, src, out.data)
            elif type(out) is StreamRequest:
                self.stats.streams_opened += 1
                if out.addr not in self.nodes or not self.reachable(src, out.addr):
                    self.stats.streams_failed += 1
                    continue
                self._push(now + self._delay(), _STREAM_REQUEST, out.addr, src, out.payload)
            else:
                assert isinstance(out, MemberEvent | UserEventReceived | LeaveComplete)
                if self._record:
                    self.events[src].append(out)
                if self._on_event is not None:
                    self._on_event(src, out)
