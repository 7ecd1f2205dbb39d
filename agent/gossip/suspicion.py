"""Lifeguard's dynamic suspicion timeout (Lifeguard §IV-C, "LHA-Suspicion").

Plain SWIM waits a fixed time before declaring a suspect dead. Lifeguard starts the timer at a
generous maximum and shrinks it each time another member *independently* reports the same
suspicion: with k expected confirmations, after c of them

    timeout(c) = max(min, max − (max − min) × log(c + 1) / log(k + 1))

so the first confirmations buy the most, and k of them bring it down to min. A lone slow accuser
therefore cannot kill a healthy node quickly, while a really dead node (which many members fail
to reach) is declared dead almost as fast as with a fixed timer.

There is no real timer here: the core asks ``expires_at_s`` and compares it with ``now``.
"""

from __future__ import annotations

import math

__all__ = ["Suspicion", "suspicion_timeout_after_s"]


def suspicion_timeout_after_s(confirmations: int, k: int, min_s: float, max_s: float) -> float:
    """Total timeout (from the start of the suspicion) once ``confirmations`` have arrived."""
    if k < 1:
        return min_s
    fraction = math.log(confirmations + 1.0) / math.log(k + 1.0)
    return max(min_s, max_s - fraction * (max_s - min_s))


class Suspicion:
    """The suspicion of one member, started at ``started_at_s`` by ``from_node``."""

    __slots__ = ("k", "min_s", "max_s", "started_at_s", "_confirmers", "expires_at_s")

    def __init__(self, from_node: str, k: int, min_s: float, max_s: float, started_at_s: float) -> None:
        self.k = k
        self.min_s = min_s
        self.max_s = max_s
        self.started_at_s = started_at_s
        # The accuser who started the suspicion does not count as a confirmation of itself.
        self._confirmers: set[str] = {from_node}
        self.expires_at_s = started_at_s + suspicion_timeout_after_s(0, k, min_s, max_s)

    @property
    def confirmations(self) -> int:
        """Independent confirmations received so far (the starting accuser excluded)."""
        return len(self._confirmers) - 1

    def confirm(self, from_node: str) -> bool:
        """Record a confirmation; True if it was new and so worth re-gossiping.

        Confirmations beyond k are ignored: the timer is already at its minimum.
        """
        if self.confirmations >= self.k or from_node in self._confirmers:
            return False
        self._confirmers.add(from_node)
        self.expires_at_s = self.started_at_s + suspicion_timeout_after_s(
            self.confirmations, self.k, self.min_s, self.max_s
        )
        return True

    def remaining_s(self, now_s: float) -> float:
        """Seconds until the suspect is declared dead (≤ 0 means it is due)."""
        return self.expires_at_s - now_s
