"""One blocking query per distinct dependency, shared by every template.

Templates name what they read through dependency keys (``templates.dependencies``); equal
strings give equal keys, so 50 templates over ``service "web"`` cost **one** long-poll here
(consul-template#392, #317, #1065: the load on Consul comes from the number of watches).

Per key, one asyncio task loops (Consul's client rules, ``consul-api.md`` §2):

* ``GET path?...&stale&index=N&wait=60000ms`` — ``stale`` unless ``max_stale`` is 0; if the
  answering server's ``X-Consul-LastContact`` exceeds ``max_stale`` the same request is sent
  again without ``stale`` (the leader answers);
* the first request has no index (immediate answer); afterwards the index is ``max(index, 1)``
  so a missing/zero ``X-Consul-Index`` never turns the loop into a non-blocking spin; an index
  that goes **backwards** (snapshot restore, rebuilt cluster) resets to 0 and re-reads; after a
  transport error the next read is non-blocking too, so a restarted agent (whose index restarted
  low) is not asked to wait for an index it will not reach for a long time;
* a 404 is data (``decode(None)``: a missing ``key`` is ``None``) and the loop keeps blocking on
  it, so the key appearing wakes the template;
* errors back off exponentially with jitter (250ms doubling to 60s) **forever**: the last good
  value is kept and served, the failure is logged (first, 2nd, 4th, 8th... attempt) and shown in
  :meth:`Watcher.status`, and recovery is logged; the agent being down never stops ctk
  (consul-template exits after 12 retries, ct#2045);
* a token bucket (burst 5, 10/s) caps each loop, in case a proxy strips ``X-Consul-Index``.

Non-blocking sources are polled: ``datacenters`` every 15s, ``file`` by ``stat`` every 2s
(size or mtime change). ``node`` without a name is the agent's own node, from
``/v1/agent/self``.

:meth:`Watcher.watch` takes the full set of wanted keys: new ones start, keys no template uses
any more are stopped and their data dropped. All requests share one aiohttp ``ClientSession``
whose connection limit follows the number of watches (a long-poll holds a connection for up to
``wait``; a limit below the watch count would queue changes behind idle polls).

The watcher is a :class:`~templates.functions.DataSource` (``get(dep)`` → value or ``MISSING``)
with a change signal: :attr:`Watcher.changed` is set, and :meth:`Watcher.take_changes` returns
the keys whose value changed since the last call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from yarl import URL

from toolkit.client import DEFAULT_ADDR as DEFAULT_ADDRESS
from toolkit.client import base_url  # one address rule for every ctk client

from .dependencies import CatalogNodeDep, Dependency, FileDep, Request
from .functions import MISSING

__all__ = [
    "Watcher",
    "WatchEvent",
    "backoff_delay",
    "base_url",
    "DEFAULT_ADDRESS",
]

log = logging.getLogger("ctk.template")

_MIN_CONN_LIMIT = 16
_CONNECT_TIMEOUT_S = 5.0
_NONBLOCKING_TIMEOUT_S = 15.0
_BLOCKING_SLACK_S = 10.0  # on top of wait + wait/16 (the server's jitter)

FETCH_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ValueError)


def backoff_delay(
    attempt: int, base_s: float = 0.25, cap_s: float = 60.0, rand: Callable[[], float] = random.random
) -> float:
    """Sleep before retry ``attempt`` (1-based): ``base·2^(attempt-1)`` capped, jittered to 50–100%."""
    exp = min(attempt - 1, 62)
    delay = min(cap_s, base_s * math.pow(2, exp))
    return delay * (0.5 + 0.5 * rand())


@dataclass(frozen=True)
class WatchEvent:
    """Something an operator should hear about: a fetch failing, recovering, a file missing."""

    kind: Literal["error", "recovered", "missing"]
    dependency: Dependency
    message: str


class _HTTPStatus(Exception):
    """A non-200/404 answer (403 ACL denied, 500 no leader ...)."""


class _TokenBucket:
    """``burst`` requests at once, then ``rate`` per second: caps a loop that stopped blocking."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            wait = (1.0 - self.tokens) / self.rate
            await asyncio.sleep(wait)
            self.stamp = time.monotonic()
            self.tokens = 1.0
        self.tokens -= 1.0


class _Watch:
    """State of one dependency's loop (also what :meth:`Watcher.status` reports)."""

    __slots__ = (
        "dep",
        "task",
        "value",
        "index",
        "answered",
        "errors",
        "last_error",
        "last_ok",
        "last_change",
        "failing_since",
        "polling",
        "bucket",
    )

    def __init__(self, dep: Dependency) -> None:
        self.dep = dep
        self.task: asyncio.Task[None] | None = None
        self.value: Any = MISSING
        self.index = 0
        self.answered = False  # got an answer (or, for a file, looked at least once)
        self.errors = 0  # consecutive failures
        self.last_error = ""
        self.last_ok: float | None = None  # wall clock
        self.last_change: float | None = None
        self.failing_since: float | None = None
        self.polling = False  # a blocking request is in flight right now
        self.bucket = _TokenBucket(10.0, 5)


