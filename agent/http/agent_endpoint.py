"""``/v1/agent/*``: this agent's own services, checks, maintenance and lifecycle (``api-docs/agent``).

Agent endpoints answer from local state, not from Raft: no ``X-Consul-Index``. Registrations belong
to this agent and reach the catalog through anti-entropy; writes answer 200 with an empty body.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from agent.http.core import (
    HTTPError,
    Route,
    agent_of,
    empty_ok,
    json_response,
    parse_bool_param,
    read_json,
)
from agent.http.encode import agent_service_json
from agent.http.filter import (
    AGENT_SERVICE,
    EVALUATOR_ERROR,
    HEALTH_CHECK,
    MEMBER,
    Filter,
    FilterError,
    Shape,
    compile_filter,
)
from agent.local.definitions import norm, parse_check, parse_service
from agent.local.state import LocalCheck, UnknownService
from agent.state.structs import (
    CRITICAL,
    MAINTENANCE,
    NODE_MAINT_CHECK_ID,
    PASSING,
    SERVICE_MAINT_PREFIX,
    WARNING,
    ServiceInstance,
    from_record,
)

__all__ = ["ROUTES"]


def _filter(request: web.Request, shape: Shape) -> Filter:
    """``?filter=`` (agent/http/filter.py); a bad expression is Consul's 400."""
    try:
        return compile_filter(request.query.get("filter", ""), shape)
    except FilterError as err:
        raise HTTPError(400, f"{EVALUATOR_ERROR}: {err}") from None


def local_check_json(agent_node: str, lc: LocalCheck) -> dict[str, Any]:
    d = lc.definition
    spec = d.spec
    return {
        "Node": agent_node,
        "CheckID": d.check_id,
        "Name": d.name,
        "Status": lc.status,
        "Notes": d.notes,
        "Output": lc.output,
        "ServiceID": d.service_id,
        "ServiceName": "",
        "ServiceTags": [],
        "Type": spec.type if spec is not None else ("maintenance" if lc.source == "maintenance" else ""),
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": d.definition_json(),
        "CreateIndex": 0,
        "ModifyIndex": 0,
    }


def _service_json(request: web.Request, service_id: str) -> dict[str, Any] | None:
    agent = agent_of(request)
    ls = agent.local.services.get(service_id)
    if ls is None:
        return None
    inst = from_record(ServiceInstance, ls.definition.record(agent.node_name))
    return agent_service_json(inst, agent.datacenter, with_indexes=False)


async def self_(request: web.Request, _: str) -> web.StreamResponse:
    return json_response(request, agent_of(request).self_json())


