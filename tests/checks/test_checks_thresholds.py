"""Thresholds: Consul's success_before_passing / failures_before_warning / failures_before_critical."""

from __future__ import annotations

import pytest

from agent.checks import Thresholds

P, W, C = "passing", "warning", "critical"


def run(th: Thresholds, results: list[str]) -> list[str]:
    return [th.observe(r, f"out-{i}").status for i, r in enumerate(results)]


@pytest.mark.parametrize(
    ("sbp", "fbw", "fbc", "initial", "results", "expected"),
    [
        # No thresholds: every result applies as is.
        (0, 0, 0, C, [P, C, W, P], [P, C, W, P]),
        # The first result after registration applies immediately, whatever the thresholds.
        (3, 0, 3, C, [P], [P]),
        (3, 0, 3, P, [C], [C]),
        # failures_before_critical=3: two failures are tolerated, the third turns critical.
        (0, 0, 3, C, [P, C, C, C, C], [P, P, P, C, C]),
        # A success in between resets the failure count.
        (0, 0, 3, C, [P, C, C, P, C, C, C], [P, P, P, P, P, P, C]),
        # success_before_passing=2: after a failure, one success is not enough.
        (2, 0, 0, P, [C, P, P, P], [C, C, P, P]),
        (2, 0, 0, P, [C, P, C, P, P], [C, C, C, C, P]),
        # failures_before_warning=1, critical=3: warning between the thresholds.
        (0, 1, 3, C, [P, C, C, C], [P, W, W, C]),
        (0, 2, 4, C, [P, C, C, C, C, P], [P, P, W, W, C, P]),
        # Warning counts as a success and is reported as warning once the success threshold is met.
        (2, 0, 0, C, [C, W, W], [C, C, W]),
        (0, 0, 2, C, [W, C, W], [W, W, W]),
    ],
)
def test_threshold_table(
    sbp: int, fbw: int, fbc: int, initial: str, results: list[str], expected: list[str]
) -> None:
    assert run(Thresholds(sbp, fbw, fbc, status=initial), results) == expected


def test_held_result_keeps_previous_output() -> None:
    th = Thresholds(0, 0, 3)
    v = th.observe(P, "ok")
    assert (v.status, v.output, v.applied) == (P, "ok", True)
    v = th.observe(C, "boom")
    assert (v.status, v.output, v.applied) == (P, "ok", False)
    th.observe(C, "boom2")
    v = th.observe(C, "boom3")
    assert (v.status, v.output, v.applied) == (C, "boom3", True)


def test_unknown_status_rejected() -> None:
    with pytest.raises(ValueError):
        Thresholds().observe("maintenance", "")
