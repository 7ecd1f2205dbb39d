"""Time for the scheduler: the real monotonic clock and a ``FakeClock`` twin for tests.

The scheduler only ever asks "what time is it" and "wake me in N seconds", so swapping the clock makes
interval, stagger, overlap and TTL logic testable in microseconds with no real sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "FakeClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences matter)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The event loop's clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """Virtual time: ``sleep`` parks the caller until ``advance`` moves time past its deadline.

    ``advance`` wakes sleepers one deadline at a time, in order, letting woken tasks run (and schedule
    new sleeps) before moving on — so a 1 s interval advanced by 10 s fires ten times, as real time would.
    """

    def __init__(self, start: float = 0.0, *, settle_steps: int = 50) -> None:
        self._now = start
        self._settle_steps = settle_steps
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many callers are parked (cancelled ones excluded)."""
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    async def settle(self) -> None:
        """Let every runnable task run until it blocks again (on this clock or on nothing)."""
        for _ in range(self._settle_steps):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake, _, fut = heapq.heappop(self._sleepers)
            if fut.done():
                continue
            self._now = max(self._now, wake)
            fut.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()
