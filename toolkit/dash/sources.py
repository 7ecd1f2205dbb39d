"""Reading the cluster over the HTTP API (async, httpx): one-shot snapshots and blocking-query watchers.

Catalog and health reads use ``?stale`` so a leaderless cluster still shows its services (any server
answers); Raft/autopilot/agent endpoints are not blocking in Consul and are polled (at most every 2 s).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from toolkit.client import ConsulError, Response, checked, client_settings, transport_error
from toolkit.dash.model import Sources

__all__ = ["AsyncConsul", "Watcher", "fetch_sources"]

BLOCK_WAIT_S = 60            # ?wait for blocking queries; the HTTP timeout allows for Consul's wait/16 jitter
POLL_INTERVAL_S = 2.0        # Raft/autopilot/members are not blocking endpoints: poll them at most this often
FETCH_CONCURRENCY = 8        # parallel /v1/catalog/service/<name> reads
CHECKS_MIN_INTERVAL_S = 0.1  # blocking rounds on /v1/health/state/any: at most 10 a second
CATALOG_MIN_INTERVAL_S = 1.0  # each catalog change re-reads every service's instances: at most once a second


class AsyncConsul:
    """The async twin of :class:`toolkit.client.ConsulClient` (same address/token/TLS conventions and errors)."""

    def __init__(self, address: str | None = None, token: str | None = None, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.address, url, headers, verify = client_settings(address, token, "ctk-dash")
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s,
                                       verify=verify, limits=httpx.Limits(max_connections=32),
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,),
                  timeout_s: float | None = None) -> Response:
        kwargs: dict[str, Any] = {"params": {k: v for k, v in (params or {}).items() if v is not None}}
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        try:
            r = await self._http.get(path, **kwargs)
        except httpx.HTTPError as err:
            raise transport_error(self.address, err) from None
        return checked(r, ok)


@dataclass
class Part:
    """One source's latest answer: ``value`` (None until read), its ``index`` and last ``error``."""

    value: Any = None
    index: int = 0
    error: str = ""


@dataclass
class Status:
    leader: Part = field(default_factory=Part)
    raft: Part = field(default_factory=Part)
    autopilot: Part = field(default_factory=Part)
    agent_self: Part = field(default_factory=Part)
    members: Part = field(default_factory=Part)


async def _read(coro: Awaitable[Response], part: Part) -> bool:
    """Store one answer (or its error) in ``part``; False only when the agent itself could not be reached."""
    try:
        r = await coro
        value = r.json()
    except ConsulError as err:
        part.error, part.value = str(err), None
        return err.status != 0
    except ValueError as err:  # not JSON: a proxy's error page, say
        part.error, part.value = f"invalid JSON in the answer: {err}", None
        return True
    part.value, part.index, part.error = value, r.index, ""
    return True


async def fetch_status(c: AsyncConsul, st: Status) -> bool:
    """Leader, Raft configuration, autopilot health, agent/self and members (the non-blocking sources)."""
    results = await asyncio.gather(
        _read(c.get("/v1/status/leader"), st.leader),
        _read(c.get("/v1/operator/raft/configuration", params={"stale": ""}), st.raft),
        _read(c.get("/v1/operator/autopilot/health", ok=(200, 429)), st.autopilot),
        _read(c.get("/v1/agent/self"), st.agent_self),
        _read(c.get("/v1/agent/members", params={"segment": "_all"}), st.members),
    )
    return all(results)


async def fetch_instances(c: AsyncConsul, names: list[str]) -> list[dict[str, Any]]:
    """Every instance of every service (``/v1/catalog/service/<name>``, a few in parallel)."""
    sem = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(name: str) -> list[dict[str, Any]]:
        async with sem:
            r = await c.get(f"/v1/catalog/service/{name}", params={"stale": ""})
            return list(r.json() or [])

    lists = await asyncio.gather(*(one(n) for n in names))
    return [e for lst in lists for e in lst]


def to_sources(agent: str, st: Status, services: Part, instances: Part, checks: Part,
               reachable: bool = True, agent_error: str = "") -> Sources:
    errors = {name: p.error for name, p in (("leader", st.leader), ("raft", st.raft), ("autopilot", st.autopilot),
                                            ("agent_self", st.agent_self), ("members", st.members),
                                            ("services", services), ("instances", instances),
                                            ("checks", checks)) if p.error}
    if agent_error:
        errors["agent"] = agent_error
    leader = st.leader.value if isinstance(st.leader.value, str) else None
    return Sources(agent=agent, reachable=reachable, leader=leader, raft=st.raft.value,
                   autopilot=st.autopilot.value, agent_self=st.agent_self.value, members=st.members.value,
                   services=services.value, instances=instances.value, checks=checks.value, errors=errors)


async def _fetch_all(c: AsyncConsul) -> tuple[Status, Part, Part, Part, bool]:
    st, services, instances, checks = Status(), Part(), Part(), Part()
    ok = await fetch_status(c, st)
    if not ok:
        return st, services, instances, checks, False
    await asyncio.gather(_read(c.get("/v1/catalog/services", params={"stale": ""}), services),
                         _read(c.get("/v1/health/state/any", params={"stale": ""}), checks))
    if services.value is not None:
        try:
            instances.value = await fetch_instances(c, sorted(services.value))
        except ConsulError as err:
            instances.error = str(err)
    return st, services, instances, checks, True


