"""Wire format: every message survives to_wire/from_wire and msgpack; garbage raises WireError."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Server,
    Snapshot,
    SnapshotMeta,
    Suffrage,
    TimeoutNow,
    WireError,
    decode_message,
    encode_message,
    message_from_wire,
)

CONF = Configuration((Server("a", "10.0.0.1:8300"), Server("b", "10.0.0.2:8300", Suffrage.NONVOTER)))
H: dict[str, Any] = {"term": 7, "src": "a", "dst": "b"}
MESSAGES: list[Message] = [
    RequestVote(**H, last_log_index=10, last_log_term=6, pre_vote=True, transfer=False),
    RequestVoteResponse(**H, granted=True, pre_vote=True),
    AppendEntries(
        **H,
        prev_log_index=4,
        prev_log_term=6,
        entries=(
            Entry(5, 7, EntryKind.NOOP),
            Entry(6, 7, EntryKind.NORMAL, b"\x00\xff"),
            Entry(7, 7, EntryKind.CONFIG, CONF.encode()),
        ),
        leader_commit=4,
    ),
    AppendEntries(**H, prev_log_index=0, prev_log_term=0, entries=(), leader_commit=0),
    AppendEntriesResponse(**H, success=False, index=9, hint_index=3, hint_term=2),
    Heartbeat(**H, commit=3, seq=2**63),
    HeartbeatResponse(**H, seq=1),
    InstallSnapshot(**H, snapshot=Snapshot(SnapshotMeta(100, 6, CONF, 90), b"state")),
    InstallSnapshotResponse(**H, success=True, index=100),
    TimeoutNow(**H),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_msgpack(msg: Message) -> None:
    wire = msg.to_wire()
    assert message_from_wire(wire) == msg
    assert type(msg).from_wire(wire) == msg
    # Only msgpack-native primitives: strict packing must not need a default= hook.
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert msgpack.unpackb(data, raw=False) == wire | (
        {"entries": [e.to_wire() for e in msg.entries]} if isinstance(msg, AppendEntries) else {}
    )


def test_state_types_round_trip() -> None:
    for hs in (HardState(), HardState(3, "a", 9)):
        assert HardState.from_wire(hs.to_wire()) == hs
    meta = SnapshotMeta(5, 2, CONF, 1)
    assert SnapshotMeta.from_wire(meta.to_wire()) == meta
    assert Configuration.decode(CONF.encode()) == CONF
    assert CONF.voters == {"a"} and CONF.ids == {"a", "b"} and CONF.is_voter("a") and not CONF.is_voter("b")


def _with(msg: Message, **changes: Any) -> dict[str, Any]:
    wire = msg.to_wire()
    for k, v in changes.items():
        if v is KeyError:
            del wire[k]
        else:
            wire[k] = v
    return wire


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        ([], "expected a map"),
        ({"type": "Nope"}, "unknown type"),
        ({"type": 3}, "unknown type"),
        (_with(MESSAGES[0], term=KeyError), "missing field 'term'"),
        (_with(MESSAGES[0], term=True), "unsigned 64-bit"),
        (_with(MESSAGES[0], term=-1), "unsigned 64-bit"),
        (_with(MESSAGES[0], term=2**64), "unsigned 64-bit"),
        (_with(MESSAGES[0], term=1.0), "unsigned 64-bit"),
        (_with(MESSAGES[0], src=b"a"), "expected a string"),
        (_with(MESSAGES[0], pre_vote=1), "expected a boolean"),
        (_with(MESSAGES[2], entries={"0": 1}), "expected a list"),
        (_with(MESSAGES[2], entries=[{"index": 5, "term": 7, "kind": "noop"}]), "missing field 'data'"),
        (_with(MESSAGES[2], entries=[{"index": 5, "term": 7, "kind": "weird", "data": b""}]), "unknown kind"),
        (
            _with(MESSAGES[2], entries=[{"index": 5, "term": 7, "kind": "normal", "data": "str"}]),
            "expected bytes",
        ),
        (
            _with(MESSAGES[2], entries=[{"index": 9, "term": 7, "kind": "normal", "data": b""}]),
            "where 5 was expected",
        ),
        (_with(MESSAGES[7], snapshot={"meta": {}, "data": b""}), "missing field"),
        (
            _with(MESSAGES[7], snapshot=Snapshot(SnapshotMeta(1, 1, CONF), b"").to_wire() | {"data": None}),
            "expected bytes",
        ),
    ],
)
def test_garbage_raises_wire_error(wire: object, match: str) -> None:
    with pytest.raises(WireError, match=match):
        message_from_wire(wire)


def test_message_type_tag_must_match_the_class() -> None:
    with pytest.raises(WireError, match="wrong type tag"):
        RequestVote.from_wire(MESSAGES[1].to_wire())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\x01",
        msgpack.packb([1, 2]),
        msgpack.packb({"type": "TimeoutNow"}),
        b"\x81\x01\x02",
    ],
)
def test_undecodable_bytes_raise_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(data)


def test_configuration_rejects_duplicates_and_bad_servers() -> None:
    with pytest.raises(WireError, match="duplicate"):
        Configuration((Server("a", "x"), Server("a", "y")))
    with pytest.raises(WireError, match="suffrage"):
        Configuration.from_wire({"servers": [{"id": "a", "address": "x", "suffrage": "king"}]})
    with pytest.raises(WireError, match="empty"):
        Configuration.from_wire({"servers": [{"id": "", "address": "x", "suffrage": "voter"}]})
    with pytest.raises(WireError):
        Configuration.decode(b"\xc1")


_ids = st.text(min_size=1, max_size=8)
_u64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(
    term=_u64,
    src=_ids,
    dst=_ids,
    prev=st.integers(min_value=0, max_value=2**40),
    datas=st.lists(st.binary(max_size=32), max_size=5),
    commit=_u64,
)
def test_append_entries_round_trips_for_any_values(
    term: int, src: str, dst: str, prev: int, datas: list[bytes], commit: int
) -> None:
    entries = tuple(Entry(prev + i + 1, term, EntryKind.NORMAL, d) for i, d in enumerate(datas))
    m = AppendEntries(
        term=term,
        src=src,
        dst=dst,
        prev_log_index=prev,
        prev_log_term=term,
        entries=entries,
        leader_commit=commit,
    )
    assert decode_message(encode_message(m)) == m


@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_wire_error(data: bytes) -> None:
    try:
        decode_message(data)
    except WireError:
        pass
