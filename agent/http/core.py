"""HTTP plumbing shared by every endpoint: routing, errors, JSON, query options, blocking queries.

Errors are Consul's: a plain-text body and a status (``api-docs/api-structure.mdx``) — 400 with a
reason for bad input, 404 for unknown paths, 405 with ``Allow`` for a wrong method, 413 for bodies over
the limit, 500 for the rest. No handler error ever reaches the client as a traceback.

Blocking queries (``api-docs/features/blocking.mdx``): ``?index=N&wait=D`` returns as soon as the
result's index exceeds N, else after D (default 5 min, capped at 10 min) plus up to D/16 of random
jitter so that a crowd of clients does not come back in one wave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from agent.consensus import ConsensusError
from agent.durations import DurationError, parse_duration_s
from agent.local.definitions import DefinitionError
from agent.state.store import CommandError, Store

if TYPE_CHECKING:
    from agent.server import Agent

__all__ = [
    "AGENT_KEY",
    "BODY_CACHE_KEY",
    "HTTPError",
    "Handler",
    "Route",
    "Router",
    "QueryOptions",
    "query_options",
    "blocking",
    "json_response",
    "read_json",
    "read_body",
    "flag",
    "agent_of",
    "MAX_KV_BODY",
]

log = logging.getLogger(__name__)

MAX_KV_BODY = 512 * 1024  # limits.kv_max_value_size / txn_max_req_len
MAX_BODY = 8 * 1024 * 1024
JITTER_FRACTION = 16

T = TypeVar("T")
Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


class HTTPError(Exception):
    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


@dataclass(frozen=True)
class Route:
    path: str  # exact path, or a prefix when it ends with "/"
    methods: dict[str, Handler]


class Router:
    """Consul's dispatch: exact paths, then the longest matching prefix; 405 lists ``Allow``."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.exact: dict[str, Route] = {}
        self.prefixes: list[Route] = []
        for r in routes:
            if r.path.endswith("/"):
                self.prefixes.append(r)
            else:
                self.exact[r.path] = r
        self.prefixes.sort(key=lambda r: len(r.path), reverse=True)

    def find(self, path: str) -> tuple[Route, str] | None:
        r = self.exact.get(path)
        if r is not None:
            return r, ""
        for r in self.prefixes:
            if path.startswith(r.path):
                return r, path[len(r.path):]
        return None


def agent_of(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]


def flag(request: web.Request, name: str) -> bool:
    """Presence-based query booleans (``?recurse``, ``?stale``): any value, even ``false``, sets them."""
    return name in request.query


def parse_bool_param(request: web.Request, name: str) -> bool | None:
    """Go's ``strconv.ParseBool`` semantics for params like ``?passing`` and ``?enable``."""
    if name not in request.query:
        return None
    raw = request.query.get(name, "")
    if raw == "":
        return True
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise HTTPError(400, f"Invalid value for ?{name}")


