"""Raft's data types: log entries, cluster configuration, persistent state and the RPC messages.

Everything here is a frozen dataclass. Each type has ``to_wire() -> dict`` built only from msgpack-safe
primitives (``int``, ``str``, ``bytes``, ``bool``, ``None``, lists and str-keyed dicts) and a
``from_wire(dict)`` classmethod that checks every field's type and raises :class:`WireError` on
anything else, so a peer (or a corrupt file) can never hand the core a wrongly-typed value. The TCP
transport frames ``encode_message``'s bytes; nothing in ctk uses pickle.

Messages follow the Raft paper's RPCs (Figure 2) plus the thesis' additions: the PreVote flag on
RequestVote (§9.6), TimeoutNow for leadership transfer (§3.10), and a separate Heartbeat that carries
a sequence number so one round both keeps followers quiet and confirms leadership for ReadIndex
(§6.4). Every message names its sender (``src``) and recipient (``dst``) by server id; the driver maps
ids to addresses through the :class:`Configuration`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import msgpack

from .errors import WireError

__all__ = [
    "Wire",
    "EntryKind",
    "Suffrage",
    "Entry",
    "Server",
    "Configuration",
    "HardState",
    "SnapshotMeta",
    "Snapshot",
    "RequestVote",
    "RequestVoteResponse",
    "AppendEntries",
    "AppendEntriesResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "TimeoutNow",
    "Message",
    "message_from_wire",
    "encode_message",
    "decode_message",
]

Wire: TypeAlias = dict[str, Any]

_U64_MAX = 2**64 - 1


# -- field readers: one place that decides what "well-typed" means ---------------------------------


def _field(d: Mapping[str, object], key: str, where: str) -> object:
    try:
        return d[key]
    except KeyError:
        raise WireError(f"{where}: missing field {key!r}") from None


def _bad(where: str, key: str, expected: str, value: object) -> WireError:
    return WireError(f"{where}.{key}: expected {expected}, got {type(value).__name__}")


def _uint(d: Mapping[str, object], key: str, where: str) -> int:
    v = _field(d, key, where)
    # bool is an int subclass; a peer sending True for a term is garbage, not 1.
    if type(v) is not int or not 0 <= v <= _U64_MAX:
        raise _bad(where, key, "an unsigned 64-bit integer", v)
    return v


def _str(d: Mapping[str, object], key: str, where: str) -> str:
    v = _field(d, key, where)
    if not isinstance(v, str):
        raise _bad(where, key, "a string", v)
    return v


def _opt_str(d: Mapping[str, object], key: str, where: str) -> str | None:
    v = _field(d, key, where)
    if v is not None and not isinstance(v, str):
        raise _bad(where, key, "a string or null", v)
    return v


def _bool(d: Mapping[str, object], key: str, where: str) -> bool:
    v = _field(d, key, where)
    if not isinstance(v, bool):
        raise _bad(where, key, "a boolean", v)
    return v


def _bytes(d: Mapping[str, object], key: str, where: str) -> bytes:
    v = _field(d, key, where)
    if not isinstance(v, bytes):
        raise _bad(where, key, "bytes", v)
    return v


def _list(d: Mapping[str, object], key: str, where: str) -> list[object]:
    v = _field(d, key, where)
    if not isinstance(v, list | tuple):
        raise _bad(where, key, "a list", v)
    return list(v)


def _dict(v: object, where: str) -> Mapping[str, object]:
    if not isinstance(v, dict):
        raise WireError(f"{where}: expected a map, got {type(v).__name__}")
    return v


# -- log entries and membership ------------------------------------------------------------------


class EntryKind(enum.Enum):
    """What a log entry carries. Only ``NORMAL`` entries reach the FSM; ``CONFIG`` entries change
    membership the moment they are appended (thesis §4.1); ``NOOP`` is the entry a new leader appends
    so it can commit everything before its term (§5.4.2, thesis §6.4)."""

    NORMAL = "normal"
    CONFIG = "config"
    NOOP = "noop"


class Suffrage(enum.Enum):
    """A voter counts towards elections and commitment; a nonvoter only receives the log (Consul's
    autopilot adds servers as nonvoters and promotes them once they are caught up and stable)."""

    VOTER = "voter"
    NONVOTER = "nonvoter"


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def to_wire(self) -> Wire:
        return {"index": self.index, "term": self.term, "kind": self.kind.value, "data": self.data}

    @classmethod
    def from_wire(cls, raw: object) -> Entry:
        d = _dict(raw, "Entry")
        kind = _str(d, "kind", "Entry")
        try:
            k = EntryKind(kind)
        except ValueError:
            raise WireError(f"Entry.kind: unknown kind {kind!r}") from None
        index = _uint(d, "index", "Entry")
        if index == 0:
            raise WireError("Entry.index: log indexes start at 1")
        return cls(index=index, term=_uint(d, "term", "Entry"), kind=k, data=_bytes(d, "data", "Entry"))


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    address: str
    suffrage: Suffrage = Suffrage.VOTER

    def to_wire(self) -> Wire:
        return {"id": self.id, "address": self.address, "suffrage": self.suffrage.value}

    @classmethod
    def from_wire(cls, raw: object) -> Server:
        d = _dict(raw, "Server")
        sid = _str(d, "id", "Server")
        if not sid:
            raise WireError("Server.id: must not be empty")
        suffrage = _str(d, "suffrage", "Server")
        try:
            s = Suffrage(suffrage)
        except ValueError:
            raise WireError(f"Server.suffrage: unknown suffrage {suffrage!r}") from None
        return cls(id=sid, address=_str(d, "address", "Server"), suffrage=s)


@dataclass(frozen=True, slots=True)
class Configuration:
    """The set of servers, as stored in CONFIG entries and snapshots (thesis §4.1: a server always uses
    the latest configuration in its log, committed or not)."""

    servers: tuple[Server, ...] = ()
    # Derived lookups, computed once; excluded from equality and repr.
    _by_id: dict[str, Server] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_id: dict[str, Server] = {}
        for s in self.servers:
            if s.id in by_id:
                raise WireError(f"Configuration: duplicate server id {s.id!r}")
            by_id[s.id] = s
        object.__setattr__(self, "_by_id", by_id)

    @classmethod
    def of(cls, servers: Iterable[Server]) -> Configuration:
        return cls(tuple(servers))

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(s.id for s in self.servers if s.suffrage is Suffrage.VOTER)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def get(self, server_id: str) -> Server | None:
        return self._by_id.get(server_id)

    def is_voter(self, server_id: str) -> bool:
        s = self._by_id.get(server_id)
        return s is not None and s.suffrage is Suffrage.VOTER

    def to_wire(self) -> Wire:
        return {"servers": [s.to_wire() for s in self.servers]}

    @classmethod
    def from_wire(cls, raw: object) -> Configuration:
        d = _dict(raw, "Configuration")
        return cls(tuple(Server.from_wire(s) for s in _list(d, "servers", "Configuration")))

    def encode(self) -> bytes:
        """The payload of a CONFIG log entry."""
        return msgpack.packb(self.to_wire(), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        return cls.from_wire(_unpack(data, "Configuration"))


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves the node (Figure 2):
    ``term`` and ``vote`` so a server never votes twice in a term; ``commit`` so a restart can
    re-apply without waiting for a leader (safe to lose, always re-learnable)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def to_wire(self) -> Wire:
        return {"term": self.term, "vote": self.vote, "commit": self.commit}

    @classmethod
    def from_wire(cls, raw: object) -> HardState:
        d = _dict(raw, "HardState")
        return cls(
            term=_uint(d, "term", "HardState"),
            vote=_opt_str(d, "vote", "HardState"),
            commit=_uint(d, "commit", "HardState"),
        )


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The last entry a snapshot covers and the configuration in force at it (Raft §7).

    ``configuration_index`` is the index of the CONFIG entry that configuration came from (Consul's
    ``latest_configuration_index``)."""

    index: int
    term: int
    configuration: Configuration
    configuration_index: int = 0

    def to_wire(self) -> Wire:
        return {
            "index": self.index,
            "term": self.term,
            "configuration": self.configuration.to_wire(),
            "configuration_index": self.configuration_index,
        }

    @classmethod
    def from_wire(cls, raw: object) -> SnapshotMeta:
        d = _dict(raw, "SnapshotMeta")
        return cls(
            index=_uint(d, "index", "SnapshotMeta"),
            term=_uint(d, "term", "SnapshotMeta"),
            configuration=Configuration.from_wire(_field(d, "configuration", "SnapshotMeta")),
            configuration_index=_uint(d, "configuration_index", "SnapshotMeta"),
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot's metadata and the FSM's opaque serialized state."""

    meta: SnapshotMeta
    data: bytes

    def to_wire(self) -> Wire:
        return {"meta": self.meta.to_wire(), "data": self.data}

    @classmethod
    def from_wire(cls, raw: object) -> Snapshot:
        d = _dict(raw, "Snapshot")
        return cls(
            meta=SnapshotMeta.from_wire(_field(d, "meta", "Snapshot")), data=_bytes(d, "data", "Snapshot")
        )


# -- RPC messages ------------------------------------------------------------------------------------


def _header(raw: object, type_name: str) -> tuple[Mapping[str, object], int, str, str]:
    d = _dict(raw, type_name)
    if d.get("type") != type_name:
        raise WireError(f"{type_name}: wrong type tag {d.get('type')!r}")
    return d, _uint(d, "term", type_name), _str(d, "src", type_name), _str(d, "dst", type_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class _MessageBase:
    """Fields every message has: the sender's term (Figure 2: "if RPC request or response contains
    term T > currentTerm: set currentTerm = T, convert to follower") and the routing ids."""

    TYPE: ClassVar[str] = ""
    term: int
    src: str
    dst: str

    def _head(self) -> Wire:
        return {"type": self.TYPE, "term": self.term, "src": self.src, "dst": self.dst}


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote(_MessageBase):
    """Candidate → voter (§5.2). With ``pre_vote`` the term is the one the sender *would* use and no
    one changes state (§9.6). ``transfer`` marks an election started by TimeoutNow, which voters honour
    even while they still hear from the old leader (§3.10)."""

    TYPE: ClassVar[str] = "RequestVote"
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False

    def to_wire(self) -> Wire:
        return self._head() | {
            "last_log_index": self.last_log_index,
            "last_log_term": self.last_log_term,
            "pre_vote": self.pre_vote,
            "transfer": self.transfer,
        }

    @classmethod
    def from_wire(cls, raw: object) -> RequestVote:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(
            term=term,
            src=src,
            dst=dst,
            last_log_index=_uint(d, "last_log_index", cls.TYPE),
            last_log_term=_uint(d, "last_log_term", cls.TYPE),
            pre_vote=_bool(d, "pre_vote", cls.TYPE),
            transfer=_bool(d, "transfer", cls.TYPE),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse(_MessageBase):
    TYPE: ClassVar[str] = "RequestVoteResponse"
    granted: bool
    pre_vote: bool = False

    def to_wire(self) -> Wire:
        return self._head() | {"granted": self.granted, "pre_vote": self.pre_vote}

    @classmethod
    def from_wire(cls, raw: object) -> RequestVoteResponse:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(
            term=term,
            src=src,
            dst=dst,
            granted=_bool(d, "granted", cls.TYPE),
            pre_vote=_bool(d, "pre_vote", cls.TYPE),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries(_MessageBase):
    """Leader → follower log replication (§5.3). ``entries`` may be empty: then it is a probe that
    only checks ``prev_log_index``/``prev_log_term``."""

    TYPE: ClassVar[str] = "AppendEntries"
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int

    def to_wire(self) -> Wire:
        return self._head() | {
            "prev_log_index": self.prev_log_index,
            "prev_log_term": self.prev_log_term,
            "entries": [e.to_wire() for e in self.entries],
            "leader_commit": self.leader_commit,
        }

    @classmethod
    def from_wire(cls, raw: object) -> AppendEntries:
        d, term, src, dst = _header(raw, cls.TYPE)
        prev = _uint(d, "prev_log_index", cls.TYPE)
        entries = tuple(Entry.from_wire(e) for e in _list(d, "entries", cls.TYPE))
        for offset, e in enumerate(entries, start=1):
            if e.index != prev + offset:
                raise WireError(f"{cls.TYPE}.entries: index {e.index} where {prev + offset} was expected")
        return cls(
            term=term,
            src=src,
            dst=dst,
            prev_log_index=prev,
            prev_log_term=_uint(d, "prev_log_term", cls.TYPE),
            entries=entries,
            leader_commit=_uint(d, "leader_commit", cls.TYPE),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse(_MessageBase):
    """On success ``index`` is the last index now known to match the leader's log. On rejection it
    echoes the rejected ``prev_log_index`` and ``hint_index``/``hint_term`` name the follower's last
    entry that could still match (the largest index <= prev with term <= prev_log_term), so the leader
    skips a whole divergent term per round trip instead of one entry (§5.3, "fast backtracking")."""

    TYPE: ClassVar[str] = "AppendEntriesResponse"
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0

    def to_wire(self) -> Wire:
        return self._head() | {
            "success": self.success,
            "index": self.index,
            "hint_index": self.hint_index,
            "hint_term": self.hint_term,
        }

    @classmethod
    def from_wire(cls, raw: object) -> AppendEntriesResponse:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(
            term=term,
            src=src,
            dst=dst,
            success=_bool(d, "success", cls.TYPE),
            index=_uint(d, "index", cls.TYPE),
            hint_index=_uint(d, "hint_index", cls.TYPE),
            hint_term=_uint(d, "hint_term", cls.TYPE),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(_MessageBase):
    """Leader → follower liveness and ReadIndex confirmation (thesis §6.4). No log check: ``commit``
    is capped by the leader at the follower's known match index, so it is always safe to adopt.
    ``seq`` is echoed back; a quorum echoing ``seq >= s`` proves leadership at the time ``s`` was sent."""

    TYPE: ClassVar[str] = "Heartbeat"
    commit: int
    seq: int

    def to_wire(self) -> Wire:
        return self._head() | {"commit": self.commit, "seq": self.seq}

    @classmethod
    def from_wire(cls, raw: object) -> Heartbeat:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(
            term=term, src=src, dst=dst, commit=_uint(d, "commit", cls.TYPE), seq=_uint(d, "seq", cls.TYPE)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse(_MessageBase):
    TYPE: ClassVar[str] = "HeartbeatResponse"
    seq: int

    def to_wire(self) -> Wire:
        return self._head() | {"seq": self.seq}

    @classmethod
    def from_wire(cls, raw: object) -> HeartbeatResponse:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(term=term, src=src, dst=dst, seq=_uint(d, "seq", cls.TYPE))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot(_MessageBase):
    """Leader → follower whose next entry was compacted away (§7). Sent whole; a streaming transport
    may chunk ``snapshot.data`` on the wire and reassemble before calling ``step``."""

    TYPE: ClassVar[str] = "InstallSnapshot"
    snapshot: Snapshot

    def to_wire(self) -> Wire:
        return self._head() | {"snapshot": self.snapshot.to_wire()}

    @classmethod
    def from_wire(cls, raw: object) -> InstallSnapshot:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(term=term, src=src, dst=dst, snapshot=Snapshot.from_wire(_field(d, "snapshot", cls.TYPE)))


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotResponse(_MessageBase):
    """``index``: the follower's log now matches the leader's up to here (the snapshot's index, or its
    commit index if that was already further)."""

    TYPE: ClassVar[str] = "InstallSnapshotResponse"
    success: bool
    index: int

    def to_wire(self) -> Wire:
        return self._head() | {"success": self.success, "index": self.index}

    @classmethod
    def from_wire(cls, raw: object) -> InstallSnapshotResponse:
        d, term, src, dst = _header(raw, cls.TYPE)
        return cls(
            term=term,
            src=src,
            dst=dst,
            success=_bool(d, "success", cls.TYPE),
            index=_uint(d, "index", cls.TYPE),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(_MessageBase):
    """Leader → caught-up target: start an election now, skipping PreVote (thesis §3.10)."""

    TYPE: ClassVar[str] = "TimeoutNow"

    def to_wire(self) -> Wire:
        return self._head()

    @classmethod
    def from_wire(cls, raw: object) -> TimeoutNow:
        _, term, src, dst = _header(raw, cls.TYPE)
        return cls(term=term, src=src, dst=dst)


Message: TypeAlias = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)

_BY_TYPE: dict[str, Any] = {
    cls.TYPE: cls
    for cls in (
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        InstallSnapshotResponse,
        TimeoutNow,
    )
}


def message_from_wire(raw: object) -> Message:
    """Decode any message from its ``to_wire()`` dict; raises :class:`WireError` on garbage."""
    d = _dict(raw, "Message")
    tag = d.get("type")
    cls = _BY_TYPE.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise WireError(f"Message: unknown type {tag!r}")
    msg: Message = cls.from_wire(d)
    return msg


def encode_message(msg: Message) -> bytes:
    """One message as msgpack bytes (the transport adds framing)."""
    return msgpack.packb(msg.to_wire(), use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, where: str) -> object:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"{where}: expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"{where}: undecodable msgpack ({exc})") from None


def decode_message(data: bytes) -> Message:
    """Inverse of :func:`encode_message`; raises :class:`WireError` on undecodable or ill-typed input."""
    return message_from_wire(_unpack(data, "Message"))
