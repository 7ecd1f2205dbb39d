"""The runner interface: one ``Probe`` per check performs one probe per ``run()``.

Runners report the *raw* result; the scheduler applies thresholds, timing and reporting. ``ScriptedProbe``
is the in-memory twin used to test scheduling without sockets or processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .clock import Clock

__all__ = ["Probe", "ProbeResult", "ScriptedProbe"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: str
    output: str


class Probe(Protocol):
    async def run(self) -> ProbeResult:
        """Probe once. Must finish by itself within the check's timeout and never raise for a failing
        target (that is a ``critical`` result), and must leave nothing running behind."""
        ...

    async def aclose(self) -> None:
        """Release sockets/sessions. Called once, when the check is removed or the scheduler stops."""
        ...


class ScriptedProbe:
    """Returns queued results in order (the last one repeats), optionally taking ``duration_s`` of
    ``clock`` time per run. Records how many runs overlapped, which must never exceed one."""

    def __init__(
        self,
        results: Iterable[tuple[str, str]],
        *,
        clock: Clock | None = None,
        duration_s: float = 0.0,
    ) -> None:
        self._results = [ProbeResult(s, o) for s, o in results]
        if not self._results:
            raise ValueError("ScriptedProbe needs at least one result")
        self._clock = clock
        self.duration_s = duration_s
        self.runs = 0
        self.started_at: list[float] = []
        self.active = 0
        self.max_active = 0
        self.closed = False

    async def run(self) -> ProbeResult:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self._clock is not None:
            self.started_at.append(self._clock.now())
        try:
            if self._clock is not None and self.duration_s > 0:
                await self._clock.sleep(self.duration_s)
            result = self._results[min(self.runs, len(self._results) - 1)]
            self.runs += 1
            return result
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        self.closed = True
