"""``templates/watcher.py`` against a scripted in-process Consul (aiohttp), event-driven.

The fake answers like Consul (``X-Consul-Index``, blocking on ``?index=&wait=``, 404 for a
missing key) and records every request, so the client rules of consul-api.md §2 can be
asserted request by request. Backoff is shrunk to milliseconds; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from templates.dependencies import (
    datacenters_dep,
    file_dep,
    parse_kv_get,
    parse_kv_list,
    parse_node,
    parse_service,
)
from templates.functions import MISSING
from templates.watcher import Watcher, WatchEvent, backoff_delay, base_url
from tests.templates.helpers import health_entry


class FakeConsul:
    def __init__(self) -> None:
        self.index = 10
        self.kv: dict[str, str] = {}
        self.health: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.fail_next = 0
        self.last_contact_ms = 0
        self.index_override: int | None = None
        self.inflight = 0
        self.tokens: list[str | None] = []
        self._cond = asyncio.Condition()
        self._changed = asyncio.Event()

    async def bump(self) -> None:
        self.index += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_requests(self, n: int, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.requests) >= n)

    async def wait_inflight(self, n: int, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            async with self._cond:
                await self._cond.wait_for(lambda: self.inflight == n)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query)))
        self.tokens.append(request.headers.get("X-Consul-Token"))
        await self._notify()
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=500, text="No cluster leader")
        want = int(request.query.get("index", "0") or 0)
        if want and want >= self.index:
            changed = self._changed
            self.inflight += 1
            await self._notify()
            try:
                await asyncio.wait_for(changed.wait(), 30)
            except TimeoutError:
                pass
            finally:
                self.inflight -= 1
                await self._notify()
        index = self.index if self.index_override is None else self.index_override
        headers = {"X-Consul-Index": str(index), "X-Consul-LastContact": str(self.last_contact_ms)}
        path = request.path
        body: Any
        if path == "/v1/agent/self":
            body = {"Config": {"NodeName": "n7"}}
        elif path.startswith("/v1/kv/"):
            key = path[len("/v1/kv/"):]
            if "recurse" in request.query:
                items = [{"Key": k, "Value": base64.b64encode(v.encode()).decode(), "ModifyIndex": 1}
                         for k, v in sorted(self.kv.items()) if k.startswith(key)]
                if not items:
                    return web.Response(status=404, headers=headers)
                body = items
            elif key in self.kv:
                body = [{"Key": key, "Value": base64.b64encode(self.kv[key].encode()).decode()}]
            else:
                return web.Response(status=404, headers=headers)
        elif path.startswith("/v1/health/service/"):
            body = self.health.get(path.rsplit("/", 1)[1], [])
        elif path.startswith("/v1/catalog/node/"):
            body = {"Node": {"Node": path.rsplit("/", 1)[1], "Address": "10.0.0.7"}, "Services": {}}
        elif path == "/v1/catalog/datacenters":
            body = ["dc2", "dc1"]
        else:
            return web.Response(status=404)
        return web.json_response(body, headers=headers)


@pytest.fixture
async def consul() -> AsyncIterator[tuple[FakeConsul, str]]:
    fake = FakeConsul()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def fast_watcher(addr: str, **kw: Any) -> Watcher:
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("backoff_max_s", 0.005)
    return Watcher(addr, **kw)


async def next_change(w: Watcher, timeout_s: float = 10) -> set[Any]:
    async with asyncio.timeout(timeout_s):
        await w.changed.wait()
    return w.take_changes()


KEY = parse_kv_get("app/k", block=True)


# ------------------------------------------------------------------------------ pure helpers


def test_backoff_doubles_with_jitter_and_caps() -> None:
    assert [backoff_delay(n, 0.25, 60, rand=lambda: 1.0) for n in (1, 2, 3, 4, 9, 10, 50)] == [
        0.25, 0.5, 1.0, 2.0, 60, 60, 60]
    assert backoff_delay(3, 0.25, 60, rand=lambda: 0.0) == 0.5  # jitter keeps 50..100%


def test_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    monkeypatch.delenv("CONSUL_HTTP_SSL", raising=False)
    assert base_url(None) == "http://127.0.0.1:8500"
    assert base_url("10.0.0.1:8500") == "http://10.0.0.1:8500"
    assert base_url("https://c.example:8501/") == "https://c.example:8501"
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.9:1")
    assert base_url(None) == "http://127.0.0.9:1"
    with pytest.raises(ValueError, match="unix"):
        base_url("unix:///tmp/consul.sock")


# ------------------------------------------------------------------------------ blocking loop


async def test_first_read_is_immediate_then_blocks_with_index_wait_and_stale(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "v1"
    async with fast_watcher(addr, wait_s=30) as w:
        w.watch([KEY])
        assert await next_change(w) == {KEY}
        assert w.get(KEY) == "v1" and w.answered(KEY)
        await fake.wait_inflight(1)
        assert w.open_polls == 1
        (p1, q1), (p2, q2) = fake.requests[:2]
        assert p1 == p2 == "/v1/kv/app/k"
        assert "index" not in q1 and "stale" in q1
        assert q2["index"] == "10" and q2["wait"] == "30000ms" and "stale" in q2
        fake.kv["app/k"] = "v2"
        await fake.bump()
        assert await next_change(w) == {KEY}
        assert w.get(KEY) == "v2"
        await fake.wait_inflight(1)
        assert fake.requests[-1][1]["index"] == "11"


async def test_missing_key_is_data_and_keeps_blocking(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    async with fast_watcher(addr) as w:
        w.watch([KEY])
        await next_change(w)
        assert w.get(KEY) is None and w.answered(KEY)  # 404 → None: `key` waits, without error
        await fake.wait_inflight(1)
        assert fake.requests[-1][1]["index"] == "10"  # blocking on the 404's index
        fake.kv["app/k"] = "now"
        await fake.bump()
        await next_change(w)
        assert w.get(KEY) == "now"


async def test_unchanged_answers_are_not_changes(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "same"
    async with fast_watcher(addr) as w:
        w.watch([KEY])
        await next_change(w)
        await fake.wait_inflight(1)
        await fake.bump()  # index moves (an unrelated write), value does not
        await fake.wait_requests(3)
        await fake.wait_inflight(1)
        assert not w.changed.is_set() and w.take_changes() == set()


async def test_index_going_backwards_resets_to_a_plain_read(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "a"
    fake.index = 100
    async with fast_watcher(addr) as w:
        w.watch([KEY])
        await next_change(w)
        await fake.wait_inflight(1)
        fake.index_override = 5  # e.g. a snapshot restore
        fake.kv["app/k"] = "b"
        await fake.bump()
        await next_change(w)
        assert w.get(KEY) == "b"
        queries = [q for _, q in fake.requests]
        reset_at = next(i for i, q in enumerate(queries) if i > 1 and "index" not in q)
        assert queries[reset_at - 1]["index"] == "100"  # the request that saw index 5 < 100
        fake.index_override = None
        fake.index = 6
        await fake.wait_inflight(1)
        assert fake.requests[-1][1]["index"] in ("5", "6")  # blocking again from the new, lower index


async def test_zero_or_missing_index_never_sends_index_0_after_the_first_answer(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "a"
    fake.index_override = 0
    async with fast_watcher(addr) as w:
        w.watch([KEY])
        await next_change(w)
        await fake.wait_requests(3)
        assert [q.get("index") for _, q in fake.requests[1:3]] == ["1", "1"]


async def test_errors_back_off_keep_last_data_and_recover(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "good"
    events: list[WatchEvent] = []
    async with fast_watcher(addr, on_event=events.append) as w:
        w.watch([KEY])
        await next_change(w)
        await fake.wait_inflight(1)
        fake.fail_next = 3
        await fake.bump()  # the open poll returns; the next 3 requests get HTTP 500
        n = len(fake.requests)
        await fake.wait_requests(n + 4)
        assert w.get(KEY) == "good"  # last good data is still served
        errors = [e for e in events if e.kind == "error"]
        assert len(errors) == 3 and "HTTP 500: No cluster leader" in errors[0].message
        assert "keeping last good data" in errors[0].message
        await fake.wait_inflight(1)
        assert events[-1].kind == "recovered" and w.error_of(KEY) is None
        after_error = [q for _, q in fake.requests[n:]]
        assert "index" not in after_error[-2]  # the first request after errors is a plain read


async def test_stale_answer_older_than_max_stale_is_asked_again_of_the_leader(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "x"
    fake.last_contact_ms = 5000
    async with fast_watcher(addr, max_stale_s=2.0) as w:
        w.watch([KEY])
        await next_change(w)
        assert "stale" in fake.requests[0][1] and "stale" not in fake.requests[1][1]
    fake.requests.clear()
    async with fast_watcher(addr, max_stale_s=0) as w:  # max_stale 0: never stale
        w.watch([KEY])
        await next_change(w)
        assert "stale" not in fake.requests[0][1]


async def test_shared_dependencies_and_unused_ones_stopped(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv.update({"app/k": "1", "app/other": "2"})
    web_dep = parse_service("web")
    fake.health["web"] = [health_entry("n1", "10.0.0.1", 80)]
    other = parse_kv_get("app/other", block=True)
    async with fast_watcher(addr) as w:
        w.watch([KEY, KEY, other, web_dep, parse_service("web|passing")])  # equal keys collapse
        assert len(w.dependencies) == 3
        await fake.wait_inflight(3)
        assert w.open_polls == 3
        assert w.connection_limit >= 3 + 4
        w.watch([KEY])
        await fake.wait_inflight(1)
        assert w.open_polls == 1 and w.get(other) is MISSING and w.dependencies == [KEY]


async def test_connection_limit_grows_with_the_watches(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    deps = [parse_kv_get(f"k{i}") for i in range(40)]
    async with fast_watcher(addr) as w:
        w.watch(deps[:2])
        small = w.connection_limit
        await fake.wait_inflight(2)
        w.watch(deps)
        assert w.connection_limit >= 44 > small
        await fake.wait_inflight(40)  # every watch holds its own long-poll: none queued behind the limit
        assert w.open_polls == 40


async def test_local_node_resolved_through_agent_self(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    dep = parse_node("")
    async with fast_watcher(addr) as w:
        w.watch([dep])
        await next_change(w)
        assert w.get(dep).Node.Node == "n7"
        paths = [p for p, _ in fake.requests]
        assert paths[:2] == ["/v1/agent/self", "/v1/catalog/node/n7"]


async def test_polled_datacenters_and_files(consul: tuple[FakeConsul, str], tmp_path: Path) -> None:
    fake, addr = consul
    f = tmp_path / "data.txt"
    fdep = file_dep(str(f))
    dcs = datacenters_dep()
    events: list[WatchEvent] = []
    async with fast_watcher(addr, datacenters_poll_s=0.01, files_poll_s=0.01, on_event=events.append) as w:
        w.watch([dcs, fdep])
        assert await next_change(w) == {dcs}
        assert w.get(dcs) == ["dc1", "dc2"] and "index" not in fake.requests[0][1]
        assert w.answered(fdep) and w.get(fdep) is MISSING
        assert events and events[0].kind == "missing"
        f.write_text("one")
        assert fdep in await next_change(w)
        assert w.get(fdep) == "one"
        f.write_text("three")
        assert fdep in await next_change(w)
        assert w.get(fdep) == "three"
        await fake.wait_requests(3)
        assert w.open_polls == 0  # polled sources are not long-polls


async def test_once_fetches_each_dependency_once_without_blocking(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    fake.kv["app/k"] = "v"
    lst = parse_kv_list("app/")
    async with fast_watcher(addr, once=True) as w:
        w.watch([KEY, lst])
        await next_change(w)
        async with asyncio.timeout(10):
            while not (w.answered(KEY) and w.answered(lst)):
                await w.changed.wait()
                w.take_changes()
        assert all("index" not in q for _, q in fake.requests)
        assert len(fake.requests) == 2


async def test_close_cancels_open_polls(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    w = fast_watcher(addr)
    w.watch([KEY])
    await fake.wait_inflight(1)
    await w.close()
    assert w.open_polls == 0 and w.dependencies == []
    with pytest.raises(RuntimeError):
        w.watch([KEY])


async def test_token_header_is_sent(consul: tuple[FakeConsul, str]) -> None:
    fake, addr = consul
    async with fast_watcher(addr, token="s3cret") as w:
        w.watch([KEY])
        await next_change(w)
    assert fake.tokens and set(fake.tokens) == {"s3cret"}
