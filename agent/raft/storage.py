"""Where the Raft core's durable state lives: the ``Storage`` protocol and its in-memory fake.

The core never writes to storage itself. It reads the whole state once at start (``load``) and then
says, through each ``Ready``, what must become durable; the driver writes it with :meth:`Storage.save`
and only then sends the Ready's messages and calls ``advance``. That split is what lets a durable
implementation do group commit: every proposal that arrived since the last Ready lands in one
``save`` call, i.e. one write batch and one fsync, however many clients are waiting on it.

Storage holds, in Raft paper terms: the persistent state of Figure 2 (``HardState``: currentTerm,
votedFor, plus the commit index as a restart hint), the log, and the latest snapshot (§7). Entries
at or below ``offset_index`` have been compacted; ``offset_term`` is the term of the entry at the
offset, kept so the AppendEntries consistency check works right after it.

:class:`MemoryStorage` is the fake beside the real thing: used by tests, ``-dev`` mode and anything
that wants a Raft without a disk. It holds no reference to mutable caller state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import StorageError
from .messages import Configuration, Entry, EntryKind, HardState, Snapshot

__all__ = ["InitialState", "Storage", "MemoryStorage", "bootstrap"]


@dataclass(frozen=True, slots=True)
class InitialState:
    """Everything a node reloads on restart."""

    hard_state: HardState
    snapshot: Snapshot | None
    offset_index: int
    offset_term: int
    entries: tuple[Entry, ...]  # contiguous, starting at offset_index + 1


class Storage(Protocol):
    """Durable state of one Raft server. Called only by the driver, from one task.

    Implementations must make each call atomic with respect to crashes: after a crash, ``load``
    returns the state as of some prefix of completed calls, never half of one.
    """

    def load(self) -> InitialState:
        """Read back everything persisted so far (a fresh store returns an empty state)."""
        ...

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None = None
    ) -> None:
        """Make one Ready's worth of state durable, in this order, and return only once it is.

        1. ``snapshot`` (a snapshot received from the leader): replace the snapshot and discard the
           whole log; the offset becomes the snapshot's index/term.
        2. ``entries``: discard any stored entry at or after ``entries[0].index`` (a conflicting tail,
           §5.3), then append. ``entries[0].index`` is never beyond ``last_index + 1``.
        3. ``hard_state``: overwrite.
        """
        ...

    def compact(self, snapshot: Snapshot, through_index: int, through_term: int) -> None:
        """Store a snapshot the local FSM took and discard entries up to ``through_index``.

        Not on the latency path: it may run after later ``save`` calls, and losing it in a crash is
        harmless (the node restarts from the older snapshot and the longer log).
        """
        ...


class MemoryStorage:
    """A :class:`Storage` in memory. "Durable" means "survives rebuilding the RaftCore from it"."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._offset_index = 0
        self._offset_term = 0
        self._entries: list[Entry] = []

    # -- the Storage protocol ---------------------------------------------------------------------

    def load(self) -> InitialState:
        return InitialState(
            hard_state=self._hard_state,
            snapshot=self._snapshot,
            offset_index=self._offset_index,
            offset_term=self._offset_term,
            entries=tuple(self._entries),
        )

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None = None
    ) -> None:
        if snapshot is not None:
            self._snapshot = snapshot
            self._offset_index = snapshot.meta.index
            self._offset_term = snapshot.meta.term
            self._entries = []
        if entries:
            first = entries[0].index
            if first <= self._offset_index:
                raise StorageError(
                    f"append at {first} is at or below the compaction offset {self._offset_index}"
                )
            if first > self.last_index + 1:
                raise StorageError(f"append at {first} leaves a gap after last index {self.last_index}")
            del self._entries[first - self._offset_index - 1 :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot, through_index: int, through_term: int) -> None:
        if self._snapshot is None or snapshot.meta.index > self._snapshot.meta.index:
            self._snapshot = snapshot
        if through_index <= self._offset_index:
            return
        if through_index > self.last_index:
            raise StorageError(f"compact through {through_index} beyond last index {self.last_index}")
        del self._entries[: through_index - self._offset_index]
        self._offset_index = through_index
        self._offset_term = through_term

    # -- inspection (tests, status) ---------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    @property
    def first_index(self) -> int:
        return self._offset_index + 1

    @property
    def last_index(self) -> int:
        return self._offset_index + len(self._entries)


def bootstrap(storage: Storage, configuration: Configuration) -> None:
    """Seed an empty store with the cluster's first configuration (hashicorp's ``BootstrapCluster``).

    Every server of the initial set runs this with the *same* configuration; the result is a log of
    one CONFIG entry at index 1, term 1, so the first election happens in term 2 and its leader's
    noop commits the configuration (§5.4.2). Servers that join later start empty and learn the log
    (or a snapshot) from the leader.
    """
    state = storage.load()
    if state.hard_state != HardState() or state.entries or state.snapshot is not None:
        raise StorageError("refusing to bootstrap: storage already holds Raft state")
    if not configuration.voters:
        raise StorageError("refusing to bootstrap: the configuration has no voters")
    storage.save(
        HardState(term=1), [Entry(index=1, term=1, kind=EntryKind.CONFIG, data=configuration.encode())]
    )
