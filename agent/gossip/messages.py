"""Gossip wire messages (frozen dataclasses) and their msgpack codec. Never pickle.

Packets (UDP) are compound, like memberlist's: one header, then the parts back to back::

    packet = version:u8 | count:u16 | count × length:u16 | part 1 | part 2 | ...   (big-endian)
    part   = one msgpack array [type code, field, field, ...]    (positional, see _ENCODERS)

Explicit part lengths let a receiver slice the parts without decoding them, so a part that is
byte-for-byte a rumour it has already processed can be dropped for the price of a set lookup (see
``GossipCore.receive_packet``); in a large cluster that is most of the traffic. Parts are encoded
once (``encode_message``) however many packets they ride in; ``assemble`` adds the header.

Streams (TCP push/pull) carry one frame: version byte + one msgpack ``PushPull`` array, in which
each member is ``[state, alive part]``: the same bytes an ``Alive`` message about it has in a
packet. So a member learnt by push/pull is re-gossiped without re-encoding, and an entry identical
to a rumour already processed is skipped as cheaply as in a packet (``decode_stream_raw``).
Framing (length prefix, timeouts) is the transport's business.

Decoding validates every field's type and range and raises ``DecodeError`` on anything else:
truncated or trailing bytes, lengths that do not add up, unknown message types, wrong field types,
bools where ints belong, out-of-range ports/incarnations, oversized frames. A newer peer may
*append* fields to a message; extra trailing fields are ignored (and relayed unchanged), which is
the only forward-compatibility rule.

Encryption is not done here: the core passes whole packets and frames through a ``PacketSeal``
(see ``agent.gossip.core``) after encoding and before decoding, the seam for the AES-GCM keyring.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

import msgpack

from agent.gossip.errors import DecodeError, EncodeError

__all__ = [
    "WIRE_VERSION",
    "PACKET_HEADER_BYTES",
    "PART_OVERHEAD_BYTES",
    "MAX_STREAM_BYTES",
    "MAX_NAME_CHARS",
    "MessageType",
    "NodeState",
    "ProtocolVersions",
    "DEFAULT_PROTOCOL_VERSIONS",
    "Ping",
    "IndirectPing",
    "Ack",
    "Nack",
    "Suspect",
    "Alive",
    "Dead",
    "UserEvent",
    "PushNode",
    "PushPull",
    "Message",
    "encode_message",
    "encode_alive",
    "assemble",
    "encode",
    "encode_packets",
    "decode",
    "split_packet",
    "decode_part",
    "RawPushPull",
    "encode_stream",
    "encode_stream_raw",
    "decode_stream",
    "decode_stream_raw",
    "decode_push_entry",
    "encoded_tags_bytes",
]

WIRE_VERSION = 1
"""First byte of every packet and stream frame; bumped on an incompatible wire change."""

PACKET_HEADER_BYTES = 3
"""Version byte + part count."""

PART_OVERHEAD_BYTES = 2
"""Each part's length field in the packet header."""

MAX_STREAM_BYTES = 32 * 1024 * 1024
"""Largest push/pull frame accepted: ~100x the state of a 1,000-member cluster."""

MAX_NAME_CHARS = 512
"""Longest node name, address, event name or tag key accepted from the wire."""

_MAX_PACKET_BYTES = 65535  # largest UDP payload, whatever udp_buffer_size says
_UINT32 = 0xFFFFFFFF
_UINT64 = 0xFFFFFFFFFFFFFFFF


