"""User events on the gossip wire, and the catalog rows anti-entropy compares with."""

from __future__ import annotations

import uuid

import msgpack
import pytest

from agent.events import decode_event, encode_event, event_matches
from agent.local.definitions import parse_service
from agent.local.state import LocalState
from agent.local.sync import CatalogRows, plan
from agent.state import commands
from agent.state.store import Store


def record(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"id": str(uuid.uuid4()), "name": "deploy", "payload": b"v42", "node_filter": "",
                               "service_filter": "", "tag_filter": "", "version": 1, "ltime": 0}
    base.update(kw)
    return base


def test_event_round_trip_fits_gossip() -> None:
    ev = record(node_filter="^web-", service_filter="api", tag_filter="v2")
    wire = encode_event(ev)
    assert len(wire) < 80  # 16-byte id + payload + filters: most of serf's 512 bytes stay for the payload
    back = decode_event("deploy", wire, ltime=7)
    assert back == {**ev, "ltime": 7}


def test_empty_payload_is_null() -> None:
    assert decode_event("x", encode_event(record(payload=None)), 0)["payload"] is None


@pytest.mark.parametrize("payload", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb([b"short", b"", "", "", ""]),
                                     msgpack.packb([uuid.uuid4().bytes, "not bytes", "", "", ""]),
                                     msgpack.packb([uuid.uuid4().bytes, b"", 1, "", ""])])
def test_malformed_events_are_rejected(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_event("x", payload, 0)


def test_filters_follow_consul() -> None:
    local = LocalState()
    local.add_service(parse_service({"name": "api", "tags": ["v2", "blue"]}), "config")
    services = list(local.services.values())
    assert event_matches(record(), "web-1", services)
    assert event_matches(record(node_filter="^web-"), "web-1", services)
    assert not event_matches(record(node_filter="^db-"), "web-1", services)
    assert event_matches(record(service_filter="^ap"), "web-1", services)
    assert not event_matches(record(service_filter="^db$"), "web-1", services)
    assert event_matches(record(service_filter="api", tag_filter="blue"), "web-1", services)
    assert not event_matches(record(service_filter="api", tag_filter="green"), "web-1", services)
    assert not event_matches(record(service_filter="("), "web-1", services)  # a bad regex matches nothing


def test_catalog_rows_travel_and_plan_the_same() -> None:
    """A client plans from rows a server sent; the plan must equal one made from the store itself."""
    store = Store()
    store.apply(1, commands.register({"node": "c1", "address": "10.0.0.1"},
                                     service={"id": "old", "service": "old", "port": 1}))
    store.apply(2, commands.register({"node": "c1"}, checks=[{"check_id": "serfHealth", "name": "Serf",
                                                               "status": "passing"}], skip_node_update=True))
    local = LocalState()
    local.add_service(parse_service({"name": "web", "port": 80}), "config")
    node = {"node": "c1", "address": "10.0.0.1"}
    rows = CatalogRows.of(store, "c1")
    travelled = CatalogRows.from_wire(msgpack.unpackb(msgpack.packb(rows.to_wire(), use_bin_type=True), raw=False))
    assert travelled == rows
    cmds = plan(node, local, travelled, now=0.0)
    assert cmds == plan(node, local, rows, now=0.0)
    ops = [(c["op"], c.get("service", {}).get("id") if c["op"] == "register" else c.get("service_id")) for c in cmds]
    assert ("register", "web") in ops and ("deregister", "old") in ops
    assert not any(c["op"] == "deregister" and c.get("check_id") == "serfHealth" for c in cmds)  # the leader's
    assert plan(node, local, CatalogRows(), now=0.0)[0]["op"] == "register"  # unknown node: registered first


@pytest.mark.parametrize(("members", "factor"), [(1, 1), (128, 1), (129, 2), (256, 2), (257, 3), (1024, 4),
                                                  (10_000, 8)])
def test_anti_entropy_interval_scales_like_consul(members: int, factor: int) -> None:
    """``agent/ae/ae.go``: 1 up to 128 nodes, then one more interval per doubling."""
    from agent.local.sync import scale_factor

    assert scale_factor(members) == factor