async def fetch_sources(address: str | None, token: str | None) -> Sources:
    """One snapshot of every source (for ``ctk health``, ``ctk services``, ``ctk top --once``)."""
    c = AsyncConsul(address, token)
    try:
        st, services, instances, checks, ok = await _fetch_all(c)
        agent_error = "" if ok else (st.leader.error or st.agent_self.error)
        return to_sources(c.address, st, services, instances, checks, reachable=ok, agent_error=agent_error)
    finally:
        await c.aclose()


class Watcher:
    """Keeps :class:`Sources` current: blocking queries on the catalog and health, a 2 s poll for the rest.

    ``on_change`` is called (from the event loop) whenever anything new arrived or reachability changed.
    """

    def __init__(self, c: AsyncConsul, on_change: Callable[[], None], poll_s: float = POLL_INTERVAL_S,
                 checks_min_interval_s: float = CHECKS_MIN_INTERVAL_S,
                 catalog_min_interval_s: float = CATALOG_MIN_INTERVAL_S) -> None:
        self.c = c
        self.on_change = on_change
        self.poll_s = poll_s
        self.checks_min_interval_s = checks_min_interval_s
        self.catalog_min_interval_s = catalog_min_interval_s
        self.status = Status()
        self.services, self.instances, self.checks = Part(), Part(), Part()
        self.reachable = True
        self.agent_error = ""
        self._tasks: list[asyncio.Task[None]] = []

    def sources(self) -> Sources:
        return to_sources(self.c.address, self.status, self.services, self.instances, self.checks,
                          self.reachable, self.agent_error)

    async def start(self) -> None:
        """Read everything once (so the first view is complete), then watch."""
        st, services, instances, checks, ok = await _fetch_all(self.c)
        self.status, self.services, self.instances, self.checks = st, services, instances, checks
        self._set_reachable(ok, st.leader.error or st.agent_self.error)
        self._tasks = [asyncio.create_task(self._poll()),
                       asyncio.create_task(self._block("/v1/catalog/services", self.services, self._catalog_changed,
                                                       self.catalog_min_interval_s)),
                       asyncio.create_task(self._block("/v1/health/state/any", self.checks, None,
                                                       self.checks_min_interval_s))]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _set_reachable(self, ok: bool, error: str = "") -> None:
        if ok != self.reachable or (not ok and error != self.agent_error):
            self.reachable, self.agent_error = ok, "" if ok else error
            self.on_change()

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            st = Status()
            ok = await fetch_status(self.c, st)
            if ok:
                if _values(st) != _values(self.status):
                    self.status = st
                    self.on_change()
                else:
                    self.status = st
                if not self.reachable:
                    # Back from an outage: the blocking watchers may be sleeping in a backoff; refresh now.
                    await self._refresh_blocking()
            self._set_reachable(ok, st.leader.error or st.agent_self.error)
            await asyncio.sleep(max(0.0, self.poll_s - (loop.time() - started)))

    async def _refresh_blocking(self) -> None:
        await asyncio.gather(_read(self.c.get("/v1/catalog/services", params={"stale": ""}), self.services),
                             _read(self.c.get("/v1/health/state/any", params={"stale": ""}), self.checks))
        await self._catalog_changed()
        self.on_change()

    async def _catalog_changed(self) -> None:
        if self.services.value is None:
            return
        try:
            self.instances.value = await fetch_instances(self.c, sorted(self.services.value))
            self.instances.error = ""
        except ConsulError as err:
            self.instances.error = str(err)

    async def _block(self, path: str, part: Part, then: Callable[[], Awaitable[None]] | None,
                     min_interval_s: float) -> None:
        """A blocking-query loop following Consul's client rules: reset on a backwards index, back off on
        errors, and at most one round per ``min_interval_s`` so a busy cluster cannot make it spin."""
        backoff = 0.0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            index = max(part.index, 1) if part.value is not None else 0
            params = {"stale": "", "index": index or None, "wait": f"{BLOCK_WAIT_S}s" if index else None}
            try:
                r = await self.c.get(path, params=params, timeout_s=BLOCK_WAIT_S + BLOCK_WAIT_S / 16 + 10)
                value = r.json()
            except (ConsulError, ValueError) as err:
                part.error = str(err)
                if isinstance(err, ConsulError) and err.status == 0:
                    self._set_reachable(False, str(err))
                backoff = min(2.0, backoff * 2 or 0.25)
                await asyncio.sleep(backoff * (0.75 + random.random() / 2))
                continue
            backoff = 0.0
            new_index = r.index
            changed = value != part.value or part.error
            part.value, part.error = value, ""
            part.index = new_index if new_index >= index else 0  # went backwards (restore, GC): start over
            if changed:
                if then is not None:
                    await then()
                self.on_change()
            await asyncio.sleep(max(0.0, min_interval_s - (loop.time() - started)))


def _values(st: Status) -> tuple[Any, ...]:
    ap = st.autopilot.value or {}
    ap_servers = [{k: v for k, v in s.items() if k not in ("LastContact", "StableSince")}
                  for s in ap.get("Servers") or []]
    raft = ((st.agent_self.value or {}).get("Stats") or {}).get("raft") or {}
    return (st.leader.value, st.raft.value, ap.get("Healthy"), ap.get("FailureTolerance"), ap_servers,
            raft.get("term"), raft.get("state"), st.members.value,
            st.leader.error, st.raft.error, st.autopilot.error)
