"""Go-compatible encoders behind ``toJSON``, ``toYAML`` and ``timestamp``.

Python's ``json`` sorts struct fields alphabetically (with ``sort_keys``) or not at all, prints
``1.0`` for a float64 Go prints as ``1`` and never escapes ``<``; a config diffed against
consul-template's output would churn. These encoders follow ``encoding/json`` (struct fields in
declaration order, map keys sorted, HTML-safe escapes), ``gopkg.in/yaml.v2`` (consul-template's
YAML library: sorted keys, sequences flush with their parent key, quotes only where a plain
scalar would change type) and Go's reference-time layouts (``2006-01-02T15:04:05Z07:00``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from .errors import FunctionError
from .gofmt import format_float_json, format_float_shortest, go_type_name, is_struct

__all__ = ["go_json", "go_yaml", "go_time_format"]


# --------------------------------------------------------------------------------------------
# JSON (encoding/json)


def _json_string(s: str, escape_html: bool) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append(
                {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}.get(ch, f"\\u{o:04x}")
            )
        elif escape_html and ch in "<>&":
            out.append(f"\\u{o:04x}")
        elif o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        raise FunctionError(f"json: unsupported type: map[{go_type_name(k)}]interface {{}}")
    if isinstance(k, int):
        return str(k)
    raise FunctionError(f"json: unsupported type: map[{go_type_name(k)}]interface {{}}")


def _json_items(v: Any) -> list[tuple[str, Any]] | None:
    if isinstance(v, Mapping):
        items = [(_json_key(k), x) for k, x in v.items()]
        items.sort(key=lambda kv: kv[0])
        return items
    if is_struct(v):
        return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v) if not f.name.startswith("_")]
    return None


def _json(v: Any, indent: str | None, level: int, escape_html: bool) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise FunctionError(f"json: unsupported value: {format_float_shortest(v)}")
        return format_float_json(v)
    if isinstance(v, str):
        return _json_string(v, escape_html)
    if isinstance(v, bytes):
        import base64

        return '"' + base64.b64encode(v).decode() + '"'
    items = _json_items(v)
    if items is not None:
        if not items:
            return "{}"
        if indent is None:
            return (
                "{"
                + ",".join(
                    f"{_json_string(k, escape_html)}:{_json(x, None, 0, escape_html)}" for k, x in items
                )
                + "}"
            )
        pad = "\n" + indent * (level + 1)
        body = ",".join(
            f"{pad}{_json_string(k, escape_html)}: {_json(x, indent, level + 1, escape_html)}"
            for k, x in items
        )
        return "{" + body + "\n" + indent * level + "}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        if indent is None:
            return "[" + ",".join(_json(x, None, 0, escape_html) for x in v) + "]"
        pad = "\n" + indent * (level + 1)
        return (
            "["
            + ",".join(pad + _json(x, indent, level + 1, escape_html) for x in v)
            + "\n"
            + indent * level
            + "]"
        )
    raise FunctionError(f"json: unsupported type: {go_type_name(v)}")


def go_json(v: Any, indent: str | None = None, escape_html: bool = True) -> str:
    """``json.Marshal`` / ``json.MarshalIndent(v, "", indent)``."""
    return _json(v, indent, 0, escape_html)


# --------------------------------------------------------------------------------------------
# YAML (gopkg.in/yaml.v2 Marshal)

_YAML_BOOL_NULL = {
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
    "true", "True", "TRUE", "false", "False", "FALSE",
    "on", "On", "ON", "off", "Off", "OFF",
    "~", "null", "Null", "NULL",
}  # fmt: skip
_YAML_INT = re.compile(r"^[-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]+|[0-9][0-9_]*|[1-9][0-9_]*(:[0-5]?[0-9])+)$")
_YAML_FLOAT = re.compile(
    r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
)
_YAML_TIMESTAMP = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([Tt ].*)?$")
_YAML_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")


def _yaml_resolves_non_string(s: str) -> bool:
    return (
        s == ""
        or s in _YAML_BOOL_NULL
        or bool(_YAML_INT.match(s))
        or bool(_YAML_FLOAT.match(s))
        or bool(_YAML_TIMESTAMP.match(s))
    )


def _yaml_plain_ok(s: str) -> bool:
    if s[0] in _YAML_INDICATORS or s[0] == " " or s[-1] == " ":
        return False
    if ": " in s or " #" in s or s.endswith(":") or "\t" in s:
        return False
    return all(c.isprintable() for c in s)


def _yaml_double(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            out.append(f"\\x{o:02X}" if o < 0x100 else f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _yaml_scalar(v: Any) -> str | None:
    """A one-line scalar, or None for block strings / collections."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return format_float_shortest(v)
    if isinstance(v, str):
        if "\n" in v:
            return None
        if _yaml_resolves_non_string(v):
            return _yaml_double(v)
        if _yaml_plain_ok(v):
            return v
        if all(c.isprintable() for c in v):
            return "'" + v.replace("'", "''") + "'"
        return _yaml_double(v)
    return None


