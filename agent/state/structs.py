"""The records the state store keeps: nodes, service instances, checks, KV entries, sessions, events.

Field names are snake_case here; `agent/http/encode.py` maps them to Consul's JSON names. Every record
carries ``create_index``/``modify_index``: the Raft index of the command that created / last changed it
(Consul's ``RaftIndex``). Records are plain mutable dataclasses owned by the store; readers get copies
through the API layer's encoders, never references they could mutate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

__all__ = [
    "Node",
    "ServiceInstance",
    "HealthCheck",
    "KVEntry",
    "Session",
    "UserEvent",
    "PASSING",
    "WARNING",
    "CRITICAL",
    "MAINTENANCE",
    "CHECK_STATUSES",
    "SERF_CHECK_ID",
    "NODE_MAINT_CHECK_ID",
    "SERVICE_MAINT_PREFIX",
    "to_record",
    "from_record",
]

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
MAINTENANCE = "maintenance"
CHECK_STATUSES = (PASSING, WARNING, CRITICAL)

SERF_CHECK_ID = "serfHealth"
NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"


@dataclass
class Node:
    node: str
    address: str
    id: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass
class ServiceInstance:
    node: str
    id: str
    service: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    port: int = 0
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    kind: str = ""
    create_index: int = 0
    modify_index: int = 0


@dataclass
class HealthCheck:
    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    interval: str = ""
    timeout: str = ""
    definition: dict[str, Any] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass
class KVEntry:
    key: str
    value: bytes | None = None
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0


@dataclass
class Session:
    id: str
    node: str
    name: str = ""
    lock_delay_ns: int = 15_000_000_000
    behavior: str = "release"
    ttl: str = ""
    node_checks: list[str] = field(default_factory=lambda: ["serfHealth"])
    service_checks: list[dict[str, str]] = field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0


@dataclass
class UserEvent:
    id: str
    name: str
    payload: bytes | None = None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = 1
    ltime: int = 0


R = TypeVar("R")


def to_record(obj: Any) -> dict[str, Any]:
    """A dataclass as a msgpack-safe dict (for snapshots and the Raft log)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def from_record(cls: type[R], data: dict[str, Any]) -> R:
    """Rebuild a record, ignoring keys this version does not know (forward compatibility)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