class MessageType(enum.IntEnum):
    """First element of every encoded message."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    SUSPECT = 5
    ALIVE = 6
    DEAD = 7
    USER_EVENT = 8
    PUSH_PULL = 9


class NodeState(enum.IntEnum):
    """SWIM member states as exchanged in push/pull (memberlist's numbering)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class ProtocolVersions(NamedTuple):
    """Protocol ranges a member speaks: memberlist's (min, max, current), then serf's."""

    protocol_min: int
    protocol_max: int
    protocol_cur: int
    delegate_min: int
    delegate_max: int
    delegate_cur: int


DEFAULT_PROTOCOL_VERSIONS = ProtocolVersions(1, 5, 2, 2, 5, 4)
"""memberlist protocol 2 (range 1-5) and serf protocol 4 (range 2-5), as Consul advertises."""


@dataclass(frozen=True, slots=True)
class Ping:
    """SWIM ping. ``node`` names the intended target so a reused address does not ack for it."""

    seq_no: int
    node: str


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """SWIM ping-req: please ping ``target`` for me and relay its ack under my ``seq_no``.

    With ``nack`` set (Lifeguard §IV-B), the helper answers with a ``Nack`` if the target is silent,
    telling the requester that the helper, at least, can hear it.
    """

    seq_no: int
    target: str
    target_addr: str
    target_port: int
    nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping (or relayed answer to a ping-req), matched by ``seq_no``."""

    seq_no: int


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard's negative ack: the helper is alive but the target did not answer it."""

    seq_no: int


@dataclass(frozen=True, slots=True)
class Suspect:
    """``from_node`` could not reach ``node`` at ``incarnation``; it is suspect until refuted."""

    incarnation: int
    node: str
    from_node: str


@dataclass(frozen=True, slots=True)
class Alive:
    """``node`` is alive at ``incarnation``, reachable at addr:port, with these tags.

    A node refutes a suspicion by broadcasting this with an incarnation above the accusation's.
    """

    incarnation: int
    node: str
    addr: str
    port: int
    tags: Mapping[str, str]
    versions: ProtocolVersions = DEFAULT_PROTOCOL_VERSIONS


@dataclass(frozen=True, slots=True)
class Dead:
    """``node`` is dead at ``incarnation`` according to ``from_node``.

    Sent *from the node itself* it is a graceful leave (the member becomes ``left``, not
    ``failed``); ``prune`` asks every member to forget it at once (``force-leave -prune``).
    """

    incarnation: int
    node: str
    from_node: str
    prune: bool = False

    @property
    def is_leave(self) -> bool:
        """A dead message about oneself means "I am leaving"."""
        return self.node == self.from_node


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A serf user event, ordered by the Lamport time ``ltime`` and de-duplicated on it."""

    ltime: int
    name: str
    payload: bytes
    coalesce: bool


@dataclass(frozen=True, slots=True)
class PushNode:
    """One member's entry in a push/pull state exchange."""

    name: str
    addr: str
    port: int
    tags: Mapping[str, str]
    incarnation: int
    state: NodeState
    versions: ProtocolVersions = DEFAULT_PROTOCOL_VERSIONS


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full state for anti-entropy: every member, the event clock, and recent user events."""

    join: bool
    nodes: tuple[PushNode, ...]
    event_ltime: int = 0
    events: tuple[UserEvent, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RawPushPull:
    """A push/pull frame with its member entries still encoded: (state, alive part) pairs.

    Only the envelope, the states and the events are validated; each part must still go through
    ``decode_part`` (and be an ``Alive``) before it is trusted, which ``decode_stream`` does for all.
    """

    join: bool
    entries: tuple[tuple[NodeState, bytes], ...]
    event_ltime: int
    events: tuple[UserEvent, ...]


# Plain ints for the hot paths (IntEnum members are slower to hash and pack).
_PING, _INDIRECT_PING, _ACK, _NACK = 1, 2, 3, 4
_SUSPECT, _ALIVE, _DEAD, _USER_EVENT, _PUSH_PULL = 5, 6, 7, 8, 9

Message = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | UserEvent
"""Anything that can travel in a packet."""


# --- encoding ---------------------------------------------------------------------------------

def _event_fields(m: UserEvent) -> list[Any]:
    return [m.ltime, m.name, m.payload, m.coalesce]


_NO_TAGS: dict[str, str] = {}  # only ever packed, never mutated


def _plain(tags: Mapping[str, str]) -> dict[str, str]:
    if type(tags) is dict:
        return tags
    return dict(tags) if tags else _NO_TAGS


_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    Ping: lambda m: [_PING, m.seq_no, m.node],
    IndirectPing: lambda m: [_INDIRECT_PING, m.seq_no, m.target, m.target_addr, m.target_port, m.nack],
    Ack: lambda m: [_ACK, m.seq_no],
    Nack: lambda m: [_NACK, m.seq_no],
    Suspect: lambda m: [_SUSPECT, m.incarnation, m.node, m.from_node],
    Alive: lambda m: [_ALIVE, m.incarnation, m.node, m.addr, m.port, _plain(m.tags), m.versions],
    Dead: lambda m: [_DEAD, m.incarnation, m.node, m.from_node, m.prune],
    UserEvent: lambda m: [_USER_EVENT, m.ltime, m.name, m.payload, m.coalesce],
}


def _packb(obj: Any) -> bytes:
    out = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def encode_message(msg: Message) -> bytes:
    """One message as a msgpack item (no packet header); concatenate items with ``assemble``."""
    try:
        encoder = _ENCODERS[type(msg)]
    except KeyError:
        raise EncodeError(f"not a gossip message: {type(msg).__name__}") from None
    return _packb(encoder(msg))


def encode_alive(
    incarnation: int, node: str, addr: str, port: int, tags: Mapping[str, str], versions: ProtocolVersions
) -> bytes:
    """``encode_message(Alive(...))`` without building the message: the core encodes one for every
    member it learns of, which in a large cluster is most of what it encodes."""
    return _packb([_ALIVE, incarnation, node, addr, port, _plain(tags), versions])


_HEADER = struct.Struct(">BH")
_LENGTHS: dict[int, struct.Struct] = {}


def _lengths_struct(n: int) -> struct.Struct:
    st = _LENGTHS.get(n)
    if st is None:
        st = _LENGTHS[n] = struct.Struct(f">{n}H")
    return st


def assemble(parts: Sequence[bytes]) -> bytes:
    """A packet from pre-encoded parts (see ``encode_message``)."""
    n = len(parts)
    if not 0 < n <= 0xFFFF:
        raise EncodeError(f"a packet holds 1..65535 parts, got {n}")
    try:
        lengths = _lengths_struct(n).pack(*map(len, parts))
    except struct.error:
        raise EncodeError("a part is longer than 65535 bytes") from None
    return _HEADER.pack(WIRE_VERSION, n) + lengths + b"".join(parts)


def encode(msgs: Sequence[Message], max_bytes: int | None = None) -> bytes:
    """One compound packet holding ``msgs``; ``EncodeError`` if it would exceed ``max_bytes``."""
    if not msgs:
        raise EncodeError("a packet needs at least one message")
    packet = assemble([encode_message(m) for m in msgs])
    if max_bytes is not None and len(packet) > max_bytes:
        raise EncodeError(f"packet of {len(packet)} bytes exceeds {max_bytes}")
    return packet


def encode_packets(msgs: Sequence[Message], max_bytes: int) -> list[bytes]:
    """Pack ``msgs`` in order into as few packets as possible, each at most ``max_bytes``.

    Raises ``EncodeError`` if a single message cannot fit in a packet on its own.
    """
    budget = max_bytes - PACKET_HEADER_BYTES
    packets: list[bytes] = []
    current: list[bytes] = []
    used = 0
    for msg in msgs:
        part = encode_message(msg)
        cost = len(part) + PART_OVERHEAD_BYTES
        if cost > budget:
            raise EncodeError(
                f"{type(msg).__name__} of {len(part)} bytes cannot fit in a {max_bytes}-byte packet"
            )
        if used + cost > budget:
            packets.append(assemble(current))
            current, used = [], 0
        current.append(part)
        used += cost
    if current:
        packets.append(assemble(current))
    return packets


def encoded_tags_bytes(tags: Mapping[str, str]) -> int:
    """Size of ``tags`` on the wire; compared against ``GossipConfig.tags_max_bytes``."""
    return len(_packb(dict(tags)))


def encode_stream(msg: PushPull) -> bytes:
    """A push/pull stream frame."""
    entries = [
        (n.state, encode_alive(n.incarnation, n.name, n.addr, n.port, n.tags, n.versions)) for n in msg.nodes
    ]
    return encode_stream_raw(msg.join, entries, msg.event_ltime, msg.events)


def encode_stream_raw(
    join: bool, entries: Sequence[tuple[NodeState, bytes]], event_ltime: int, events: Sequence[UserEvent]
) -> bytes:
    """A push/pull frame from (state, encoded alive part) pairs, as the core keeps them."""
    body = [
        _PUSH_PULL,
        join,
        [[int(state), part] for state, part in entries],
        event_ltime,
        [_event_fields(e) for e in events],
    ]
    return bytes((WIRE_VERSION,)) + _packb(body)


# --- decoding ---------------------------------------------------------------------------------

def _unpack(data: bytes, what: str, max_bytes: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) < 2:
        raise DecodeError(f"{what} too short ({len(data)} bytes)")
    if len(data) > max_bytes:
        raise DecodeError(f"{what} of {len(data)} bytes exceeds {max_bytes}")
    if data[0] != WIRE_VERSION:
        raise DecodeError(
            f"{what} has wire version {data[0]}, expected {WIRE_VERSION} "
            "(an encrypted packet sent to a node without the key looks like this too)"
        )
    try:
        return msgpack.unpackb(memoryview(data)[1:], raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"{what} is not valid msgpack: {exc}") from exc


def _fail(what: str, value: Any) -> DecodeError:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return DecodeError(f"invalid {what}: {text}")


def _uint(v: Any, what: str, top: int = _UINT32) -> int:
    if type(v) is not int or not 0 <= v <= top:
        raise _fail(what, v)
    return v


def _port(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= 0xFFFF:
        raise _fail(what, v)
    return v


def _name(v: Any, what: str) -> str:
    if type(v) is not str or not 0 < len(v) <= MAX_NAME_CHARS:
        raise _fail(what, v)
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise _fail(what, v)
    return v


def _tags(v: Any) -> dict[str, str]:
    if type(v) is not dict:
        raise _fail("tags", v)
    for k, val in v.items():
        if type(k) is not str or type(val) is not str or len(k) > MAX_NAME_CHARS:
            raise _fail("tag", (k, val))
    return v


_DEFAULT_VERSIONS_LIST = list(DEFAULT_PROTOCOL_VERSIONS)
_VERSIONS_SEEN: dict[tuple[int, ...], ProtocolVersions] = {}
"""Validated version tuples, interned: a cluster speaks only a handful of distinct ones."""


def _versions(v: Any) -> ProtocolVersions:
    if type(v) is not list or len(v) < 6:
        raise _fail("protocol versions", v)
    # Equality alone would let True or 1.0 pass for 1, hence the type chain.
    if not type(v[0]) is type(v[1]) is type(v[2]) is type(v[3]) is type(v[4]) is type(v[5]) is int:
        raise _fail("protocol versions", v)
    if v == _DEFAULT_VERSIONS_LIST:  # nearly always: a cluster runs one build
        return DEFAULT_PROTOCOL_VERSIONS
    key = tuple(v[:6])
    known = _VERSIONS_SEEN.get(key)
    if known is not None:
        return known
    for x in key:
        if not 0 <= x <= 255:
            raise _fail("protocol versions", v)
    pv = ProtocolVersions(*key)
    if len(_VERSIONS_SEEN) < 1024:
        _VERSIONS_SEEN[key] = pv
    return pv


def _fields(item: list[Any], n: int, what: str) -> list[Any]:
    if len(item) < n + 1:
        raise DecodeError(f"{what} has {len(item) - 1} fields, expected {n}")
    return item


def _d_ping(f: list[Any]) -> Ping:
    f = _fields(f, 2, "ping")
    return Ping(_uint(f[1], "ping seq_no"), _name(f[2], "ping node"))


def _d_indirect(f: list[Any]) -> IndirectPing:
    f = _fields(f, 5, "indirect ping")
    return IndirectPing(
        _uint(f[1], "indirect ping seq_no"),
        _name(f[2], "indirect ping target"),
        _name(f[3], "indirect ping address"),
        _port(f[4], "indirect ping port"),
        _bool(f[5], "indirect ping nack flag"),
    )


def _d_ack(f: list[Any]) -> Ack:
    f = _fields(f, 1, "ack")
    return Ack(_uint(f[1], "ack seq_no"))


def _d_nack(f: list[Any]) -> Nack:
    f = _fields(f, 1, "nack")
    return Nack(_uint(f[1], "nack seq_no"))


def _d_suspect(f: list[Any]) -> Suspect:
    f = _fields(f, 3, "suspect")
    return Suspect(_uint(f[1], "incarnation"), _name(f[2], "suspect node"), _name(f[3], "suspect from"))


def _d_alive(f: list[Any]) -> Alive:
    # The hottest decoder (every join rumour, many times over): checks inlined, slow path on failure.
    if len(f) >= 7:
        inc, node, addr, port, tags = f[1], f[2], f[3], f[4], f[5]
        if (
            type(inc) is int
            and 0 <= inc <= _UINT32
            and type(node) is str
            and 0 < len(node) <= MAX_NAME_CHARS
            and type(addr) is str
            and 0 < len(addr) <= MAX_NAME_CHARS
            and type(port) is int
            and 0 <= port <= 0xFFFF
            and type(tags) is dict
        ):
            return Alive(inc, node, addr, port, _tags(tags) if tags else tags, _versions(f[6]))
    f = _fields(f, 6, "alive")
    return Alive(
        _uint(f[1], "incarnation"),
        _name(f[2], "alive node"),
        _name(f[3], "alive address"),
        _port(f[4], "alive port"),
        _tags(f[5]),
        _versions(f[6]),
    )


def _d_dead(f: list[Any]) -> Dead:
    f = _fields(f, 4, "dead")
    return Dead(
        _uint(f[1], "incarnation"),
        _name(f[2], "dead node"),
        _name(f[3], "dead from"),
        _bool(f[4], "dead prune flag"),
    )


def _d_event_fields(f: list[Any], at: int) -> UserEvent:
    payload = f[at + 2]
    if type(payload) is not bytes:
        raise _fail("user event payload", payload)
    return UserEvent(
        _uint(f[at], "user event ltime", _UINT64),
        _name(f[at + 1], "user event name"),
        payload,
        _bool(f[at + 3], "user event coalesce flag"),
    )


def _d_user_event(f: list[Any]) -> UserEvent:
    return _d_event_fields(_fields(f, 4, "user event"), 1)


_DECODERS: dict[int, Callable[[list[Any]], Message]] = {
    _PING: _d_ping,
    _INDIRECT_PING: _d_indirect,
    _ACK: _d_ack,
    _NACK: _d_nack,
    _SUSPECT: _d_suspect,
    _ALIVE: _d_alive,
    _DEAD: _d_dead,
    _USER_EVENT: _d_user_event,
}


def split_packet(data: bytes) -> list[bytes]:
    """The raw parts of a packet, sliced by the header's lengths but not decoded.

    ``DecodeError`` if the header is malformed or the lengths do not add up to the packet size.
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"packet must be bytes, got {type(data).__name__}")
    size = len(data)
    if size < PACKET_HEADER_BYTES + PART_OVERHEAD_BYTES + 1:
        raise DecodeError(f"packet too short ({size} bytes)")
    if size > _MAX_PACKET_BYTES:
        raise DecodeError(f"packet of {size} bytes exceeds {_MAX_PACKET_BYTES}")
    version, n = _HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise DecodeError(
            f"packet has wire version {version}, expected {WIRE_VERSION} "
            "(an encrypted packet sent to a node without the key looks like this too)"
        )
    offset = PACKET_HEADER_BYTES + PART_OVERHEAD_BYTES * n
    if n == 0 or offset > size:
        raise DecodeError(f"packet header claims {n} parts in {size} bytes")
    lengths = _lengths_struct(n).unpack_from(data, PACKET_HEADER_BYTES)
    if offset + sum(lengths) != size or 0 in lengths:
        raise DecodeError(f"packet part lengths do not add up to its {size} bytes")
    bounds = list(accumulate(lengths, initial=offset))
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def decode_part(part: bytes) -> Message:
    """One part of a packet as a validated message, or ``DecodeError``."""
    try:
        item = msgpack.unpackb(part, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"packet part is not valid msgpack: {exc}") from exc
    if type(item) is not list or not item or type(item[0]) is not int:
        raise _fail("message", item)
    decoder = _DECODERS.get(item[0])
    if decoder is None:
        raise _fail("message type", item[0])
    return decoder(item)