def _yaml_block_string(s: str, indent: str) -> str:
    chomp = "-" if not s.endswith("\n") else ("+" if s.endswith("\n\n") else "")
    body = s[:-1] if s.endswith("\n") and chomp == "" else s
    if chomp == "+":
        body = s[:-1]
    lines = body.split("\n")
    return f"|{chomp}\n" + "\n".join((indent + ln) if ln else "" for ln in lines)


def _yaml_mapping_items(v: Any) -> list[tuple[str, Any]] | None:
    if isinstance(v, Mapping):
        return sorted(((str(k), x) for k, x in v.items()), key=lambda kv: kv[0])
    if is_struct(v):
        return [
            (f.name.lower(), getattr(v, f.name)) for f in dataclasses.fields(v) if not f.name.startswith("_")
        ]
    return None


def _yaml_node(v: Any, level: int) -> list[str]:
    """Lines for ``v`` placed at indentation ``level`` (2 spaces per level)."""
    ind = "  " * level
    items = _yaml_mapping_items(v)
    if items is not None:
        if not items:
            return [ind + "{}"]
        lines: list[str] = []
        for k, x in items:
            key = _yaml_scalar(k) or _yaml_double(k)
            lines.extend(_yaml_keyed(ind + key + ":", x, level))
        return lines
    if isinstance(v, (list, tuple)):
        if not v:
            return [ind + "[]"]
        lines = []
        for x in v:
            lines.extend(_yaml_dashed(ind, x, level))
        return lines
    sc = _yaml_scalar(v)
    if sc is not None:
        return [ind + sc]
    if isinstance(v, str):
        return [ind + _yaml_block_string(v, ind + "  ")]
    raise FunctionError(f"toYAML: cannot marshal type {go_type_name(v)}")


def _yaml_keyed(head: str, x: Any, level: int) -> list[str]:
    sc = _yaml_scalar(x)
    if sc is not None:
        return [f"{head} {sc}"]
    if isinstance(x, str):
        return [f"{head} " + _yaml_block_string(x, "  " * (level + 1))]
    if isinstance(x, (list, tuple)):
        if not x:
            return [f"{head} []"]
        return [head, *_yaml_node(x, level)]  # sequences sit flush with their key
    if (_yaml_mapping_items(x) or []) == [] and _yaml_mapping_items(x) is not None:
        return [f"{head} {{}}"]
    return [head, *_yaml_node(x, level + 1)]


def _yaml_dashed(ind: str, x: Any, level: int) -> list[str]:
    sc = _yaml_scalar(x)
    if sc is not None:
        return [f"{ind}- {sc}"]
    if isinstance(x, str):
        return [f"{ind}- " + _yaml_block_string(x, ind + "  ")]
    sub = _yaml_node(x, level + 1)
    first = sub[0][len(ind) + 2 :]
    return [f"{ind}- {first}", *sub[1:]]


