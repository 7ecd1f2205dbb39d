"""TCP runner against a real listener and a closed port on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.checks import CheckSpec
from agent.checks.tcp import TcpProbe, split_host_port


async def run(addr: str, timeout: str = "2s") -> tuple[str, str]:
    p = TcpProbe(CheckSpec.from_definition({"tcp": addr, "interval": "10s", "timeout": timeout}))
    r = await p.run()
    await p.aclose()
    return r.status, r.output


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def test_listener_is_passing() -> None:
    accepted = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await run(f"127.0.0.1:{port}") == ("passing", f"TCP connect 127.0.0.1:{port}: Success")
        await asyncio.wait_for(accepted.wait(), 2)
    finally:
        server.close()
        await server.wait_closed()


async def test_closed_port_is_critical_with_go_wording() -> None:
    port = closed_port()
    assert await run(f"127.0.0.1:{port}") == (
        "critical",
        f"dial tcp 127.0.0.1:{port}: connect: connection refused",
    )


async def test_ipv6_loopback_literal() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
    except OSError:
        pytest.skip("::1 not configured")
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await run(f"[::1]:{port}"))[0] == "passing"
    finally:
        server.close()
        await server.wait_closed()


async def test_bad_address_is_critical() -> None:
    status, output = await run("127.0.0.1")
    assert status == "critical" and output == "dial tcp: address 127.0.0.1: missing port in address"


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:8500", ("::1", 8500)), ("localhost:1", ("localhost", 1))],
)
def test_split_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert split_host_port(addr) == expected


@pytest.mark.parametrize("addr", ["127.0.0.1", "::1:80", "[::1]", "h:port", "h:70000"])
def test_split_host_port_rejects(addr: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(addr)
