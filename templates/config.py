"""``ctk template`` configuration: consul-template's HCL/JSON files, ``-template`` specs, flags.

The file format is consul-template's (``consul { address token }``, ``wait { min max }``,
``max_stale``, repeatable ``template { ... }`` blocks), so existing configs keep working; ctk adds
per-template ``check``, ``check_mode``, ``syntax``, ``min_instances`` and ``allow_empty``.

Every problem is a :class:`ConfigError` whose message is one line naming the file and the field
(``site.hcl: template[2].wait.min: invalid duration "5x"``): the CLI prints it and exits 2.
Unknown keys are errors (a typo such as ``comand`` must not be silently ignored); keys that
consul-template knows but ctk does not implement (``vault``, ``exec``, ``deduplicate`` ...) are
accepted and reported as warnings.

pyhcl is used for parsing, with two fixes for consul-template compatibility: repeated blocks
(``template {} template {}``) become a list instead of being merged key by key, and
``perms = 0600`` is read as octal, as Go's HCL does.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shlex
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .errors import TemplateError

__all__ = [
    "ConfigError",
    "WaitConfig",
    "TemplateConfig",
    "Config",
    "parse_duration",
    "parse_wait",
    "parse_template_spec",
    "parse_hcl",
    "load_config_file",
    "load_config_paths",
    "build_config",
    "DEFAULT_MAX_STALE_S",
    "DEFAULT_BLOCK_QUERY_WAIT_S",
    "DEFAULT_COMMAND_TIMEOUT_S",
]

DEFAULT_MAX_STALE_S = 2.0
DEFAULT_BLOCK_QUERY_WAIT_S = 60.0
DEFAULT_COMMAND_TIMEOUT_S = 30.0

CheckMode = Literal["staged", "after_swap"]
SyntaxOpt = Literal["auto", "go", "jinja"]


class ConfigError(TemplateError):
    """A configuration problem; ``str()`` is one line naming the file/flag and the field."""


# --------------------------------------------------------------------------------------------
# Durations and wait


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, where: str) -> float:
    """Go duration (``"1m30s"``, ``"250ms"``) → seconds; a bare number means seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: invalid duration {value!r} (want e.g. 5s, 250ms, 1m30s)")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ConfigError(f"{where}: duration must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: invalid duration {value!r} (want e.g. 5s, 250ms, 1m30s)")
    s = value.strip()
    if s in ("0", ""):
        return 0.0
    try:
        n = float(s)
    except ValueError:
        pass
    else:
        if n < 0 or not math.isfinite(n):
            raise ConfigError(f"{where}: duration must not be negative, got {value!r}")
        return n
    if s.startswith("-"):
        raise ConfigError(f"{where}: duration must not be negative, got {value!r}")
    pos, total = 0, 0.0
    body = s[1:] if s.startswith("+") else s
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if not m:
            raise ConfigError(f"{where}: invalid duration {value!r} (want e.g. 5s, 250ms, 1m30s)")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total


@dataclass(frozen=True)
class WaitConfig:
    """Quiescence: render ``min_s`` after the last change of a burst, at most ``max_s`` after its first."""

    min_s: float
    max_s: float

    @property
    def enabled(self) -> bool:
        """consul-template: wait is on iff ``min > 0``."""
        return self.min_s > 0

    def describe(self) -> str:
        """``2s:10s`` for logs."""
        return f"{self.min_s:g}s:{self.max_s:g}s"


