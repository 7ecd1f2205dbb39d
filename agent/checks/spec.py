"""What a check runs: ``CheckSpec``, built from a definition with Consul's validation.

Field names and rules follow ``agent/structs/check_type.go`` and ``docs/discovery/checks.mdx``: one type per
check (HTTP, TCP, script, TTL here; gRPC/UDP/H2PING/Docker/OSService/alias are refused as unsupported),
an ``Interval`` for every probing type and a ``TTL`` only for TTL checks, intervals below 1 s raised to 1 s
(a fork-bomb guard), ``Timeout`` defaulting to 30 s for scripts and 10 s for network probes,
``DeregisterCriticalServiceAfter`` raised to at least 1 min, and ``OutputMaxSize`` that can only lower the
agent-wide ``check_output_max_size``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agent.durations import DurationError, format_duration, parse_duration_value

from .errors import InvalidCheck
from .output import DEFAULT_OUTPUT_MAX_SIZE
from .thresholds import CRITICAL, STATUSES

__all__ = [
    "CheckKind",
    "CheckSpec",
    "DEREGISTER_MIN_S",
    "MIN_INTERVAL_S",
    "DEFAULT_SCRIPT_TIMEOUT_S",
    "DEFAULT_NETWORK_TIMEOUT_S",
]

log = logging.getLogger(__name__)

CheckKind = Literal["http", "tcp", "ttl", "script"]

MIN_INTERVAL_S = 1.0
"""Consul's ``checks.MinInterval``: shorter intervals are raised, with a warning."""
DEFAULT_SCRIPT_TIMEOUT_S = 30.0
DEFAULT_NETWORK_TIMEOUT_S = 10.0
DEREGISTER_MIN_S = 60.0
"""Consul's ``check_deregister_interval_min`` (1 min)."""

_SHELL = "/bin/sh"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """An immutable, validated description of one check's probe.

    ``timeout_s`` is the effective timeout (defaults already applied); ``failures_before_warning`` is
    already defaulted to ``failures_before_critical`` when it was unset, as Consul's agent does.
    """

    kind: CheckKind
    interval_s: float = 0.0
    timeout_s: float = 0.0
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict, hash=False)
    body: str = ""
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    disable_redirects: bool = False
    tcp: str = ""
    args: list[str] = field(default_factory=list, hash=False)
    shell_script: str = ""
    ttl_s: float = 0.0
    output_max_size: int = DEFAULT_OUTPUT_MAX_SIZE
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    deregister_critical_service_after_s: float = 0.0
    status: str = CRITICAL

    @property
    def type(self) -> str:
        """The ``Type`` Consul records for the check (``http``, ``tcp``, ``ttl``, ``script``)."""
        return self.kind

    @property
    def command(self) -> list[str]:
        """argv for a script check: ``args`` as-is (no shell), or the legacy ``script`` via ``/bin/sh -c``."""
        if self.args:
            return list(self.args)
        if self.shell_script:
            return [_SHELL, "-c", self.shell_script]
        return []

    @classmethod
    def from_definition(
        cls,
        mapping: Mapping[str, object],
        *,
        check_id: str = "",
        agent_output_max_size: int = DEFAULT_OUTPUT_MAX_SIZE,
        deregister_min_s: float = DEREGISTER_MIN_S,
    ) -> CheckSpec:
        """Build a spec from a check definition whose keys are already lowercased with underscores
        stripped (``tlsskipverify``, ``deregistercriticalserviceafter``, ...). Unknown keys are ignored.

        Raises ``InvalidCheck`` with Consul's reason text for anything Consul would reject.
        """
        d = _Reader(mapping)
        http = d.string("http")
        tcp = d.string("tcp")
        args = d.string_list("scriptargs") or d.string_list("args")
        shell_script = "" if args else d.string("script")
        interval_s = d.duration("interval")
        timeout_s = d.duration("timeout")
        ttl_s = d.duration("ttl")
        output_max_size = d.integer("outputmaxsize")
        failures_before_warning = d.integer("failuresbeforewarning")
        failures_before_critical = d.integer("failuresbeforecritical")
        success_before_passing = d.integer("successbeforepassing")
        unsupported = {
            name: d.string(key)
            for name, key in (
                ("grpc", "grpc"),
                ("udp", "udp"),
                ("h2ping", "h2ping"),
                ("os_service", "osservice"),
                ("docker", "dockercontainerid"),
            )
        }
        is_alias = bool(d.string("aliasnode") or d.string("aliasservice"))
        is_script = bool(args or shell_script)

        # --- Consul's CheckType.Validate, in its order and with its texts ---
        interval_check = bool(
            is_script
            or http
            or tcp
            or unsupported["udp"]
            or unsupported["grpc"]
            or unsupported["h2ping"]
            or unsupported["os_service"]
        )
        if interval_s > 0 and ttl_s > 0:
            raise InvalidCheck("Interval and TTL cannot both be specified")
        if interval_check and interval_s <= 0:
            raise InvalidCheck("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks")
        if interval_check and is_alias:
            raise InvalidCheck("Interval cannot be set for Alias checks")
        if is_alias and ttl_s > 0:
            raise InvalidCheck("TTL must be not be set for Alias checks")
        if not interval_check and not is_alias and ttl_s <= 0:
            raise InvalidCheck("TTL must be > 0 for TTL checks")
        if output_max_size < 0:
            raise InvalidCheck("MaxOutputMaxSize must be positive")
        if failures_before_warning > failures_before_critical:
            raise InvalidCheck("FailuresBeforeWarning can't be higher than FailuresBeforeCritical")

        status = d.string("status") or CRITICAL
        if status not in STATUSES:
            raise InvalidCheck("Status for checks must 'passing', 'warning', 'critical'")

        # --- which runner: Consul's CheckType.Type() precedence (grpc, http, ttl, tcp, udp, alias, docker,
        # script, h2ping, os_service) ---
        kind: CheckKind
        if unsupported["grpc"]:
            raise _unsupported("grpc")
        if http:
            kind = "http"
        elif ttl_s > 0:
            kind = "ttl"
        elif tcp:
            kind = "tcp"
        elif unsupported["udp"]:
            raise _unsupported("udp")
        elif is_alias:
            raise _unsupported("alias")
        elif is_script and unsupported["docker"]:
            raise _unsupported("docker")
        elif is_script:
            kind = "script"
        elif unsupported["h2ping"]:
            raise _unsupported("h2ping")
        else:
            raise _unsupported("os_service")

        if kind != "ttl" and interval_s < MIN_INTERVAL_S:
            log.warning(
                "check %s: interval %s is below the minimum; using %s",
                check_id or "?",
                format_duration(interval_s),
                format_duration(MIN_INTERVAL_S),
            )
            interval_s = MIN_INTERVAL_S
        if kind == "ttl":
            timeout_s = 0.0
        elif timeout_s <= 0:
            timeout_s = DEFAULT_SCRIPT_TIMEOUT_S if kind == "script" else DEFAULT_NETWORK_TIMEOUT_S

        effective_max = agent_output_max_size if agent_output_max_size > 0 else DEFAULT_OUTPUT_MAX_SIZE
        if 0 < output_max_size < effective_max:
            effective_max = output_max_size

        deregister_s = d.duration("deregistercriticalserviceafter")
        if deregister_s <= 0:
            deregister_s = 0.0
        elif deregister_s < deregister_min_s:
            log.warning(
                "check %s: deregister_critical_service_after %s is below the minimum; using %s",
                check_id or "?",
                format_duration(deregister_s),
                format_duration(deregister_min_s),
            )
            deregister_s = deregister_min_s

        if failures_before_warning == 0:
            failures_before_warning = failures_before_critical

        return cls(
            kind=kind,
            interval_s=interval_s if kind != "ttl" else 0.0,
            timeout_s=timeout_s,
            http=http,
            method=d.string("method") or "GET",
            header=d.header("header"),
            body=d.string("body"),
            tls_skip_verify=d.boolean("tlsskipverify"),
            tls_server_name=d.string("tlsservername"),
            disable_redirects=d.boolean("disableredirects"),
            tcp=tcp,
            args=args,
            shell_script=shell_script,
            ttl_s=ttl_s if kind == "ttl" else 0.0,
            output_max_size=effective_max,
            success_before_passing=success_before_passing,
            failures_before_warning=failures_before_warning,
            failures_before_critical=failures_before_critical,
            deregister_critical_service_after_s=deregister_s,
            status=status,
        )