def _wall(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


class Watcher:
    """Fetches and keeps fresh every dependency the templates use (see the module docstring).

    ``once=True`` fetches each dependency once (no long-polls), as ``-once`` wants. Use as
    ``async with Watcher(...) as w:`` or call :meth:`close`.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        *,
        wait_s: float = 60.0,
        max_stale_s: float = 2.0,
        once: bool = False,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 60.0,
        datacenters_poll_s: float = 15.0,
        files_poll_s: float = 2.0,
        on_event: Callable[[WatchEvent], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.base = base_url(address)
        self.token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN", "")
        self.wait_s = wait_s
        self.max_stale_s = max_stale_s
        self.once = once
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.datacenters_poll_s = datacenters_poll_s
        self.files_poll_s = files_poll_s
        self.on_event = on_event
        self.on_change = on_change
        self.changed = asyncio.Event()
        self._changes: set[Dependency] = set()
        self._watches: dict[Dependency, _Watch] = {}
        self._session: aiohttp.ClientSession | None = None
        self._conn_limit = 0
        self._inflight: dict[aiohttp.ClientSession, int] = {}
        self._retired: set[aiohttp.ClientSession] = set()
        self._local_node: str | None = None
        self._local_node_lock = asyncio.Lock()
        self._closed = False
        self.requests = 0  # total HTTP requests sent (for tests and the bench)

    # ---------------------------------------------------------------- DataSource

    def get(self, dep: Dependency) -> Any:
        """The last good value of ``dep``, or ``MISSING`` before its first answer."""
        w = self._watches.get(dep)
        return MISSING if w is None else w.value

    def answered(self, dep: Dependency) -> bool:
        """``dep`` has been fetched at least once (its value may still be "absent", e.g. a 404 key)."""
        w = self._watches.get(dep)
        return w is not None and w.answered

    def error_of(self, dep: Dependency) -> str | None:
        """Why ``dep`` is failing right now (``None`` if it is not)."""
        w = self._watches.get(dep)
        return (w.last_error or None) if w is not None else None

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def watch(self, deps: Iterable[Dependency]) -> None:
        """Make the watched set exactly ``deps``: start new loops, stop unused ones."""
        if self._closed:
            raise RuntimeError("watcher is closed")
        wanted = set(deps)
        for dep in [d for d in self._watches if d not in wanted]:
            self._stop(dep)
        new = [d for d in wanted if d not in self._watches]
        if not new:
            return
        for dep in sorted(new):
            w = _Watch(dep)
            self._watches[dep] = w
            w.task = asyncio.get_running_loop().create_task(self._run(w), name=f"watch {dep.name()}")
        self._size_session()

    def _stop(self, dep: Dependency) -> None:
        w = self._watches.pop(dep)
        self._changes.discard(dep)
        if w.task is not None:
            w.task.cancel()
        log.debug("stopped watching %s (no template uses it)", dep.name())

    async def close(self) -> None:
        """Cancel every loop (open long-polls are aborted) and close the HTTP sessions."""
        self._closed = True
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        self._watches.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        sessions = [s for s in (self._session, *self._retired) if s is not None]
        self._session = None
        self._retired.clear()
        for s in sessions:
            with contextlib.suppress(Exception):
                await s.close()

    # ---------------------------------------------------------------- introspection

    @property
    def dependencies(self) -> list[Dependency]:
        """Watched keys, sorted by name."""
        return sorted(self._watches)

    @property
    def open_polls(self) -> int:
        """Blocking queries in flight right now (one per distinct blocking dependency when idle)."""
        return sum(1 for w in self._watches.values() if w.polling)

    @property
    def connection_limit(self) -> int:
        """The HTTP connection limit currently in force (follows the number of watches)."""
        return self._conn_limit

    def take_changes(self) -> set[Dependency]:
        """Keys whose value changed since the last call; clears :attr:`changed`."""
        out, self._changes = self._changes, set()
        self.changed.clear()
        return out

    def status(self) -> list[dict[str, Any]]:
        """Per dependency: data or not, index, failures, timestamps (for the status file)."""
        rows = []
        for dep in sorted(self._watches):
            w = self._watches[dep]
            rows.append(
                {
                    "name": dep.name(),
                    "has_data": w.value is not MISSING,
                    "index": w.index,
                    "long_poll_open": w.polling,
                    "last_ok": _wall(w.last_ok),
                    "last_change": _wall(w.last_change),
                    "failing": w.errors > 0,
                    "consecutive_errors": w.errors,
                    "last_error": w.last_error or None,
                    "failing_since": _wall(w.failing_since),
                }
            )
        return rows

    # ---------------------------------------------------------------- HTTP

    def _size_session(self) -> None:
        """(Re)create the session when the watches outgrow its connection limit.

        The old session is retired, not closed: its open long-polls finish normally and it is
        closed once the last one returns.
        """
        need = len(self._watches) + 4
        if self._session is not None and need <= self._conn_limit:
            return
        old = self._session
        self._conn_limit = max(_MIN_CONN_LIMIT, 2 * need)
        headers = {"User-Agent": "ctk-template"}
        if self.token:
            headers["X-Consul-Token"] = self.token
        connector = aiohttp.TCPConnector(limit=self._conn_limit, limit_per_host=0)
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        self._inflight[self._session] = 0
        if old is not None:
            self._retired.add(old)
            self._maybe_close(old)

    def _maybe_close(self, session: aiohttp.ClientSession) -> None:
        if session in self._retired and self._inflight.get(session, 0) == 0:
            self._retired.discard(session)
            self._inflight.pop(session, None)
            asyncio.get_running_loop().create_task(session.close())

    async def _get(self, url: str, *, timeout_s: float) -> tuple[int, Any, Any]:
        """One GET → (status, headers, parsed JSON body or ``None``); raises on transport/HTTP errors."""
        if self._session is None:
            self._size_session()
        session = self._session
        assert session is not None
        self._inflight[session] = self._inflight.get(session, 0) + 1
        self.requests += 1
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=_CONNECT_TIMEOUT_S)
            async with session.get(URL(self.base + url, encoded=True), timeout=timeout) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        finally:
            self._inflight[session] -= 1
            self._maybe_close(session)
        if status == 404:
            return status, headers, None
        if status != 200:
            text = " ".join(raw.decode("utf-8", "replace").split())[:200]
            raise _HTTPStatus(f"HTTP {status}" + (f": {text}" if text else ""))
        return status, headers, (json.loads(raw) if raw.strip() else None)

    async def _local_node_name(self) -> str:
        """The agent's node name (``Config.NodeName`` of ``/v1/agent/self``), fetched once."""
        async with self._local_node_lock:
            if self._local_node is None:
                _, _, body = await self._get("/v1/agent/self", timeout_s=_NONBLOCKING_TIMEOUT_S)
                name = ((body or {}).get("Config") or {}).get("NodeName") or ""
                if not name:
                    raise ValueError("/v1/agent/self has no Config.NodeName")
                self._local_node = str(name)
            return self._local_node

    async def _request_for(self, dep: Dependency) -> Request | None:
        local = None
        if isinstance(dep, CatalogNodeDep) and dep.needs_local_node:
            local = await self._local_node_name()
        return dep.request(local)

    # ---------------------------------------------------------------- loops

    async def _run(self, w: _Watch) -> None:
        """Run the right loop for ``w``; an unexpected exception (a bug) is logged and the loop restarted."""
        while True:
            try:
                if isinstance(w.dep, FileDep):
                    await self._loop_file(w)
                else:
                    req = w.dep.request("_")  # shape only: blocking or polled
                    if req is not None and req.blocking:
                        await self._loop_blocking(w)
                    else:
                        await self._loop_polled(w)
                return  # -once: one answer was enough
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("watch %s crashed; restarting it", w.dep.name())
                w.last_error = f"internal error: {type(e).__name__}: {e}"
                await asyncio.sleep(self._backoff(w))
            finally:
                w.polling = False

    def _store(self, w: _Watch, value: Any) -> None:
        now = time.time()
        w.answered = True
        w.last_ok = now
        if w.value is MISSING or w.value != value:
            w.value = value
            w.last_change = now
            self._changes.add(w.dep)
            self.changed.set()
            if self.on_change is not None:
                self.on_change()

    def _emit(self, event: WatchEvent, level: int) -> None:
        log.log(level, "%s", event.message)
        if self.on_event is not None:
            self.on_event(event)

    def _failed(self, w: _Watch, path: str, err: BaseException, delay: float) -> None:
        w.errors += 1
        now = time.time()
        if w.failing_since is None:
            w.failing_since = now
        reason = str(err) or type(err).__name__
        if isinstance(err, TimeoutError):
            reason = "timed out"
        w.last_error = reason
        n = w.errors
        kept = f"keeping last good data from {_wall(w.last_ok)}" if w.value is not MISSING else "no data yet"
        event = WatchEvent(
            "error",
            w.dep,
            f"consul: {w.dep.name()}: GET {path} failed ({reason}); attempt {n}, retrying in {delay:.1f}s; {kept}",
        )
        if n & (n - 1) == 0:  # log attempts 1, 2, 4, 8, ...: loud at first, then quieter
            self._emit(event, logging.WARNING)
        elif self.on_event is not None:
            self.on_event(event)

    def _recovered(self, w: _Watch) -> None:
        if w.errors == 0:
            return
        down = time.time() - (w.failing_since or time.time())
        msg = f"consul: {w.dep.name()}: recovered after {w.errors} failed attempt(s) ({down:.1f}s)"
        w.errors = 0
        w.last_error = ""
        w.failing_since = None
        self._emit(WatchEvent("recovered", w.dep, msg), logging.INFO)

    def _backoff(self, w: _Watch) -> float:
        return backoff_delay(w.errors + 1, self.backoff_base_s, self.backoff_max_s)

    async def _loop_blocking(self, w: _Watch) -> None:
        dep = w.dep
        index = 0
        allow_stale = self.max_stale_s > 0
        wait_ms = max(1, int(self.wait_s * 1000))
        while True:
            await w.bucket.take()
            path = "?"
            blocking = index > 0 and not self.once
            try:
                req = await self._request_for(dep)
                assert req is not None
                path = req.path
                extra = []
                if allow_stale:
                    extra.append("stale")
                if blocking:
                    extra += [f"index={index}", f"wait={wait_ms}ms"]
                url = req.url()
                if extra:
                    url += ("&" if "?" in url else "?") + "&".join(extra)
                w.polling = blocking
                timeout = (
                    self.wait_s * (1 + 1 / 16) + _BLOCKING_SLACK_S if blocking else _NONBLOCKING_TIMEOUT_S
                )
                try:
                    _, headers, body = await self._get(url, timeout_s=timeout)
                finally:
                    w.polling = False
                value = dep.decode(body)
            except asyncio.CancelledError:
                raise
            except (*FETCH_ERRORS, _HTTPStatus) as e:
                delay = self._backoff(w)
                self._failed(w, path, e, delay)
                index = 0  # resync with a plain read once the agent answers again
                await asyncio.sleep(delay)
                continue
            self._recovered(w)
            new_index = _int_header(headers.get("X-Consul-Index"))
            if allow_stale and self.max_stale_s > 0:
                last_contact_s = _int_header(headers.get("X-Consul-LastContact")) / 1000.0
                if last_contact_s > self.max_stale_s:
                    log.debug(
                        "%s: stale answer (%.1fs behind); asking the leader", dep.name(), last_contact_s
                    )
                    allow_stale = False
                    continue
            allow_stale = self.max_stale_s > 0
            if index and new_index and new_index < index:
                log.info(
                    "consul: %s: index went backwards (%d < %d); re-reading", dep.name(), new_index, index
                )
                index = 0
                continue
            index = max(new_index, 1)
            w.index = index
            self._store(w, value)
            if self.once:
                return

    async def _loop_polled(self, w: _Watch) -> None:
        """Endpoints without blocking support (``/v1/catalog/datacenters``): re-read periodically."""
        dep = w.dep
        while True:
            path = "?"
            try:
                req = await self._request_for(dep)
                assert req is not None
                path = req.path
                _, headers, body = await self._get(req.url(), timeout_s=_NONBLOCKING_TIMEOUT_S)
                value = dep.decode(body)
            except asyncio.CancelledError:
                raise
            except (*FETCH_ERRORS, _HTTPStatus) as e:
                delay = self._backoff(w)
                self._failed(w, path, e, delay)
                await asyncio.sleep(delay)
                continue
            self._recovered(w)
            w.index = _int_header(headers.get("X-Consul-Index"))
            self._store(w, value)
            if self.once:
                return
            await asyncio.sleep(self.datacenters_poll_s)

    async def _loop_file(self, w: _Watch) -> None:
        """``file "path"``: stat every ``files_poll_s``; re-read on a size or mtime change."""
        dep = w.dep
        assert isinstance(dep, FileDep)
        last: tuple[int, int] | None | object = object()
        while True:
            key = dep.stat_key()
            if key != last:
                last = key
                if key is None:
                    w.answered = True
                    kept = "keeping its last content" if w.value is not MISSING else "waiting for it"
                    w.last_error = "no such file"
                    self._emit(
                        WatchEvent("missing", dep, f"{dep.name()}: no such file; {kept}"), logging.WARNING
                    )
                else:
                    try:
                        content = dep.read()
                    except OSError as e:
                        w.answered = True
                        w.last_error = e.strerror or str(e)
                        self._emit(
                            WatchEvent("missing", dep, f"{dep.name()}: cannot read: {w.last_error}"),
                            logging.WARNING,
                        )
                        last = object()  # try again next time
                    else:
                        w.last_error = ""
                        self._store(w, dep.decode(content))
            if self.once:
                return
            await asyncio.sleep(self.files_poll_s)


def _int_header(value: str | None) -> int:
    if not value:
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        return 0
