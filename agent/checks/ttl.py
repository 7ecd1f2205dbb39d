"""TTL checks: no probing; the application reports, and silence turns the check critical.

``docs/discovery/checks.mdx`` (TTL): pass/warn/fail/update set the status and output and restart the
timer; if no update arrives within the TTL the check becomes ``critical`` with output ``TTL expired``
(carrying the last output when there was one). The timer fires once per silence. Thresholds do not apply —
the application states the status itself. Pure: the scheduler supplies ``now`` and the wake-ups.
"""

from __future__ import annotations

from .output import truncate_ttl_output, ttl_expired_output
from .thresholds import CRITICAL

__all__ = ["TTLState"]


class TTLState:
    __slots__ = ("ttl_s", "output_max_size", "deadline", "last_output", "expired")

    def __init__(self, ttl_s: float, output_max_size: int, now: float) -> None:
        if ttl_s <= 0:
            raise ValueError("TTL must be > 0")
        self.ttl_s = ttl_s
        self.output_max_size = output_max_size
        self.deadline = now + ttl_s
        self.last_output = ""
        self.expired = False

    def update(self, output: str, now: float) -> str:
        """Record an update; returns the (possibly truncated) output to store and report."""
        stored = truncate_ttl_output(output, self.output_max_size)
        self.last_output = stored
        self.deadline = now + self.ttl_s
        self.expired = False
        return stored

    def due(self, now: float) -> bool:
        return not self.expired and now >= self.deadline

    def expire(self) -> tuple[str, str]:
        """Mark expired; returns ``(critical, "TTL expired ...")``."""
        self.expired = True
        return CRITICAL, ttl_expired_output(self.last_output)
