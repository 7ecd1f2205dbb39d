"""The leader's view of each follower: how far its log matches, and how to send it more.

A follower's ``Progress`` is in one of three states (the etcd design, with our own code)::

               reject / lost probe
      +--------------------------------+
      v                                |
    PROBE --- success (match known) --> REPLICATE
      |  ^                               |
      |  +---- acked (match >= snap) ----+-- next entry compacted away
      v                                  v
    SNAPSHOT <---------------------------+

* PROBE: the leader does not know where the logs diverge. It sends one AppendEntries at a time
  and waits (``probe_sent``) for the answer, walking ``next`` back with the follower's hints (§5.3).
* REPLICATE: the logs match up to ``match``. The leader pipelines: it advances ``next``
  optimistically as it sends and keeps at most ``max_inflight_msgs`` messages unacknowledged.
* SNAPSHOT: ``next`` was compacted away (§7); one InstallSnapshot is in flight and nothing else is
  sent until it is acknowledged (or ``snapshot_retry_ticks`` pass).
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["ProgressState", "Inflights", "Progress"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded FIFO of the last index carried by each unacknowledged AppendEntries."""

    __slots__ = ("_capacity", "_q")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._q: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def full(self) -> bool:
        return len(self._q) >= self._capacity

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """An acknowledgement up to ``index`` retires every message that ended at or before it."""
        while self._q and self._q[0] <= index:
            self._q.popleft()

    def free_first(self) -> None:
        """Let one more message out when the window has stalled (its messages were probably lost)."""
        if self._q:
            self._q.popleft()

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "pending_snapshot",
        "snapshot_elapsed",
        "recent_active",
        "acked_seq",
        "sent_commit",
        "inflights",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        #: Highest index known to be replicated on the follower (Figure 2's matchIndex).
        self.match = 0
        #: Next index to send (Figure 2's nextIndex).
        self.next = next_index
        self.state = ProgressState.PROBE
        #: PROBE: a probe is outstanding; wait for its answer (or the next heartbeat response).
        self.probe_sent = False
        #: SNAPSHOT: the index of the snapshot in flight.
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        #: Heard from this follower during the current CheckQuorum period (thesis §6.2).
        self.recent_active = False
        #: Highest heartbeat sequence number the follower echoed this term (ReadIndex, lease).
        self.acked_seq = 0
        #: Highest commit index this follower can have learned from what we sent it.
        self.sent_commit = 0
        self.inflights = Inflights(max_inflight)

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state.value}, inflight={len(self.inflights)})"

    def become_probe(self) -> None:
        # After a snapshot, the follower holds at least the snapshot's entries.
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_elapsed = 0
        self.probe_sent = False
        self.inflights.reset()

    def is_paused(self) -> bool:
        """Whether the leader should hold further AppendEntries to this follower."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def maybe_update(self, index: int) -> bool:
        """A success up to ``index`` arrived; returns whether ``match`` advanced."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease(self, rejected: int, next_guess: int, last_index: int) -> bool:
        """A rejection of ``prev_log_index == rejected`` arrived. Returns False for stale rejections
        (answers to messages older than the current probe, or below what is known to match)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            # The pipeline broke somewhere after ``match``; restart from there (in PROBE).
            self.next = self.match + 1
            return True
        if self.state is ProgressState.SNAPSHOT or rejected != self.next - 1:
            return False
        self.next = max(min(rejected, next_guess, last_index + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent(self, last_index: int | None) -> None:
        """Record an AppendEntries that carried entries up to ``last_index`` (None: a bare probe)."""
        if self.state is ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
