"""Lifeguard's local health awareness (Lifeguard §IV-A, "LHA-Probe").

A node that is itself overloaded (CPU starved, dropping packets) misses acks and then accuses
healthy members. Lifeguard lets a node notice that about itself and slow down: a health score
rises on evidence of local trouble and falls on success, and probe intervals and timeouts are
multiplied by (score + 1).

Evidence, as memberlist applies it: a probe that got its ack in time −1; a failed probe +1 for
each ping-req helper whose nack never came (a missing nack means our own packets are getting
lost), or +1 when there were no helpers; having to refute a suspicion of ourselves +1.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """Health score in [0, max_multiplier − 1]; 0 is healthy."""

    __slots__ = ("max_multiplier", "_score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """Current score; Consul reports it as ``health_score`` in ``consul info``."""
        return self._score

    def apply_delta(self, delta: int) -> None:
        """Move the score by delta, clamped to the allowed range."""
        self._score = min(self.max_multiplier - 1, max(0, self._score + delta))

    def scale_s(self, timeout_s: float) -> float:
        """``timeout_s`` stretched by the current multiplier (score + 1)."""
        return timeout_s * (self._score + 1)
