"""``/ui/``: static assets, Content-Types, redirects, path traversal, and the disabled UI.

The disabled branch and most header checks run in-process (aiohttp's test client around ``build_app``
with a real ``AgentConfig``); the wire-level checks (raw ``..`` paths that clients would normalise away)
run against a real ``ctk agent -dev``.
"""

from __future__ import annotations

import fnmatch
import http.client
import re
import tomllib
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent.config import from_sources
from agent.http import ui_endpoint
from agent.http.app import build_app
from agent.server import Agent
from tests.agentproc import ROOT, AgentProcess

UI_DIR = ROOT / "agent" / "http" / "ui"
Client = TestClient[web.Request, web.Application]
TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}


async def _client(ui: bool) -> Client:
    agent = Agent(from_sources({"dev": True, "node": "ui-test"}).with_(ui=ui))
    client = TestClient(TestServer(build_app(agent)))
    await client.start_server()
    return client


@pytest.fixture
async def ui_on() -> AsyncIterator[Client]:
    client = await _client(True)
    yield client
    await client.close()


@pytest.fixture
async def ui_off() -> AsyncIterator[Client]:
    client = await _client(False)
    yield client
    await client.close()


# ------------------------------------------------------------------ in-process


async def test_disabled_ui_answers_404_with_a_hint(ui_off: Client) -> None:
    for path in ("/ui", "/ui/", "/ui/index.html", "/ui/app.js"):
        r = await ui_off.get(path, allow_redirects=False)
        assert r.status == 404, path
        assert await r.text() == "UI disabled: run the agent with -ui"
    r = await ui_off.get("/", allow_redirects=False)
    assert r.status == 200 and "under /v1/" in await r.text()


async def test_enabled_ui_redirects_and_serves_assets(ui_on: Client) -> None:
    for path in ("/", "/ui"):
        r = await ui_on.get(path, allow_redirects=False)
        assert r.status == 301 and r.headers["Location"] == "/ui/", path
    r = await ui_on.get("/ui/")
    assert r.status == 200 and r.headers["Content-Type"] == TYPES["index.html"]
    assert (await r.read()) == (UI_DIR / "index.html").read_bytes()
    for name, ctype in TYPES.items():
        r = await ui_on.get("/ui/" + name)
        assert r.status == 200, name
        assert r.headers["Content-Type"] == ctype
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert (await r.read()) == (UI_DIR / name).read_bytes()
    r = await ui_on.head("/ui/app.js")
    assert r.status == 200 and r.headers["Content-Type"] == TYPES["app.js"]
    r = await ui_on.post("/ui/app.js")
    assert r.status == 405


async def test_unknown_and_non_asset_files_are_404(ui_on: Client) -> None:
    for path in ("/ui/nope.js", "/ui/__init__.py", "/ui/ui/app.js", "/ui/app.js/", "/ui/APP.JS", "/ui/%00"):
        r = await ui_on.get(path)
        assert r.status == 404, path
        assert await r.text() == "UI asset not found"


def test_asset_table_is_exactly_the_ui_folder() -> None:
    assert {name: ctype for name, (_, ctype) in ui_endpoint.assets().items()} == TYPES


# ------------------------------------------------------------------ the assets themselves


def test_assets_are_self_contained_and_never_inject_html() -> None:
    for name in TYPES:
        text = (UI_DIR / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"external URL in {name}"
    js = (UI_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    assert len(js.splitlines()) < 450
    html = (UI_DIR / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="app.js" defer>'], "no inline script (CSP)"
    assert "style=" not in html


def test_assets_ship_as_package_data() -> None:
    """The ui folder is a package matched by setuptools' find, and package-data globs cover every asset."""
    assert (UI_DIR / "__init__.py").exists()
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch("agent.http.ui", pat) for pat in include)
    globs = conf["tool"]["setuptools"]["package-data"]["*"]
    for name in TYPES:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


# ------------------------------------------------------------------ a real agent


def _raw_get(agent: AgentProcess, path: str) -> tuple[int, bytes]:
    """Send ``path`` byte-for-byte (httpx and browsers would remove the dot segments first)."""
    conn = http.client.HTTPConnection(agent.host, agent.http_port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_real_agent_serves_ui(dev_agent: AgentProcess) -> None:
    with httpx.Client(base_url=dev_agent.url, timeout=10) as http:
        r = http.get("/")
        assert r.status_code == 301 and r.headers["Location"] == "/ui/"
        r = http.get("/", follow_redirects=True)
        assert r.status_code == 200 and str(r.url).endswith("/ui/") and "<title>ctk</title>" in r.text
        for name, ctype in TYPES.items():
            r = http.get("/ui/" + name)
            assert r.status_code == 200 and r.headers["content-type"] == ctype
            assert r.headers["cache-control"] == "no-cache"
        assert http.get("/ui/missing.css").status_code == 404
        assert http.get("/v1/agent/self").json()["Config"]["NodeName"] == "n1"  # the API is untouched


@pytest.mark.slow
@pytest.mark.parametrize("path", [
    "/ui/../agent/server.py",
    "/ui/%2e%2e/agent/server.py",
    "/ui/%2E%2E/agent/server.py",
    "/ui/..%2fagent%2fserver.py",
    "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/ui/..%5c..%5cpyproject.toml",
    "/ui/../../../../etc/passwd",
    "/ui/%252e%252e/agent/server.py",
    "/ui//etc/passwd",
    "/ui/./app.js/../../agent/config.py",
])
def test_real_agent_rejects_path_traversal(dev_agent: AgentProcess, path: str) -> None:
    status, body = _raw_get(dev_agent, path)
    assert status == 404, (path, status)
    assert b"import" not in body and b"root:" not in body and b"[project]" not in body
