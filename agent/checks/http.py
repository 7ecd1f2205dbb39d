"""HTTP checks (``docs/discovery/checks.mdx``, "HTTP checks").

One request per interval: method ``GET`` unless ``Method``, custom ``Header`` and ``Body``, ``User-Agent:
Consul Health Check`` and ``Accept: text/plain, text/*, */*`` unless the definition sets them,
keep-alives off (a stale pooled connection must not fail a check), redirects followed unless
``DisableRedirects``, TLS verified unless ``TLSSkipVerify`` with SNI from ``TLSServerName``.
2xx → passing, 429 → warning, anything else (including errors and timeouts) → critical. The body is read
in chunks into a tail buffer, so a huge or endless body costs O(OutputMaxSize) memory.
Proxy environment variables are not honoured: a health check must reach its target directly.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl

import aiohttp

from .output import TailBuffer, http_error_output, http_output
from .probe import ProbeResult
from .spec import CheckSpec
from .thresholds import CRITICAL, PASSING, WARNING

__all__ = ["HttpProbe", "USER_AGENT", "ACCEPT"]

log = logging.getLogger(__name__)

USER_AGENT = "Consul Health Check"
ACCEPT = "text/plain, text/*, */*"
_MAX_REDIRECTS = 10  # Go's http.Client default


class HttpProbe:
    def __init__(self, spec: CheckSpec, *, ssl_context: ssl.SSLContext | None = None) -> None:
        if spec.kind != "http":
            raise ValueError("HttpProbe needs an http check")
        self.spec = spec
        self._ssl: ssl.SSLContext | bool = False if spec.tls_skip_verify else (ssl_context or True)
        self._session: aiohttp.ClientSession | None = None
        self._headers = self._build_headers()

    def _build_headers(self) -> list[tuple[str, str]]:
        names = {k.lower() for k, v in self.spec.header.items() if v}
        headers = [(k, v) for k, values in self.spec.header.items() for v in values]
        if "user-agent" not in names:
            headers.append(("User-Agent", USER_AGENT))
        if "accept" not in names:
            headers.append(("Accept", ACCEPT))
        return headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def run(self) -> ProbeResult:
        spec = self.spec
        method = spec.method or "GET"
        url = spec.http
        body = TailBuffer(spec.output_max_size)
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme not in ("http", "https"):
            return ProbeResult(
                CRITICAL, http_error_output(method, url, f'unsupported protocol scheme "{scheme}"')
            )
        try:
            async with self._client().request(
                method,
                url,
                headers=self._headers,
                data=spec.body.encode("utf-8") if spec.body else None,
                allow_redirects=not spec.disable_redirects,
                max_redirects=_MAX_REDIRECTS,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                server_hostname=spec.tls_server_name or None,
            ) as resp:
                try:
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        body.write(chunk)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    # Consul logs and still reports the status code with what was read.
                    log.debug("http check %s: error reading body: %r", url, exc)
                status_line = f"{resp.status} {resp.reason or ''}".rstrip()
                output = http_output(method, url, status_line, body, spec.output_max_size)
                if 200 <= resp.status <= 299:
                    return ProbeResult(PASSING, output)
                if resp.status == 429:
                    return ProbeResult(WARNING, output)
                return ProbeResult(CRITICAL, output)
        except TimeoutError:
            reason = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        except aiohttp.TooManyRedirects:
            reason = f"stopped after {_MAX_REDIRECTS} redirects"
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = f"tls: failed to verify certificate: {exc.certificate_error}"
        except aiohttp.ClientSSLError as exc:
            reason = f"tls: {exc}"
        except aiohttp.ClientConnectorError as exc:
            reason = _dial_error(exc)
        except aiohttp.ServerDisconnectedError:
            reason = "EOF"
        except (aiohttp.InvalidURL, ValueError):
            return ProbeResult(CRITICAL, f'parse "{url}": invalid URL')
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
        return ProbeResult(CRITICAL, http_error_output(method, url, reason))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _dial_error(exc: aiohttp.ClientConnectorError) -> str:
    """Go's ``net.OpError`` wording: ``dial tcp 127.0.0.1:1: connect: connection refused``."""
    err = exc.os_error
    if isinstance(err, socket.gaierror):
        return f"dial tcp: lookup {exc.host}: no such host"
    if err.errno:
        text = os.strerror(err.errno).lower()
    else:
        text = str(err) or type(err).__name__
    return f"dial tcp {exc.host}:{exc.port}: connect: {text}"
