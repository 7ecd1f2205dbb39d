"""The Watcher uses blocking queries (?index=&wait=), not a fixed poll: a fake Consul (httpx MockTransport)
for the client rules, then a real dev agent where only the blocking watchers can deliver a change."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.agentproc import AgentProcess
from tests.dash.fixtures import check, healthy_sources
from toolkit.dash.model import ClusterView
from toolkit.dash.sources import AsyncConsul, Watcher


class FakeConsul:
    """Answers the dashboard's endpoints from fixture data; blocking reads wait for ``bump()``."""

    def __init__(self) -> None:
        src = healthy_sources()
        self.checks: list[dict[str, Any]] = list(src.checks or [])
        self.checks_index = 50
        self.src = src
        self.requests: list[httpx.Request] = []
        self.changed = asyncio.Condition()

    async def bump(self, checks: list[dict[str, Any]], index: int) -> None:
        async with self.changed:
            self.checks, self.checks_index = checks, index
            self.changed.notify_all()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, q = request.url.path, request.url.params
        if path == "/v1/health/state/any":
            want = int(q.get("index", "0") or 0)
            async with self.changed:
                await self.changed.wait_for(lambda: want == 0 or self.checks_index != want)
            return self._json(self.checks, self.checks_index)
        if path == "/v1/catalog/services":
            if int(q.get("index", "0") or 0):
                await asyncio.Event().wait()  # nothing changes in the catalog in this test
            return self._json(self.src.services, 40)
        if path.startswith("/v1/catalog/service/"):
            name = path.rsplit("/", 1)[1]
            return self._json([i for i in self.src.instances or [] if i["ServiceName"] == name], 40)
        bodies = {"/v1/status/leader": self.src.leader, "/v1/operator/raft/configuration": self.src.raft,
                  "/v1/operator/autopilot/health": self.src.autopilot, "/v1/agent/self": self.src.agent_self,
                  "/v1/agent/members": self.src.members}
        return self._json(bodies[path])

    @staticmethod
    def _json(body: Any, index: int | None = None) -> httpx.Response:
        headers = {"X-Consul-Index": str(index)} if index is not None else {}
        return httpx.Response(200, content=json.dumps(body).encode(), headers=headers)


def _checks_requests(fake: FakeConsul) -> list[httpx.QueryParams]:
    return [r.url.params for r in fake.requests if r.url.path == "/v1/health/state/any"]


async def _until(changed: asyncio.Event, pred: Any, timeout_s: float = 5.0) -> None:
    """Wait for ``pred()``: woken by the watcher's change signal, re-checked at least every 50 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), 0.05)
        except TimeoutError:
            pass


async def test_blocking_queries_follow_the_index_and_reset_when_it_goes_backwards() -> None:
    fake = FakeConsul()
    changed = asyncio.Event()
    client = AsyncConsul("127.0.0.1:8500", transport=httpx.MockTransport(fake.handler))
    w = Watcher(client, changed.set, poll_s=3600, checks_min_interval_s=0, catalog_min_interval_s=0)
    try:
        await w.start()
        await _until(changed, lambda: len(_checks_requests(fake)) >= 2)
        first, blocking = _checks_requests(fake)[:2]
        assert "index" not in first  # the initial read does not block
        assert (blocking["index"], blocking["wait"], "stale" in blocking) == ("50", "60s", True)

        critical = [dict(c, Status="critical") if c["CheckID"] == "db-check" else c for c in fake.checks]
        await fake.bump(critical, 51)

        def db_status() -> str:
            view = ClusterView.build(w.sources(), 0)
            db = view.service("db")
            return db.status if db else ""

        await _until(changed, lambda: db_status() == "critical")
        await _until(changed, lambda: _checks_requests(fake)[-1].get("index") == "51")

        # a snapshot restore: the index goes backwards, the client must not keep waiting on 51
        await fake.bump(fake.checks + [check("c2", "new", "warning", service_id="web-2")], 7)
        await _until(changed, lambda: any(c["CheckID"] == "new" for c in w.sources().checks or []))
        await _until(changed, lambda: _checks_requests(fake)[-1].get("index") in ("1", "7"))
        assert w.reachable
    finally:
        await w.stop()
        await client.aclose()


@pytest.mark.slow
async def test_changes_arrive_through_blocking_queries_not_the_poll(dev_agent: AgentProcess) -> None:
    changed = asyncio.Event()
    client = AsyncConsul(dev_agent.addr)
    w = Watcher(client, changed.set, poll_s=3600)  # the poll runs once: anything later came by long-poll
    try:
        await w.start()
        async with httpx.AsyncClient(base_url=dev_agent.url) as http:
            r = await http.put("/v1/agent/service/register", json={
                "Name": "watched", "ID": "watched-1", "Port": 1, "Check": {"TTL": "600s", "CheckID": "ttl-w"}})
            r.raise_for_status()
            await _until(changed, lambda: any(i["ServiceID"] == "watched-1" for i in w.sources().instances or []))
            (await http.put("/v1/agent/check/warn/ttl-w", params={"note": "slow"})).raise_for_status()

            def status() -> str:
                svc = ClusterView.build(w.sources(), 0).service("watched")
                return svc.status if svc else ""

            await _until(changed, lambda: status() == "warning")
            (await http.put("/v1/agent/service/deregister/watched-1")).raise_for_status()
            await _until(changed, lambda: ClusterView.build(w.sources(), 0).service("watched") is None)
    finally:
        await w.stop()
        await client.aclose()
