"""Consul-shaped JSON builders and a render shortcut for the template tests."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from templates.dependencies import Dependency
from templates.functions import MemoryDataSource
from templates.render import RenderResult, Template


def health_entry(
    node: str,
    address: str,
    port: int,
    *,
    service: str = "web",
    service_id: str | None = None,
    service_address: str = "",
    tags: Iterable[str] = (),
    meta: Mapping[str, str] | None = None,
    node_meta: Mapping[str, str] | None = None,
    checks: Iterable[tuple[str, str]] = (("serfHealth", "passing"),),
    datacenter: str = "dc1",
) -> dict[str, Any]:
    """One element of ``GET /v1/health/service/<name>`` as Consul returns it."""
    sid = service_id or f"{service}-{node}"
    return {
        "Node": {
            "ID": f"id-{node}",
            "Node": node,
            "Address": address,
            "Datacenter": datacenter,
            "TaggedAddresses": {"lan": address},
            "Meta": dict(node_meta or {}),
            "CreateIndex": 5,
            "ModifyIndex": 5,
        },
        "Service": {
            "ID": sid,
            "Service": service,
            "Tags": list(tags),
            "Address": service_address,
            "Meta": dict(meta or {}),
            "Port": port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
        },
        "Checks": [
            {
                "Node": node,
                "CheckID": cid,
                "Name": cid,
                "Status": status,
                "Output": "",
                "ServiceID": "" if cid == "serfHealth" else sid,
                "ServiceName": "" if cid == "serfHealth" else service,
            }
            for cid, status in checks
        ],
    }


def kv_entry(key: str, value: str | None, *, flags: int = 0, index: int = 10) -> dict[str, Any]:
    """One element of ``GET /v1/kv/<key>[?recurse]``."""
    return {
        "Key": key,
        "Value": None if value is None else base64.b64encode(value.encode()).decode(),
        "Flags": flags,
        "CreateIndex": index,
        "ModifyIndex": index,
        "LockIndex": 0,
    }


def source(responses: Mapping[Dependency, Any] | None = None) -> MemoryDataSource:
    """A data source primed with raw Consul bodies (decoded like the watcher would)."""
    src = MemoryDataSource()
    for dep, body in (responses or {}).items():
        src.set_response(dep, body)
    return src


def go(text: str, src: MemoryDataSource | None = None, **kw: Any) -> str:
    """Render Go-syntax ``text`` and return the text (complete or not)."""
    return Template(text, syntax="go", **kw).render(src or MemoryDataSource()).text


def jinja(text: str, src: MemoryDataSource | None = None, **kw: Any) -> str:
    """Render Jinja ``text`` and return the text."""
    return Template(text, syntax="jinja", **kw).render(src or MemoryDataSource()).text


def result(text: str, src: MemoryDataSource, **kw: Any) -> RenderResult:
    """Render and return the full result."""
    return Template(text, **kw).render(src)
