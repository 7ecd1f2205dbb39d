"""Health checks: HTTP, TCP, script and TTL runners, their scheduling, thresholds and the
critical-service reaper (``docs/discovery/checks.mdx``).

The agent's local state owns the checks; this package only runs them and reports
``(check_id, status, output)`` through ``CheckScheduler``'s callback.
"""

from .clock import Clock, FakeClock, MonotonicClock
from .errors import CheckError, InvalidCheck, InvalidCheckStatus, NotTTLCheck, ScriptChecksDisabled
from .output import DEFAULT_OUTPUT_MAX_SIZE
from .policy import CheckSource, require_script_checks_allowed, script_checks_allowed
from .probe import Probe, ProbeResult, ScriptedProbe
from .reaper import REAP_INTERVAL_S, CriticalReaper
from .scheduler import CheckScheduler, OnUpdate, make_probe
from .script import enable_child_subreaper, set_child_subreaper
from .spec import DEREGISTER_MIN_S, MIN_INTERVAL_S, CheckKind, CheckSpec
from .thresholds import CRITICAL, PASSING, STATUSES, WARNING, Thresholds, Verdict
from .ttl import TTLState

__all__ = [
    "CRITICAL",
    "DEFAULT_OUTPUT_MAX_SIZE",
    "DEREGISTER_MIN_S",
    "MIN_INTERVAL_S",
    "PASSING",
    "REAP_INTERVAL_S",
    "STATUSES",
    "WARNING",
    "CheckError",
    "CheckKind",
    "CheckScheduler",
    "CheckSource",
    "CheckSpec",
    "Clock",
    "CriticalReaper",
    "FakeClock",
    "InvalidCheck",
    "InvalidCheckStatus",
    "MonotonicClock",
    "NotTTLCheck",
    "OnUpdate",
    "Probe",
    "ProbeResult",
    "ScriptChecksDisabled",
    "ScriptedProbe",
    "TTLState",
    "Thresholds",
    "Verdict",
    "enable_child_subreaper",
    "make_probe",
    "require_script_checks_allowed",
    "script_checks_allowed",
    "set_child_subreaper",
]
