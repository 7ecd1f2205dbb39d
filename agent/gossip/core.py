"""The SWIM + Lifeguard membership core: pure, synchronous, sans-IO.

Theory of operation
-------------------
Each node keeps a member list and runs three periodic jobs (SWIM, Das et al. 2002; memberlist):

- **probe** (every ``probe_interval_s``): ping the next member of a shuffled round-robin order.
  No ack within ``probe_timeout_s`` → ask ``indirect_checks`` random members to ping it for us
  (ping-req). Still no ack by the end of the interval → the member becomes *suspect*.
- **gossip** (every ``gossip_interval_s``): send queued broadcasts to ``gossip_nodes`` random
  members. Broadcasts also ride on every ping and ack the node sends anyway (piggybacking).
- **push/pull** (every ``push_pull_interval_s``, scaled with n): exchange the full member list
  with one random member over a stream (anti-entropy).

Member states (``NodeState``) and what moves them::

    alive   ──probe fails / Suspect heard──▶  suspect ──suspicion timeout──▶ dead  (Consul "failed")
      ▲                                          │                                 │
      └──── Alive with a higher incarnation ─────┴─────────────────────────────────┘
    any ──Dead from the node itself (a leave)──▶ left ──tombstone_timeout_s──▶ reaped
    dead ──reconnect_timeout_s──▶ reaped

Incarnation numbers order the rumours about one member: a message is ignored unless its
incarnation is at least the one we hold (for ``Alive``, strictly greater). Only a node raises its
own incarnation: when it hears that it is suspected or dead it *refutes* by broadcasting ``Alive``
with a higher number (SWIM §4.2).

Lifeguard (Dadgar et al. 2018) adds three things, all here: the local-health multiplier on probe
timing (``awareness.py``), the shrinking suspicion timeout with independent confirmations
(``suspicion.py``), and nacks from ping-req helpers so a node can tell "the target is silent" from
"my own packets are lost". Also from memberlist: the "buddy system" (a ping to a suspect carries the
suspicion so the target can refute at once) and gossip to recently dead members.

On top sits the slice of serf that Consul relies on: graceful leave (left, not failed), user events
with Lamport time and de-duplication, reaping failed/left members, reconnect attempts, force-leave.

Contract for the driver
-----------------------
The core never reads a clock, never sleeps, never touches a socket, and draws randomness only from
the injected ``random.Random``. One task owns it, so it needs no locks. The driver:

1. calls ``tick(now)`` no later than ``next_deadline()`` (calling it earlier is harmless);
2. feeds every datagram to ``receive_packet(now, from_addr, data)``;
3. answers an inbound push/pull stream with ``handle_stream(now, from_addr, data)`` (returns the
   reply bytes to write back) and feeds the reply to its own ``StreamRequest`` to
   ``receive_stream(now, from_addr, data)``;
4. after every call, drains ``take_outputs()`` and performs them in order: ``SendPacket`` (UDP),
   ``StreamRequest`` (TCP push/pull within ``tcp_timeout_s``), and passes ``MemberEvent``,
   ``UserEventReceived`` and ``LeaveComplete`` on to the agent.

``now`` is float seconds from a monotonic clock; only differences matter.
"""

from __future__ import annotations

import enum
import heapq
import random
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from agent.gossip.awareness import Awareness
from agent.gossip.broadcast import BroadcastQueue
from agent.gossip.config import GossipConfig
from agent.gossip.errors import DecodeError, EncodeError, LocalProtocolError, UnknownMember
from agent.gossip.messages import (
    DEFAULT_PROTOCOL_VERSIONS,
    PACKET_HEADER_BYTES,
    PART_OVERHEAD_BYTES,
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    NodeState,
    Ping,
    ProtocolVersions,
    RawPushPull,
    Suspect,
    UserEvent,
    assemble,
    decode_part,
    decode_push_entry,
    decode_stream_raw,
    encode_alive,
    encode_message,
    encode_stream_raw,
    encoded_tags_bytes,
    split_packet,
)
from agent.gossip.suspicion import Suspicion
from agent.gossip.util import k_random_members, push_pull_scale_s, random_stagger_s, suspicion_timeout_s

__all__ = [
    "Address",
    "PacketSeal",
    "MemberStatus",
    "Member",
    "SendPacket",
    "StreamRequest",
    "MemberEventKind",
    "MemberEvent",
    "UserEventReceived",
    "LeaveComplete",
    "Output",
    "GossipStats",
    "GossipCore",
]

Address = tuple[str, int]
"""(host, port) of a member's gossip socket (UDP and TCP share the port, as in Consul's 8301)."""

_ALIVE = NodeState.ALIVE
_SUSPECT = NodeState.SUSPECT
_DEAD = NodeState.DEAD
_LEFT = NodeState.LEFT
_SEQ_MASK = 0xFFFFFFFF
_NO_TAGS: Mapping[str, str] = MappingProxyType({})
"""Shared by every member without tags."""
_RUMOURS = (Alive, Suspect, Dead, UserEvent)
"""Message types that are gossiped (and so arrive many times over)."""
_SEEN_MIN_CAPACITY = 4096
_NACK_FRACTION = 0.8
"""A ping-req helper sends its nack at 80% of the probe timeout (Lifeguard §IV-B), so the nack
reaches the requester before the requester's own deadline."""