def parse_wait(value: Any, where: str) -> WaitConfig:
    """``"5s"`` (max = 4×min), ``"5s:10s"``, or a ``{min, max}`` block."""
    if isinstance(value, list):  # repeated wait blocks: the last one wins
        if not value:
            raise ConfigError(f"{where}: empty wait")
        value = value[-1]
    if isinstance(value, Mapping):
        unknown = set(value) - {"min", "max", "enabled"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field (want min, max)")
        if value.get("enabled") is False:
            return WaitConfig(0.0, 0.0)
        lo = parse_duration(value.get("min", 0), f"{where}.min")
        hi = parse_duration(value["max"], f"{where}.max") if "max" in value else 4 * lo
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value).strip()
        lo_s, sep, hi_s = text.partition(":")
        lo = parse_duration(lo_s, where)
        hi = parse_duration(hi_s, where) if sep else 4 * lo
    else:
        raise ConfigError(f'{where}: invalid wait {value!r} (want "min[:max]" or {{ min max }})')
    if hi < lo:
        raise ConfigError(f"{where}: min ({lo:g}s) must not be greater than max ({hi:g}s)")
    return WaitConfig(lo, hi)


# --------------------------------------------------------------------------------------------
# The configuration objects


@dataclass(frozen=True)
class TemplateConfig:
    """One ``template { }`` block or ``-template`` spec (consul-template's names, plus ctk's)."""

    source: str | None = None
    destination: str = ""
    contents: str | None = None
    command: str | None = None
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    perms: int | None = None
    user: str | int | None = None
    group: str | int | None = None
    backup: bool = False
    wait: WaitConfig | None = None
    left_delimiter: str = ""
    right_delimiter: str = ""
    error_on_missing_key: bool = False
    create_dest_dirs: bool = True
    function_denylist: tuple[str, ...] = ()
    sandbox_path: str | None = None
    # ctk additions
    check: str | None = None
    check_mode: CheckMode = "staged"
    syntax: SyntaxOpt = "auto"
    min_instances: int = 0
    allow_empty: bool = True
    origin: str = field(default="", compare=False)
    """Where it was defined (``site.hcl: template[2]`` / ``-template``), for messages."""

    def label(self) -> str:
        """How logs name this template: its destination, else its source."""
        return self.destination or self.source or "<inline template>"

    def delims(self) -> tuple[str, str] | None:
        """Custom delimiters, or ``None`` for ``{{ }}``."""
        if self.left_delimiter or self.right_delimiter:
            return (self.left_delimiter or "{{", self.right_delimiter or "}}")
        return None


@dataclass(frozen=True)
class Config:
    """Everything ``ctk template`` runs with (files merged, flags applied)."""

    consul_address: str | None = None
    token: str | None = None
    wait: WaitConfig | None = None
    max_stale_s: float = DEFAULT_MAX_STALE_S
    block_query_wait_s: float = DEFAULT_BLOCK_QUERY_WAIT_S
    templates: tuple[TemplateConfig, ...] = ()
    pid_file: str | None = None
    log_level: str = "info"
    status_file: str | None = None
    once: bool = False
    dry: bool = False
    once_timeout_s: float = 30.0
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """Accepted-but-ignored consul-template settings, for the startup log."""

    def wait_for(self, t: TemplateConfig) -> WaitConfig | None:
        """A template's effective quiescence (its own, else the global one; ``None`` if off)."""
        w = t.wait if t.wait is not None else self.wait
        return w if w is not None and w.enabled else None


# --------------------------------------------------------------------------------------------
# HCL parsing (pyhcl with consul-template-compatible fixes)


class _Blocks(list[Any]):
    """Repeated blocks with the same key (``template {} template {}``)."""


def _flat(items: Iterable[tuple[str, Any]], replace_: bool) -> dict[str, Any]:
    """pyhcl's objectlist_flat, fixed: a repeated block key gives a list, a repeated scalar the last value."""
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out and isinstance(value, Mapping):
            prev = out[key]
            if isinstance(prev, _Blocks):
                prev.append(value)
            elif isinstance(prev, Mapping):
                out[key] = _Blocks([prev, value])
            else:
                out[key] = value
        else:
            out[key] = value
    return out


_PARSER_LOCK = threading.Lock()
_PARSER: tuple[Any, Any] | None = None


def _parser() -> tuple[Any, Any]:
    """pyhcl's parser and a prototype lexer, built once (~0.1s), with the repeated-block fix."""
    global _PARSER
    if _PARSER is None:
        from hcl.lexer import Lexer
        from hcl.parser import HclParser

        p = HclParser()
        p.objectlist_flat = _flat  # instance attribute: the grammar actions look it up dynamically
        _PARSER = (p, Lexer())
    return _PARSER


