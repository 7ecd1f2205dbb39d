"""``/v1/kv/<key>`` and ``/v1/txn`` (``api-docs/kv.mdx``, ``txn.mdx``).

Traps real clients depend on: a missing key is a 404 that still carries ``X-Consul-Index`` (py-consul
fails without it); a CAS or lock failure is 200 ``false``, not an error; a value over 512 KiB is 413.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from aiohttp import web

from agent.http.core import (
    MAX_KV_BODY,
    HTTPError,
    Route,
    agent_of,
    blocking,
    flag,
    json_response,
    query_options,
    read_body,
    read_json,
)
from agent.http.encode import agent_service_json, check_json, kv_json, node_json
from agent.local.definitions import norm
from agent.state import commands
from agent.state.store import CommandError
from agent.state.structs import HealthCheck, KVEntry, Node, ServiceInstance

__all__ = ["ROUTES"]

MAX_TXN_OPS = 128


def _check_key(key: str) -> None:
    """Classic Consul key rules plus the path-traversal guard added for CVE-2025-11392."""
    if key.startswith("/"):
        raise HTTPError(400, "Invalid key name: keys must not begin with '/'")
    if any(part == ".." for part in key.split("/")):
        raise HTTPError(400, f"Invalid key name: {key!r} contains a '..' path segment")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise HTTPError(400, "Invalid key name: keys must not contain unprintable characters")


async def kv_get(request: web.Request, key: str) -> web.StreamResponse:
    agent = agent_of(request)
    store = agent.store
    recurse = flag(request, "recurse")
    keys_only = flag(request, "keys")
    if not key and not recurse and not keys_only:
        raise HTTPError(400, "Missing key name")
    _check_key(key)
    opts = query_options(request)
    if keys_only:
        sep = request.query.get("separator", request.query.get("seperator", ""))
        index, listing = await blocking(request, lambda: store.kv_keys(key, sep), kv_prefixes=(key,), opts=opts)
        if not listing and key:
            return _not_found(request, index)
        return json_response(request, listing, index=index)
    if recurse:
        index, entries = await blocking(request, lambda: store.kv_list(key), kv_prefixes=(key,), opts=opts)
        if not entries:
            return _not_found(request, index)
        return json_response(request, lambda: [kv_json(e) for e in entries], index=index)
    index, entry = await blocking(request, lambda: store.kv_get(key), kv_keys=(key,), opts=opts)
    if entry is None:
        return _not_found(request, index)
    if flag(request, "raw"):
        resp = web.Response(body=entry.value or b"", status=200, headers={
            "Content-Type": "text/plain; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "X-Consul-Index": str(index),
            "X-Consul-Knownleader": "true" if agent.consensus.known_leader() else "false",
            "X-Consul-Lastcontact": str(agent.consensus.last_contact_ms()),
        })
        return resp
    return json_response(request, lambda: [kv_json(entry)], index=index)


def _not_found(request: web.Request, index: int) -> web.StreamResponse:
    resp = json_response(request, None, index=index, status=404)
    resp.body = b""
    return resp


def _uint_param(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "")
    try:
        v = int(raw)
        if v < 0:
            raise ValueError
        return v
    except ValueError:
        raise HTTPError(400, f"Invalid {name} value: {raw!r}") from None


async def kv_put(request: web.Request, key: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not key:
        raise HTTPError(400, "Missing key name")
    _check_key(key)
    present = [f for f in ("cas", "acquire", "release") if f in request.query]
    if len(present) > 1:
        raise HTTPError(400, f"Conflicting flags: {request.query_string}")
    flags = _uint_param(request, "flags") if "flags" in request.query else 0
    value = await read_body(request, MAX_KV_BODY)
    verb, index, session = "set", 0, ""
    if "cas" in request.query:
        verb, index = "cas", _uint_param(request, "cas")
    elif "acquire" in request.query:
        verb, session = "lock", request.query.get("acquire", "")
    elif "release" in request.query:
        verb, session = "unlock", request.query.get("release", "")
    cmd = commands.kv(verb, key, value=value, flags=flags, index=index, session=session, now=time.time())
    result = await agent.write(cmd)
    return json_response(request, bool(result))


async def kv_delete(request: web.Request, key: str) -> web.StreamResponse:
    agent = agent_of(request)
    recurse = flag(request, "recurse")
    if "cas" in request.query and recurse:
        raise HTTPError(400, f"Conflicting flags: {request.query_string}")
    if not key and not recurse:
        raise HTTPError(400, "Missing key name")
    _check_key(key)
    if recurse:
        cmd = commands.kv("delete-tree", key, now=time.time())
    elif "cas" in request.query:
        cmd = commands.kv("delete-cas", key, index=_uint_param(request, "cas"), now=time.time())
    else:
        cmd = commands.kv("delete", key, now=time.time())
    result = await agent.write(cmd)
    return json_response(request, bool(result))


# ---------------------------------------------------------------------- txn

_KV_VERBS = {"set", "cas", "lock", "unlock", "get", "get-or-empty", "get-tree", "check-index",
             "check-session", "check-not-exists", "delete", "delete-tree", "delete-cas"}
_READ_VERBS = {"get", "get-or-empty", "get-tree", "check-index", "check-session", "check-not-exists"}


def _txn_kv(raw: Any, i: int) -> dict[str, Any]:
    kv = norm(raw)
    verb = str(kv.get("verb") or "")
    if verb not in _KV_VERBS:
        raise HTTPError(400, f'Transaction contains errors:\n    * KV operation at index {i}: unknown KV verb "{verb}"')
    key = str(kv.get("key") or "")
    if verb not in ("delete-tree", "get-tree") and not key:
        raise HTTPError(400, f"Transaction contains errors:\n    * KV operation at index {i}: Missing key name")
    _check_key(key)
    value = None
    if kv.get("value") is not None:
        try:
            value = base64.b64decode(str(kv["value"]), validate=True)
        except ValueError:
            raise HTTPError(400, f"Transaction contains errors:\n    * KV operation at index {i}: "
                                 "Value must be base64") from None
        if len(value) > MAX_KV_BODY:
            raise HTTPError(413, f"Value for key {key!r} is too large ({len(value)} > {MAX_KV_BODY} bytes)")
    return {"kv": {"verb": verb, "key": key, "value": value, "flags": int(kv.get("flags") or 0),
                   "index": int(kv.get("index") or 0), "session": str(kv.get("session") or "")}}


def _txn_node(raw: Any) -> dict[str, Any]:
    d = norm(raw)
    n = norm(d.get("node"))
    return {"node": {"verb": str(d.get("verb") or ""), "node": {
        "node": str(n.get("node") or ""), "address": str(n.get("address") or ""), "id": str(n.get("id") or ""),
        "tagged_addresses": n.get("taggedaddresses") or {}, "meta": n.get("meta") or {},
        "modify_index": int(n.get("modifyindex") or 0)}}}


def _txn_service(raw: Any) -> dict[str, Any]:
    d = norm(raw)
    s = norm(d.get("service"))
    return {"service": {"verb": str(d.get("verb") or ""), "node": str(d.get("node") or ""), "service": {
        "id": str(s.get("id") or ""), "service": str(s.get("service") or s.get("name") or ""),
        "tags": list(s.get("tags") or []), "address": str(s.get("address") or ""), "port": int(s.get("port") or 0),
        "meta": s.get("meta") or {}, "modify_index": int(s.get("modifyindex") or 0)}}}


def _txn_check(raw: Any) -> dict[str, Any]:
    d = norm(raw)
    c = norm(d.get("check"))
    return {"check": {"verb": str(d.get("verb") or ""), "check": {
        "node": str(c.get("node") or ""), "check_id": str(c.get("checkid") or ""), "name": str(c.get("name") or ""),
        "status": str(c.get("status") or "critical"), "notes": str(c.get("notes") or ""),
        "output": str(c.get("output") or ""), "service_id": str(c.get("serviceid") or ""),
        "modify_index": int(c.get("modifyindex") or 0)}}}


def _result_json(item: dict[str, Any], dc: str) -> dict[str, Any]:
    if "kv" in item:
        entry: KVEntry = item["kv"]
        return {"KV": kv_json(entry, with_value=item.get("with_value", False))}
    if "node" in item:
        n: Node = item["node"]
        return {"Node": node_json(n, dc)}
    if "service" in item:
        s: ServiceInstance = item["service"]
        return {"Service": agent_service_json(s, dc)}
    c: HealthCheck = item["check"]
    return {"Check": check_json(c)}


async def txn(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = await read_json(request, limit=MAX_KV_BODY)
    if not isinstance(body, list):
        raise HTTPError(400, "Failed to parse body: expected a list of operations")
    if len(body) > MAX_TXN_OPS:
        raise HTTPError(413, f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    ops: list[dict[str, Any]] = []
    for i, raw in enumerate(body):
        d = norm(raw)
        if "kv" in d:
            ops.append(_txn_kv(d["kv"], i))
        elif "node" in d:
            ops.append(_txn_node(d["node"]))
        elif "service" in d:
            ops.append(_txn_service(d["service"]))
        elif "check" in d:
            ops.append(_txn_check(d["check"]))
        else:
            raise HTTPError(400, f"Transaction contains errors:\n    * Operation at index {i}: unknown type")
    read_only = all("kv" in op and op["kv"]["verb"] in _READ_VERBS for op in ops)
    if read_only:
        # Read-only transactions are answered locally, honouring ?stale / ?consistent.
        opts = query_options(request)
        if opts.consistency != "stale":
            await agent.consensus.read_barrier(opts.consistency)
        results: list[dict[str, Any]] = []
        for i, op in enumerate(ops):
            try:
                results.extend(agent.store.txn_read(op["kv"]))
            except CommandError as err:
                body_err = {"Results": None, "Errors": [{"OpIndex": i, "What": str(err)}]}
                return json_response(request, body_err, status=409, query_meta=True)
        out = [_result_json(r, agent.datacenter) for r in results]
        return json_response(request, {"Results": out, "Errors": None}, query_meta=True)
    result = await agent.write(commands.txn(ops, now=time.time()))
    if result["errors"]:
        return json_response(request, {"Results": None, "Errors": result["errors"]}, status=409)
    return json_response(request, {"Results": [_result_json(r, agent.datacenter) for r in result["results"]],
                                   "Errors": None})


ROUTES = [
    Route("/v1/kv/", {"GET": kv_get, "PUT": kv_put, "DELETE": kv_delete}),
    Route("/v1/txn", {"PUT": txn}),
]
