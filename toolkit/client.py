"""A small Consul HTTP API client (sync, httpx) used by the CLI and the operator helpers.

It speaks to any Consul agent — ctk's or HashiCorp's. Address and token come from ``--http-addr`` /
``CONSUL_HTTP_ADDR`` and ``--token`` / ``CONSUL_HTTP_TOKEN``, as with the ``consul`` CLI.
Errors are :class:`ConsulError` with one readable line; callers never see an httpx traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ConsulClient", "ConsulError", "Response", "default_address", "base_url", "client_settings",
           "transport_error", "checked", "kv_path"]

DEFAULT_ADDR = "127.0.0.1:8500"


class ConsulError(Exception):
    """A request that failed: unreachable agent, or a non-2xx answer (``status`` set)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def index(self) -> int:
        return int(self.headers.get("X-Consul-Index", "0") or 0)


def kv_path(key: str) -> str:
    """``/v1/kv/<key>``, escaped so ``?``/``#``/``%``/spaces stay part of the key (as Go's client does).

    ``.``/``..`` segments raise ``ValueError``: an HTTP client would resolve them and silently address
    another key, and Consul rejects them as path traversal anyway.
    """
    from urllib.parse import quote

    if any(segment in (".", "..") for segment in key.split("/")):
        raise ValueError(f"{key!r}: '.' and '..' path segments are not allowed in keys")
    return "/v1/kv/" + quote(key, safe="/")


def default_address() -> str:
    return os.environ.get("CONSUL_HTTP_ADDR", "") or DEFAULT_ADDR


def base_url(address: str | None = None) -> str:
    """``host:port`` / ``http(s)://host:port`` → base URL (``None``: ``CONSUL_HTTP_ADDR``, then the default).

    ``CONSUL_HTTP_SSL=true`` turns a bare ``host:port`` into https. Raises ``ValueError`` for ``unix://``.
    """
    addr = (address or default_address()).strip()
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    if addr.startswith("unix://"):
        raise ValueError("unix socket addresses are not supported; use host:port")
    scheme = "https" if os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true") else "http"
    return f"{scheme}://{addr}"


def client_settings(address: str | None, token: str | None, user_agent: str) -> tuple[str, str, dict[str, str], bool]:
    """(address, base URL, headers, TLS verify) by the ``consul`` CLI's conventions, for sync and async clients."""
    addr = address or default_address()
    try:
        url = base_url(addr)
    except ValueError as err:
        raise ConsulError(str(err)) from None
    tok = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN", "")
    headers = {"User-Agent": user_agent}
    if tok:
        headers["X-Consul-Token"] = tok
    verify = os.environ.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() not in ("0", "false")
    return addr, url, headers, verify


def transport_error(address: str, err: httpx.HTTPError) -> ConsulError:
    """One readable line for a request that got no HTTP answer."""
    if isinstance(err, httpx.ConnectError):
        return ConsulError(f"cannot reach the agent at {address} (connection refused); "
                           "is it running? set --http-addr or CONSUL_HTTP_ADDR")
    if isinstance(err, httpx.TimeoutException):
        return ConsulError(f"the agent at {address} did not answer in time")
    return ConsulError(f"request to {address} failed: {err}")


def checked(r: httpx.Response, ok: tuple[int, ...]) -> Response:
    if r.status_code not in ok:
        text = r.text.strip() or r.reason_phrase
        raise ConsulError(f"Unexpected response code: {r.status_code} ({text})", r.status_code)
    return Response(r.status_code, r.headers, r.content)


class ConsulClient:
    def __init__(self, address: str | None = None, token: str | None = None, timeout_s: float = 15.0) -> None:
        self.address, url, headers, verify = client_settings(address, token, "ctk")
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConsulClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                content: bytes | None = None, json_body: Any = None, ok: tuple[int, ...] = (200,),
                timeout_s: float | None = None) -> Response:
        kwargs: dict[str, Any] = {"params": {k: v for k, v in (params or {}).items() if v is not None}}
        if content is not None:
            kwargs["content"] = content
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body).encode()
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise transport_error(self.address, err) from None
        return checked(r, ok)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    # Convenience reads used by several commands.
    def self_info(self) -> dict[str, Any]:
        return self.get("/v1/agent/self").json()  # type: ignore[no-any-return]

    def members(self, wan: bool = False) -> list[dict[str, Any]]:
        params = {"wan": "1"} if wan else {"segment": "_all"}
        return self.get("/v1/agent/members", params=params).json()  # type: ignore[no-any-return]
