"""``CheckScheduler``: runs every registered check on its interval and reports results.

Timing follows Consul's runners (``agent/checks/check.go``, ``docs/discovery/checks.mdx``): the first run
waits a random stagger in ``[0, interval)`` so checks registered together do not fire together, and the
next run is scheduled ``interval`` after the previous one *finished* — a slow run delays the next one
and two runs of the same check never overlap (consul#3565). Each check is one asyncio task.

Results pass through the threshold state machine, then ``on_update(check_id, status, output)`` is called
for every result (the owner decides what to sync; a result held back by a threshold reports the
unchanged status and output). A status *change* is logged once, as one line; a check that keeps failing
does not log on every run.

TTL checks are not probed: ``ttl_update`` sets status/output and restarts the timer, expiry reports
``critical``. Clock and randomness are injectable; ``FakeClock`` + ``ScriptedProbe`` test all of this
without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .clock import Clock, MonotonicClock
from .errors import InvalidCheckStatus, NotTTLCheck
from .http import HttpProbe
from .output import short_output
from .probe import Probe, ProbeResult
from .script import ScriptProbe
from .spec import CheckSpec
from .tcp import TcpProbe
from .thresholds import CRITICAL, PASSING, STATUSES, Thresholds
from .ttl import TTLState

__all__ = ["CheckScheduler", "OnUpdate", "ProbeFactory", "make_probe", "RUN_GUARD_S"]

log = logging.getLogger("agent.checks")

OnUpdate = Callable[[str, str, str], None]
"""``on_update(check_id, status, output)``."""
ProbeFactory = Callable[[CheckSpec], Probe]

RUN_GUARD_S = 10.0
"""Extra time past a check's own timeout before the scheduler gives up on a run (a runner bug guard:
runners enforce their timeout themselves)."""


def make_probe(spec: CheckSpec, *, ssl_context: ssl.SSLContext | None = None) -> Probe:
    """The real runner for a spec (HTTP, TCP or script). ``ssl_context`` lets HTTPS checks trust the
    agent's CA (Consul uses its own TLS configuration for checks); default: the system trust store."""
    if spec.kind == "http":
        return HttpProbe(spec, ssl_context=ssl_context)
    if spec.kind == "tcp":
        return TcpProbe(spec)
    if spec.kind == "script":
        return ScriptProbe(spec)
    raise ValueError(f"{spec.kind} checks are not probed")


@dataclass(eq=False)
class _Entry:
    check_id: str
    spec: CheckSpec
    status: str
    output: str = ""
    thresholds: Thresholds | None = None
    probe: Probe | None = None
    ttl: TTLState | None = None
    task: asyncio.Task[None] | None = None
    runs: int = field(default=0)


