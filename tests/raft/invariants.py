"""Raft's safety properties (paper Figure 3), checked against a whole simulated cluster.

``InvariantChecker.check(nodes)`` runs after every simulation step; ``on_apply``/``on_restore`` run
for every entry a node's state machine applies. Together they assert:

* Election Safety: at most one leader per term, over the whole run.
* Log Matching: two logs with an entry of the same index and term are identical up to it (checked
  inductively: same (index, term) ⇒ same payload and same previous term).
* Leader Completeness: a leader of term T holds every entry committed in a term before T.
* State Machine Safety: no two nodes apply different entries at one index; each node applies a
  gap-free prefix of the committed entries, never beyond its commit index.
* A node's commit index never decreases while it runs (it may restart lower: it is volatile).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.raft import Entry, EntryKind, RaftCore, Role


class InvariantViolation(AssertionError):
    pass


@dataclass
class _Committed:
    term: int
    kind: EntryKind
    data: bytes
    commit_term: int  # an upper bound on the term in which the entry was committed


@dataclass
class InvariantChecker:
    leader_of_term: dict[int, str] = field(default_factory=dict)
    committed: dict[int, _Committed] = field(default_factory=dict)
    last_commit: dict[str, int] = field(default_factory=dict)
    recorded_to: dict[str, int] = field(default_factory=dict)
    applied_to: dict[str, int] = field(default_factory=dict)
    checks: int = 0

    # -- whole-cluster state ------------------------------------------------------------------------

    def check(self, cores: Iterable[RaftCore]) -> None:
        self.checks += 1
        live = list(cores)
        for core in live:
            self._check_node(core)
        self._check_log_matching(live)
        for core in live:
            if core.role is Role.LEADER:
                self._check_leader_completeness(core)

    def _check_node(self, core: RaftCore) -> None:
        nid = core.id
        if core.role is Role.LEADER:
            prev = self.leader_of_term.setdefault(core.term, nid)
            if prev != nid:
                raise InvariantViolation(
                    f"Election Safety: {prev} and {nid} are both leaders of term {core.term}"
                )
        commit = core.commit_index
        if commit < self.last_commit.get(nid, 0):
            raise InvariantViolation(
                f"{nid}: commit index went back from {self.last_commit[nid]} to {commit}"
            )
        if commit > core.log.last_index:
            raise InvariantViolation(
                f"{nid}: commit index {commit} beyond last log index {core.log.last_index}"
            )
        self.last_commit[nid] = commit
        lo = max(self.recorded_to.get(nid, 0), core.log.offset) + 1
        for i in range(lo, commit + 1):
            self._record(nid, core.log.entry(i), core.term)
        self.recorded_to[nid] = max(self.recorded_to.get(nid, 0), commit)

    def _record(self, nid: str, e: Entry, term: int) -> None:
        known = self.committed.get(e.index)
        if known is None:
            self.committed[e.index] = _Committed(e.term, e.kind, e.data, term)
            return
        if (known.term, known.kind, known.data) != (e.term, e.kind, e.data):
            raise InvariantViolation(
                f"{nid}: committed entry {e.index} is (term {e.term}, {e.data!r}) but was committed "
                f"as (term {known.term}, {known.data!r}) elsewhere"
            )
        known.commit_term = min(known.commit_term, term)

    def _check_log_matching(self, cores: list[RaftCore]) -> None:
        seen: dict[tuple[int, int], tuple[EntryKind, bytes, int, str]] = {}
        for core in cores:
            log = core.log
            prev_term = log.offset_term
            for e in log.slice(log.first_index, log.last_index + 1):
                key = (e.index, e.term)
                val = (e.kind, e.data, prev_term, core.id)
                other = seen.setdefault(key, val)
                if other[:3] != val[:3]:
                    raise InvariantViolation(
                        f"Log Matching: entry {e.index} of term {e.term} differs between {other[3]} and {core.id} "
                        f"(payload or previous term: {other[:3]} vs {val[:3]})"
                    )
                prev_term = e.term

    def _check_leader_completeness(self, leader: RaftCore) -> None:
        best = 0
        for i, c in self.committed.items():
            if c.commit_term < leader.term and i > best:
                best = i
        if best <= leader.log.offset:
            return
        got = leader.log.term_at(best)
        if got != self.committed[best].term:
            raise InvariantViolation(
                f"Leader Completeness: leader {leader.id} of term {leader.term} has term {got} at {best}, "
                f"committed with term {self.committed[best].term}"
            )

    # -- state machines -----------------------------------------------------------------------------

    def on_restart(self, nid: str, applied: int) -> None:
        self.last_commit[nid] = 0
        self.applied_to[nid] = applied

    def on_restore(self, nid: str, index: int, term: int, items: list[tuple[int, int, bytes]]) -> None:
        known = self.committed.get(index)
        if known is not None and known.term != term:
            raise InvariantViolation(
                f"{nid}: snapshot at {index} has term {term}, committed term is {known.term}"
            )
        for i, t, data in items:
            c = self.committed.get(i)
            if c is not None and (c.term, c.data) != (t, data):
                raise InvariantViolation(
                    f"{nid}: snapshot holds ({t}, {data!r}) at {i}, committed is ({c.term}, {c.data!r})"
                )
        self.applied_to[nid] = index

    def on_apply(self, core: RaftCore, e: Entry) -> None:
        nid = core.id
        expected = self.applied_to.get(nid, 0) + 1
        if e.index != expected:
            raise InvariantViolation(f"{nid}: applied index {e.index}, expected {expected} (gap or repeat)")
        if e.index > core.commit_index:
            raise InvariantViolation(f"{nid}: applied {e.index} beyond its commit index {core.commit_index}")
        self._record(nid, e, core.term)
        self.applied_to[nid] = e.index
