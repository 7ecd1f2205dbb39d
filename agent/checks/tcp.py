"""TCP checks (``docs/discovery/checks.mdx``, "TCP checks"): connect to ``host:port``, close.

Connected → passing with ``TCP connect <addr>: Success``; otherwise critical with Go's dial error wording
(``dial tcp <addr>: connect: connection refused``, ``... i/o timeout``), which is what Consul stores.
A hostname is resolved and every address tried, as Go's dialer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from .output import tcp_success_output
from .probe import ProbeResult
from .spec import CheckSpec
from .thresholds import CRITICAL, PASSING

__all__ = ["TcpProbe", "split_host_port"]


def split_host_port(addr: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port); ``ValueError`` with Go's wording otherwise."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ValueError(f"address {addr}: missing ']' in address")
        host, rest = addr[1:end], addr[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"address {addr}: missing port in address")
        port_text = rest[1:]
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep:
            raise ValueError(f"address {addr}: missing port in address")
        if ":" in host:
            raise ValueError(f"address {addr}: too many colons in address")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {addr}: invalid port") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {addr}: invalid port")
    return host, port


class TcpProbe:
    def __init__(self, spec: CheckSpec) -> None:
        if spec.kind != "tcp":
            raise ValueError("TcpProbe needs a tcp check")
        self.spec = spec

    async def run(self) -> ProbeResult:
        addr = self.spec.tcp
        try:
            host, port = split_host_port(addr)
        except ValueError as exc:
            return ProbeResult(CRITICAL, f"dial tcp: {exc}")
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            return ProbeResult(CRITICAL, f"dial tcp {addr}: i/o timeout")
        except socket.gaierror:
            return ProbeResult(CRITICAL, f"dial tcp: lookup {host}: no such host")
        except OSError as exc:
            text = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            return ProbeResult(CRITICAL, f"dial tcp {addr}: connect: {text}")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeResult(PASSING, tcp_success_output(addr))

    async def aclose(self) -> None:
        return None
