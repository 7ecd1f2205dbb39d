"""``/v1/snapshot``: save (GET) and restore (PUT) the whole state as a Consul-format archive
(``api-docs/snapshot.mdx``). A restore is replicated through the log like any write, so every
server ends up with the same state."""

from __future__ import annotations

from aiohttp import web

from agent.http.core import HTTPError, Route, agent_of, query_options, read_body
from agent.state.archive import ArchiveError, build_archive, read_archive

__all__ = ["ROUTES"]

MAX_SNAPSHOT_BYTES = 100 * 1024 * 1024


async def save(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    opts = query_options(request)
    if opts.consistency != "stale":
        await agent.consensus.read_barrier("default")
    state = agent.store.snapshot()
    index = agent.store.last_index
    term = int(agent.consensus.stats().get("last_log_term", "0") or 0)
    servers = agent.consensus.configuration().get("Servers", [])
    blob = build_archive(state, index, term, servers)
    return web.Response(body=blob, headers={"Content-Type": "application/x-gzip",
                                            "X-Consul-Index": str(max(1, index))})


async def restore(request: web.Request, _: str) -> web.StreamResponse:
    agent = agent_of(request)
    blob = await read_body(request, MAX_SNAPSHOT_BYTES)
    try:
        archive = read_archive(blob)
    except ArchiveError as err:
        raise HTTPError(400, f"Snapshot restore failed: {err}") from None
    result = await agent.write({"op": "restore", "state": archive.state})
    if result is not True:
        raise HTTPError(500, f"Snapshot restore failed: {result}")
    return web.Response(status=200)


ROUTES = [Route("/v1/snapshot", {"GET": save, "PUT": restore})]