class BodyCache:
    """Encoded bodies of blocking reads, keyed by (query, result index, store epoch, pretty).

    When one write wakes thousands of blocking queries on the same key, they all answer the same
    bytes: encode once. Safe because a read's index identifies the content of its data view (the
    store bumps ``epoch`` on the rare events that break that: restore, tombstone reaping).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._data: dict[tuple[Any, ...], bytes] = {}

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        return self._data.get(key)

    def put(self, key: tuple[Any, ...], body: bytes) -> None:
        if len(self._data) >= self.max_entries:
            self._data.pop(next(iter(self._data)))
        self._data[key] = body


AGENT_KEY: web.AppKey[Agent] = web.AppKey("agent")
BODY_CACHE_KEY: web.AppKey[BodyCache] = web.AppKey("body_cache", BodyCache)

_IGNORED_FOR_CACHE = frozenset({"index", "wait", "stale", "consistent", "cached", "token", "leader", "max_stale"})


def _dumps(data: Any, pretty: bool) -> bytes:
    if pretty:
        return (json.dumps(data, indent=4) + "\n").encode()
    return json.dumps(data, separators=(",", ":")).encode()


def json_response(
    request: web.Request,
    data: Any,
    *,
    index: int | None = None,
    status: int = 200,
    query_meta: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    agent = agent_of(request)
    hdrs = {"Content-Type": "application/json", "Vary": "Accept-Encoding",
            "X-Consul-Default-Acl-Policy": "allow"}
    if index is not None:
        hdrs["X-Consul-Index"] = str(max(1, index))
    if index is not None or query_meta:
        c = agent.consensus
        hdrs["X-Consul-Knownleader"] = "true" if c.known_leader() else "false"
        hdrs["X-Consul-Lastcontact"] = str(c.last_contact_ms())
        hdrs["X-Consul-Effective-Consistency"] = request.get("consistency", "leader")
    if headers:
        hdrs.update(headers)
    pretty = agent.config.pretty_json or "pretty" in request.query
    if index is not None and status == 200 and request.method == "GET":
        cache = request.app[BODY_CACHE_KEY]
        query = tuple(sorted((k, v) for k, v in request.query.items() if k not in _IGNORED_FOR_CACHE))
        key = (request.path, query, index, agent.store.epoch, pretty)
        body = cache.get(key)
        if body is None:
            body = _dumps(data() if callable(data) else data, pretty)
            cache.put(key, body)
        return web.Response(body=body, status=status, headers=hdrs)
    return web.Response(body=_dumps(data() if callable(data) else data, pretty), status=status, headers=hdrs)


def empty_ok() -> web.Response:
    return web.Response(status=200, headers={"Content-Type": "application/json"})


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise HTTPError(413, f"Request body({length} bytes) too large, max size: {limit} bytes. "
                             "See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise HTTPError(413, f"Request body too large, max size: {limit} bytes")
    return body


async def read_json(request: web.Request, *, required: bool = True, limit: int = MAX_BODY) -> Any:
    body = await read_body(request, limit)
    if not body.strip():
        if required:
            raise HTTPError(400, "Request decode failed: EOF")
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None


@dataclass(frozen=True)
class QueryOptions:
    index: int
    wait_s: float
    consistency: str  # "default" | "stale" | "consistent"


def query_options(request: web.Request) -> QueryOptions:
    agent = agent_of(request)
    q = request.query
    stale = "stale" in q
    consistent = "consistent" in q
    if stale and consistent:
        raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    if "cached" in q and consistent:
        raise HTTPError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
    index = 0
    if q.get("index"):
        try:
            index = int(q["index"])
            if index < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, "Invalid index") from None
    wait_s = agent.config.default_query_time_s
    if q.get("wait"):
        try:
            wait_s = parse_duration_s(q["wait"])
        except DurationError:
            raise HTTPError(400, "Invalid wait time") from None
        if wait_s <= 0:
            wait_s = agent.config.default_query_time_s
    wait_s = min(wait_s, agent.config.max_query_time_s)
    mode = "stale" if stale else "consistent" if consistent else "default"
    request["consistency"] = {"stale": "stale", "consistent": "consistent"}.get(mode, "leader")
    return QueryOptions(index=index, wait_s=wait_s, consistency=mode)


async def blocking(
    request: web.Request,
    run: Callable[[], tuple[int, T]],
    *,
    topics: Iterable[str] = (),
    kv_keys: Iterable[str] = (),
    kv_prefixes: Iterable[str] = (),
    opts: QueryOptions | None = None,
    local: Store | None = None,
) -> tuple[int, T]:
    """Run a read, blocking while its index is not past ``?index`` (see module docstring).

    ``local``: an agent-local store (user events) instead of the replicated one: no read barrier."""
    agent = agent_of(request)
    opts = opts or query_options(request)
    if local is None and opts.consistency != "stale":
        await agent.consensus.read_barrier(opts.consistency)
    index, value = run()
    if opts.index == 0 or index > opts.index:
        return index, value
    loop = asyncio.get_running_loop()
    timeout = opts.wait_s + random.uniform(0, opts.wait_s / JITTER_FRACTION)
    deadline = loop.time() + timeout
    topics, kv_keys, kv_prefixes = tuple(topics), tuple(kv_keys), tuple(kv_prefixes)
    hub = (local or agent.store).hub
    while index <= opts.index:
        remaining = deadline - loop.time()
        if remaining <= 0 or agent.closing:
            break
        fut: asyncio.Future[None] = loop.create_future()

        def wake(f: asyncio.Future[None] = fut) -> None:
            if not f.done():
                f.set_result(None)

        watch = hub.watch(wake, topics=topics, kv_keys=kv_keys, kv_prefixes=kv_prefixes)
        timer = loop.call_later(remaining, wake)
        try:
            await fut
        finally:
            timer.cancel()
            watch.cancel()
        index, value = run()
    return index, value


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPError as err:
        return web.Response(status=err.status, text=err.text, headers=err.headers)
    except DefinitionError as err:
        return web.Response(status=400, text=str(err))
    except CommandError as err:
        return web.Response(status=err.status, text=str(err))
    except ConsensusError as err:
        return web.Response(status=err.status, text=str(err))
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return web.Response(status=500, text="Internal error; see the agent log")
