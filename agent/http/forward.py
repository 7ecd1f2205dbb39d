"""A client agent's ``/v1`` requests that need the catalog: answered by a server (agent/client.py).

The agent's own endpoints (``/v1/agent/*``), its user-event buffer (``/v1/event/*``) and the gossip
keyring (``/v1/operator/keyring``) stay local, as in Consul; everything else — catalog, health, KV, sessions, txn, status, operator, snapshots — is sent
whole to a server, which answers it with its own HTTP API. A blocking query therefore blocks on the
server, and the response (status, ``X-Consul-*`` headers, body) comes back unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from agent.consensus import ConsensusError
from agent.http.core import MAX_BODY, HTTPError, read_body

if TYPE_CHECKING:
    from agent.server import Agent

__all__ = ["is_local", "forward"]

LOCAL_PREFIXES = ("/v1/agent/", "/v1/event/", "/v1/operator/keyring")
_FORWARDED_HEADERS = ("content-type", "x-consul-token", "authorization", "accept-encoding", "cache-control")


def is_local(path: str) -> bool:
    return not path.startswith("/v1/") or path.startswith(LOCAL_PREFIXES)


async def forward(agent: Agent, request: web.Request) -> web.StreamResponse:
    body = await read_body(request, MAX_BODY)  # the server applies its own, tighter limits (KV: 512 KiB)
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_HEADERS}
    try:
        result = await agent.forward_http(request.method, request.path_qs, headers, body,
                                          blocking="index" in request.query)
    except ConsensusError as err:
        raise HTTPError(500, str(err)) from None
    return web.Response(status=int(result["status"]), body=bytes(result.get("body") or b""),
                        headers=[(str(k), str(v)) for k, v in result.get("headers") or []])
