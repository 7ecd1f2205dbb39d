"""Session TTL timers, kept by the leader in memory (as Consul does), not in the Raft log.

``api-docs/session.mdx``: a session with a TTL is invalidated when it is not renewed in time; the
server waits up to twice the TTL before reaping, so a renew that races the deadline still wins.
Renewals therefore cost no log entry; a destroy on expiry does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.durations import DurationError, parse_duration_s
from agent.state import commands
from agent.state.commands import Command
from agent.state.store import Store

__all__ = ["SessionTimers", "TTL_MULTIPLIER"]

log = logging.getLogger(__name__)
TTL_MULTIPLIER = 2


class SessionTimers:
    def __init__(self, write: Callable[[Command], Awaitable[Any]]) -> None:
        self.write = write
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def start(self, store: Store) -> None:
        """On becoming leader: arm a timer for every TTL session (a full TTL from now)."""
        self._loop = asyncio.get_running_loop()
        for sess in store.sessions.values():
            if sess.ttl:
                self.renewed(sess.id, sess.ttl)

    def created(self, session_id: str, ttl: str) -> None:
        if ttl:
            self.renewed(session_id, ttl)

    def renewed(self, session_id: str, ttl: str) -> None:
        if not ttl or self._loop is None:
            return
        try:
            ttl_s = parse_duration_s(ttl)
        except DurationError:
            return
        self.destroyed(session_id)
        self._timers[session_id] = self._loop.call_later(ttl_s * TTL_MULTIPLIER, self._expire, session_id)

    def destroyed(self, session_id: str) -> None:
        handle = self._timers.pop(session_id, None)
        if handle is not None:
            handle.cancel()

    def _expire(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        log.info("session %s expired (TTL not renewed); invalidating", session_id)
        task = asyncio.ensure_future(self.write(commands.session_destroy(session_id, now=time.time())))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
