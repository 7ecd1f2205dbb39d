"""The aiohttp application: every ``/v1`` route behind one dispatcher with Consul's 404/405 rules.

aiohttp was chosen over the alternatives for blocking queries: an idle long-poll costs one suspended
coroutine and one timer, so thousands of waiters are cheap, and its request path is among the
fastest pure-asyncio HTTP servers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from agent.http import (
    agent_endpoint,
    catalog_endpoint,
    forward,
    keyring_endpoint,
    kv_endpoint,
    session_endpoint,
    snapshot_endpoint,
    ui_endpoint,
)
from agent.http.core import AGENT_KEY, BODY_CACHE_KEY, MAX_BODY, BodyCache, Router, agent_of, error_middleware

if TYPE_CHECKING:
    from agent.server import Agent

__all__ = ["build_app"]

ROUTER = Router(
    agent_endpoint.ROUTES + catalog_endpoint.ROUTES + kv_endpoint.ROUTES + session_endpoint.ROUTES
    + snapshot_endpoint.ROUTES + ui_endpoint.ROUTES + keyring_endpoint.ROUTES
)


async def dispatch(request: web.Request) -> web.StreamResponse:
    path = request.path
    agent = agent_of(request)
    if agent.pool is not None and not forward.is_local(path):
        return await forward.forward(agent, request)  # a client agent: a server answers
    found = ROUTER.find(path)
    if found is None:
        if path == "/":
            if agent_of(request).config.ui:
                return ui_endpoint.redirect_to_ui()
            return web.Response(text="Consul Agent (ctk): the HTTP API is under /v1/")
        if path.startswith("/v1/"):
            return web.Response(status=404, text="Invalid URL path: not a recognized HTTP API endpoint")
        return web.Response(status=404, text="Invalid URL path: if attempting to use the HTTP API, ensure "
                                             "the path starts with '/v1/'")
    route, rest = found
    allow = ", ".join(["OPTIONS", *route.methods])
    if request.method == "OPTIONS":
        return web.Response(status=200, headers={"Allow": allow})
    handler = route.methods.get(request.method)
    if handler is None:
        return web.Response(status=405, text=f"method {request.method} not allowed", headers={"Allow": allow})
    return await handler(request, rest)


def build_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[AGENT_KEY] = agent
    app[BODY_CACHE_KEY] = BodyCache()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
