"""ServerPool against real RPC listeners (the Raft transport's RPC channel) on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agent.client import NoServers, RemoteConsensus, ServerPool
from agent.consensus import ConsensusError
from agent.discovery import ServerInfo
from agent.raft.transport import TCPTransport
from agent.state import commands
from agent.state.commands import result_to_wire
from agent.state.store import Store

Handler = Callable[[str, Any], Awaitable[Any]]


class Directory:
    """What the pool needs from gossip: the live servers."""

    def __init__(self) -> None:
        self.infos: list[ServerInfo] = []

    def add(self, t: TCPTransport) -> None:
        self.infos.append(ServerInfo(id=t.address, name=t.address, datacenter="dc1", server_addr=t.address,
                                     serf_addr=""))

    def servers(self) -> list[ServerInfo]:
        return list(self.infos)


@pytest.fixture
async def listeners() -> AsyncIterator[Callable[[Handler], Awaitable[TCPTransport]]]:
    started: list[TCPTransport] = []

    async def start(handler: Handler) -> TCPTransport:
        t = TCPTransport("127.0.0.1", 0, on_message=lambda m: None, rpc_handler=handler)
        await t.start()
        started.append(t)
        return t

    yield start
    for t in started:
        await t.close()


def pool_for(directory: Directory, hold_s: float = 2.0) -> ServerPool:
    return ServerPool(directory, rng=random.Random(7), hold_timeout_s=hold_s)  # type: ignore[arg-type]


async def test_rotates_to_another_server_when_one_is_down(listeners: Any) -> None:
    async def answer(method: str, body: Any) -> Any:
        return {"pong": body}

    down = await listeners(answer)
    up = await listeners(answer)
    directory = Directory()
    directory.add(down)
    directory.add(up)
    await down.close()  # refuses connections: the request provably was not sent
    pool = pool_for(directory)
    pool._current = down.address
    try:
        assert await pool.call("ping", 1) == {"pong": 1}
        assert pool.current() == up.address
    finally:
        await pool.close()


async def test_retries_while_there_is_no_leader(listeners: Any) -> None:
    calls: list[str] = []

    async def electing(method: str, body: Any) -> Any:
        calls.append(method)
        if len(calls) < 3:
            raise ConsensusError("No cluster leader")
        return "ok"

    directory = Directory()
    directory.add(await listeners(electing))
    pool = pool_for(directory)
    try:
        assert await pool.call("write", {}) == "ok"
        assert len(calls) == 3
    finally:
        await pool.close()


async def test_other_errors_are_not_retried(listeners: Any) -> None:
    calls: list[str] = []

    async def refusing(method: str, body: Any) -> Any:
        calls.append(method)
        raise ValueError("Invalid service address")

    directory = Directory()
    directory.add(await listeners(refusing))
    pool = pool_for(directory)
    try:
        with pytest.raises(ConsensusError, match="Invalid service address"):
            await pool.call("write", {})
        assert calls == ["write"]
    finally:
        await pool.close()


async def test_no_servers_known() -> None:
    pool = pool_for(Directory(), hold_s=0.2)
    try:
        with pytest.raises(NoServers, match="No known Consul servers"):
            await pool.call("write", {})
    finally:
        await pool.close()


async def test_lost_answer_retried_only_for_reads(listeners: Any) -> None:
    """A request sent and then cut off may have been applied: a write is not repeated, a read is."""
    received: list[str] = []
    hung = asyncio.Event()

    async def hang(method: str, body: Any) -> Any:
        received.append(method)
        hung.set()
        await asyncio.sleep(30)

    async def answer(method: str, body: Any) -> Any:
        return "from the other server"

    first = await listeners(hang)
    second = await listeners(answer)
    directory = Directory()
    directory.add(first)
    directory.add(second)
    for method, idempotent in (("write", False), ("http", True)):
        pool = pool_for(directory)
        pool._current = first.address
        hung.clear()
        call = asyncio.ensure_future(pool.call(method, {}, idempotent=idempotent))
        await hung.wait()
        # Sever the connection under the pending request (the server "crashed" after receiving it).
        peer = pool.transport._peers[first.address]
        peer.task.cancel()
        if idempotent:
            assert await call == "from the other server"
        else:
            with pytest.raises(ConsensusError, match="outcome unknown"):
                await call
        await pool.close()
    assert received == ["write", "http"]


async def test_remote_consensus_applies_through_a_server(listeners: Any) -> None:
    """The client's write path: the command travels, the server's result (or refusal) comes back."""
    store = Store()

    async def server(method: str, body: Any) -> Any:
        assert method == "write"
        return result_to_wire(store.apply(store.last_index + 1, body))

    directory = Directory()
    directory.add(await listeners(server))
    consensus = RemoteConsensus(pool_for(directory))
    try:
        assert await consensus.apply(commands.register({"node": "c1", "address": "10.0.0.1"})) is True
        assert store.nodes["c1"].address == "10.0.0.1"
        assert await consensus.apply(commands.kv("cas", "k", value=b"v", index=99)) is False  # CAS lost
        assert "k" not in store.kv
        assert not consensus.is_leader()
    finally:
        await consensus.close()
