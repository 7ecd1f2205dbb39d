"""Client agents: no catalog of their own; everything that needs state goes to a server.

A Consul client agent runs gossip, its own services and checks, and the HTTP/DNS interfaces, but keeps
no Raft state (``docs/architecture/index.mdx``): it forwards each request to one server, picked at
random among those gossip knows and kept until it fails (``agent/router``'s manager rotates then).
ctk forwards three kinds of request over the servers' RPC port (8300, the Raft transport's RPC channel):

- ``write``: a state-store command (anti-entropy's register/deregister); the server applies it through
  Raft, a follower forwarding it to the leader;
- ``http``: a ``/v1`` request that is not the agent's own (``/v1/agent/*``, ``/v1/event/*``); the
  server answers it with its own HTTP API, so blocking queries, consistency modes and headers are
  exactly a server's;
- ``dns``: a DNS query, answered by the server's resolver.

Retries follow what a request may have done: a request that was provably not sent is retried on
another server; one whose answer was lost is retried only when it is a read; "no leader" answers are
retried until ``rpc_hold_timeout`` (7 s), as Consul holds RPCs during an election.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from agent.consensus import ConsensusError, NoLeader
from agent.discovery import ServerDirectory
from agent.raft.transport import NotSent, OutcomeUnknown, RPCError, TCPTransport
from agent.state.commands import Command, result_from_wire

__all__ = ["ServerPool", "RemoteConsensus", "RPC_HOLD_TIMEOUT_S", "NoServers"]

log = logging.getLogger(__name__)

RPC_HOLD_TIMEOUT_S = 7.0  # Consul's rpc_hold_timeout
RETRY_PAUSE_S = 0.1
_LEADERLESS = ("No cluster leader", "not the leader")


class NoServers(ConsensusError):
    def __init__(self) -> None:
        super().__init__("No known Consul servers")


class ServerPool:
    """The servers a client agent talks to, one at a time (``agent/router/manager.go``)."""

    def __init__(self, directory: ServerDirectory, rng: random.Random | None = None,
                 hold_timeout_s: float = RPC_HOLD_TIMEOUT_S) -> None:
        self.directory = directory
        self.hold_timeout_s = hold_timeout_s
        self.transport = TCPTransport("0.0.0.0", 0, on_message=lambda _msg: None)  # outgoing calls only
        self.rng = rng or random.Random()
        self._current = ""
        self.leader_addr = ""  # the leader the last answer named, for /v1/agent/self

    def addresses(self) -> list[str]:
        return [s.server_addr for s in self.directory.servers()]

    def current(self) -> str:
        known = self.addresses()
        if self._current not in known:
            self._current = self.rng.choice(known) if known else ""
        return self._current

    def rotate(self, failed: str) -> None:
        others = [a for a in self.addresses() if a != failed]
        self._current = self.rng.choice(others) if others else ""
        if failed:
            log.debug("server %s failed; now using %s", failed, self._current or "(none known)")

    async def call(self, method: str, body: Any, timeout_s: float = 10.0, *, idempotent: bool = False) -> Any:
        """One RPC to a server, retried as the module docstring says."""
        deadline = time.monotonic() + self.hold_timeout_s
        last: Exception = NoServers()
        while True:
            addr = self.current()
            if addr:
                try:
                    return await self.transport.call(addr, method, body, timeout_s=timeout_s)
                except NotSent as err:
                    self.rotate(addr)
                    last = err
                except OutcomeUnknown as err:
                    if not idempotent:
                        raise ConsensusError(f"rpc error: {err}") from None
                    self.rotate(addr)
                    last = err
                except RPCError as err:
                    if not any(s in str(err) for s in _LEADERLESS):
                        raise ConsensusError(str(err)) from None
                    last = NoLeader()
            if time.monotonic() >= deadline:
                raise last if isinstance(last, ConsensusError) else ConsensusError(f"rpc error: {last}")
            await asyncio.sleep(RETRY_PAUSE_S)

    async def close(self) -> None:
        await self.transport.close()


class RemoteConsensus:
    """The :class:`agent.consensus.Consensus` of a client agent: writes go to a server."""

    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool

    async def apply(self, command: Command) -> Any:
        return result_from_wire(await self.pool.call("write", command))

    async def read_barrier(self, mode: str) -> None:
        return None  # reads are forwarded whole; the server applies the consistency mode

    def is_leader(self) -> bool:
        return False

    def leader_address(self) -> str:
        return self.pool.leader_addr

    def known_leader(self) -> bool:
        return bool(self.pool.leader_addr)

    def last_contact_ms(self) -> int:
        return 0

    def peers(self) -> list[str]:
        return self.pool.addresses()

    def configuration(self) -> dict[str, Any]:
        return {"Servers": [], "Index": 0}

    def stats(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        await self.pool.close()