def decode(data: bytes) -> list[Message]:
    """Every message of a packet, or ``DecodeError``; nothing is returned unless all are valid."""
    return [decode_part(part) for part in split_packet(data)]


def _d_push_event(v: Any) -> UserEvent:
    if type(v) is not list or len(v) < 4:
        raise _fail("push/pull user event", v)
    return _d_event_fields(v, 0)


_NODE_STATES = tuple(NodeState)


def decode_stream_raw(data: bytes) -> RawPushPull:
    """A push/pull frame with member entries left encoded (see ``RawPushPull``), or ``DecodeError``."""
    body = _unpack(data, "stream frame", MAX_STREAM_BYTES)
    if type(body) is not list or len(body) < 5 or type(body[0]) is not int or body[0] != _PUSH_PULL:
        raise _fail("push/pull frame", body)
    nodes, events = body[2], body[4]
    if type(nodes) is not list:
        raise _fail("push/pull nodes", nodes)
    if type(events) is not list:
        raise _fail("push/pull events", events)
    states = _NODE_STATES
    entries: list[tuple[NodeState, bytes]] = []
    for entry in nodes:
        if type(entry) is not list or len(entry) < 2:
            raise _fail("push/pull node", entry)
        state, part = entry[0], entry[1]
        if type(state) is not int or not 0 <= state <= 3 or type(part) is not bytes or not part:
            raise _fail("push/pull node", entry)
        entries.append((states[state], part))
    return RawPushPull(
        join=_bool(body[1], "push/pull join flag"),
        entries=tuple(entries),
        event_ltime=_uint(body[3], "push/pull event ltime", _UINT64),
        events=tuple(_d_push_event(e) for e in events),
    )


def decode_push_entry(part: bytes) -> Alive:
    """The alive part of one push/pull entry, validated, or ``DecodeError``."""
    msg = decode_part(part)
    if type(msg) is not Alive:
        raise _fail("push/pull node (not an alive message)", msg)
    return msg


def decode_stream(data: bytes) -> PushPull:
    """A push/pull frame, every entry validated, or ``DecodeError``."""
    raw = decode_stream_raw(data)
    nodes: list[PushNode] = []
    for state, part in raw.entries:
        a = decode_push_entry(part)
        nodes.append(PushNode(a.node, a.addr, a.port, a.tags, a.incarnation, state, a.versions))
    return PushPull(raw.join, tuple(nodes), raw.event_ltime, raw.events)
