"""The commands the state store applies: the payload of every Raft log entry.

A command is a msgpack-safe dict with an ``op`` key. Everything non-deterministic (session IDs, the
proposer's wall clock ``now`` used for lock-delay and TTLs) is decided *before* proposing and carried
in the command, so that every server applying the same log reaches the same state (Raft §5.3:
the state machine must be deterministic).

Ops:

``register``        catalog register: ``node`` (record), optional ``service`` (record), ``checks`` (records),
                    ``skip_node_update``
``deregister``      ``node`` and optionally ``service_id`` or ``check_id``
``kv``              one KV operation: ``verb`` (set, cas, lock, unlock, delete, delete-tree, delete-cas),
                    ``key``, ``value``, ``flags``, ``index``, ``session``
``txn``             ``ops``: a list of ``{"kv"|"node"|"service"|"check": {...}}``, all-or-nothing
``session_create``  ``session`` (record with its ID already chosen)
``session_destroy`` ``id``
``event``           ``event`` (record): a user event
``tombstone_reap``  ``index``: drop KV tombstones at or below it
"""

from __future__ import annotations

from typing import Any

__all__ = ["Command", "kv", "register", "deregister", "session_create", "session_destroy", "txn", "event"]

Command = dict[str, Any]


def kv(
    verb: str,
    key: str,
    *,
    value: bytes | None = None,
    flags: int = 0,
    index: int = 0,
    session: str = "",
    now: float = 0.0,
) -> Command:
    return {
        "op": "kv",
        "verb": verb,
        "key": key,
        "value": value,
        "flags": flags,
        "index": index,
        "session": session,
        "now": now,
    }


def register(
    node: dict[str, Any],
    *,
    service: dict[str, Any] | None = None,
    checks: list[dict[str, Any]] | None = None,
    skip_node_update: bool = False,
    now: float = 0.0,
) -> Command:
    return {
        "op": "register",
        "node": node,
        "service": service,
        "checks": checks or [],
        "skip_node_update": skip_node_update,
        "now": now,
    }


def deregister(node: str, *, service_id: str = "", check_id: str = "", now: float = 0.0) -> Command:
    return {"op": "deregister", "node": node, "service_id": service_id, "check_id": check_id, "now": now}


def session_create(session: dict[str, Any], *, now: float = 0.0) -> Command:
    return {"op": "session_create", "session": session, "now": now}


def session_destroy(session_id: str, *, now: float = 0.0) -> Command:
    return {"op": "session_destroy", "id": session_id, "now": now}


def txn(ops: list[dict[str, Any]], *, now: float = 0.0) -> Command:
    return {"op": "txn", "ops": ops, "now": now}


def event(record: dict[str, Any]) -> Command:
    return {"op": "event", "event": record}


# ------------------------------------------------------------------ results
# A follower forwards a write to the leader and gets the state machine's result back over RPC;
# these two functions are that result's wire form (msgpack-safe; never pickle).

_RECORD_TYPES = ("kv", "node", "service", "check")


def result_to_wire(result: Any) -> dict[str, Any]:
    from .store import CommandError
    from .structs import to_record

    if isinstance(result, CommandError):
        return {"err": str(result), "status": result.status}
    if isinstance(result, dict) and "results" in result and "errors" in result:
        items = []
        for item in result["results"]:
            out = dict(item)
            for kind in _RECORD_TYPES:
                if kind in out and out[kind] is not None:
                    out[kind] = to_record(out[kind])
            items.append(out)
        return {"txn": {"results": items, "errors": result["errors"]}}
    return {"ok": result}


def result_from_wire(wire: dict[str, Any]) -> Any:
    from .store import CommandError
    from .structs import HealthCheck, KVEntry, Node, ServiceInstance, from_record

    if "err" in wire:
        return CommandError(str(wire["err"]), int(wire.get("status", 500)))
    if "txn" in wire:
        classes: dict[str, type] = {"kv": KVEntry, "node": Node, "service": ServiceInstance, "check": HealthCheck}
        items = []
        for item in wire["txn"]["results"]:
            out = dict(item)
            for kind, cls in classes.items():
                if kind in out and out[kind] is not None:
                    out[kind] = from_record(cls, out[kind])
            items.append(out)
        return {"results": items, "errors": wire["txn"]["errors"]}
    return wire.get("ok")
