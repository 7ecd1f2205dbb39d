"""User events on the wire: ``/v1/event/fire`` records carried as serf user events.

Consul sends a user event as a serf user event whose payload encodes the event's ID, payload and
filters, and each agent decides on receipt whether it applies (``agent/user_event.go``: the node
filter matches the node name, the service filter one of the agent's services, the tag filter one of
that service's tags). Events are not in Raft: every agent keeps the last 256 it received, and
``/v1/event/list`` answers from them. Gossip bounds name + payload at 512 bytes, so the encoding is
compact: msgpack ``[id (16 bytes), payload, node, service, tag]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import msgpack

from agent.local.state import LocalService
from agent.regex import RegexError, compile_re2

__all__ = ["encode_event", "decode_event", "event_matches"]


def encode_event(record: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb([uuid.UUID(str(record["id"])).bytes, record.get("payload") or b"",
                                record.get("node_filter") or "", record.get("service_filter") or "",
                                record.get("tag_filter") or ""], use_bin_type=True)
    return out


def decode_event(name: str, payload: bytes, ltime: int) -> dict[str, Any]:
    """The event record (as ``/v1/event/fire`` built it); ``ValueError`` for anything malformed."""
    try:
        fields = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as err:
        raise ValueError(f"undecodable payload: {err}") from None
    if not isinstance(fields, list) or len(fields) != 5:
        raise ValueError("expected [id, payload, node, service, tag]")
    event_id, body, node, service, tag = fields
    if not isinstance(event_id, bytes) or len(event_id) != 16 or not isinstance(body, bytes):
        raise ValueError("bad id or payload")
    if not all(isinstance(f, str) for f in (node, service, tag)):
        raise ValueError("filters must be strings")
    return {"id": str(uuid.UUID(bytes=event_id)), "name": name, "payload": body or None, "node_filter": node,
            "service_filter": service, "tag_filter": tag, "version": 1, "ltime": ltime}


def _matches(pattern: str, value: str) -> bool:
    try:
        return compile_re2(pattern).search(value) is not None  # RE2: a hostile pattern cannot stall us
    except RegexError:
        return False


def event_matches(record: dict[str, Any], node_name: str, services: Iterable[LocalService]) -> bool:
    """Whether this agent processes the event (Consul's ``shouldProcessUserEvent``)."""
    if record["node_filter"] and not _matches(record["node_filter"], node_name):
        return False
    if not record["service_filter"]:
        return True
    for svc in services:
        d = svc.definition
        if _matches(record["service_filter"], d.name):
            if not record["tag_filter"] or any(_matches(record["tag_filter"], t) for t in d.tags):
                return True
    return False
