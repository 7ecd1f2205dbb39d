"""Table tests for the pure scaling rules, Lifeguard's suspicion timer and local health score."""

from __future__ import annotations

import random

import pytest

from agent.gossip.awareness import Awareness
from agent.gossip.suspicion import Suspicion, suspicion_timeout_after_s
from agent.gossip.util import k_random_members, push_pull_scale_s, retransmit_limit, suspicion_timeout_s


@pytest.mark.parametrize(
    ("mult", "n", "interval_s", "expected_s"),
    [
        (4, 0, 1.0, 4.0),  # an empty list still gets the floor: max(1, log10(max(1, n)))
        (4, 1, 1.0, 4.0),
        (4, 5, 1.0, 4.0),
        (4, 10, 1.0, 4.0),
        (4, 50, 1.0, 4 * 1.6989700043360187),
        (4, 100, 1.0, 8.0),
        (4, 1000, 1.0, 12.0),
        (4, 10_000, 1.0, 16.0),
        (3, 1000, 0.1, 0.9),  # the fast preset at 1,000 members
        (6, 100, 5.0, 60.0),  # the WAN preset
    ],
)
def test_suspicion_timeout_scales_with_log10_n(mult: int, n: int, interval_s: float, expected_s: float) -> None:
    """memberlist suspicionTimeout: mult × max(1, log10(n)) × probe interval."""
    assert suspicion_timeout_s(mult, n, interval_s) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 0, 0), (4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (4, 999, 12), (4, 1000, 16), (2, 1000, 8)],
)
def test_retransmit_limit_is_mult_times_ceil_log10_n_plus_1(mult: int, n: int, expected: int) -> None:
    """SWIM §4.1: λ·log n retransmissions; memberlist: mult × ceil(log10(n + 1))."""
    assert retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("n", "expected_s"),
    [(1, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0), (128, 90.0), (1000, 180.0), (8192, 270.0)],
)
def test_push_pull_interval_scales_above_32_members(n: int, expected_s: float) -> None:
    """memberlist pushPullScale: × (ceil(log2(n) − log2(32)) + 1) once n > 32."""
    assert push_pull_scale_s(30.0, n) == pytest.approx(expected_s)


def test_k_random_members_distinct_accepted_and_bounded() -> None:
    rng = random.Random(7)
    pool = list(range(100))
    picked = k_random_members(rng, pool, 5, lambda x: x % 2 == 0)
    assert len(picked) == 5
    assert len(set(picked)) == 5
    assert all(x % 2 == 0 for x in picked)
    # fewer acceptable candidates than k: returns what there is, never loops forever
    assert sorted(k_random_members(rng, pool, 5, lambda x: x in (3, 4))) == [3, 4]
    assert k_random_members(rng, pool, 3, lambda x: False) == []
    assert k_random_members(rng, [], 3, lambda x: True) == []
    assert k_random_members(rng, pool, 0, lambda x: True) == []


def test_k_random_members_is_roughly_uniform() -> None:
    rng = random.Random(1)
    counts = [0] * 10
    for _ in range(5000):
        for x in k_random_members(rng, list(range(10)), 3, lambda x: True):
            counts[x] += 1
    assert min(counts) > 0.8 * 1500 and max(counts) < 1.2 * 1500


@pytest.mark.parametrize(
    ("confirmations", "k", "expected_s"),
    [
        (0, 3, 12.0),  # starts at the maximum
        (1, 3, 12.0 - 10.0 * 0.5),  # log(2)/log(4) = 1/2 of the way down
        (2, 3, 12.0 - 10.0 * 0.7924812503605781),
        (3, 3, 2.0),  # k confirmations: the minimum
        (9, 3, 2.0),  # never below it
        (0, 0, 2.0),  # nobody could confirm: start at the minimum
    ],
)
def test_suspicion_timeout_shrinks_logarithmically(confirmations: int, k: int, expected_s: float) -> None:
    """Lifeguard §IV-C: max − (max − min) × log(c + 1) / log(k + 1), floored at min."""
    assert suspicion_timeout_after_s(confirmations, k, 2.0, 12.0) == pytest.approx(expected_s)


def test_suspicion_counts_only_new_independent_confirmations() -> None:
    s = Suspicion("accuser", k=2, min_s=1.0, max_s=6.0, started_at_s=100.0)
    assert s.expires_at_s == pytest.approx(106.0)
    assert s.confirm("accuser") is False  # the accuser does not confirm itself
    assert s.confirm("b") is True
    assert s.confirm("b") is False  # the same member twice is one confirmation
    first = s.expires_at_s
    assert 101.0 < first < 106.0
    assert s.confirm("c") is True
    assert s.expires_at_s == pytest.approx(101.0)
    assert s.confirm("d") is False  # beyond k: nothing left to gain, nothing to re-gossip
    assert s.confirmations == 2
    assert s.remaining_s(100.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("deltas", "score", "scaled_s"),
    [
        ([], 0, 0.5),
        ([1], 1, 1.0),
        ([1, 1, 1], 3, 2.0),
        ([5, 5], 7, 4.0),  # capped at max_multiplier − 1
        ([3, -1, -1, -1, -1], 0, 0.5),  # floored at 0
    ],
)
def test_awareness_scales_timeouts_by_score_plus_one(deltas: list[int], score: int, scaled_s: float) -> None:
    """Lifeguard §IV-A: probe timing × (health score + 1), score in [0, 8)."""
    a = Awareness(max_multiplier=8)
    for d in deltas:
        a.apply_delta(d)
    assert a.score == score
    assert a.scale_s(0.5) == pytest.approx(scaled_s)
