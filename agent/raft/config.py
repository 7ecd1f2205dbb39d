"""Tunables of the Raft core, in ticks.

The core has no clock: the driver calls ``RaftCore.tick()`` every ``tick_s`` seconds and every
timeout below is a whole number of ticks. Consul's defaults (``performance.raft_multiplier`` 5:
ElectionTimeout 5 s, HeartbeatTimeout 5 s, LeaderLeaseTimeout 2.5 s) map onto the defaults here
with ``tick_s = 0.5``: elections after 10-19 ticks (5-9.5 s), heartbeats every tick (0.5 s, i.e.
hashicorp's HeartbeatTimeout/10), a 5-tick (2.5 s) leader lease. Multiplier 1 is ``tick_s = 0.1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["RaftConfig"]


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Validated on construction; an invalid combination raises :class:`ConfigError`."""

    #: Followers and candidates start an election after a random timeout in
    #: ``[election_ticks, 2 * election_ticks)`` without hearing from a leader (Raft §5.2; the
    #: randomisation is what makes split votes rare). Also the CheckQuorum period and the
    #: leader-stickiness window. Must exceed ``heartbeat_ticks``; ~10x is usual.
    election_ticks: int = 10
    #: The leader sends a heartbeat (and ReadIndex confirmation round) every this many ticks.
    heartbeat_ticks: int = 1
    #: Leader lease for default-consistency reads (thesis §6.4.1): the leader may answer reads locally
    #: for this many ticks after a quorum acknowledged a heartbeat, counted from when that heartbeat
    #: was *sent*. Must be below ``election_ticks`` so followers' stickiness outlives the lease; the
    #: gap absorbs clock drift between nodes. 0 disables lease reads. Needs ``check_quorum``.
    lease_ticks: int = 5
    #: PreVote (thesis §9.6): ask "would you vote for me?" before bumping the term, so a node that was
    #: partitioned away cannot force a healthy leader to step down when it returns.
    pre_vote: bool = True
    #: CheckQuorum (thesis §6.2): a leader that has not heard from a quorum within an election timeout
    #: steps down; followers ignore vote requests while they have a live leader (§4.2.3). Required for
    #: lease reads to be safe.
    check_quorum: bool = True
    #: Entries per AppendEntries message (Consul's MaxAppendEntries is 64).
    max_entries_per_msg: int = 64
    #: Optimistic pipelining window: AppendEntries messages in flight to one follower before the
    #: leader waits for acknowledgements (etcd's MaxInflightMsgs).
    max_inflight_msgs: int = 256
    #: Entries kept behind a local snapshot so a slightly slow follower can catch up from the log
    #: instead of receiving the whole snapshot (Consul's raft_trailing_logs, 10240).
    trailing_entries: int = 10240
    #: A follower that has not acknowledged an InstallSnapshot within this many ticks is probed again
    #: (the message or its reply may have been lost).
    snapshot_retry_ticks: int = 40

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check each field's range and the cross-field rules; raise :class:`ConfigError` on the first."""
        if self.heartbeat_ticks < 1:
            raise ConfigError(f"heartbeat_ticks must be >= 1 (got {self.heartbeat_ticks})")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                f"election_ticks ({self.election_ticks}) must be greater than heartbeat_ticks "
                f"({self.heartbeat_ticks}), or followers time out between heartbeats"
            )
        if not 0 <= self.lease_ticks < self.election_ticks:
            raise ConfigError(
                f"lease_ticks must be in [0, election_ticks) = [0, {self.election_ticks}) (got {self.lease_ticks})"
            )
        if self.lease_ticks > 0 and not self.check_quorum:
            raise ConfigError(
                "lease_ticks > 0 requires check_quorum: the lease is only safe while followers refuse "
                "votes during a live leader's term (set lease_ticks=0 to disable lease reads)"
            )
        if self.max_entries_per_msg < 1:
            raise ConfigError(f"max_entries_per_msg must be >= 1 (got {self.max_entries_per_msg})")
        if self.max_inflight_msgs < 1:
            raise ConfigError(f"max_inflight_msgs must be >= 1 (got {self.max_inflight_msgs})")
        if self.trailing_entries < 0:
            raise ConfigError(f"trailing_entries must be >= 0 (got {self.trailing_entries})")
        if self.snapshot_retry_ticks < self.election_ticks:
            raise ConfigError(
                f"snapshot_retry_ticks ({self.snapshot_retry_ticks}) must be >= election_ticks "
                f"({self.election_ticks})"
            )
