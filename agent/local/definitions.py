"""Service and check definitions as operators and clients write them.

One decoder serves the HTTP API (``PUT /v1/agent/service/register``, ``/v1/agent/check/register``) and
the config files (``service``/``services``/``check``/``checks`` blocks), because real files and real
clients mix spellings: ``Name``, ``name``, ``DeregisterCriticalServiceAfter`` and
``deregister_critical_service_after`` all mean the same field (Go's ``encoding/json`` matches keys
case-insensitively, and Consul accepts snake_case aliases). :func:`norm` folds a mapping's keys to
lower case without underscores; user-data maps (``Meta``, ``Header``, ``TaggedAddresses``) keep their
keys as written. Unknown keys are ignored, as older Consul did: lenient input breaks no client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.checks.errors import InvalidCheck
from agent.checks.spec import CheckSpec
from agent.durations import DurationError, format_duration, parse_duration_value
from agent.state.structs import CHECK_STATUSES, CRITICAL

__all__ = [
    "DefinitionError",
    "ServiceDefinition",
    "CheckDefinition",
    "norm",
    "parse_service",
    "parse_check",
]

_META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class DefinitionError(ValueError):
    """A definition Consul would refuse; the message is Consul's 400 text."""


def norm(obj: Any) -> dict[str, Any]:
    """Fold a mapping's keys: ``Deregister_Critical_ServiceAfter`` → ``deregistercriticalserviceafter``."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise DefinitionError(f"expected an object, got {type(obj).__name__}")
    return {str(k).lower().replace("_", ""): v for k, v in obj.items()}


def _str(d: Mapping[str, Any], key: str, default: str = "") -> str:
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise DefinitionError(f"{key}: expected a string")
        return str(v)
    return v


def _int(d: Mapping[str, Any], key: str, default: int = 0) -> int:
    v = d.get(key)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        raise DefinitionError(f"{key}: expected a number")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise DefinitionError(f"{key}: expected a number, got {v!r}") from None


def _bool(d: Mapping[str, Any], key: str) -> bool:
    v = d.get(key)
    if isinstance(v, str):
        return v.lower() in ("1", "t", "true")
    return bool(v)


def _str_list(d: Mapping[str, Any], key: str) -> list[str]:
    v = d.get(key)
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise DefinitionError(f"{key}: expected a list of strings")
    return list(v)


def _str_map(d: Mapping[str, Any], key: str) -> dict[str, str]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise DefinitionError(f"{key}: expected an object")
    return {str(k): "" if x is None else str(x) for k, x in v.items()}


@dataclass
class CheckDefinition:
    """A check as registered with an agent: identity plus the spec of what to run."""

    check_id: str
    name: str
    service_id: str = ""
    notes: str = ""
    status: str = CRITICAL
    spec: CheckSpec | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.spec.type if self.spec is not None else ""

    def definition_json(self) -> dict[str, Any]:
        """The ``Definition`` object Consul shows on health endpoints."""
        spec = self.spec
        if spec is None:
            return {}
        out: dict[str, Any] = {}
        if spec.http:
            out.update(HTTP=spec.http, Method=spec.method, Header=spec.header or None, Body=spec.body,
                       TLSServerName=spec.tls_server_name, TLSSkipVerify=spec.tls_skip_verify)
        if spec.tcp:
            out["TCP"] = spec.tcp
        out["Interval"] = format_duration(spec.interval_s)
        out["Timeout"] = format_duration(spec.timeout_s if spec.kind in ("http", "tcp", "script") else 0)
        out["DeregisterCriticalServiceAfter"] = format_duration(spec.deregister_critical_service_after_s or 0)
        return out


@dataclass
class ServiceDefinition:
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    port: int = 0
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    kind: str = ""
    checks: list[CheckDefinition] = field(default_factory=list)

    def record(self, node: str) -> dict[str, Any]:
        """The catalog record this definition syncs to (a ``ServiceInstance``)."""
        return {
            "node": node,
            "id": self.id,
            "service": self.name,
            "tags": list(self.tags),
            "address": self.address,
            "tagged_addresses": self.tagged_addresses,
            "meta": dict(self.meta),
            "port": self.port,
            "weights": dict(self.weights),
            "enable_tag_override": self.enable_tag_override,
            "kind": self.kind,
        }


def parse_service(obj: Any) -> ServiceDefinition:
    d = norm(obj)
    name = _str(d, "name") or _str(d, "service")
    if not name:
        raise DefinitionError("Missing service name")
    sid = _str(d, "id") or _str(d, "serviceid") or name
    address = _str(d, "address")
    if address:
        try:
            if ipaddress.ip_address(address).is_unspecified:
                raise DefinitionError("Invalid service address")
        except ValueError:
            pass  # a hostname is allowed
    meta = _str_map(d, "meta")
    if len(meta) > 64:
        raise DefinitionError("Node metadata cannot contain more than 64 key/value pairs")
    for k, v in meta.items():
        if not _META_KEY.match(k) or len(k) > 128:
            raise DefinitionError(f"Key contains invalid characters: {k!r}")
        if k.startswith("consul-"):
            raise DefinitionError(f"Key prefix 'consul-' is reserved for internal use: {k!r}")
        if len(v) > 512:
            raise DefinitionError(f"Value is too long (limit: 512 characters): {k!r}")
    weights = {"Passing": 1, "Warning": 1}
    if d.get("weights") is not None:
        w = norm(d.get("weights"))
        weights = {"Passing": _int(w, "passing", 1), "Warning": _int(w, "warning", 1)}
        if weights["Passing"] < 1:
            raise DefinitionError("Passing must be greater than 0")
    tagged: dict[str, dict[str, Any]] = {}
    raw_tagged = d.get("taggedaddresses")
    if raw_tagged is not None:
        if not isinstance(raw_tagged, Mapping):
            raise DefinitionError("TaggedAddresses: expected an object")
        for tag, val in raw_tagged.items():
            tv = norm(val)
            tagged[str(tag)] = {"Address": _str(tv, "address"), "Port": _int(tv, "port")}
    svc = ServiceDefinition(
        id=sid,
        name=name,
        tags=_str_list(d, "tags"),
        address=address,
        tagged_addresses=tagged,
        meta=meta,
        port=_int(d, "port"),
        weights=weights,
        enable_tag_override=_bool(d, "enabletagoverride"),
        kind=_str(d, "kind"),
    )
    raw_checks: list[Any] = []
    if d.get("check") is not None:
        raw_checks.append(d["check"])
    if d.get("checks") is not None:
        if not isinstance(d["checks"], list):
            raise DefinitionError("Checks: expected a list")
        raw_checks.extend(d["checks"])
    for i, raw in enumerate(raw_checks, start=1):
        chk = parse_check(raw, service_id=sid)
        if not norm(raw).get("id") and not norm(raw).get("checkid"):
            chk.check_id = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i}"
        if not norm(raw).get("name"):
            chk.name = f"Service '{name}' check"
        svc.checks.append(chk)
    return svc


def parse_check(obj: Any, service_id: str = "") -> CheckDefinition:
    d = norm(obj)
    name = _str(d, "name")
    check_id = _str(d, "id") or _str(d, "checkid") or name
    if not name and not service_id:
        raise DefinitionError("Missing check name")
    status = _str(d, "status") or CRITICAL
    if status not in CHECK_STATUSES:
        raise DefinitionError("Status for checks must 'passing', 'warning', 'critical'")
    try:
        for key in ("interval", "timeout", "ttl", "deregistercriticalserviceafter"):
            if d.get(key) not in (None, ""):
                parse_duration_value(d[key])
        spec = CheckSpec.from_definition(d)
    except DurationError as err:
        raise DefinitionError(f"Invalid check: {err}") from None
    except InvalidCheck as err:
        raise DefinitionError(f"Invalid check: {err}") from None
    return CheckDefinition(
        check_id=check_id,
        name=name,
        service_id=_str(d, "serviceid") or service_id,
        notes=_str(d, "notes"),
        status=status,
        spec=spec,
        raw=d,
    )
