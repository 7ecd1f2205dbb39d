"""Go-style durations, as Consul reads and writes them.

Consul's JSON accepts a duration either as a Go duration string (``"10s"``, ``"1m30s"``, ``"90m"``,
``"250ms"``) or as a JSON number of nanoseconds (``api-docs/api-structure.mdx``). It prints them back
with Go's ``time.Duration.String()`` (``"10s"``, ``"1m30s"``, ``"0s"``). Everything inside ctk holds
seconds as ``float``; these functions are the only translation.
"""

from __future__ import annotations

import re

__all__ = ["DurationError", "parse_duration_s", "format_duration", "parse_duration_value"]

_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """A duration that is neither a Go duration string nor a number."""


def parse_duration_s(text: str) -> float:
    """Parse a Go duration string (``"1h2m3.5s"``, ``"-5s"``, ``"0"``) into seconds."""
    s = text.strip()
    if not s:
        raise DurationError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise DurationError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise DurationError(f"time: invalid duration {text!r}")
    return sign * total


def parse_duration_value(value: object) -> float:
    """A duration as found in JSON: a Go duration string, or a number of nanoseconds."""
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9
    if isinstance(value, str):
        stripped = value.strip()
        if re.fullmatch(r"-?\d+", stripped):
            # A bare integer string: Go's time.ParseDuration rejects it except "0"; Consul's
            # lenient decoder reads numbers as nanoseconds, so do the same.
            return int(stripped) / 1e9
        return parse_duration_s(stripped)
    raise DurationError(f"invalid duration {value!r}")


def format_duration(seconds: float) -> str:
    """Format seconds as Go's ``time.Duration.String()`` does: ``1m30s``, ``250ms``, ``0s``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000:
        out = f"{ns}ns"
    elif ns < 1_000_000:
        out = _trim(ns / 1e3) + "µs"
    elif ns < 1_000_000_000:
        out = _trim(ns / 1e6) + "ms"
    else:
        hours, rem = divmod(ns, 3_600_000_000_000)
        minutes, rem = divmod(rem, 60_000_000_000)
        secs = rem / 1e9
        out = ""
        if hours:
            out += f"{hours}h"
        if hours or minutes:
            out += f"{minutes}m"
        out += _trim(secs) + "s"
    return ("-" if neg else "") + out


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"
