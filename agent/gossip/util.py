"""Pure scaling rules for SWIM/Lifeguard, kept apart so they can be table-tested.

Each rule makes a per-node cost or a timeout grow with the cluster size n only logarithmically,
which is what lets a gossip pool reach thousands of members:

- suspicion timeout: mult × max(1, log10(n)) × probe_interval (memberlist ``suspicionTimeout``);
- retransmit limit: mult × ceil(log10(n + 1)) (SWIM §4.1: λ·log n retransmissions suffice);
- push/pull interval: × (ceil(log2(n) − log2(32)) + 1) above 32 members, so cluster-wide TCP
  anti-entropy traffic stays roughly flat as n grows (memberlist ``pushPullScale``);
- k random members: SWIM's random target selection for gossip, ping-req and push/pull.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = [
    "PUSH_PULL_SCALE_THRESHOLD",
    "suspicion_timeout_s",
    "retransmit_limit",
    "push_pull_scale_s",
    "k_random_members",
    "random_stagger_s",
]

T = TypeVar("T")

PUSH_PULL_SCALE_THRESHOLD = 32
"""Below this many members the push/pull interval is used as configured."""


def suspicion_timeout_s(suspicion_mult: int, n: int, probe_interval_s: float) -> float:
    """Minimum time a member stays suspect before it is declared dead.

    Scaling with log10(n) gives the suspicion rumour time to reach the whole cluster (and the
    accused node time to hear it and refute) before anyone acts on it.
    """
    node_scale = max(1.0, math.log10(max(1, n)))
    return suspicion_mult * node_scale * probe_interval_s


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one broadcast is piggybacked before it is dropped from the queue."""
    return retransmit_mult * math.ceil(math.log10(max(0, n) + 1))


def push_pull_scale_s(interval_s: float, n: int) -> float:
    """The push/pull interval for a cluster of n members."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_s
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval_s * multiplier


def k_random_members(
    rng: random.Random, candidates: Sequence[T], k: int, accept: Callable[[T], bool]
) -> list[T]:
    """Up to k distinct accepted entries of ``candidates``, chosen uniformly at random.

    Samples with rejection for at most 3 × len(candidates) draws (as memberlist does) so the usual
    case costs O(k), not O(n), even in a 10,000-member list; it may return fewer than k when few
    candidates are acceptable. Indices come from ``int(random() × n)``, several times cheaper than
    ``randrange`` in CPython and uniform to within 2^-53 relative error.
    """
    n = len(candidates)
    if k <= 0 or n == 0:
        return []
    picked: list[T] = []
    seen: set[int] = set()
    for _ in range(3 * n):
        if len(picked) >= k:
            break
        i = int(rng.random() * n)
        if i in seen:
            continue
        seen.add(i)
        c = candidates[i]
        if accept(c):
            picked.append(c)
        if len(seen) == n:
            break
    return picked


def random_stagger_s(rng: random.Random, interval_s: float) -> float:
    """A random offset in [0, interval) so nodes started together do not tick in lockstep."""
    return rng.random() * interval_s
