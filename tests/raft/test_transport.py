"""The transport tells "never sent" (safe to retry) from "sent, answer lost" (never retry a write)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.raft.transport import NotSent, OutcomeUnknown, TCPTransport, _frame


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_request_to_a_closed_port_is_not_sent() -> None:
    t = TCPTransport("127.0.0.1", 0, on_message=lambda m: None)
    await t.start()
    try:
        with pytest.raises(NotSent):
            await t.call(f"127.0.0.1:{_free_port()}", "apply", {"op": "x"}, timeout_s=2)
    finally:
        await t.close()


async def test_connection_dropped_after_sending_is_outcome_unknown() -> None:
    received = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the request arrived...
        received.set()
        writer.close()  # ...and the server died before answering

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = TCPTransport("127.0.0.1", 0, on_message=lambda m: None)
    await t.start()
    try:
        with pytest.raises(OutcomeUnknown):
            await t.call(f"127.0.0.1:{port}", "apply", {"op": "x"}, timeout_s=5)
        assert received.is_set()
    finally:
        await t.close()
        server.close()


async def test_rpc_round_trip_and_garbage_frames_are_counted() -> None:
    async def handler(method: str, body: object) -> object:
        return {"method": method, "echo": body}

    server = TCPTransport("127.0.0.1", 0, on_message=lambda m: None, rpc_handler=handler)
    await server.start()
    client = TCPTransport("127.0.0.1", 0, on_message=lambda m: None)
    await client.start()
    try:
        assert await client.call(server.address, "ping", [1, 2]) == {"method": "ping", "echo": [1, 2]}
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_frame(1, b"\xc1not msgpack"))  # a Raft frame that does not decode
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # the server closes that connection, nothing more
        assert server.bad_frames == 1
        assert await client.call(server.address, "ping", None) == {"method": "ping", "echo": None}
    finally:
        await client.close()
        await server.close()
