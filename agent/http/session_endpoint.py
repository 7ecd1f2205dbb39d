"""``/v1/session/*``, ``/v1/event/*``, ``/v1/status/*`` and ``/v1/operator/raft/*``.

Sessions follow ``api-docs/session.mdx``: ``LockDelay`` defaults to 15 s (a number under 1000 means
seconds), ``Checks`` defaults to ``["serfHealth"]`` and supplying the key at all replaces the default,
TTL is ``""`` or 10 s–24 h. TTL timers live on the leader (``agent.sessions``), not in the log.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from aiohttp import web

from agent.durations import DurationError, parse_duration_value
from agent.http.core import (
    HTTPError,
    Route,
    agent_of,
    blocking,
    json_response,
    query_options,
    read_body,
    read_json,
)
from agent.http.encode import event_json, session_json
from agent.local.definitions import norm
from agent.regex import RegexError, compile_re2
from agent.state import commands

__all__ = ["ROUTES"]

SESSION_TTL_MIN_S = 10.0
SESSION_TTL_MAX_S = 86400.0
LOCK_DELAY_MAX_S = 60.0


def _lock_delay_ns(raw: Any) -> int:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw < 1000:
        return int(raw * 1e9)  # Consul: a small bare number is seconds
    if isinstance(raw, str) and raw.strip().isdigit() and int(raw) < 1000:
        return int(raw) * 1_000_000_000
    try:
        seconds = parse_duration_value(raw)
    except DurationError:
        raise HTTPError(400, f"Request decode failed: invalid LockDelay {raw!r}") from None
    return int(min(seconds, LOCK_DELAY_MAX_S) * 1e9)


async def create(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    body = norm(await read_json(request, required=False) or {})
    ttl = str(body.get("ttl") or "")
    if ttl:
        try:
            ttl_s = parse_duration_value(ttl)
        except DurationError:
            raise HTTPError(400, f"Request decode failed: invalid TTL {ttl!r}") from None
        if ttl_s != 0 and not SESSION_TTL_MIN_S <= ttl_s <= SESSION_TTL_MAX_S:
            raise HTTPError(400, f"Invalid Session TTL '{ttl}', must be between [10s=24h0m0s]")
        if ttl_s == 0:
            ttl = ""
    behavior = str(body.get("behavior") or "release")
    if behavior not in ("release", "delete"):
        raise HTTPError(400, f"Invalid Behavior setting '{behavior}'")
    node_checks: list[str]
    if "checks" in body or "nodechecks" in body:
        node_checks = [str(c) for c in (body.get("checks") or [])] + [str(c) for c in (body.get("nodechecks") or [])]
    else:
        node_checks = ["serfHealth"]
    service_checks = []
    for sc in body.get("servicechecks") or []:
        scn = norm(sc)
        service_checks.append({"ID": str(scn.get("id") or ""), "Namespace": str(scn.get("namespace") or "")})
    record = {
        "id": str(uuid.uuid4()),
        "name": str(body.get("name") or ""),
        "node": str(body.get("node") or agent.node_name),
        "lock_delay_ns": _lock_delay_ns(body["lockdelay"]) if body.get("lockdelay") is not None else 15_000_000_000,
        "behavior": behavior,
        "ttl": ttl,
        "node_checks": node_checks,
        "service_checks": service_checks,
    }
    session_id = str(record["id"])
    result = await agent.write(commands.session_create(record, now=time.time()))
    agent.sessions.created(session_id, ttl)
    return json_response(request, {"ID": result})


async def destroy(request: web.Request, session_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not session_id:
        raise HTTPError(400, "Missing session")
    await agent.write(commands.session_destroy(session_id, now=time.time()))
    agent.sessions.destroyed(session_id)
    return json_response(request, True)


async def renew(request: web.Request, session_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not session_id:
        raise HTTPError(400, "Missing session")
    sess = agent.store.sessions.get(session_id)
    if sess is None:
        raise HTTPError(404, f"Session id '{session_id}' not found")
    await agent.renew_session(session_id, sess.ttl)
    return json_response(request, [session_json(sess)])


async def info(request: web.Request, session_id: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not session_id:
        raise HTTPError(400, "Missing session")
    index, sess = await blocking(request, lambda: agent.store.session_get(session_id), topics=("sessions",))
    return json_response(request, [session_json(sess)] if sess else [], index=index)


async def node_sessions(request: web.Request, node: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not node:
        raise HTTPError(400, "Missing node name")
    index, items = await blocking(request, lambda: agent.store.session_list(node), topics=("sessions",))
    return json_response(request, [session_json(s) for s in items], index=index)


async def list_sessions(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    index, items = await blocking(request, lambda: agent.store.session_list(), topics=("sessions",))
    return json_response(request, [session_json(s) for s in items], index=index)


# -------------------------------------------------------------------- events

def _event_index(event_id: str) -> int:
    """Consul's event-list index: the XOR of the two 64-bit halves of the last event's UUID."""
    raw = uuid.UUID(event_id).int
    return ((raw >> 64) ^ (raw & ((1 << 64) - 1))) or 1


def _regex(request: web.Request, name: str) -> str:
    pattern = request.query.get(name, "")
    if pattern:
        try:
            compile_re2(pattern)
        except RegexError as err:
            raise HTTPError(400, f"Invalid {name} filter: {err}") from None
    return pattern


async def fire(request: web.Request, name: str) -> web.StreamResponse:
    agent = agent_of(request)
    if not name:
        raise HTTPError(400, "Missing name")
    if name.startswith("_"):
        raise HTTPError(400, "User events cannot start with '_'")
    payload = await read_body(request, 9 * 1024)
    record = {
        "id": str(uuid.uuid4()), "name": name, "payload": payload or None,
        "node_filter": _regex(request, "node"), "service_filter": _regex(request, "service"),
        "tag_filter": _regex(request, "tag"), "version": 1, "ltime": 0,
    }
    await agent.fire_event(record)
    body = event_json(_as_event(record), with_payload=False)
    return json_response(request, body)


def _as_event(record: dict[str, Any]) -> Any:
    from agent.state.structs import UserEvent, from_record

    return from_record(UserEvent, record)


async def list_events(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    name = request.query.get("name", "")

    store = agent.events  # this agent's own buffer: events travel by gossip, not Raft

    def run() -> tuple[int, list[Any]]:
        events = store.event_list(name)
        last = store.events[-1] if store.events else None
        return (_event_index(last.id) if last else 1), events

    opts = query_options(request)
    index, events = run()
    if opts.index and index == opts.index:
        # The index is a hash, not a counter: block on the events table while it is unchanged.
        base = replace(opts, index=store.table_index("events"))
        await blocking(request, lambda: (store.table_index("events"), None), topics=("events",), opts=base,
                       local=store)
        index, events = run()
    return json_response(request, [event_json(e) for e in events], index=index)


# -------------------------------------------------------------- status/raft

async def status_leader(request: web.Request, _: str) -> web.StreamResponse:
    return json_response(request, agent_of(request).consensus.leader_address())


async def status_peers(request: web.Request, _: str) -> web.StreamResponse:
    return json_response(request, agent_of(request).consensus.peers())


async def raft_configuration(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    if "stale" not in request.query and not agent.consensus.known_leader():
        raise HTTPError(500, "No cluster leader")
    return json_response(request, agent.consensus.configuration())


async def raft_remove_peer(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    server_id = request.query.get("id", "")
    address = request.query.get("address", "")
    if bool(server_id) == bool(address):
        raise HTTPError(400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
    await agent.remove_peer(server_id=server_id, address=address)
    return web.Response(status=200)


async def raft_transfer_leader(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    new_leader = await agent.transfer_leadership(request.query.get("id", ""))
    return json_response(request, {"Success": bool(new_leader)})


async def autopilot_health(request: web.Request, _: str) -> web.StreamResponse:
    health = await agent_of(request).autopilot_health()
    return json_response(request, health, status=200 if health["Healthy"] else 429)


ROUTES = [
    Route("/v1/session/create", {"PUT": create}),
    Route("/v1/session/destroy/", {"PUT": destroy}),
    Route("/v1/session/renew/", {"PUT": renew}),
    Route("/v1/session/info/", {"GET": info}),
    Route("/v1/session/node/", {"GET": node_sessions}),
    Route("/v1/session/list", {"GET": list_sessions}),
    Route("/v1/event/fire/", {"PUT": fire}),
    Route("/v1/event/list", {"GET": list_events}),
    Route("/v1/status/leader", {"GET": status_leader}),
    Route("/v1/status/peers", {"GET": status_peers}),
    Route("/v1/operator/raft/configuration", {"GET": raft_configuration}),
    Route("/v1/operator/raft/peer", {"DELETE": raft_remove_peer}),
    Route("/v1/operator/raft/transfer-leader", {"POST": raft_transfer_leader}),
    Route("/v1/operator/autopilot/health", {"GET": autopilot_health}),
]