async def members(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    wan = bool(request.query.get("wan"))
    if wan and request.query.get("segment"):
        raise HTTPError(400, "Cannot provide a segment with wan=true")
    flt = _filter(request, MEMBER)
    return json_response(request, flt.select(agent.members_json(wan=wan)))


async def services(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    flt = _filter(request, AGENT_SERVICE)
    out = {sid: _service_json(request, sid) for sid in sorted(agent.local.services)}
    return json_response(request, flt.select_values(out))


async def service(request: web.Request, service_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not service_id:
        raise HTTPError(400, "Missing serviceID")

    def current() -> tuple[str, dict[str, Any] | None]:
        data = _service_json(request, service_id)
        h = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        return h, data

    content_hash, data = current()
    want = request.query.get("hash", "")
    if want and want == content_hash and data is not None:
        # Hash-based blocking: wait for a local change, up to ?wait.
        from agent.http.core import query_options

        opts = query_options(request)
        await agent.wait_local_change(opts.wait_s)
        content_hash, data = current()
    if data is None:
        raise HTTPError(404, f"unknown service ID: {service_id}")
    data["ContentHash"] = content_hash
    return json_response(request, data, headers={"X-Consul-ContentHash": content_hash})


async def checks(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    flt = _filter(request, HEALTH_CHECK)
    out: dict[str, Any] = {}
    for cid in sorted(agent.local.checks):
        lc = agent.local.checks[cid]
        item = local_check_json(agent.node_name, lc)
        ls = agent.local.services.get(lc.definition.service_id)
        if ls is not None:
            item["ServiceName"] = ls.definition.name
            item["ServiceTags"] = list(ls.definition.tags)
        out[cid] = item
    return json_response(request, flt.select_values(out))


async def service_register(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = await read_json(request)
    svc = parse_service(body)
    replace = parse_bool_param(request, "replace-existing-checks") or False
    await agent.register_service(svc, source="http", replace_existing_checks=replace)
    return empty_ok()


async def service_deregister(request: web.Request, service_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not service_id:
        raise HTTPError(400, "Missing service ID")
    await agent.deregister_service(service_id)
    return empty_ok()


async def check_register(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = await read_json(request)
    chk = parse_check(body)
    if not chk.name:
        raise HTTPError(400, "Missing check name")
    try:
        await agent.register_check(chk, source="http")
    except UnknownService as err:
        raise HTTPError(404, f'ServiceID "{err.args[0]}" does not exist') from None
    return empty_ok()


async def check_deregister(request: web.Request, check_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not check_id:
        raise HTTPError(400, "Missing check ID")
    await agent.deregister_check(check_id)
    return empty_ok()


def _ttl_handler(status: str) -> Any:
    async def handler(request: web.Request, check_id: str) -> web.StreamResponse:
        agent = agent_of(request)
        note = request.query.get("note", "")
        await agent.update_ttl_check(check_id, status, note)
        return empty_ok()

    return handler


async def check_update(request: web.Request, check_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = norm(await read_json(request))
    status = body.get("status", "")
    if status not in (PASSING, WARNING, CRITICAL):
        raise HTTPError(400, f"Invalid check status: '{status}'")
    output = body.get("output", "") or ""
    if not isinstance(output, str):
        raise HTTPError(400, "Output must be a string")
    await agent.update_ttl_check(check_id, status, output)
    return empty_ok()


def _enable_param(request: web.Request) -> bool:
    if "enable" not in request.query or request.query.get("enable", "") == "":
        raise HTTPError(400, "Missing value for enable")
    raw = request.query["enable"]
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise HTTPError(400, f'Invalid value for enable: "{raw}"')


async def service_maintenance(request: web.Request, service_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not service_id:
        raise HTTPError(400, "Missing service ID")
    enable = _enable_param(request)
    try:
        agent.local.set_service_maintenance(service_id, enable, request.query.get("reason", ""))
    except UnknownService:
        raise HTTPError(404, f'No service registered with ID "{service_id}"') from None
    await agent.after_local_change()
    return empty_ok()


async def node_maintenance(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    enable = _enable_param(request)
    agent.local.set_node_maintenance(enable, request.query.get("reason", ""))
    await agent.after_local_change()
    return empty_ok()


async def reload(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    errors = await agent.reload()
    if errors:
        raise HTTPError(500, "Failed reloading: " + "; ".join(errors))
    return empty_ok()


async def leave(request: web.Request, _: str) -> web.StreamResponse:
    agent_of(request).request_leave()
    return empty_ok()


async def join(request: web.Request, address: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not address:
        raise HTTPError(400, "Missing address to join")
    await agent.join([address], wan=bool(request.query.get("wan")))
    return empty_ok()


async def force_leave(request: web.Request, node: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not node:
        raise HTTPError(400, "Missing node name")
    await agent.force_leave(node, prune="prune" in request.query)
    return empty_ok()


def _aggregate(statuses: list[str]) -> str:
    if MAINTENANCE in statuses:
        return MAINTENANCE
    for s in (CRITICAL, WARNING):
        if s in statuses:
            return s
    return PASSING


_AGG_HTTP = {PASSING: 200, WARNING: 429, CRITICAL: 503, MAINTENANCE: 503}


def _service_health(request: web.Request, service_id: str) -> tuple[str, dict[str, Any]]:
    agent = agent_of(request)
    statuses: list[str] = []
    check_list = []
    for lc in agent.local.service_checks(service_id):
        s = MAINTENANCE if lc.check_id.startswith(SERVICE_MAINT_PREFIX) else lc.status
        statuses.append(s)
        check_list.append(local_check_json(agent.node_name, lc))
    node_maint = agent.local.checks.get(NODE_MAINT_CHECK_ID)
    if node_maint is not None:
        statuses.append(MAINTENANCE)
    agg = _aggregate(statuses)
    return agg, {"AggregatedStatus": agg, "Service": _service_json(request, service_id), "Checks": check_list}


def _text_wanted(request: web.Request) -> bool:
    return request.query.get("format") == "text" or request.headers.get("Accept", "") == "text/plain"


async def health_by_id(request: web.Request, service_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not service_id:
        raise HTTPError(400, "Missing serviceID")
    if service_id not in agent.local.services:
        if _text_wanted(request):
            return web.Response(status=404, text=f"ServiceId {service_id} not found")
        raise HTTPError(404, f"ServiceId {service_id} not found")
    agg, body = _service_health(request, service_id)
    if _text_wanted(request):
        return web.Response(status=_AGG_HTTP[agg], text=agg)
    return json_response(request, body, status=_AGG_HTTP[agg])


async def health_by_name(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing service Name")
    ids = [sid for sid, ls in agent.local.services.items() if ls.definition.name == name]
    if not ids:
        if _text_wanted(request):
            return web.Response(status=404, text=f"ServiceName {name} Not Found")
        raise HTTPError(404, f"ServiceName {name} Not Found")
    results = [_service_health(request, sid) for sid in sorted(ids)]
    agg = _aggregate([a for a, _ in results])
    if _text_wanted(request):
        return web.Response(status=_AGG_HTTP[agg], text=agg)
    return json_response(request, [b for _, b in results], status=_AGG_HTTP[agg])


async def version(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    return json_response(request, {"SHA": "", "BuildDate": "", "HumanVersion": agent.version,
                                   "FIPS": ""})


async def token(request: web.Request, _: str) -> web.StreamResponse:
    raise HTTPError(401, "ACL support disabled")


ROUTES = [
    Route("/v1/agent/self", {"GET": self_}),
    Route("/v1/agent/members", {"GET": members}),
    Route("/v1/agent/services", {"GET": services}),
    Route("/v1/agent/service/register", {"PUT": service_register}),
    Route("/v1/agent/service/deregister/", {"PUT": service_deregister}),
    Route("/v1/agent/service/maintenance/", {"PUT": service_maintenance}),
    Route("/v1/agent/service/", {"GET": service}),
    Route("/v1/agent/checks", {"GET": checks}),
    Route("/v1/agent/check/register", {"PUT": check_register}),
    Route("/v1/agent/check/deregister/", {"PUT": check_deregister}),
    Route("/v1/agent/check/pass/", {"PUT": _ttl_handler(PASSING)}),
    Route("/v1/agent/check/warn/", {"PUT": _ttl_handler(WARNING)}),
    Route("/v1/agent/check/fail/", {"PUT": _ttl_handler(CRITICAL)}),
    Route("/v1/agent/check/update/", {"PUT": check_update}),
    Route("/v1/agent/maintenance", {"PUT": node_maintenance}),
    Route("/v1/agent/reload", {"PUT": reload}),
    Route("/v1/agent/leave", {"PUT": leave}),
    Route("/v1/agent/join/", {"PUT": join}),
    Route("/v1/agent/force-leave/", {"PUT": force_leave}),
    Route("/v1/agent/health/service/id/", {"GET": health_by_id}),
    Route("/v1/agent/health/service/name/", {"GET": health_by_name}),
    Route("/v1/agent/version", {"GET": version}),
    Route("/v1/agent/token/", {"PUT": token}),
]
