"""Majority maths, as pure functions (kept apart so they can be table-tested against a naive version).

Raft only ever needs two questions answered over the voters of one configuration: "which index is
held by a majority?" (commitment, §5.3/§5.4.2; also ReadIndex and lease confirmation) and "has this
election been won, lost, or is it still open?" (§5.2). Nonvoters never appear in ``voters``.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

__all__ = ["VoteResult", "majority", "quorum_index", "vote_result"]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(n_voters: int) -> int:
    """Smallest number of voters that is more than half of ``n_voters``."""
    return n_voters // 2 + 1


def quorum_index(voters: Collection[str], values: Mapping[str, int]) -> int:
    """The largest ``v`` such that a majority of voters have ``values[voter] >= v`` (missing = 0).

    With match indexes this is the highest index replicated on a majority. With no voters the
    answer is 0: an empty configuration can commit nothing.
    """
    if not voters:
        return 0
    ranked = sorted((values.get(v, 0) for v in voters), reverse=True)
    return ranked[majority(len(ranked)) - 1]


def vote_result(voters: Collection[str], votes: Mapping[str, bool]) -> VoteResult:
    """Tally ``votes`` (granted or rejected) counting only members of ``voters``."""
    if not voters:
        return VoteResult.LOST
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return VoteResult.WON
    if rejected > len(voters) - need:
        return VoteResult.LOST
    return VoteResult.PENDING
