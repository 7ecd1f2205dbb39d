"""The built-in web UI: ``/ui/`` serves the static files of ``agent/http/ui`` (only with ``-ui``).

The UI is plain HTML, CSS and JavaScript that reads and writes through this agent's own ``/v1`` API.
Assets are served from an allow-list built from the package folder (``importlib.resources``, so an
installed wheel works): a request path is only ever looked up as a name in that list and never joined
to a filesystem path, so ``..`` — encoded or not — can only be a 404. A Content-Security-Policy keeps
the page to its own origin (no inline script, no external URLs).
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from agent.http.core import Route, agent_of

__all__ = ["ROUTES", "redirect_to_ui", "CONTENT_TYPES"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
DISABLED = "UI disabled: run the agent with -ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@functools.cache
def assets() -> dict[str, tuple[bytes, str]]:
    """File name → (content, Content-Type) for every servable file of the ``ui`` package (read once)."""
    out: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files(f"{__package__}.ui").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            out[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return out


def redirect_to_ui() -> web.Response:
    """Consul's answer to ``GET /`` (and ``/ui``) when the UI is on: a permanent redirect to ``/ui/``."""
    return web.Response(status=301, headers={"Location": "/ui/"})


def _disabled() -> web.Response:
    return web.Response(status=404, text=DISABLED)


async def ui_root(request: web.Request, _: str) -> web.StreamResponse:
    return redirect_to_ui() if agent_of(request).config.ui else _disabled()


async def ui_asset(request: web.Request, rest: str) -> web.StreamResponse:
    if not agent_of(request).config.ui:
        return _disabled()
    found = assets().get(rest or "index.html")
    if found is None:
        return web.Response(status=404, text="UI asset not found")
    body, content_type = found
    return web.Response(body=body, headers={
        "Content-Type": content_type,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",
    })


ROUTES = [
    Route("/ui", {"GET": ui_root, "HEAD": ui_root}),
    Route("/ui/", {"GET": ui_asset, "HEAD": ui_asset}),
]
