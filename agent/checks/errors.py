"""Errors raised by the check subsystem.

One tree for the package; the HTTP layer translates them: ``InvalidCheck`` → 400 ``Invalid check: <reason>``,
``ScriptChecksDisabled`` → the error Consul returns when script checks are off, ``NotTTLCheck`` → 500
``CheckID "x" does not have associated TTL``, ``InvalidCheckStatus`` → 400 ``Invalid check status: 'x'``.
"""

from __future__ import annotations

__all__ = ["CheckError", "InvalidCheck", "InvalidCheckStatus", "NotTTLCheck", "ScriptChecksDisabled"]


class CheckError(Exception):
    """Base class: every error this package raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCheck(CheckError):
    """A check definition Consul would refuse; ``reason`` is Consul's own text."""


class ScriptChecksDisabled(CheckError):
    """A script check registered while the agent's policy forbids it (the RCE guard)."""


class NotTTLCheck(CheckError):
    """A pass/warn/fail/update for a check that is unknown or is not a TTL check."""


class InvalidCheckStatus(CheckError):
    """A status outside passing / warning / critical."""
