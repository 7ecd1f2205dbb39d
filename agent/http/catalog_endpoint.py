"""``/v1/catalog/*`` and ``/v1/health/*``: the replicated view, with blocking queries.

``api-docs/catalog.mdx``, ``health.mdx``. Catalog registrations made here are not owned by any agent
(no anti-entropy protects them); on a node that runs an agent, that agent removes them at its next
sync — the behaviour ``ctk services dedupe`` exists to explain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agent.http.core import HTTPError, Route, agent_of, blocking, json_response, parse_bool_param, read_json
from agent.http.encode import (
    agent_service_json,
    catalog_service_json,
    check_json,
    health_entry_json,
    node_json,
)
from agent.http.filter import (
    AGENT_SERVICE,
    CATALOG_SERVICE,
    EVALUATOR_ERROR,
    HEALTH_CHECK,
    HEALTH_SERVICE_ENTRY,
    NODE,
    Filter,
    FilterError,
    Shape,
    compile_filter,
)
from agent.local.definitions import DefinitionError, norm, parse_service
from agent.state import commands
from agent.state.structs import CHECK_STATUSES, Node, ServiceInstance

__all__ = ["ROUTES"]


def _dc_check(request: web.Request) -> None:
    dc = request.query.get("dc", "")
    agent = agent_of(request)
    if dc and dc != agent.datacenter:
        raise HTTPError(500, "No path to datacenter")


def _filter(request: web.Request, shape: Shape) -> Filter:
    """``?filter=`` (agent/http/filter.py), compiled before the read blocks: a bad expression is an
    immediate 400, never a long-poll. Filtering happens after the read, so the query blocks on the same
    index as the unfiltered one, and the body cache keys on the whole query string, ``filter`` included."""
    try:
        return compile_filter(request.query.get("filter", ""), shape)
    except FilterError as err:
        raise HTTPError(400, f"{EVALUATOR_ERROR}: {err}") from None


def _catalog_check_record(raw: Any, node: str) -> dict[str, Any]:
    c = norm(raw)
    status = c.get("status") or "critical"
    if status not in CHECK_STATUSES:
        raise HTTPError(400, f"Invalid check status: '{status}'")
    definition = c.get("definition") or {}
    if not isinstance(definition, dict):
        raise HTTPError(400, "Check.Definition must be an object")
    return {
        "node": node,
        "check_id": str(c.get("checkid") or c.get("id") or c.get("name") or ""),
        "name": str(c.get("name") or ""),
        "status": status,
        "notes": str(c.get("notes") or ""),
        "output": str(c.get("output") or ""),
        "service_id": str(c.get("serviceid") or ""),
        "type": str(c.get("type") or ""),
        "definition": definition,
    }


async def register(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = norm(await read_json(request))
    node = str(body.get("node") or "")
    if not node:
        raise HTTPError(400, "Must provide node")
    address = str(body.get("address") or "")
    dc = str(body.get("datacenter") or agent.datacenter)
    if dc != agent.datacenter:
        raise HTTPError(500, "No path to datacenter")
    tagged = body.get("taggedaddresses") or {}
    meta = body.get("nodemeta") or {}
    if not isinstance(tagged, dict) or not isinstance(meta, dict):
        raise HTTPError(400, "TaggedAddresses and NodeMeta must be objects")
    node_rec = {"node": node, "address": address, "id": str(body.get("id") or ""), "datacenter": dc,
                "tagged_addresses": {str(k): str(v) for k, v in tagged.items()},
                "meta": {str(k): str(v) for k, v in meta.items()}}
    service_rec = None
    if body.get("service"):
        try:
            svc = parse_service(body["service"])
        except DefinitionError as err:
            raise HTTPError(400, str(err)) from None
        service_rec = svc.record(node)
    checks = []
    if body.get("check"):
        checks.append(_catalog_check_record(body["check"], node))
    for raw in body.get("checks") or []:
        checks.append(_catalog_check_record(raw, node))
    cmd = commands.register(node_rec, service=service_rec, checks=checks,
                            skip_node_update=bool(body.get("skipnodeupdate")), now=time.time())
    result = await agent.write(cmd)
    return json_response(request, result is True)


async def deregister(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = norm(await read_json(request))
    node = str(body.get("node") or "")
    if not node:
        raise HTTPError(400, "Must provide node")
    cmd = commands.deregister(node, service_id=str(body.get("serviceid") or ""),
                              check_id=str(body.get("checkid") or ""), now=time.time())
    await agent.write(cmd)
    return json_response(request, True)


async def datacenters(request: web.Request, _: str) -> web.StreamResponse:
    return json_response(request, [agent_of(request).datacenter])


async def nodes(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    _dc_check(request)
    flt = _filter(request, NODE)
    index, items = await blocking(request, agent.store.all_nodes, topics=("nodes",))
    dc = agent.datacenter
    out = [node_json(n, dc) for n in items]
    out = _near_sort(request, out, lambda e: str(e["Node"]))
    out = _filter_meta(request, out, lambda e: e.get("Meta"))
    return json_response(request, flt.select(out), index=index)


async def services(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    _dc_check(request)
    flt = _filter(request, CATALOG_SERVICE)
    run = agent.store.service_names if flt.matches_everything else _service_names_matching(request, flt)
    index, names = await blocking(request, run, topics=("services",))
    return json_response(request, names, index=index)


def _service_names_matching(
    request: web.Request, flt: Filter
) -> Callable[[], tuple[int, dict[str, list[str]]]]:
    """``/v1/catalog/services?filter=``: Consul filters the service *instances* (catalog/service shape),
    then answers the names, and union of tags, of those that match."""
    agent = agent_of(request)
    store, dc = agent.store, agent.datacenter

    def run() -> tuple[int, dict[str, list[str]]]:
        out: dict[str, set[str]] = {}
        for node_name in sorted(store.services):
            n = store.nodes.get(node_name)
            for s in store.services[node_name].values():
                if n is not None and flt.matches(catalog_service_json(n, s, dc)):
                    out.setdefault(s.service, set()).update(s.tags)
        return store.table_index("services"), {k: sorted(v) for k, v in sorted(out.items())}

    return run


def _tags(request: web.Request) -> list[str]:
    return request.query.getall("tag", [])


async def service(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing service name")
    _dc_check(request)
    flt = _filter(request, CATALOG_SERVICE)
    tags = _tags(request)
    index, pairs = await blocking(request, lambda: agent.store.service_nodes(name, tags),
                                  topics=("service:" + name,))
    dc = agent.datacenter
    out = [catalog_service_json(n, s, dc) for n, s in pairs]
    out = _near_sort(request, out, lambda e: str(e["Node"]))
    out = _filter_meta(request, out, lambda e: e.get("NodeMeta"))
    return json_response(request, flt.select(out), index=index)


async def node(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing node name")
    _dc_check(request)
    flt = _filter(request, AGENT_SERVICE)  # Consul filters the Services, not the node
    index, (n, svcs) = await blocking(request, _node_services_query(request, name), topics=("node:" + name,))
    if n is None:
        return json_response(request, None, index=index)
    dc = agent.datacenter
    services = flt.select_values({s.id: agent_service_json(s, dc) for s in svcs})
    body = {"Node": node_json(n, dc), "Services": services}
    return json_response(request, body, index=index)


async def node_services(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing node name")
    _dc_check(request)
    flt = _filter(request, AGENT_SERVICE)  # Consul filters the Services, not the node
    index, (n, svcs) = await blocking(request, _node_services_query(request, name), topics=("node:" + name,))
    if n is None:
        return json_response(request, None, index=index)
    dc = agent.datacenter
    body = {"Node": node_json(n, dc), "Services": flt.select(agent_service_json(s, dc) for s in svcs)}
    return json_response(request, body, index=index)


def _node_services_query(
    request: web.Request, name: str
) -> Callable[[], tuple[int, tuple[Node | None, list[ServiceInstance]]]]:
    store = agent_of(request).store

    def run() -> tuple[int, tuple[Node | None, list[ServiceInstance]]]:
        index, n, svcs = store.node_services(name)
        return index, (n, svcs)

    return run


def _near_sort(
    request: web.Request, items: list[dict[str, Any]], node_of: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """``?near=`` is accepted; without network coordinates the named node simply sorts first."""
    near = request.query.get("near", "")
    if not near:
        return items
    target = agent_of(request).node_name if near == "_agent" else near
    return sorted(items, key=lambda e: node_of(e) != target)


def _filter_meta(
    request: web.Request, items: list[dict[str, Any]], meta_of: Callable[[dict[str, Any]], Any]
) -> list[dict[str, Any]]:
    """``?node-meta=key:value`` (repeatable): keep entries whose node meta has every pair."""
    pairs = request.query.getall("node-meta", [])
    if not pairs:
        return items
    want = [p.partition(":")[::2] for p in pairs]
    return [e for e in items if all((meta_of(e) or {}).get(k) == v for k, v in want)]


# ------------------------------------------------------------------- health

async def health_node(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing node name")
    _dc_check(request)
    flt = _filter(request, HEALTH_CHECK)
    index, items = await blocking(request, lambda: agent.store.node_checks(name), topics=("node:" + name,))
    return json_response(request, flt.select(check_json(c) for c in items), index=index)


async def health_checks(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing service name")
    _dc_check(request)
    flt = _filter(request, HEALTH_CHECK)
    index, items = await blocking(request, lambda: agent.store.service_checks(name),
                                  topics=("service:" + name,))
    return json_response(request, flt.select(check_json(c) for c in items), index=index)


async def health_state(request: web.Request, state: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not state:
        raise HTTPError(400, "Missing check state")
    if state not in ("any",) + CHECK_STATUSES:
        raise HTTPError(400, "Invalid check state")
    _dc_check(request)
    flt = _filter(request, HEALTH_CHECK)
    index, items = await blocking(request, lambda: agent.store.checks_in_state(state), topics=("checks",))
    return json_response(request, flt.select(check_json(c) for c in items), index=index)


async def health_service(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing service name")
    _dc_check(request)
    flt = _filter(request, HEALTH_SERVICE_ENTRY)
    passing = parse_bool_param(request, "passing") or False
    tags = _tags(request)
    index, entries = await blocking(request, lambda: agent.store.health_service(name, tags, passing),
                                    topics=("service:" + name,))
    dc = agent.datacenter

    def body() -> list[dict[str, Any]]:
        out = [health_entry_json(n, s, c, dc) for n, s, c in entries]
        out = _near_sort(request, out, lambda e: str(e["Node"]["Node"]))
        return flt.select(_filter_meta(request, out, lambda e: e["Node"].get("Meta")))

    return json_response(request, body, index=index)


ROUTES = [
    Route("/v1/catalog/register", {"PUT": register}),
    Route("/v1/catalog/deregister", {"PUT": deregister}),
    Route("/v1/catalog/datacenters", {"GET": datacenters}),
    Route("/v1/catalog/nodes", {"GET": nodes}),
    Route("/v1/catalog/services", {"GET": services}),
    Route("/v1/catalog/service/", {"GET": service}),
    Route("/v1/catalog/node/", {"GET": node}),
    Route("/v1/catalog/node-services/", {"GET": node_services}),
    Route("/v1/health/node/", {"GET": health_node}),
    Route("/v1/health/checks/", {"GET": health_checks}),
    Route("/v1/health/state/", {"GET": health_state}),
    Route("/v1/health/service/", {"GET": health_service}),
]
