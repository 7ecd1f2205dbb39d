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

__all__ = ["ConsulClient", "ConsulError", "Response", "default_address"]

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


def default_address() -> str:
    return os.environ.get("CONSUL_HTTP_ADDR", "") or DEFAULT_ADDR


def _base_url(address: str) -> str:
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    if address.startswith("unix://"):
        raise ConsulError("unix socket addresses are not supported; use host:port")
    scheme = "https" if os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true") else "http"
    return f"{scheme}://{address}"


class ConsulClient:
    def __init__(self, address: str | None = None, token: str | None = None, timeout_s: float = 15.0) -> None:
        self.address = address or default_address()
        self.token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN", "")
        headers = {"User-Agent": "ctk"}
        if self.token:
            headers["X-Consul-Token"] = self.token
        verify = os.environ.get("CONSUL_HTTP_SSL_VERIFY", "true").lower() not in ("0", "false")
        self._http = httpx.Client(base_url=_base_url(self.address), headers=headers, timeout=timeout_s,
                                  verify=verify)

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
        except httpx.ConnectError:
            raise ConsulError(f"cannot reach the agent at {self.address} (connection refused); "
                              "is it running? set --http-addr or CONSUL_HTTP_ADDR") from None
        except httpx.TimeoutException:
            raise ConsulError(f"the agent at {self.address} did not answer in time") from None
        except httpx.HTTPError as err:
            raise ConsulError(f"request to {self.address} failed: {err}") from None
        if r.status_code not in ok:
            text = r.text.strip() or r.reason_phrase
            raise ConsulError(f"Unexpected response code: {r.status_code} ({text})", r.status_code)
        return Response(r.status_code, r.headers, r.content)

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
