"""HTTP runner against real aiohttp servers on 127.0.0.1 (random ports)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.checks import CheckScheduler, CheckSpec
from agent.checks.http import HttpProbe


class Backend:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.flap: list[int] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.base = ""
        self.closing = asyncio.Event()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.bodies.append(await request.read())
        path = request.path
        if path == "/ok":
            return web.Response(text="all good")
        if path == "/busy":
            return web.Response(status=429, text="slow down")
        if path == "/fail":
            return web.Response(status=500, text="database unreachable")
        if path == "/slow":
            await self.closing.wait()  # never answers before the test ends
            return web.Response(text="too late")
        if path == "/big":
            return web.Response(body=b"a" * 1_000_000 + b"THE-END")
        if path == "/redirect":
            raise web.HTTPFound("/ok")
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/flap":
            return web.Response(status=self.flap.pop(0) if self.flap else 500, text="flap")
        return web.Response(status=404, text="no such page")

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.base = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.closing.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


async def probe(definition: dict[str, object], **kw: object) -> tuple[str, str]:
    p = HttpProbe(CheckSpec.from_definition({"interval": "10s", **definition}), **kw)  # type: ignore[arg-type]
    try:
        r = await p.run()
        return r.status, r.output
    finally:
        await p.aclose()


async def test_2xx_is_passing_with_consul_output(backend: Backend) -> None:
    status, output = await probe({"http": f"{backend.base}/ok"})
    assert status == "passing"
    assert output == f"HTTP GET {backend.base}/ok: 200 OK Output: all good"


async def test_429_is_warning(backend: Backend) -> None:
    status, output = await probe({"http": f"{backend.base}/busy"})
    assert status == "warning" and "429 Too Many Requests Output: slow down" in output


async def test_500_is_critical(backend: Backend) -> None:
    status, output = await probe({"http": f"{backend.base}/fail"})
    assert status == "critical"
    assert output == f"HTTP GET {backend.base}/fail: 500 Internal Server Error Output: database unreachable"


async def test_timeout_is_critical(backend: Backend) -> None:
    status, output = await probe({"http": f"{backend.base}/slow", "timeout": "300ms"})
    assert status == "critical"
    assert output.startswith(f'Get "{backend.base}/slow": ') and "Timeout exceeded" in output


async def test_connection_refused_is_critical(backend: Backend) -> None:
    port = backend.port
    await backend.stop()
    status, output = await probe({"http": f"http://127.0.0.1:{port}/ok", "timeout": "2s"})
    assert status == "critical"
    assert (
        output == f'Get "http://127.0.0.1:{port}/ok": dial tcp 127.0.0.1:{port}: connect: connection refused'
    )


async def test_default_and_custom_headers_method_body(backend: Backend) -> None:
    await probe({"http": f"{backend.base}/ok"})
    req = backend.requests[-1]
    assert req.method == "GET"
    assert req.headers["User-Agent"] == "Consul Health Check"
    assert req.headers["Accept"] == "text/plain, text/*, */*"
    assert req.headers.get("Connection", "").lower() != "keep-alive"

    status, output = await probe(
        {
            "http": f"{backend.base}/ok",
            "method": "POST",
            "header": {"X-Token": ["a", "b"], "User-Agent": ["probe/1"], "Host": ["svc.example"]},
            "body": '{"deep":true}',
        }
    )
    req = backend.requests[-1]
    assert status == "passing" and output.startswith("HTTP POST ")
    assert req.method == "POST" and backend.bodies[-1] == b'{"deep":true}'
    assert req.headers.getall("X-Token") == ["a", "b"]
    assert req.headers["User-Agent"] == "probe/1"
    assert req.headers["Host"] == "svc.example"


async def test_redirects_followed_unless_disabled(backend: Backend) -> None:
    status, output = await probe({"http": f"{backend.base}/redirect"})
    assert status == "passing" and "200 OK" in output
    status, output = await probe({"http": f"{backend.base}/redirect", "disableredirects": True})
    assert status == "critical" and "302 Found" in output
    status, output = await probe({"http": f"{backend.base}/loop"})
    assert status == "critical" and output.endswith("stopped after 10 redirects")


async def test_large_body_keeps_only_a_bounded_tail(backend: Backend) -> None:
    status, output = await probe({"http": f"{backend.base}/big"})
    assert status == "passing"
    assert len(output.encode()) <= 4096 and output.endswith("THE-END")
    status, output = await probe({"http": f"{backend.base}/big", "outputmaxsize": 200})
    assert len(output.encode()) <= 200 and output.endswith("THE-END")


async def test_invalid_url_is_critical_not_an_exception() -> None:
    status, output = await probe({"http": "not a url"})
    assert status == "critical" and "not a url" in output


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=ctk.test",
            "-addext",
            "subjectAltName=DNS:ctk.test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make a test certificate")
async def test_tls_verify_skip_verify_and_server_name(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    b = Backend()
    await b.start(ssl_context=server_ctx)
    try:
        url = f"{b.base}/ok"
        status, output = await probe({"http": url})
        assert status == "critical" and "certificate" in output
        status, _ = await probe({"http": url, "tlsskipverify": True})
        assert status == "passing"
        trusting = ssl.create_default_context(cafile=str(cert))
        status, output = await probe({"http": url}, ssl_context=trusting)
        assert status == "critical"  # trusted CA, but the name 127.0.0.1 is not in the certificate
        status, output = await probe({"http": url, "tlsservername": "ctk.test"}, ssl_context=trusting)
        assert status == "passing", output
    finally:
        await b.stop()


async def test_flapping_backend_needs_three_failures_to_go_critical(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """failures_before_critical=3 through the real scheduler and a real server (1 s interval, ~3 s)."""
    caplog.set_level(logging.INFO, logger="agent.checks")
    backend.flap = [200, 500, 500, 500]
    seen: list[str] = []
    done = asyncio.Event()

    def on_update(check_id: str, status: str, output: str) -> None:
        seen.append(status)
        if len(seen) == 4:
            done.set()

    spec = CheckSpec.from_definition(
        {"http": f"{backend.base}/flap", "interval": "1s", "failuresbeforecritical": 3}
    )
    scheduler = CheckScheduler(on_update, random=lambda: 0.0)
    scheduler.add("web", spec)
    try:
        await asyncio.wait_for(done.wait(), timeout=15)
    finally:
        await scheduler.stop()
    assert seen == ["passing", "passing", "passing", "critical"]
    changes = [r.getMessage() for r in caplog.records if r.name == "agent.checks"]
    assert len(changes) == 2
    assert "critical -> passing" in changes[0] and "passing -> critical" in changes[1]
