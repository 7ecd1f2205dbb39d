"""The gossip wire codec: round trips, compound packets within udp_buffer_size, garbage → DecodeError."""

from __future__ import annotations

import ast
import pathlib
import pickle
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gossip import DecodeError, EncodeError
from agent.gossip.messages import (
    PACKET_HEADER_BYTES,
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    NodeState,
    Ping,
    ProtocolVersions,
    PushNode,
    PushPull,
    Suspect,
    UserEvent,
    assemble,
    decode,
    decode_stream,
    encode,
    encode_message,
    encode_packets,
    encode_stream,
    split_packet,
)

GOSSIP_DIR = pathlib.Path(__file__).resolve().parents[2] / "agent" / "gossip"

SAMPLES: list[Message] = [
    Ping(1, "node-a"),
    IndirectPing(2, "node-b", "10.0.0.2", 8301, True),
    Ack(0xFFFFFFFF),
    Nack(3),
    Suspect(4, "node-b", "node-a"),
    Alive(5, "node-c", "10.0.0.3", 8301, {"role": "node", "dc": "dc1"}, ProtocolVersions(1, 5, 2, 2, 5, 4)),
    Dead(6, "node-d", "node-a"),
    Dead(7, "node-e", "node-e", prune=True),
    UserEvent(2**40, "deploy", b"\x00\xffpayload", False),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode([msg])) == [msg]


def test_compound_packet_keeps_order() -> None:
    assert decode(encode(SAMPLES)) == SAMPLES


def test_leave_is_dead_from_self() -> None:
    assert Dead(1, "a", "a").is_leave and not Dead(1, "a", "b").is_leave


def test_encode_packets_respects_udp_buffer_size() -> None:
    msgs = [Alive(i, f"node-{i}", "10.0.0.1", 8301, {"k": "v" * 20}) for i in range(200)]
    packets = encode_packets(msgs, 1400)
    assert len(packets) > 1
    assert all(len(p) <= 1400 for p in packets)
    assert [m for p in packets for m in decode(p)] == msgs
    with pytest.raises(EncodeError):
        encode_packets([Alive(1, "n", "a", 1, {"k": "v" * 2000})], 1400)
    with pytest.raises(EncodeError):
        encode(msgs, max_bytes=1400)


def test_stream_round_trip() -> None:
    pp = PushPull(
        join=True,
        nodes=(
            PushNode("a", "10.0.0.1", 8301, {"role": "consul"}, 3, NodeState.ALIVE),
            PushNode("b", "10.0.0.2", 8301, {}, 1, NodeState.LEFT),
        ),
        event_ltime=9,
        events=(UserEvent(8, "e", b"p", True),),
    )
    assert decode_stream(encode_stream(pp)) == pp


def _part(fields: list[object]) -> bytes:
    return assemble([msgpack.packb(fields, use_bin_type=True)])


GARBAGE = {
    "empty": b"",
    "version only": b"\x01",
    "wrong version": b"\x07\x00\x01\x00\x01\x90",
    "pickle": pickle.dumps(Ping(1, "a")),
    "zero parts": struct.pack(">BH", 1, 0) + b"\x90\x90",
    "header claims more parts": struct.pack(">BHH", 1, 500, 1) + b"\x90",
    "lengths do not add up": struct.pack(">BHH", 1, 1, 5) + b"\x91\x03",
    "trailing bytes": assemble([encode_message(Ack(1))]) + b"\x00",
    "part not msgpack": struct.pack(">BHH", 1, 1, 1) + b"\xc1",
    "part not a list": _part({"type": 1}),  # type: ignore[arg-type]
    "empty list": _part([]),
    "unknown type": _part([99, 1]),
    "type is a bool": _part([True, 1]),
    "missing fields": _part([1, 5]),
    "seq is negative": _part([3, -1]),
    "seq too large": _part([3, 2**32]),
    "seq is a bool": _part([3, True]),
    "seq is a float": _part([3, 1.0]),
    "name is bytes": _part([1, 1, b"node"]),
    "empty name": _part([1, 1, ""]),
    "port out of range": _part([6, 1, "n", "10.0.0.1", 70000, {}, [1, 5, 2, 2, 5, 4]]),
    "tags not a map": _part([6, 1, "n", "10.0.0.1", 8301, [], [1, 5, 2, 2, 5, 4]]),
    "tag value not str": _part([6, 1, "n", "10.0.0.1", 8301, {"a": 1}, [1, 5, 2, 2, 5, 4]]),
    "versions short": _part([6, 1, "n", "10.0.0.1", 8301, {}, [1, 5]]),
    "version is a bool": _part([6, 1, "n", "10.0.0.1", 8301, {}, [True, 5, 2, 2, 5, 4]]),
    "nack flag not bool": _part([2, 1, "t", "10.0.0.1", 8301, 1]),
    "payload is str": _part([8, 1, "e", "text", True]),
    "ext type": struct.pack(">BHH", 1, 1, 3) + b"\xd4\x01\x00",
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_packets_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_non_bytes_input_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode("not bytes")  # type: ignore[arg-type]


def test_extra_trailing_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode(_part([3, 42, "a field from a newer peer"])) == [Ack(42)]


STREAM_GARBAGE = {
    "packet instead of frame": encode([Ping(1, "a")]),
    "wrong type code": b"\x01" + msgpack.packb([1, True, [], 0, []]),
    "join not bool": b"\x01" + msgpack.packb([9, 1, [], 0, []]),
    "node entry not a pair": b"\x01" + msgpack.packb([9, True, [[0]], 0, []]),
    "node state out of range": b"\x01" + msgpack.packb([9, True, [[7, b"x"]], 0, []], use_bin_type=True),
    "node part not an alive": b"\x01" + msgpack.packb([9, True, [[0, encode_message(Ack(1))]], 0, []], use_bin_type=True),
    "event ltime negative": b"\x01" + msgpack.packb([9, True, [], -1, []]),
    "truncated": encode_stream(PushPull(True, (PushNode("a", "h", 1, {}, 1, NodeState.ALIVE),)))[:-3],
}


@pytest.mark.parametrize("data", list(STREAM_GARBAGE.values()), ids=list(STREAM_GARBAGE))
def test_garbage_streams_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_stream(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    for fn in (decode, decode_stream):
        try:
            fn(data)
        except DecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=20), st.data())
def test_corrupted_packets_never_raise_anything_else(msgs: list[Message], data: st.DataObject) -> None:
    packet = bytearray(encode(msgs))
    i = data.draw(st.integers(0, len(packet) - 1))
    packet[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(packet))
    except DecodeError:
        pass


names = st.text(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    inc=st.integers(0, 2**32 - 1),
    node=names,
    addr=names,
    port=st.integers(0, 65535),
    tags=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
)
def test_alive_round_trips_for_any_valid_fields(inc: int, node: str, addr: str, port: int, tags: dict[str, str]) -> None:
    msg = Alive(inc, node, addr, port, tags)
    assert decode(encode([msg])) == [msg]


def test_split_packet_returns_the_encoded_parts() -> None:
    parts = [encode_message(m) for m in SAMPLES[:3]]
    packet = assemble(parts)
    assert len(packet) == PACKET_HEADER_BYTES + 2 * 3 + sum(map(len, parts))
    assert split_packet(packet) == parts


def test_no_pickle_anywhere_in_the_gossip_package() -> None:
    for path in GOSSIP_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] in {"pickle", "marshal", "shelve"} for m in mods), path