_OCTAL_PERMS = re.compile(r"(?m)^(\s*\"?perms\"?\s*=\s*)(0[0-7]+)(\s*(?:#.*|//.*)?)$")


def parse_hcl(text: str, origin: str) -> dict[str, Any]:
    """HCL (or JSON) text → dict; a syntax error becomes one ``ConfigError`` line."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{origin}: invalid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: the top level must be an object")
        return data
    text = _OCTAL_PERMS.sub(lambda m: f'{m.group(1)}"{m.group(2)}"{m.group(3)}', text)
    with _PARSER_LOCK:
        parser, proto = _parser()
        lexer = copy.copy(proto)
        lexer.lex = proto.lex.clone()  # fresh state, tables reused (building a lexer costs ~25ms)
        try:
            data = parser.yacc.parse(text, lexer=lexer, debug=False)
        except Exception as e:  # pyhcl raises ValueError (and occasionally others) with a position
            msg = " ".join(str(e).split())
            raise ConfigError(f"{origin}: invalid HCL: {msg}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be an object")
    return data


# --------------------------------------------------------------------------------------------
# Field readers


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{where}: want true or false, got {value!r}")


def _str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: want a string, got {value!r}")


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: want a whole number, got {value!r}")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: want a whole number, got {value!r}") from None
    if isinstance(value, float) and n != value:
        raise ConfigError(f"{where}: want a whole number, got {value!r}")
    if n < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {n}")
    return n


def _perms(value: Any, where: str) -> int:
    """``"0600"`` / ``0600`` (octal) or an int mode; decimal-looking modes like 644 are refused."""
    if isinstance(value, str):
        s = value.strip()
        try:
            mode = int(s, 8)
        except ValueError:
            raise ConfigError(f'{where}: invalid file mode {value!r} (want e.g. "0644")') from None
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        raise ConfigError(f'{where}: invalid file mode {value!r} (want e.g. "0644")')
    if mode < 0 or mode > 0o7777:
        raise ConfigError(f'{where}: invalid file mode {value!r} (want e.g. "0644")')
    if mode & ~0o777 and not isinstance(value, str):
        raise ConfigError(
            f'{where}: {value} reads as decimal (mode {mode:#o}); write the mode in octal, e.g. "0{value}"'
        )
    return mode


def _command(value: Any, where: str) -> str | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value[0] if len(value) == 1 else shlex.join(value)
    raise ConfigError(f"{where}: want a command string or a list of strings, got {value!r}")


def _one_block(value: Any, where: str) -> Mapping[str, Any]:
    """A non-repeatable block; repeats are merged (later keys win)."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list) and all(isinstance(x, Mapping) for x in value):
        merged: dict[str, Any] = {}
        for x in value:
            merged.update(x)
        return merged
    raise ConfigError(f"{where}: want a block {{ ... }}, got {value!r}")


