"""The seam between the API and replication: how a write becomes a committed, applied command.

The HTTP layer and the agent's anti-entropy only ever call :class:`Consensus`. Today two things sit
behind it: :class:`agent.standalone.Standalone` (one server, its own leader: ``-dev`` and
single-server setups) and, for clusters, the Raft node. Reads go straight to the local state store;
``read_barrier`` gives them Consul's consistency modes (``api-docs/features/consistency.mdx``).
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.state.commands import Command

__all__ = ["Consensus", "ConsensusError", "NoLeader", "NotLeader"]


class ConsensusError(Exception):
    """A write or consistent read that could not be served; ``status`` is the HTTP status."""

    status = 500


class NoLeader(ConsensusError):
    def __init__(self) -> None:
        super().__init__("No cluster leader")


class NotLeader(ConsensusError):
    def __init__(self, leader: str = "") -> None:
        super().__init__("node is not the leader" + (f" (leader is {leader})" if leader else ""))
        self.leader = leader


class Consensus(Protocol):
    async def apply(self, command: Command) -> Any:
        """Replicate and apply ``command``; returns the state machine's result once committed."""

    async def read_barrier(self, mode: str) -> None:
        """Wait until a read in ``mode`` (``default``, ``consistent``; ``stale`` never waits) is safe."""

    def is_leader(self) -> bool: ...

    def leader_address(self) -> str:
        """The leader's server address ``ip:port``, or ``""`` when there is none."""

    def known_leader(self) -> bool: ...

    def last_contact_ms(self) -> int:
        """Milliseconds since this server heard from the leader (0 on the leader)."""

    def peers(self) -> list[str]:
        """Server addresses of the voters, as ``/v1/status/peers`` lists them."""

    def configuration(self) -> dict[str, Any]:
        """``/v1/operator/raft/configuration``'s body."""

    def stats(self) -> dict[str, str]:
        """The ``raft`` section of ``ctk info`` / ``/v1/agent/self`` Stats."""

    async def close(self) -> None: ...