def go_yaml(v: Any) -> str:
    """``yaml.Marshal`` (gopkg.in/yaml.v2), without the trailing newline consul-template trims."""
    return "\n".join(_yaml_node(v, 0))


# --------------------------------------------------------------------------------------------
# Go time layouts

_STD_CHUNKS = [
    "January", "Jan", "Monday", "Mon", "MST",
    "Z07:00:00", "Z070000", "Z07:00", "Z0700", "Z07",
    "-07:00:00", "-070000", "-07:00", "-0700", "-07",
    "2006", "002", "__2", "_2", "01", "02", "03", "04", "05", "06", "15",
    "PM", "pm", "1", "2", "3", "4", "5",
]  # fmt: skip
_FRAC = re.compile(r"^[.,](0+|9+)(?![0-9])")


def _tz(dt: datetime, chunk: str) -> str:
    off = dt.utcoffset() or timedelta(0)
    secs = int(off.total_seconds())
    if chunk.startswith("Z") and secs == 0:
        return "Z"
    sign = "-" if secs < 0 else "+"
    secs = abs(secs)
    hh, mm, ss = secs // 3600, (secs // 60) % 60, secs % 60
    body = chunk.lstrip("Z-")
    if body == "07":
        return f"{sign}{hh:02d}"
    if body == "0700":
        return f"{sign}{hh:02d}{mm:02d}"
    if body == "07:00":
        return f"{sign}{hh:02d}:{mm:02d}"
    if body == "070000":
        return f"{sign}{hh:02d}{mm:02d}{ss:02d}"
    return f"{sign}{hh:02d}:{mm:02d}:{ss:02d}"


def go_time_format(dt: datetime, layout: str) -> str:
    """``time.Time.Format(layout)`` for the reference time ``Mon Jan 2 15:04:05 MST 2006``."""
    out: list[str] = []
    i = 0
    n = len(layout)
    while i < n:
        frac = _FRAC.match(layout[i:]) if layout[i] in ".," else None
        if frac:
            digits = len(frac.group(1))
            micro = f"{dt.microsecond:06d}" + "000"
            text = micro[:digits]
            if frac.group(1)[0] == "9":
                text = text.rstrip("0")
                out.append((layout[i] + text) if text else "")
            else:
                out.append(layout[i] + text)
            i += len(frac.group(0))
            continue
        for chunk in _STD_CHUNKS:
            if layout.startswith(chunk, i):
                out.append(_render_chunk(dt, chunk))
                i += len(chunk)
                break
        else:
            out.append(layout[i])
            i += 1
    return "".join(out)


def _render_chunk(dt: datetime, chunk: str) -> str:
    h12 = dt.hour % 12 or 12
    table: dict[str, str] = {
        "January": dt.strftime("%B"),
        "Jan": dt.strftime("%b"),
        "Monday": dt.strftime("%A"),
        "Mon": dt.strftime("%a"),
        "MST": dt.tzname() or "UTC",
        "2006": f"{dt.year:04d}",
        "06": f"{dt.year % 100:02d}",
        "002": f"{dt.timetuple().tm_yday:03d}",
        "__2": f"{dt.timetuple().tm_yday:>3d}",
        "_2": f"{dt.day:>2d}",
        "01": f"{dt.month:02d}",
        "02": f"{dt.day:02d}",
        "03": f"{h12:02d}",
        "04": f"{dt.minute:02d}",
        "05": f"{dt.second:02d}",
        "15": f"{dt.hour:02d}",
        "PM": "PM" if dt.hour >= 12 else "AM",
        "pm": "pm" if dt.hour >= 12 else "am",
        "1": str(dt.month),
        "2": str(dt.day),
        "3": str(h12),
        "4": str(dt.minute),
        "5": str(dt.second),
    }
    if chunk in table:
        return table[chunk]
    return _tz(dt, chunk)
