"""Rise/fall thresholds: ``success_before_passing``, ``failures_before_warning``, ``failures_before_critical``.

Semantics follow Consul (``docs/discovery/checks.mdx``, "Success/Failures before passing/warning/critical"):

- a result is a *success* if it is passing or warning, a *failure* if it is critical;
- both counters start **at** their threshold, so the first result after registration applies at once —
  thresholds only delay a transition that follows a result of the other kind;
- a success resets the failure count; once ``success_before_passing`` consecutive successes are seen the
  result (passing *or* warning) is applied;
- a failure resets the success count; at ``failures_before_critical`` consecutive failures the check is
  critical; below that but at ``failures_before_warning`` it reports ``warning``;
- an unset ``failures_before_warning`` (0) means "same as failures_before_critical" — Consul's agent
  defaults it that way when it adds the check;
- a result that reaches no threshold changes nothing: the previous status **and output** stand.

Pure and synchronous: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PASSING", "WARNING", "CRITICAL", "STATUSES", "Thresholds", "Verdict"]

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a raw result turned into. ``applied`` is False when the result was held back by a threshold;
    ``status``/``output`` are then the previous, still-current values."""

    status: str
    output: str
    applied: bool


class Thresholds:
    """Consecutive-result state machine for one check."""

    __slots__ = (
        "success_before_passing",
        "failures_before_warning",
        "failures_before_critical",
        "successes",
        "failures",
        "status",
        "output",
    )

    def __init__(
        self,
        success_before_passing: int = 0,
        failures_before_warning: int = 0,
        failures_before_critical: int = 0,
        *,
        status: str = CRITICAL,
        output: str = "",
    ) -> None:
        if failures_before_warning == 0:
            failures_before_warning = failures_before_critical
        self.success_before_passing = success_before_passing
        self.failures_before_warning = failures_before_warning
        self.failures_before_critical = failures_before_critical
        # Start at the thresholds so the first result is applied immediately.
        self.successes = success_before_passing
        self.failures = failures_before_critical
        self.status = status
        self.output = output

    def observe(self, status: str, output: str) -> Verdict:
        """Feed one raw result (what the probe saw); return the status to report."""
        if status not in STATUSES:
            raise ValueError(f"unknown check status {status!r}")
        if status != CRITICAL:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_before_passing:
                return self._apply(status, output)
            return self._hold()
        self.failures += 1
        self.successes = 0
        if self.failures >= self.failures_before_critical:
            return self._apply(CRITICAL, output)
        if self.failures >= self.failures_before_warning:
            return self._apply(WARNING, output)
        return self._hold()

    def _apply(self, status: str, output: str) -> Verdict:
        self.status = status
        self.output = output
        return Verdict(status, output, True)

    def _hold(self) -> Verdict:
        return Verdict(self.status, self.output, False)