def _closest(name: str, known: Iterable[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


# consul-template settings ctk accepts but does not implement (reported as warnings)
_IGNORED_TOP = {
    "vault": "Vault is not supported",
    "nomad": "Nomad is not supported",
    "exec": "exec (supervised child) mode is not supported; use a template command",
    "deduplicate": "dedup mode is not supported (watches are shared within one process)",
    "syslog": "syslog is not supported; logs go to stderr",
    "log_file": "log_file is not supported; logs go to stderr",
    "kill_signal": "SIGINT and SIGTERM both stop ctk cleanly",
    "reload_signal": "SIGHUP always reloads the configuration",
    "template_error_fatal": "template errors are never fatal in ctk",
    "err_on_failed_lookup": "-once reports templates blocked on a missing key and exits 1",
}
_TOP_KEYS = {
    "consul",
    "wait",
    "max_stale",
    "block_query_wait",
    "template",
    "pid_file",
    "log_level",
    "once",
    "dry",
    "status_file",
    "default_delimiters",
    *_IGNORED_TOP,
}
_CONSUL_KEYS = {"address", "token", "token_file", "namespace", "retry", "ssl", "auth", "transport"}
_CONSUL_IGNORED = {
    "namespace": "consul.namespace is not supported",
    "retry": "consul.retry is ignored: ctk retries forever with backoff and keeps the last good data",
    "ssl": "consul.ssl is not supported; use an https:// address",
    "auth": "consul.auth is not supported",
    "transport": "consul.transport is ignored",
}
_TEMPLATE_KEYS = {
    "source",
    "destination",
    "contents",
    "command",
    "command_timeout",
    "exec",
    "perms",
    "user",
    "group",
    "uid",
    "gid",
    "backup",
    "wait",
    "left_delimiter",
    "right_delimiter",
    "error_on_missing_key",
    "error_fatal",
    "create_dest_dirs",
    "function_denylist",
    "function_blacklist",
    "sandbox_path",
    "check",
    "check_mode",
    "syntax",
    "min_instances",
    "allow_empty",
}


def _template_from(data: Mapping[str, Any], where: str, warnings: list[str]) -> TemplateConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: want a block {{ ... }}, got {data!r}")
    for key in data:
        if key not in _TEMPLATE_KEYS:
            raise ConfigError(f"{where}.{key}: unknown field{_closest(key, _TEMPLATE_KEYS)}")
    kw: dict[str, Any] = {"origin": where}
    if "source" in data:
        kw["source"] = _str(data["source"], f"{where}.source") or None
    if "destination" in data:
        kw["destination"] = _str(data["destination"], f"{where}.destination")
    if "contents" in data:
        kw["contents"] = _str(data["contents"], f"{where}.contents")
    if "command" in data:
        kw["command"] = _command(data["command"], f"{where}.command")
    if "command_timeout" in data:
        kw["command_timeout_s"] = parse_duration(data["command_timeout"], f"{where}.command_timeout")
    if "exec" in data:
        ex = _one_block(data["exec"], f"{where}.exec")
        for key in ex:
            if key not in ("command", "timeout", "env"):
                raise ConfigError(f"{where}.exec.{key}: unknown field (ctk supports command, timeout)")
        if "env" in ex:
            warnings.append(f"{where}.exec.env is ignored")
        if "command" in ex:
            kw["command"] = _command(ex["command"], f"{where}.exec.command")
        if "timeout" in ex:
            kw["command_timeout_s"] = parse_duration(ex["timeout"], f"{where}.exec.timeout")
    if "perms" in data:
        kw["perms"] = _perms(data["perms"], f"{where}.perms")
    for name, alias in (("user", "uid"), ("group", "gid")):
        for key in (alias, name):
            if key in data and data[key] not in (None, ""):
                v = data[key]
                kw[name] = v if isinstance(v, int) and not isinstance(v, bool) else _str(v, f"{where}.{key}")
    if "backup" in data:
        kw["backup"] = _bool(data["backup"], f"{where}.backup")
    if "wait" in data:
        kw["wait"] = parse_wait(data["wait"], f"{where}.wait")
    for key in ("left_delimiter", "right_delimiter"):
        if key in data:
            kw[key] = _str(data[key], f"{where}.{key}")
    for key in ("error_on_missing_key", "create_dest_dirs", "allow_empty"):
        if key in data:
            kw[key] = _bool(data[key], f"{where}.{key}")
    if "error_fatal" in data:
        _bool(data["error_fatal"], f"{where}.error_fatal")
        warnings.append(f"{where}.error_fatal is ignored: a failing template never stops ctk")
    for key in ("function_denylist", "function_blacklist"):
        if key in data:
            v = data[key]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where}.{key}: want a list of strings")
            kw["function_denylist"] = tuple(v)
    if "sandbox_path" in data:
        kw["sandbox_path"] = _str(data["sandbox_path"], f"{where}.sandbox_path") or None
    if "check" in data:
        kw["check"] = _command(data["check"], f"{where}.check")
    if "check_mode" in data:
        mode = _str(data["check_mode"], f"{where}.check_mode").replace("-", "_")
        if mode not in ("staged", "after_swap"):
            raise ConfigError(
                f'{where}.check_mode: want "staged" or "after_swap", got {data["check_mode"]!r}'
            )
        kw["check_mode"] = mode
    if "syntax" in data:
        syn = _str(data["syntax"], f"{where}.syntax").lower()
        if syn not in ("auto", "go", "jinja"):
            raise ConfigError(f"{where}.syntax: want auto, go or jinja, got {data['syntax']!r}")
        kw["syntax"] = syn
    if "min_instances" in data:
        kw["min_instances"] = _int(data["min_instances"], f"{where}.min_instances")
    return TemplateConfig(**kw)


def _config_fields(data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """The fields a file sets (only those), plus ``templates`` and ``warnings`` lists."""
    out: dict[str, Any] = {"templates": [], "warnings": []}
    warnings: list[str] = out["warnings"]
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{origin}: {key}: unknown field{_closest(key, _TOP_KEYS)}")
        if key in _IGNORED_TOP:
            warnings.append(f"{origin}: {key}: ignored ({_IGNORED_TOP[key]})")
    if "consul" in data:
        consul = _one_block(data["consul"], f"{origin}: consul")
        for key in consul:
            if key not in _CONSUL_KEYS:
                raise ConfigError(f"{origin}: consul.{key}: unknown field{_closest(key, _CONSUL_KEYS)}")
            if key in _CONSUL_IGNORED:
                warnings.append(f"{origin}: {_CONSUL_IGNORED[key]}")
        if "address" in consul:
            out["consul_address"] = _str(consul["address"], f"{origin}: consul.address") or None
        if "token" in consul:
            out["token"] = _str(consul["token"], f"{origin}: consul.token")
        if "token_file" in consul and "token" not in consul:
            path = _str(consul["token_file"], f"{origin}: consul.token_file")
            try:
                out["token"] = Path(path).read_text().strip()
            except OSError as e:
                raise ConfigError(f"{origin}: consul.token_file: cannot read {path}: {e.strerror}") from None
    if "wait" in data:
        out["wait"] = parse_wait(data["wait"], f"{origin}: wait")
    if "max_stale" in data:
        out["max_stale_s"] = parse_duration(data["max_stale"], f"{origin}: max_stale")
    if "block_query_wait" in data:
        bqw = parse_duration(data["block_query_wait"], f"{origin}: block_query_wait")
        if bqw <= 0:
            raise ConfigError(f"{origin}: block_query_wait: must be positive")
        out["block_query_wait_s"] = bqw
    for key in ("pid_file", "status_file"):
        if key in data:
            out[key] = _str(data[key], f"{origin}: {key}") or None
    if "log_level" in data:
        level = _str(data["log_level"], f"{origin}: log_level").lower()
        level = {"err": "error", "warn": "warning", "trace": "debug"}.get(level, level)
        if level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"{origin}: log_level: want trace, debug, info, warn or err, got {data['log_level']!r}"
            )
        out["log_level"] = level
    for key in ("once", "dry"):
        if key in data:
            out[key] = _bool(data[key], f"{origin}: {key}")
    default_delims: tuple[str, str] | None = None
    if "default_delimiters" in data:
        dd = _one_block(data["default_delimiters"], f"{origin}: default_delimiters")
        default_delims = (
            _str(dd.get("left", ""), f"{origin}: default_delimiters.left"),
            _str(dd.get("right", ""), f"{origin}: default_delimiters.right"),
        )
    if "template" in data:
        raw = data["template"]
        blocks = list(raw) if isinstance(raw, list) else [raw]
        for i, block in enumerate(blocks, 1):
            t = _template_from(block, f"{origin}: template[{i}]", warnings)
            if default_delims and not (t.left_delimiter or t.right_delimiter):
                t = replace(t, left_delimiter=default_delims[0], right_delimiter=default_delims[1])
            out["templates"].append(t)
    return out


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one file (HCL or JSON) into the fields it sets."""
    p = Path(path)
    origin = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{origin}: is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{origin}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return _config_fields(parse_hcl(text, origin), origin)


def load_config_paths(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """``-config`` values in order; a directory contributes its ``*.hcl``/``*.json`` files in lexical order."""
    parts: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(x for x in p.iterdir() if x.suffix in (".hcl", ".json") and x.is_file())
            parts.extend(load_config_file(f) for f in files)
        else:
            parts.append(load_config_file(p))
    return parts


# --------------------------------------------------------------------------------------------
# -template specs and the final merge


def parse_template_spec(spec: str, origin: str = "-template") -> TemplateConfig:
    """``"in:out[:command]"`` → template; only the first two colons split, the command keeps the rest."""
    where = f"{origin} {json.dumps(spec)}"
    source, sep, rest = spec.partition(":")
    destination, _, command = rest.partition(":")
    if not source.strip():
        raise ConfigError(f"{where}: missing source (want SRC:DEST[:COMMAND])")
    if not sep or not destination.strip():
        raise ConfigError(f"{where}: missing destination (want SRC:DEST[:COMMAND])")
    return TemplateConfig(
        source=source,
        destination=destination,
        command=command.strip() or None,
        origin=where,
    )


def build_config(
    *,
    config_paths: Sequence[str | os.PathLike[str]] = (),
    template_specs: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Files (in order, later wins), then ``-template`` specs (appended), then flag ``overrides``.

    Validates the result: at least one template, ``source`` xor ``contents``, a destination
    (unless ``dry``), distinct destinations, templates readable.
    """
    fields: dict[str, Any] = {}
    templates: list[TemplateConfig] = []
    warnings: list[str] = []
    for part in load_config_paths(config_paths):
        templates.extend(part.pop("templates"))
        warnings.extend(part.pop("warnings"))
        fields.update(part)
    for spec in template_specs:
        templates.append(parse_template_spec(spec))
    for key, value in (overrides or {}).items():
        if value is not None:
            fields[key] = value
    cfg = Config(templates=tuple(templates), warnings=tuple(warnings), **fields)
    _validate(cfg)
    return cfg


def _at(t: TemplateConfig, name: str) -> str:
    """``site.hcl: template[2].destination`` / ``-template "a:b": destination``."""
    where = t.origin or "template"
    return f"{where}: {name}" if where.startswith("-template") else f"{where}.{name}"


def _validate(cfg: Config) -> None:
    if not cfg.templates:
        raise ConfigError(
            "no templates: give SRC:DEST[:COMMAND], -template or a -config file with template blocks"
        )
    seen: dict[str, str] = {}
    for t in cfg.templates:
        where = t.origin or "template"
        if t.source and t.contents is not None:
            raise ConfigError(f"{where}: source and contents are mutually exclusive")
        if not t.source and t.contents is None:
            raise ConfigError(f"{_at(t, 'source')}: missing (or give contents)")
        if t.source:
            src = Path(t.source)
            if not src.exists():
                raise ConfigError(f"{_at(t, 'source')}: {t.source}: no such file")
            if src.is_dir():
                raise ConfigError(f"{_at(t, 'source')}: {t.source}: is a directory")
        if not t.destination:
            if not cfg.dry:
                raise ConfigError(f"{_at(t, 'destination')}: missing")
        else:
            real = os.path.realpath(t.destination)
            if real in seen:
                raise ConfigError(
                    f"{_at(t, 'destination')}: {t.destination} is already the destination of {seen[real]}"
                )
            seen[real] = where
            if os.path.isdir(real):
                raise ConfigError(f"{_at(t, 'destination')}: {t.destination} is a directory")
        if t.check and "{staged}" not in t.check and "{src}" not in t.check and "{{.src}}" not in t.check:
            if t.check_mode == "staged":
                raise ConfigError(
                    f"{_at(t, 'check')}: must name the staged file with {{staged}} "
                    '(or set check_mode = "after_swap" to check the installed file)'
                )