def _unsupported(kind: str) -> InvalidCheck:
    return InvalidCheck(f"{kind} checks are not supported by this agent (supported: HTTP, TCP, TTL, script)")


# Consul's field names, for error messages about a key's type.
_FIELD_NAMES = {
    "http": "HTTP",
    "tcp": "TCP",
    "ttl": "TTL",
    "args": "Args",
    "scriptargs": "ScriptArgs",
    "script": "Script",
    "interval": "Interval",
    "timeout": "Timeout",
    "method": "Method",
    "header": "Header",
    "body": "Body",
    "tlsskipverify": "TLSSkipVerify",
    "tlsservername": "TLSServerName",
    "disableredirects": "DisableRedirects",
    "outputmaxsize": "OutputMaxSize",
    "successbeforepassing": "SuccessBeforePassing",
    "failuresbeforewarning": "FailuresBeforeWarning",
    "failuresbeforecritical": "FailuresBeforeCritical",
    "deregistercriticalserviceafter": "DeregisterCriticalServiceAfter",
    "status": "Status",
}


class _Reader:
    """Typed, lenient access to a normalised definition; wrong types become ``InvalidCheck``."""

    def __init__(self, mapping: Mapping[str, object]) -> None:
        self._m = mapping

    def _bad(self, key: str, expected: str) -> InvalidCheck:
        return InvalidCheck(f"{_FIELD_NAMES.get(key, key)} must be {expected}, got {self._m[key]!r}")

    def string(self, key: str) -> str:
        value = self._m.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def string_list(self, key: str) -> list[str]:
        value = self._m.get(key)
        if value is None:
            return []
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return list(value)

    def duration(self, key: str) -> float:
        value = self._m.get(key)
        if value is None or value == "":
            return 0.0
        try:
            return parse_duration_value(value)
        except DurationError as exc:
            raise InvalidCheck(f"{_FIELD_NAMES.get(key, key)}: {exc}") from None

    def integer(self, key: str) -> int:
        value = self._m.get(key)
        if value is None:
            return 0
        if isinstance(value, bool):
            raise self._bad(key, "an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise self._bad(key, "an integer")

    def boolean(self, key: str) -> bool:
        value = self._m.get(key)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise self._bad(key, "a boolean")

    def header(self, key: str) -> dict[str, list[str]]:
        value = self._m.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._bad(key, "an object of header name to list of values")
        out: dict[str, list[str]] = {}
        for name, values in value.items():
            if not isinstance(name, str):
                raise self._bad(key, "an object of header name to list of values")
            if isinstance(values, str):
                out[name] = [values]
            elif isinstance(values, list | tuple) and all(isinstance(v, str) for v in values):
                out[name] = list(values)
            else:
                raise self._bad(key, "an object of header name to list of values")
        return out
