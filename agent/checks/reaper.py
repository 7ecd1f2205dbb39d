"""``DeregisterCriticalServiceAfter``: find services whose check has been critical for too long.

``docs/discovery/checks.mdx``: when a service's check stays critical longer than the configured duration,
the agent deregisters the service (and its checks). The clock starts when the check *becomes* critical
(registration with the default ``critical`` status counts) and any non-critical status resets it. Consul
compares with ``>`` and sweeps every 30 s (``check_reap_interval``), so removal may lag by that much.
Pure: the caller supplies timestamps and calls ``due`` on its own sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

from .thresholds import CRITICAL

__all__ = ["CriticalReaper", "REAP_INTERVAL_S"]

REAP_INTERVAL_S = 30.0
"""How often Consul's agent sweeps (``check_reap_interval``)."""


@dataclass(slots=True)
class _Tracked:
    service_id: str
    deregister_after_s: float
    critical_since: float | None


class CriticalReaper:
    def __init__(self) -> None:
        self._checks: dict[str, _Tracked] = {}

    def track(
        self, check_id: str, service_id: str, deregister_after_s: float, status: str, now: float
    ) -> None:
        """Start (or restart) watching a check. Node checks (no service) and checks without a
        deregister duration are ignored — they can never cause a deregistration."""
        if not service_id or deregister_after_s <= 0:
            self._checks.pop(check_id, None)
            return
        self._checks[check_id] = _Tracked(service_id, deregister_after_s, now if status == CRITICAL else None)

    def untrack(self, check_id: str) -> None:
        self._checks.pop(check_id, None)

    def forget_service(self, service_id: str) -> None:
        """Drop every check of a service (after it was deregistered)."""
        for cid in [c for c, t in self._checks.items() if t.service_id == service_id]:
            del self._checks[cid]

    def observe(self, check_id: str, status: str, now: float) -> None:
        """Feed a check's current status; calling it on every result is fine (idempotent)."""
        tracked = self._checks.get(check_id)
        if tracked is None:
            return
        if status == CRITICAL:
            if tracked.critical_since is None:
                tracked.critical_since = now
        else:
            tracked.critical_since = None

    def critical_for(self, check_id: str, now: float) -> float:
        tracked = self._checks.get(check_id)
        if tracked is None or tracked.critical_since is None:
            return 0.0
        return now - tracked.critical_since

    def due(self, now: float) -> set[str]:
        """Service IDs with a check critical for longer than its threshold."""
        return {
            t.service_id
            for t in self._checks.values()
            if t.critical_since is not None and now - t.critical_since > t.deregister_after_s
        }
