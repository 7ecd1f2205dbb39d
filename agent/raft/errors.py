"""The raft package's exception tree.

Everything the core raises derives from :class:`RaftError`, so the driver can translate the whole
family at one boundary (HTTP 500 "No cluster leader", an RPC retry, a CLI message). The names follow
etcd's sentinels (``ErrProposalDropped``) and hashicorp's (``ErrNotLeader``, ``ErrLeadershipLost``).
"""

from __future__ import annotations

__all__ = [
    "RaftError",
    "WireError",
    "ConfigError",
    "NotLeader",
    "ProposalDropped",
    "ConfigChangeError",
    "LeadershipTransferError",
    "LeaseExpired",
    "CompactedError",
    "StorageError",
    "SafetyViolation",
]


class RaftError(Exception):
    """Base class of every error raised by ``agent.raft``."""


class WireError(RaftError, ValueError):
    """A message, entry or configuration read off the wire (or disk) is malformed.

    Raised by every ``from_wire``/``decode`` function on wrong types, missing fields, unknown message
    types or undecodable bytes. The transport drops the frame (and may close the connection); it is
    never a reason to crash the node.
    """


class ConfigError(RaftError, ValueError):
    """A :class:`~agent.raft.config.RaftConfig` field, or a combination of fields, is invalid."""


class NotLeader(RaftError):
    """Returned when a leader-only operation (propose, read_index, ...) reaches a non-leader.

    ``leader_id`` is the best guess at the current leader (``None`` when unknown), so the caller can
    forward the request, as Consul's RPC layer does.
    """

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


class ProposalDropped(RaftError):
    """The leader refused a proposal it would otherwise accept, e.g. during a leadership transfer (§3.10)."""


class ConfigChangeError(RaftError):
    """A membership change is invalid or must wait (previous change uncommitted, §4.1)."""


class LeadershipTransferError(RaftError):
    """A leadership transfer target is not a voter of the current configuration (§3.10)."""


class LeaseExpired(RaftError):
    """The leader cannot prove it still holds its lease; fall back to ``read_index`` (§6.4.1)."""


class CompactedError(RaftError):
    """The requested log index was discarded by compaction (§5 / §7 of the Raft paper)."""


class StorageError(RaftError):
    """Storage was asked to do something inconsistent (bootstrap twice, append with a gap, ...)."""


class SafetyViolation(RaftError, AssertionError):
    """An internal invariant of the protocol broke (e.g. a committed entry would be truncated).

    This is a bug, never an operational condition: the driver should crash loudly rather than keep
    running with a log that may diverge from its peers.
    """