class PacketSeal(Protocol):
    """The encryption seam: wraps every outgoing packet/stream frame and unwraps incoming ones.

    The keyring (AES-GCM, Consul's ``encrypt``) implements this; ``open`` raises ``DecodeError`` on
    a packet it cannot authenticate. ``overhead_bytes`` is subtracted from ``udp_buffer_size``.
    """

    @property
    def overhead_bytes(self) -> int: ...

    def seal(self, data: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes: ...


class MemberStatus(enum.Enum):
    """A member's status as the agent reports it."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    LEAVING = "leaving"
    LEFT = "left"
    FAILED = "failed"


_STATUS_CODE = {
    MemberStatus.ALIVE: 1,
    MemberStatus.SUSPECT: 1,  # serf reports a suspect member as alive until it is declared dead
    MemberStatus.LEAVING: 2,
    MemberStatus.LEFT: 3,
    MemberStatus.FAILED: 4,
}
_STATE_STATUS = {
    _ALIVE: MemberStatus.ALIVE,
    _SUSPECT: MemberStatus.SUSPECT,
    _DEAD: MemberStatus.FAILED,
    _LEFT: MemberStatus.LEFT,
}


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member, as ``/v1/agent/members`` shows it."""

    name: str
    addr: str
    port: int
    tags: Mapping[str, str]
    status: MemberStatus
    incarnation: int
    versions: ProtocolVersions = DEFAULT_PROTOCOL_VERSIONS

    @property
    def status_code(self) -> int:
        """Consul's integer ``Status`` in /v1/agent/members: 1 alive, 2 leaving, 3 left, 4 failed."""
        return _STATUS_CODE[self.status]

    @property
    def consul_status(self) -> str:
        """The word ``consul members`` prints (suspect members still show as alive)."""
        return "alive" if self.status is MemberStatus.SUSPECT else self.status.value


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send ``data`` as one UDP datagram to ``addr``."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open a stream to ``addr``, write ``payload``, read the reply, and feed it to ``receive_stream``.

    ``join`` is informational (the driver may count successful joins); a failure needs no report.
    """

    addr: Address
    payload: bytes
    join: bool


class MemberEventKind(enum.Enum):
    """serf's member events."""

    JOIN = "join"
    UPDATE = "update"
    FAILED = "failed"
    LEAVE = "leave"
    REAP = "reap"


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member joined, changed tags/address, failed, left, or was reaped."""

    kind: MemberEventKind
    member: Member


@dataclass(frozen=True, slots=True)
class UserEventReceived:
    """A user event seen for the first time (delivered once per node, the sender included)."""

    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@dataclass(frozen=True, slots=True)
class LeaveComplete:
    """Our leave has propagated (or timed out); the driver may now shut the sockets."""

    timed_out: bool


Output = SendPacket | StreamRequest | MemberEvent | UserEventReceived | LeaveComplete


@dataclass(slots=True)
class GossipStats:
    """Counters for ``consul info`` and debugging; monotonic, never reset."""

    packets_received: int = 0
    packets_sent: int = 0
    bad_packets: int = 0
    bad_streams: int = 0
    probes: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    refutes: int = 0
    misdirected_pings: int = 0
    name_conflicts: int = 0
    push_pulls: int = 0


class _Record:
    """Mutable per-member state inside the core (``Member`` is the frozen public view).

    ``tags`` dicts are never mutated once stored, only replaced, so snapshots and messages share
    them without copying.
    """

    __slots__ = (
        "name", "addr", "port", "tags", "versions", "incarnation", "state", "state_change_s",
        "suspicion", "in_rotation", "part",
    )

    def __init__(
        self, name: str, addr: str, port: int, tags: Mapping[str, str], versions: ProtocolVersions,
        incarnation: int, state: NodeState, now_s: float,
    ) -> None:
        self.name = name
        self.addr = addr
        self.port = port
        self.tags = tags
        self.versions = versions
        self.incarnation = incarnation
        self.state = state
        self.state_change_s = now_s
        self.suspicion: Suspicion | None = None
        self.in_rotation = False
        self.part: bytes | None = None  # encoded Alive for the current fields (None: stale, re-encode)


class _Probe:
    __slots__ = ("seq_no", "target", "timeout_at_s", "deadline_at_s", "indirect_sent", "expected_nacks", "nacks")

    def __init__(self, seq_no: int, target: str, timeout_at_s: float, deadline_at_s: float) -> None:
        self.seq_no = seq_no
        self.target = target
        self.timeout_at_s = timeout_at_s
        self.deadline_at_s = deadline_at_s
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """We are a ping-req helper: forward the target's ack to ``origin`` under ``origin_seq``."""

    __slots__ = ("origin", "origin_seq", "nack")

    def __init__(self, origin: Address, origin_seq: int, nack: bool) -> None:
        self.origin = origin
        self.origin_seq = origin_seq
        self.nack = nack


class _EventSlot:
    __slots__ = ("ltime", "events")

    def __init__(self, ltime: int) -> None:
        self.ltime = ltime
        self.events: list[UserEvent] = []


class GossipCore:
    """One member of a gossip pool. See the module docstring for the driver contract."""

    def __init__(
        self,
        config: GossipConfig,
        name: str,
        addr: Address,
        *,
        rng: random.Random,
        now_s: float,
        tags: Mapping[str, str] | None = None,
        versions: ProtocolVersions = DEFAULT_PROTOCOL_VERSIONS,
        seal: PacketSeal | None = None,
    ) -> None:
        self.config = config.validate()
        self.name = name
        self.stats = GossipStats()
        self._rng = rng
        self._seal = seal
        self._packet_budget = config.udp_buffer_size - PACKET_HEADER_BYTES - (seal.overhead_bytes if seal else 0)
        own_tags = dict(tags or {})
        self._check_tags(own_tags)
        self._self = _Record(name, addr[0], addr[1], own_tags, versions, 1, _ALIVE, now_s)
        self._members: dict[str, _Record] = {name: self._self}
        self._counts = dict.fromkeys(NodeState, 0)
        self._counts[_ALIVE] = 1
        self._order: list[_Record] = []  # probe rotation; never holds self
        self._order_idx = 0
        self._queue = BroadcastQueue(config.retransmit_mult, PART_OVERHEAD_BYTES)
        self._event_queue = BroadcastQueue(config.retransmit_mult, PART_OVERHEAD_BYTES)
        # Rumour parts already processed, byte for byte (two generations, see receive_packet).
        self._seen: set[bytes] = set()
        self._seen_prev: set[bytes] = set()
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._seq_no = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._relay_heap: list[tuple[float, int, bool]] = []  # (due, seq, is_nack_timer)
        self._suspicion_heap: list[tuple[float, str]] = []
        self._outputs: list[Output] = []
        # Encoded (unsealed) push/pull state by join flag; cleared on any change to what it holds.
        # A seed answering a burst of joins then encodes its member list once, not per joiner.
        self._state_cache: dict[bool, bytes] = {}
        self._now_s = now_s
        self._stopped = False
        # user events (serf): Lamport clock, window floor for joins, de-dup ring
        self._event_clock = 0
        self._event_min_time = 0
        self._event_buffer: dict[int, _EventSlot] = {}
        # leave: None → not leaving; then "broadcasting" → "propagating" → "done"
        self._leave_phase: str | None = None
        self._leave_deadline_s = 0.0
        # periodic jobs start at a random offset so a fleet started together does not tick in step
        self._next_probe_at_s = now_s + random_stagger_s(rng, config.probe_interval_s)
        self._next_gossip_at_s = now_s + random_stagger_s(rng, config.gossip_interval_s)
        self._next_push_pull_at_s = now_s + random_stagger_s(rng, config.push_pull_interval_s)
        self._next_reconnect_at_s = now_s + config.reconnect_interval_s
        self._next_reap_at_s = now_s + config.reap_interval_s
        self._queue.queue(self._alive_part(self._self), key=name)
        self._emit_member(MemberEventKind.JOIN, self._self)

    # --- public API: inputs -------------------------------------------------------------------

    def tick(self, now_s: float) -> None:
        """Run every timer that is due at ``now_s``: probes, ping-req relays, suspicions, gossip,
        push/pull, reconnects, reaping and the leave sequence."""
        if self._stopped:
            return
        self._now_s = now_s
        self._tick_probe(now_s)
        relay_heap = self._relay_heap
        while relay_heap and relay_heap[0][0] <= now_s:
            _, seq, is_nack = heapq.heappop(relay_heap)
            if is_nack:
                relay = self._relays.get(seq)
                if relay is not None and relay.nack:
                    self._send(relay.origin, [encode_message(Nack(relay.origin_seq))])
            else:
                self._relays.pop(seq, None)
        sheap = self._suspicion_heap
        while sheap and sheap[0][0] <= now_s:
            _, name = heapq.heappop(sheap)
            rec = self._members.get(name)
            if rec is not None and rec.suspicion is not None and rec.suspicion.expires_at_s <= now_s:
                # The suspect never refuted: declare it dead (memberlist: dead message from self).
                self._on_dead(Dead(rec.incarnation, rec.name, self.name), now_s)
        cfg = self.config
        if now_s >= self._next_gossip_at_s:
            self._gossip()
            self._next_gossip_at_s = _next_at(self._next_gossip_at_s, cfg.gossip_interval_s, now_s)
        if now_s >= self._next_push_pull_at_s:
            self._periodic_push_pull()
            interval = push_pull_scale_s(cfg.push_pull_interval_s, len(self._members))
            self._next_push_pull_at_s = _next_at(self._next_push_pull_at_s, interval, now_s)
        if now_s >= self._next_reconnect_at_s:
            self._reconnect()
            self._next_reconnect_at_s = _next_at(self._next_reconnect_at_s, cfg.reconnect_interval_s, now_s)
        if now_s >= self._next_reap_at_s:
            self._reap_expired(now_s)
            self._rotate_seen()
            self._next_reap_at_s = _next_at(self._next_reap_at_s, cfg.reap_interval_s, now_s)
        if self._leave_phase is not None:
            self._tick_leave(now_s)

    def next_deadline(self) -> float:
        """The latest time at which ``tick`` must next be called."""
        d = min(
            self._next_probe_at_s,
            self._next_gossip_at_s,
            self._next_push_pull_at_s,
            self._next_reconnect_at_s,
            self._next_reap_at_s,
        )
        p = self._probe
        if p is not None:
            d = min(d, p.deadline_at_s if p.indirect_sent else p.timeout_at_s)
        if self._relay_heap:
            d = min(d, self._relay_heap[0][0])
        if self._suspicion_heap:
            d = min(d, self._suspicion_heap[0][0])
        if self._leave_phase in ("broadcasting", "propagating"):
            d = min(d, self._leave_deadline_s)
        return d

    def receive_packet(self, now_s: float, from_addr: Address, data: bytes) -> None:
        """Handle one datagram. Raises ``DecodeError`` (state untouched) if it is not valid.

        Every part is validated before any is acted on. Rumour parts (alive, suspect, dead, user
        event) that are byte-for-byte copies of ones already processed are dropped before
        decoding: each member relays each rumour retransmit_limit times, so in a 1,000-member
        cluster most parts are such copies. Handling a copy again could change nothing, since
        incarnations only grow and suspicions and events de-duplicate; parts whose fate could
        still change (a name conflict, a rumour about a member not known yet) are taken back out
        of the set by their handlers, and a stale copy cannot resurrect a member reaped in
        between. The memory is two generations of a set, rotated when it fills and at every reap
        interval, so it is a bounded cache: forgetting a part only costs decoding it again.
        """
        if self._stopped:
            return
        self._now_s = now_s
        self.stats.packets_received += 1
        seen, seen_prev = self._seen, self._seen_prev
        try:
            parts = split_packet(self._seal.open(data) if self._seal else data)
            parts = [p for p in parts if p not in seen and p not in seen_prev]
            msgs = [decode_part(p) for p in parts]
        except DecodeError:
            self.stats.bad_packets += 1
            raise
        for msg, part in zip(msgs, parts, strict=True):
            if isinstance(msg, _RUMOURS):
                seen.add(part)
            self._dispatch(msg, part, from_addr, now_s)
        if len(seen) > max(_SEEN_MIN_CAPACITY, 4 * len(self._members)):
            self._rotate_seen()

    def handle_stream(self, now_s: float, from_addr: Address, data: bytes) -> bytes:
        """Answer a peer's push/pull: returns our state to write back, then merges theirs.

        Raises ``DecodeError`` (state untouched) if ``data`` is not a push/pull frame.
        """
        remote, updates = self._decode_stream(data)
        reply = self._local_state_frame(remote.join)
        if not self._stopped:
            self._now_s = now_s
            self.stats.push_pulls += 1
            self._merge_remote(remote, updates, now_s, joining=False)
        return reply

    def receive_stream(self, now_s: float, from_addr: Address, data: bytes) -> None:
        """Merge the reply to one of our ``StreamRequest`` s. Raises ``DecodeError`` on garbage."""
        remote, updates = self._decode_stream(data)
        if self._stopped:
            return
        self._now_s = now_s
        self.stats.push_pulls += 1
        self._merge_remote(remote, updates, now_s, joining=remote.join)

    # --- public API: commands -----------------------------------------------------------------

    def join(self, now_s: float, addrs: Iterable[Address]) -> None:
        """Push/pull with each seed address (``-join`` / ``-retry-join``); their replies, fed to
        ``receive_stream``, bring in the whole member list, and our state tells them about us."""
        self._now_s = now_s
        payload = self._local_state_frame(True)
        for addr in addrs:
            self._outputs.append(StreamRequest(addr, payload, True))

    def leave(self, now_s: float) -> None:
        """Start a graceful leave: broadcast a dead-from-self so members mark us *left*, not failed.

        ``LeaveComplete`` comes out once the broadcast has been sent its full retransmit count and
        ``leave_propagate_delay_s`` has passed (or after ``broadcast_timeout_s``). Idempotent.
        """
        if self._leave_phase is not None or self._stopped:
            return
        self._now_s = now_s
        self._leave_phase = "broadcasting"
        self._leave_deadline_s = now_s + self.config.broadcast_timeout_s
        self._on_dead(Dead(self._self.incarnation, self.name, self.name), now_s)
        if self._counts[_ALIVE] + self._counts[_SUSPECT] == 0:
            self._finish_leave(timed_out=False)  # nobody to tell

    def set_tags(self, now_s: float, tags: Mapping[str, str]) -> None:
        """Replace our tags and announce them with a new incarnation (serf SetTags).

        Refused while leaving: the announcement would replace our queued leave broadcast.
        """
        if self._leave_phase is not None:
            raise LocalProtocolError("cannot change tags while leaving")
        new = dict(tags)
        self._check_tags(new)
        self._now_s = now_s
        self._self.tags = new
        self._self.incarnation = (self._self.incarnation + 1) & _SEQ_MASK
        self._changed(self._self)
        self._queue.queue(self._alive_part(self._self), key=self.name)
        self._emit_member(MemberEventKind.UPDATE, self._self)

    def user_event(self, now_s: float, name: str, payload: bytes = b"", coalesce: bool = True) -> int:
        """Fire a user event to every member (``consul event``); returns its Lamport time.

        Raises ``EncodeError`` if name + payload exceed ``user_event_max_bytes``.
        """
        size = len(name.encode()) + len(payload)
        if not name or size > self.config.user_event_max_bytes:
            raise EncodeError(
                f"user event name + payload is {size} bytes; must be 1..{self.config.user_event_max_bytes}"
            )
        self._now_s = now_s
        ltime = self._event_clock
        self._event_clock += 1
        self._state_cache.clear()
        self._on_user_event(UserEvent(ltime, name, payload, coalesce))
        return ltime

    def force_leave(self, now_s: float, node: str, prune: bool = False) -> None:
        """Mark a (normally failed) member as left on its behalf and tell everyone (``force-leave``).

        With ``prune`` every member forgets it at once instead of after ``tombstone_timeout_s``.
        If the member is in fact alive it hears the rumour and refutes it, as in Consul.
        """
        if node == self.name:
            raise LocalProtocolError("force_leave cannot target the local node; use leave()")
        rec = self._members.get(node)
        if rec is None:
            raise UnknownMember(node)
        self._now_s = now_s
        self._on_dead(Dead(rec.incarnation, node, node, prune), now_s)

    def shutdown(self) -> None:
        """Stop: later ticks and packets are ignored. Pending outputs can still be drained."""
        self._stopped = True

    def take_outputs(self) -> list[Output]:
        """Everything the core wants done since the last call, in order; clears the outbox."""
        out, self._outputs = self._outputs, []
        return out

    # --- public API: queries ------------------------------------------------------------------

    @property
    def address(self) -> Address:
        return (self._self.addr, self._self.port)

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def health_score(self) -> int:
        """Lifeguard's local health score (0 = healthy), Consul's ``health_score``."""
        return self._awareness.score

    @property
    def event_ltime(self) -> int:
        """The user-event Lamport clock, Consul's ``event_time``."""
        return self._event_clock

    def members(self) -> list[Member]:
        """Snapshots of every known member, ourselves included, in no particular order."""
        return [self._snapshot(r) for r in self._members.values()]

    def member(self, name: str) -> Member | None:
        rec = self._members.get(name)
        return None if rec is None else self._snapshot(rec)

    def status_of(self, name: str) -> MemberStatus | None:
        """A member's status without building a snapshot (None if unknown)."""
        rec = self._members.get(name)
        if rec is None:
            return None
        if rec is self._self and self._leave_phase in ("broadcasting", "propagating"):
            return MemberStatus.LEAVING
        return _STATE_STATUS[rec.state]

    def local_member(self) -> Member:
        return self._snapshot(self._self)

    def num_members(self) -> int:
        """Members known, in any state (what the scaling rules call n)."""
        return len(self._members)

    def count(self, status: MemberStatus) -> int:
        """How many members (ourselves included) have this status; O(1)."""
        if status is MemberStatus.LEAVING:
            return 1 if self._leave_phase in ("broadcasting", "propagating") else 0
        for state, st in _STATE_STATUS.items():
            if st is status:
                n = self._counts[state]
                if self._leave_phase in ("broadcasting", "propagating") and state == _LEFT:
                    n -= 1
                return n
        return 0

    # --- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, msg: Message, part: bytes | None, from_addr: Address, now_s: float) -> None:
        """Route one message; ``part`` is its encoding as received, relayed as-is if re-gossiped."""
        if type(msg) is Alive:
            self._on_alive(msg, now_s, part)
        elif type(msg) is Ping:
            self._on_ping(msg, from_addr)
        elif type(msg) is Ack:
            self._on_ack(msg)
        elif type(msg) is Suspect:
            self._on_suspect(msg, now_s, part)
        elif type(msg) is Dead:
            self._on_dead(msg, now_s, part)
        elif type(msg) is IndirectPing:
            self._on_indirect_ping(msg, from_addr, now_s)
        elif type(msg) is Nack:
            p = self._probe
            if p is not None and msg.seq_no == p.seq_no:
                p.nacks += 1
        elif type(msg) is UserEvent:
            self._on_user_event(msg, part)

    def _rotate_seen(self) -> None:
        self._seen_prev = self._seen
        self._seen = set()

    # --- probing (SWIM §3.1, Lifeguard §IV) -----------------------------------------------------

    def _tick_probe(self, now_s: float) -> None:
        p = self._probe
        if p is not None:
            if not p.indirect_sent and now_s >= p.timeout_at_s:
                self._send_indirect_pings(p)
            if now_s >= p.deadline_at_s:
                self._probe = None
                self._probe_failed(p, now_s)
        if self._probe is None and now_s >= self._next_probe_at_s:
            interval_s = self._awareness.scale_s(self.config.probe_interval_s)
            self._next_probe_at_s = _next_at(self._next_probe_at_s, interval_s, now_s)
            self._start_probe(now_s, interval_s)

    def _next_probe_target(self) -> _Record | None:
        """Round-robin over a shuffled list, reshuffled at each wrap (SWIM §4.3): every member is
        probed within one pass, so detection time is bounded, yet the order stays unpredictable."""
        order = self._order
        checked = 0
        while checked <= len(order):
            if self._order_idx >= len(order):
                self._reset_rotation()
                order = self._order
                if not order:
                    return None
            rec = order[self._order_idx]
            self._order_idx += 1
            checked += 1
            if rec.in_rotation and (rec.state == _ALIVE or rec.state == _SUSPECT):
                return rec
        return None

    def _reset_rotation(self) -> None:
        """Drop members dead longer than gossip_to_the_dead_s (or reaped), then shuffle."""
        now_s = self._now_s
        keep: list[_Record] = []
        for rec in self._order:
            if not rec.in_rotation:
                continue
            if (rec.state == _DEAD or rec.state == _LEFT) and now_s - rec.state_change_s > self.config.gossip_to_the_dead_s:
                rec.in_rotation = False
                continue
            keep.append(rec)
        self._rng.shuffle(keep)
        self._order = keep
        self._order_idx = 0

    def _add_to_rotation(self, rec: _Record) -> None:
        """Insert at a random position (append, then swap) so new members are not probed last."""
        rec.in_rotation = True
        order = self._order
        order.append(rec)
        j = int(self._rng.random() * len(order))
        order[j], order[-1] = order[-1], order[j]

    def _start_probe(self, now_s: float, interval_s: float) -> None:
        target = self._next_probe_target()
        if target is None:
            return
        self._seq_no = (self._seq_no + 1) & _SEQ_MASK
        timeout_s = self._awareness.scale_s(self.config.probe_timeout_s)
        self._probe = _Probe(self._seq_no, target.name, now_s + timeout_s, now_s + interval_s)
        self.stats.probes += 1
        items = [encode_message(Ping(self._seq_no, target.name))]
        if target.state == _SUSPECT:
            # Buddy system: tell the suspect directly, so it can refute without waiting for gossip.
            items.append(encode_message(Suspect(target.incarnation, target.name, self.name)))
        self._send((target.addr, target.port), items)

    def _send_indirect_pings(self, p: _Probe) -> None:
        p.indirect_sent = True
        target = self._members.get(p.target)
        if target is None or not (target.state == _ALIVE or target.state == _SUSPECT):
            return
        helpers = k_random_members(
            self._rng,
            self._order,
            self.config.indirect_checks,
            lambda r: r.state == _ALIVE and r.in_rotation and r is not target,
        )
        p.expected_nacks = len(helpers)
        item = encode_message(IndirectPing(p.seq_no, target.name, target.addr, target.port, True))
        for helper in helpers:
            self.stats.indirect_probes += 1
            self._send((helper.addr, helper.port), [item])

    def _probe_failed(self, p: _Probe, now_s: float) -> None:
        self.stats.probe_failures += 1
        # Lifeguard: helpers that did not even nack point at our own network, not the target's.
        if p.expected_nacks > 0:
            self._awareness.apply_delta(max(0, p.expected_nacks - p.nacks))
        else:
            self._awareness.apply_delta(1)
        target = self._members.get(p.target)
        if target is not None and (target.state == _ALIVE or target.state == _SUSPECT):
            self._on_suspect(Suspect(target.incarnation, target.name, self.name), now_s)

    def _on_ping(self, msg: Ping, from_addr: Address) -> None:
        if msg.node != self.name:
            # Addressed to whoever had this address before us; acking would vouch for them.
            self.stats.misdirected_pings += 1
            return
        self._send(from_addr, [encode_message(Ack(msg.seq_no))])

    def _on_ack(self, msg: Ack) -> None:
        p = self._probe
        if p is not None and msg.seq_no == p.seq_no:
            self._probe = None
            if not p.indirect_sent:
                self._awareness.apply_delta(-1)  # answered within the probe timeout: we are healthy
            return
        relay = self._relays.pop(msg.seq_no, None)
        if relay is not None:
            self._send(relay.origin, [encode_message(Ack(relay.origin_seq))])

    def _on_indirect_ping(self, msg: IndirectPing, from_addr: Address, now_s: float) -> None:
        self._seq_no = (self._seq_no + 1) & _SEQ_MASK
        seq = self._seq_no
        self._relays[seq] = _Relay(from_addr, msg.seq_no, msg.nack)
        timeout_s = self.config.probe_timeout_s
        heapq.heappush(self._relay_heap, (now_s + timeout_s, seq, False))
        if msg.nack:
            heapq.heappush(self._relay_heap, (now_s + _NACK_FRACTION * timeout_s, seq, True))
        self._send((msg.target_addr, msg.target_port), [encode_message(Ping(seq, msg.target))])

    # --- membership state machine ---------------------------------------------------------------

    def _on_alive(self, msg: Alive, now_s: float, part: bytes | None = None) -> None:
        self._alive(msg.node, msg.incarnation, msg.addr, msg.port, msg.tags, msg.versions, now_s, part)

    def _alive(
        self, node: str, incarnation: int, addr: str, port: int, tags: Mapping[str, str],
        versions: ProtocolVersions, now_s: float, part: bytes | None,
    ) -> None:
        """An ``Alive`` message (or a push/pull entry in state alive), taken field by field so the
        push/pull merge need not build a message per member. Anything new to us is re-gossiped,
        as memberlist does; members learnt by push/pull too, since the peers that most need them
        (those that joined before the member did) have no other way to hear of them soon."""
        rec = self._members.get(node)
        if rec is None:
            # Interned names/addresses and one shared empty-tags dict: a member list of n entries
            # per node is n² strings in a simulation of n nodes, so sharing them matters.
            node, addr = sys.intern(node), sys.intern(addr)
            rec = _Record(node, addr, port, tags or _NO_TAGS, versions, incarnation, _ALIVE, now_s)
            self._members[node] = rec
            self._counts[_ALIVE] += 1
            self._state_cache.clear()
            rec.part = part
            self._add_to_rotation(rec)
            self._queue.queue(self._alive_part(rec), key=node)
            self._emit_member(MemberEventKind.JOIN, rec)
            return
        if rec is self._self:
            self._alive_about_self(Alive(incarnation, node, addr, port, tags, versions))
            return
        same_addr = rec.addr == addr and rec.port == port
        if not same_addr:
            # A different address claims this name: only allowed once the old owner left, or has
            # been dead for dead_node_reclaim_s (a rebuilt node coming back under its old name).
            reclaimable = rec.state == _LEFT or (
                rec.state == _DEAD and now_s - rec.state_change_s >= self.config.dead_node_reclaim_s
            )
            if not reclaimable:
                self.stats.name_conflicts += 1
                if part is not None:
                    self._seen.discard(part)  # may be accepted once the old owner can be reclaimed
                return
        elif incarnation <= rec.incarnation:
            return
        old_state = rec.state
        changed = not same_addr or rec.tags != tags or rec.versions != versions
        rec.incarnation = incarnation
        rec.addr, rec.port, rec.tags, rec.versions = sys.intern(addr), port, tags or _NO_TAGS, versions
        self._changed(rec)
        rec.part = part
        rec.suspicion = None
        if old_state != _ALIVE:
            self._set_state(rec, _ALIVE, now_s)
        if not rec.in_rotation:
            self._add_to_rotation(rec)
        self._queue.queue(self._alive_part(rec), key=node)
        if old_state == _DEAD or old_state == _LEFT:
            self._emit_member(MemberEventKind.JOIN, rec)
        elif changed:
            self._emit_member(MemberEventKind.UPDATE, rec)

    def _alive_about_self(self, msg: Alive) -> None:
        me = self._self
        if msg.incarnation < me.incarnation or self._leave_phase is not None:
            return  # stale, or we are leaving and must not contradict our own leave
        if (
            msg.incarnation == me.incarnation
            and msg.addr == me.addr
            and msg.port == me.port
            and msg.tags == me.tags
            and msg.versions == me.versions
        ):
            return
        self._refute(msg.incarnation)

    def _on_suspect(self, msg: Suspect, now_s: float, part: bytes | None = None) -> None:
        rec = self._members.get(msg.node)
        if rec is None:
            if part is not None:
                self._seen.discard(part)  # about a member not heard of yet: worth hearing again
            return
        if msg.incarnation < rec.incarnation:
            return
        if rec is self._self:
            if self._leave_phase is None:
                self._refute(msg.incarnation)
            return
        if rec.suspicion is not None:
            # Lifeguard: an independent accuser shortens the timer; re-gossip only news.
            if rec.suspicion.confirm(msg.from_node):
                self._queue.queue(part or encode_message(msg), key=msg.node)
                heapq.heappush(self._suspicion_heap, (rec.suspicion.expires_at_s, rec.name))
            return
        if rec.state != _ALIVE:
            return
        cfg = self.config
        n = len(self._members)
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0  # too few members to ever collect k confirmations
        min_s = suspicion_timeout_s(cfg.suspicion_mult, n, cfg.probe_interval_s)
        rec.incarnation = msg.incarnation
        self._changed(rec)
        rec.suspicion = Suspicion(msg.from_node, k, min_s, cfg.suspicion_max_timeout_mult * min_s, now_s)
        self._set_state(rec, _SUSPECT, now_s)
        self._queue.queue(part or encode_message(msg), key=msg.node)
        heapq.heappush(self._suspicion_heap, (rec.suspicion.expires_at_s, rec.name))

    def _on_dead(self, msg: Dead, now_s: float, part: bytes | None = None) -> None:
        rec = self._members.get(msg.node)
        if rec is None:
            if part is not None:
                self._seen.discard(part)
            return
        if msg.incarnation < rec.incarnation:
            return
        if rec is self._self:
            if self._leave_phase is None:
                self._refute(msg.incarnation)
            elif rec.state != _LEFT:
                self._set_state(rec, _LEFT, now_s)  # our own leave, from leave()
                self._queue.queue(encode_message(msg), key=msg.node)
            return
        is_leave = msg.is_leave
        if rec.state == _LEFT or (rec.state == _DEAD and not is_leave):
            if msg.prune and rec.state == _LEFT:
                self._queue.queue(part or encode_message(msg), key=msg.node)
                self._reap(rec)
            return
        rec.suspicion = None
        rec.incarnation = msg.incarnation
        self._changed(rec)
        self._set_state(rec, _LEFT if is_leave else _DEAD, now_s)
        self._queue.queue(part or encode_message(msg), key=msg.node)
        self._emit_member(MemberEventKind.LEAVE if is_leave else MemberEventKind.FAILED, rec)
        if msg.prune and is_leave:
            self._reap(rec)

    def _refute(self, accused_incarnation: int) -> None:
        """SWIM §4.2: out-number the accusation and tell everyone we are alive."""
        me = self._self
        me.incarnation = (max(me.incarnation, accused_incarnation) + 1) & _SEQ_MASK
        self._changed(me)
        self.stats.refutes += 1
        # Lifeguard: being suspected is a hint that we are the slow one.
        self._awareness.apply_delta(1)
        self._queue.queue(self._alive_part(me), key=me.name)

    def _set_state(self, rec: _Record, state: NodeState, now_s: float) -> None:
        self._state_cache.clear()
        counts = self._counts
        counts[rec.state] -= 1
        counts[state] += 1
        rec.state = state
        rec.state_change_s = now_s

    def _reap(self, rec: _Record) -> None:
        if self._members.get(rec.name) is not rec:
            return
        del self._members[rec.name]
        self._state_cache.clear()
        self._counts[rec.state] -= 1
        rec.in_rotation = False  # lazily dropped from the probe order at its next reshuffle
        rec.suspicion = None
        self._emit_member(MemberEventKind.REAP, rec)

    def _reap_expired(self, now_s: float) -> None:
        cfg = self.config
        for rec in list(self._members.values()):
            if rec.state == _DEAD and now_s - rec.state_change_s >= cfg.reconnect_timeout_s:
                self._reap(rec)
            elif rec.state == _LEFT and rec is not self._self and now_s - rec.state_change_s >= cfg.tombstone_timeout_s:
                self._reap(rec)

    # --- dissemination --------------------------------------------------------------------------

    def _take_broadcasts(self, limit_bytes: int) -> list[bytes]:
        n = len(self._members)
        items = self._queue.get_broadcasts(n, limit_bytes) if len(self._queue) else []
        if len(self._event_queue):
            used = sum(map(len, items)) + PART_OVERHEAD_BYTES * len(items)
            items += self._event_queue.get_broadcasts(n, limit_bytes - used)
        return items

    def _send(self, addr: Address, items: list[bytes]) -> None:
        """Send ``items`` to ``addr`` with as many queued broadcasts piggybacked as fit."""
        room = self._packet_budget - sum(map(len, items)) - PART_OVERHEAD_BYTES * len(items)
        if room > 0 and (len(self._queue) or len(self._event_queue)):
            items = items + self._take_broadcasts(room)
        self._emit_packet(addr, items)

    def _emit_packet(self, addr: Address, items: list[bytes]) -> None:
        self.stats.packets_sent += 1
        self._outputs.append(SendPacket(addr, self._seal_bytes(assemble(items))))

    def _gossip(self) -> None:
        """SWIM §4.1: push queued rumours to a few random members, including recently dead ones
        (so a wrongly declared node hears about it and can refute)."""
        if not (len(self._queue) or len(self._event_queue)):
            return
        now_s = self._now_s
        dead_window_s = self.config.gossip_to_the_dead_s
        targets = k_random_members(
            self._rng,
            self._order,
            self.config.gossip_nodes,
            lambda r: r.in_rotation
            and (r.state == _ALIVE or r.state == _SUSPECT or now_s - r.state_change_s < dead_window_s),
        )
        for target in targets:
            items = self._take_broadcasts(self._packet_budget)
            if not items:
                break
            self._emit_packet((target.addr, target.port), items)

    # --- push/pull (anti-entropy) ---------------------------------------------------------------

    def _local_state_frame(self, join: bool) -> bytes:
        """Our push/pull state, encoded and sealed; from the cache when nothing changed since."""
        frame = self._state_cache.get(join)
        if frame is None:
            entries = [(r.state, r.part or self._alive_part(r)) for r in self._members.values()]
            events = [e for slot in self._event_buffer.values() for e in slot.events]
            frame = self._state_cache[join] = encode_stream_raw(join, entries, self._event_clock, events)
        return self._seal_bytes(frame)

    def _periodic_push_pull(self) -> None:
        peers = k_random_members(self._rng, self._order, 1, lambda r: r.in_rotation and r.state == _ALIVE)
        if peers:
            payload = self._local_state_frame(False)
            self._outputs.append(StreamRequest((peers[0].addr, peers[0].port), payload, False))

    def _reconnect(self) -> None:
        """serf: try a push/pull with a random failed member, more eagerly the more have failed."""
        failed = [r for r in self._members.values() if r.state == _DEAD]
        if not failed:
            return
        alive = self._counts[_ALIVE] + self._counts[_SUSPECT]
        if self._rng.random() > len(failed) / max(1, alive):
            return
        rec = failed[self._rng.randrange(len(failed))]
        payload = self._local_state_frame(False)
        self._outputs.append(StreamRequest((rec.addr, rec.port), payload, False))

    def _decode_stream(self, data: bytes) -> tuple[RawPushPull, list[tuple[NodeState, Alive, bytes]]]:
        """Decode a push/pull frame; returns it with its entries that need handling, validated.

        An alive entry whose part we already processed byte for byte (it is in the seen set, so
        it was validated then) cannot change anything and is dropped here without decoding.
        """
        try:
            remote = decode_stream_raw(self._seal.open(data) if self._seal else data)
            seen, seen_prev = self._seen, self._seen_prev
            updates = [
                (state, decode_push_entry(part), part)
                for state, part in remote.entries
                if state != _ALIVE or (part not in seen and part not in seen_prev)
            ]
        except DecodeError:
            self.stats.bad_streams += 1
            raise
        return remote, updates

    def _merge_remote(
        self, remote: RawPushPull, updates: list[tuple[NodeState, Alive, bytes]], now_s: float, joining: bool
    ) -> None:
        seen = self._seen
        for state, a, part in updates:
            if state == _ALIVE:
                seen.add(part)
                self._alive(a.node, a.incarnation, a.addr, a.port, a.tags, a.versions, now_s, part)
            elif state == _LEFT:
                self._on_dead(Dead(a.incarnation, a.node, a.node), now_s)
            else:
                # memberlist: a remote "dead" only makes us suspect, so the node can still refute.
                self._on_suspect(Suspect(a.incarnation, a.node, self.name), now_s)
        if remote.event_ltime > 0:
            self._witness_event_time(remote.event_ltime - 1)
        if joining:
            # serf: a joiner does not replay the cluster's old events, only later ones.
            self._event_min_time = max(self._event_min_time, remote.event_ltime)
            return
        for event in remote.events:
            self._on_user_event(event)

    # --- user events (serf) ---------------------------------------------------------------------

    def _witness_event_time(self, ltime: int) -> None:
        """Lamport clock rule: our clock moves past any time we observe."""
        if ltime >= self._event_clock:
            self._event_clock = ltime + 1
            self._state_cache.clear()

    def _on_user_event(self, event: UserEvent, part: bytes | None = None) -> None:
        self._witness_event_time(event.ltime)
        if event.ltime < self._event_min_time:
            return
        size = self.config.event_buffer_size
        if self._event_clock > size and event.ltime < self._event_clock - size:
            return  # older than the de-dup window: cannot tell whether it was seen
        index = event.ltime % size
        slot = self._event_buffer.get(index)
        if slot is None or slot.ltime != event.ltime:
            slot = _EventSlot(event.ltime)
            self._event_buffer[index] = slot
        for seen in slot.events:
            if seen.name == event.name and seen.payload == event.payload:
                return
        slot.events.append(event)
        self._state_cache.clear()
        self._event_queue.queue(part or encode_message(event))
        self._event_queue.prune(max(self.config.min_queue_depth, 2 * len(self._members)))
        self._outputs.append(UserEventReceived(event.ltime, event.name, event.payload, event.coalesce))

    # --- leave ----------------------------------------------------------------------------------

    def _tick_leave(self, now_s: float) -> None:
        if self._leave_phase == "broadcasting":
            if self.name not in self._queue:
                self._leave_phase = "propagating"
                self._leave_deadline_s = now_s + self.config.leave_propagate_delay_s
            elif now_s >= self._leave_deadline_s:
                self._finish_leave(timed_out=True)
                return
        if self._leave_phase == "propagating" and now_s >= self._leave_deadline_s:
            self._finish_leave(timed_out=False)

    def _finish_leave(self, timed_out: bool) -> None:
        self._leave_phase = "done"
        self._outputs.append(LeaveComplete(timed_out))

    # --- helpers --------------------------------------------------------------------------------

    def _check_tags(self, tags: Mapping[str, str]) -> None:
        size = encoded_tags_bytes(tags)
        if size > self.config.tags_max_bytes:
            raise EncodeError(f"tags encode to {size} bytes; the limit is {self.config.tags_max_bytes}")

    def _changed(self, rec: _Record) -> None:
        """A member's incarnation, address, tags or versions changed: drop encodings of it."""
        rec.part = None
        self._state_cache.clear()

    def _alive_part(self, rec: _Record) -> bytes:
        """The encoded ``Alive`` for a member's current fields (cached on the record)."""
        part = rec.part
        if part is None:
            part = rec.part = encode_alive(rec.incarnation, rec.name, rec.addr, rec.port, rec.tags, rec.versions)
        return part

    def _seal_bytes(self, data: bytes) -> bytes:
        return self._seal.seal(data) if self._seal else data

    def _snapshot(self, rec: _Record) -> Member:
        status = _STATE_STATUS[rec.state]
        if rec is self._self and self._leave_phase in ("broadcasting", "propagating"):
            status = MemberStatus.LEAVING
        tags = rec.tags if type(rec.tags) is MappingProxyType else MappingProxyType(rec.tags)
        return Member(rec.name, rec.addr, rec.port, tags, status, rec.incarnation, rec.versions)

    def _emit_member(self, kind: MemberEventKind, rec: _Record) -> None:
        self._outputs.append(MemberEvent(kind, self._snapshot(rec)))


def _next_at(previous_s: float, interval_s: float, now_s: float) -> float:
    """Keep a periodic job on its cadence, but skip (never burst) missed runs after a stall."""
    nxt = previous_s + interval_s
    return nxt if nxt > now_s else now_s + interval_s
