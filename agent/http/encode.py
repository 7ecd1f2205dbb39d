"""Store records → Consul's JSON shapes (``api-docs/catalog.mdx``, ``health.mdx``, ``kv.mdx``, ...).

Field names and their presence follow Consul exactly, because clients (py-consul, consul-template,
the Go api package) read them by name. Lists are ``[]``, never ``null``; ``Tags`` are ``[]``; agent
services always carry ``Meta`` ``{}`` and ``Weights``.
"""

from __future__ import annotations

import base64
from typing import Any

from agent.state.structs import HealthCheck, KVEntry, Node, ServiceInstance, Session, UserEvent

__all__ = [
    "node_json",
    "catalog_service_json",
    "agent_service_json",
    "check_json",
    "kv_json",
    "session_json",
    "event_json",
    "health_entry_json",
]


def node_json(n: Node, dc: str) -> dict[str, Any]:
    return {
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": n.datacenter or dc,
        "TaggedAddresses": dict(n.tagged_addresses) or None,
        "Meta": dict(n.meta) or None,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    }


def _tagged(svc: ServiceInstance) -> dict[str, Any] | None:
    return {k: dict(v) for k, v in svc.tagged_addresses.items()} or None


def catalog_service_json(n: Node, s: ServiceInstance, dc: str) -> dict[str, Any]:
    return {
        "ID": n.id,
        "Node": n.node,
        "Address": n.address,
        "Datacenter": n.datacenter or dc,
        "TaggedAddresses": dict(n.tagged_addresses) or None,
        "NodeMeta": dict(n.meta) or None,
        "ServiceKind": s.kind,
        "ServiceID": s.id,
        "ServiceName": s.service,
        "ServiceTags": list(s.tags),
        "ServiceAddress": s.address,
        "ServiceTaggedAddresses": _tagged(s),
        "ServiceWeights": dict(s.weights),
        "ServiceMeta": dict(s.meta),
        "ServicePort": s.port,
        "ServiceEnableTagOverride": s.enable_tag_override,
        "ServiceProxy": {"MeshGateway": {}, "Expose": {}},
        "ServiceConnect": {},
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    }


def agent_service_json(s: ServiceInstance, dc: str, with_indexes: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": s.id,
        "Service": s.service,
        "Tags": list(s.tags),
        "Meta": dict(s.meta),
        "Port": s.port,
        "Address": s.address,
    }
    if s.kind:
        out["Kind"] = s.kind
    tagged = _tagged(s)
    if tagged:
        out["TaggedAddresses"] = tagged
    out["Weights"] = dict(s.weights)
    out["EnableTagOverride"] = s.enable_tag_override
    if with_indexes:
        out["CreateIndex"] = s.create_index
        out["ModifyIndex"] = s.modify_index
    out["Datacenter"] = dc
    return out


def check_json(c: HealthCheck) -> dict[str, Any]:
    definition = dict(c.definition) if c.definition else {}
    definition.setdefault("Interval", "0s")
    definition.setdefault("Timeout", "0s")
    definition.setdefault("DeregisterCriticalServiceAfter", "0s")
    return {
        "Node": c.node,
        "CheckID": c.check_id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": list(c.service_tags),
        "Type": c.type,
        "Interval": c.interval,
        "Timeout": c.timeout,
        "ExposedPort": 0,
        "Definition": definition,
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
    }


def health_entry_json(n: Node, s: ServiceInstance, checks: list[HealthCheck], dc: str) -> dict[str, Any]:
    node = node_json(n, dc)
    service = agent_service_json(s, dc)
    service["Proxy"] = {"MeshGateway": {}, "Expose": {}}
    service["Connect"] = {}
    return {"Node": node, "Service": service, "Checks": [check_json(c) for c in checks]}


def kv_json(e: KVEntry, with_value: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        "Value": base64.b64encode(e.value).decode() if (with_value and e.value is not None) else None,
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    }
    if e.session:
        out["Session"] = e.session
    return out


def session_json(s: Session) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": s.lock_delay_ns,
        "Behavior": s.behavior,
        "TTL": s.ttl,
        "NodeChecks": list(s.node_checks),
        "ServiceChecks": [dict(x) for x in s.service_checks] or None,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    }
    # Pre-1.7 clients read "Checks": the node checks plus the service check IDs.
    out["Checks"] = list(s.node_checks) + [x.get("ID", "") for x in s.service_checks]
    return out


def event_json(e: UserEvent, with_payload: bool = True) -> dict[str, Any]:
    payload: str | None = None
    if with_payload and e.payload is not None:
        payload = base64.b64encode(e.payload).decode()
    return {
        "ID": e.id,
        "Name": e.name,
        "Payload": payload,
        "NodeFilter": e.node_filter,
        "ServiceFilter": e.service_filter,
        "TagFilter": e.tag_filter,
        "Version": e.version,
        "LTime": e.ltime,
    }