class CheckScheduler:
    def __init__(
        self,
        on_update: OnUpdate,
        *,
        clock: Clock | None = None,
        random: Callable[[], float] = _random.random,
        probe_factory: ProbeFactory = make_probe,
    ) -> None:
        self._on_update = on_update
        self._clock: Clock = clock or MonotonicClock()
        self._random = random
        self._probe_factory = probe_factory
        self._entries: dict[str, _Entry] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._stopped = False

    # --- registry ---------------------------------------------------------------------------------

    def add(self, check_id: str, spec: CheckSpec) -> None:
        """Start running a check; replaces (and stops) a check already registered under ``check_id``.
        Must be called from the event loop."""
        if self._stopped:
            raise RuntimeError("scheduler is stopped")
        self.remove(check_id)
        entry = _Entry(check_id=check_id, spec=spec, status=spec.status)
        if spec.kind == "ttl":
            entry.ttl = TTLState(spec.ttl_s, spec.output_max_size, self._clock.now())
            entry.task = asyncio.get_running_loop().create_task(
                self._ttl_loop(entry), name=f"check-ttl:{check_id}"
            )
        else:
            entry.thresholds = Thresholds(
                spec.success_before_passing,
                spec.failures_before_warning,
                spec.failures_before_critical,
                status=spec.status,
            )
            entry.probe = self._probe_factory(spec)
            entry.task = asyncio.get_running_loop().create_task(
                self._probe_loop(entry), name=f"check:{check_id}"
            )
        self._entries[check_id] = entry

    def remove(self, check_id: str) -> None:
        """Stop a check (no-op if unknown). A run in progress is cancelled — a script's process group is
        killed — and its result is never reported."""
        entry = self._entries.pop(check_id, None)
        if entry is not None and entry.task is not None:
            self._retire(entry.task)

    def _retire(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        if not task.done():
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    def __contains__(self, check_id: object) -> bool:
        return check_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def check_ids(self) -> Iterator[str]:
        return iter(list(self._entries))

    def status(self, check_id: str) -> tuple[str, str] | None:
        """The last reported ``(status, output)``, or None if unknown."""
        entry = self._entries.get(check_id)
        return None if entry is None else (entry.status, entry.output)

    def spec(self, check_id: str) -> CheckSpec | None:
        entry = self._entries.get(check_id)
        return None if entry is None else entry.spec

    # --- TTL --------------------------------------------------------------------------------------

    def ttl_update(self, check_id: str, status: str, output: str) -> str:
        """pass/warn/fail/update for a TTL check: set status and output, restart the TTL.

        Returns the stored output (truncated to ``OutputMaxSize`` with `` ... (captured N of M bytes)``).
        Raises ``NotTTLCheck`` (Consul: ``CheckID "x" does not have associated TTL``) for unknown or
        non-TTL checks and ``InvalidCheckStatus`` for a status other than passing/warning/critical.
        """
        entry = self._entries.get(check_id)
        if entry is None or entry.ttl is None:
            raise NotTTLCheck(f'CheckID "{check_id}" does not have associated TTL')
        if status not in STATUSES:
            raise InvalidCheckStatus(f"Invalid check status: '{status}'")
        stored = entry.ttl.update(output, self._clock.now())
        if entry.task is not None:
            self._retire(entry.task)
        entry.task = asyncio.get_running_loop().create_task(
            self._ttl_loop(entry), name=f"check-ttl:{check_id}"
        )
        self._report(entry, status, stored)
        return stored

    # --- lifecycle --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every check and wait until runs in progress are cancelled and cleaned up."""
        self._stopped = True
        for check_id in list(self._entries):
            self.remove(check_id)
        tasks = list(self._retired)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- drivers ----------------------------------------------------------------------------------

    async def _probe_loop(self, entry: _Entry) -> None:
        assert entry.probe is not None and entry.thresholds is not None
        spec = entry.spec
        try:
            await self._clock.sleep(spec.interval_s * self._random())
            while True:
                result = await self._run_once(entry)
                if self._entries.get(entry.check_id) is not entry:
                    return
                entry.runs += 1
                verdict = entry.thresholds.observe(result.status, result.output)
                self._report(entry, verdict.status, verdict.output)
                await self._clock.sleep(spec.interval_s)
        finally:
            try:
                await entry.probe.aclose()
            except Exception:  # cleanup must not mask the cancellation
                log.exception("check %s: error closing probe", entry.check_id)

    async def _run_once(self, entry: _Entry) -> ProbeResult:
        assert entry.probe is not None
        try:
            async with asyncio.timeout(entry.spec.timeout_s + RUN_GUARD_S):
                return await entry.probe.run()
        except TimeoutError:
            return ProbeResult(
                CRITICAL, f"check did not finish within {entry.spec.timeout_s + RUN_GUARD_S:g}s"
            )
        except Exception as exc:  # a runner bug must not kill the check's loop
            log.exception("check %s: runner failed", entry.check_id)
            return ProbeResult(CRITICAL, f"check runner error: {exc!r}")

    async def _ttl_loop(self, entry: _Entry) -> None:
        ttl = entry.ttl
        assert ttl is not None
        while not ttl.due(self._clock.now()):
            await self._clock.sleep(ttl.deadline - self._clock.now())
        if self._entries.get(entry.check_id) is entry:
            status, output = ttl.expire()
            self._report(entry, status, output)

    # --- reporting --------------------------------------------------------------------------------

    def _report(self, entry: _Entry, status: str, output: str) -> None:
        old = entry.status
        entry.status = status
        entry.output = output
        if status != old:
            level = logging.INFO if status == PASSING else logging.WARNING
            log.log(level, "check %s: %s -> %s: %s", entry.check_id, old, status, short_output(output))
        try:
            self._on_update(entry.check_id, status, output)
        except Exception:  # the owner's bug must not stop the check
            log.exception("check %s: on_update callback failed", entry.check_id)
