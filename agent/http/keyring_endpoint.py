"""``/v1/operator/keyring``: list, install, use and remove gossip encryption keys cluster-wide.

Shapes follow ``api-docs/operator/keyring.mdx``: GET lists per pool (``Keys`` and ``PrimaryKeys``
count members per key, ``NumNodes``); POST installs, PUT makes primary, DELETE removes — each with a
``{"Key": "<base64>"}`` body. A malformed key or a refused operation is a 400 with the reason; members
that did not apply a change within the timeout make it a 500 naming them (see agent/cluster_keyring.py).
"""

from __future__ import annotations

from aiohttp import web

from agent.cluster_keyring import NotEncrypted
from agent.gossip.keyring import KeyringError
from agent.http.core import HTTPError, Route, agent_of, json_response, read_json
from agent.local.definitions import norm

__all__ = ["ROUTES"]


async def keyring_list(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    try:
        return json_response(request, agent.keyring.list(agent.datacenter))
    except NotEncrypted as err:
        raise HTTPError(500, str(err)) from None


async def keyring_change(request: web.Request, _: str) -> web.StreamResponse:
    op = {"POST": "install", "PUT": "use", "DELETE": "remove"}[request.method]
    body = norm(await read_json(request) or {})
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise HTTPError(400, 'Request decode failed: expected a body {"Key": "<base64 key>"}')
    agent = agent_of(request)
    try:
        result = await agent.keyring.change(op, key)
    except NotEncrypted as err:
        raise HTTPError(500, str(err)) from None
    except KeyringError as err:
        raise HTTPError(400, str(err)) from None
    if result["NumErrs"]:
        behind = ", ".join(f"{name}: {msg}" for name, msg in sorted(result["Messages"].items()))
        raise HTTPError(500, f"{result['NumErrs']}/{result['NumNodes']} nodes reported failure: {behind}")
    return web.Response(status=200)


ROUTES = [
    Route("/v1/operator/keyring", {"GET": keyring_list, "POST": keyring_change, "PUT": keyring_change,
                                   "DELETE": keyring_change}),
]
