"""The core's in-memory view of the Raft log.

Layout (indexes are 1-based, as in the paper)::

      compacted        stable (persisted)        unstable (not yet persisted)
    [ 1 .. offset ] [ offset+1 .. stable_index ] [ stable_index+1 .. last_index ]
                  ^ offset_term is the term of the entry at ``offset``

Every retained entry is held in memory: ``Storage`` is read once at start and written by the
driver, never read again on the hot path. Compaction behind a snapshot (§7) keeps the list bounded
(Consul-sized: snapshot threshold + trailing entries, a few tens of thousands).

The log also tracks membership, because it sees every append, truncation, compaction and restore:
thesis §4.1 says a server uses the latest configuration *in its log*, committed or not, so a
configuration must be undone when a conflicting tail is truncated.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CompactedError, SafetyViolation
from .messages import Configuration, Entry, EntryKind, SnapshotMeta
from .storage import InitialState

__all__ = ["RaftLog"]


class RaftLog:
    __slots__ = ("_offset", "_offset_term", "_entries", "_stable", "_configs")

    def __init__(
        self,
        offset: int = 0,
        offset_term: int = 0,
        entries: Sequence[Entry] = (),
        base_configuration: tuple[int, Configuration] = (0, Configuration()),
    ) -> None:
        self._offset = offset
        self._offset_term = offset_term
        self._entries: list[Entry] = []
        # Everything handed to the constructor came from storage, so it is stable.
        self._stable = offset
        # (index of the CONFIG entry, configuration), ascending. The first item is the base: the
        # configuration in force at or before the offset (from the snapshot), never truncated.
        self._configs: list[tuple[int, Configuration]] = [base_configuration]
        self._extend(entries)
        self._stable = self.last_index

    @classmethod
    def from_state(cls, state: InitialState) -> RaftLog:
        base = (0, Configuration())
        if state.snapshot is not None:
            meta = state.snapshot.meta
            base = (meta.configuration_index, meta.configuration)
        return cls(state.offset_index, state.offset_term, state.entries, base)

    # -- positions ---------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Index of the last compacted entry (0 when nothing was compacted)."""
        return self._offset

    @property
    def offset_term(self) -> int:
        return self._offset_term

    @property
    def first_index(self) -> int:
        return self._offset + 1

    @property
    def last_index(self) -> int:
        return self._offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._offset_term

    @property
    def stable_index(self) -> int:
        return self._stable

    # -- reads -------------------------------------------------------------------------------------

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` if compacted away or beyond the end."""
        if index == self._offset:
            return self._offset_term
        if self._offset < index <= self.last_index:
            return self._entries[index - self._offset - 1].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        """The AppendEntries consistency check (§5.3)."""
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        if not self._offset < index <= self.last_index:
            raise CompactedError(f"entry {index} is outside the log ({self.first_index}..{self.last_index})")
        return self._entries[index - self._offset - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo .. hi-1``; raises :class:`CompactedError` if ``lo`` was compacted."""
        if lo <= self._offset:
            raise CompactedError(f"entry {lo} was compacted (first index {self.first_index})")
        hi = min(hi, self.last_index + 1)
        if lo >= hi:
            return []
        return self._entries[lo - self._offset - 1 : hi - self._offset - 1]

    def entries_from(self, lo: int, max_count: int) -> list[Entry]:
        return self.slice(lo, lo + max_count)

    def unstable(self) -> list[Entry]:
        """Entries not yet handed to storage (and acknowledged through ``stable_to``)."""
        return self._entries[self._stable - self._offset :]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours if its last term is higher, or
        the same with an index at least as large. This is what gives Leader Completeness."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index ``<= index`` whose term is ``<= term`` (or the offset, if we reach it).

        Used on both ends of fast backtracking: no entry above the result can match a log whose
        entry at ``index`` has ``term``, because terms never decrease along a log.
        """
        index = min(index, self.last_index)
        while index > self._offset:
            t = self._entries[index - self._offset - 1].term
            if t <= term:
                break
            index -= 1
        return index

    # -- membership ----------------------------------------------------------------------------------

    def latest_configuration(self) -> tuple[int, Configuration]:
        return self._configs[-1]

    def configuration_at(self, index: int) -> tuple[int, Configuration]:
        """The configuration in force at ``index``: the last CONFIG entry at or before it."""
        for i in range(len(self._configs) - 1, -1, -1):
            if self._configs[i][0] <= index:
                return self._configs[i]
        return self._configs[0]

    # -- writes ------------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Leader path: entries follow the last one directly."""
        if entries and entries[0].index != self.last_index + 1:
            raise SafetyViolation(f"append at {entries[0].index} after last index {self.last_index}")
        self._extend(entries)

    def try_append(
        self, prev_index: int, prev_term: int, entries: Sequence[Entry], commit: int
    ) -> int | None:
        """Follower path (§5.3, AppendEntries receiver rules 2-4).

        Returns the index of the last entry now known to match the leader (``prev_index`` plus the
        entries), or ``None`` if the consistency check fails. Entries already present with the same
        term are left alone (a reordered, older message must not truncate newer entries); the first
        entry with a different term and everything after it are replaced.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for i, e in enumerate(entries):
            existing = self.term_at(e.index)
            if existing == e.term:
                continue
            if e.index <= self._offset:
                # Compacted entries are committed, and committed entries match the leader's.
                continue
            if existing is not None:
                if e.index <= commit:
                    raise SafetyViolation(
                        f"conflicting entry at {e.index} would truncate committed index {commit}"
                    )
                self._truncate_from(e.index)
            self._extend(entries[i:])
            break
        return last_new

    def _extend(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            self._entries.append(e)
            if e.kind is EntryKind.CONFIG:
                self._configs.append((e.index, Configuration.decode(e.data)))

    def _truncate_from(self, index: int) -> None:
        del self._entries[index - self._offset - 1 :]
        self._stable = min(self._stable, index - 1)
        while len(self._configs) > 1 and self._configs[-1][0] >= index:
            self._configs.pop()

    def stable_to(self, index: int, term: int) -> None:
        """Storage has persisted everything up to ``index``: called from ``advance``. Ignored if the
        entry was replaced meanwhile (a newer leader truncated it before the driver finished)."""
        if index > self._stable and self.term_at(index) == term:
            self._stable = index

    def compact(self, through: int) -> None:
        """Forget entries up to ``through`` (they are covered by a snapshot)."""
        if through <= self._offset:
            return
        if through > self._stable:
            raise SafetyViolation(f"compacting through {through} beyond the persisted index {self._stable}")
        term = self.term_at(through)
        assert term is not None
        del self._entries[: through - self._offset]
        self._offset, self._offset_term = through, term
        # Collapse the configurations at or below the new offset into one base item.
        keep = 0
        for i, (idx, _) in enumerate(self._configs):
            if idx <= through:
                keep = i
        del self._configs[:keep]

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log with a snapshot received from the leader (§7, InstallSnapshot rule 7)."""
        self._entries = []
        self._offset, self._offset_term = meta.index, meta.term
        self._stable = meta.index
        self._configs = [(meta.configuration_index, meta.configuration)]
