"""consul-template's function library, shared by the Go-syntax and Jinja dialects.

Data functions never fail for lack of data: they record the dependency as *used*, look it up
in the :class:`DataSource`, and when it has no answer yet record it as *missing* and return an
empty value (``""``, ``[]``, ``False``, or ``None`` for ``node``). ``range``/``if`` bodies are
then skipped and execution carries on, so **one pass discovers every dependency** the template
can reach with the data at hand, and a render is *complete* only when nothing was missing
(consul-template's n-pass evaluation; nested lookups such as ``range services`` →
``service .Name`` need one more pass per level).

Argument order follows consul-template: the piped value is the **last** argument
(``{{ .Tags | contains "prod" }}`` = ``contains "prod" .Tags``). Jinja filters pass the piped
value the same way (see ``jinja.py``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import fnmatch
import functools
import hashlib
import hmac
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from .dependencies import (
    CatalogSnippet,
    Dependency,
    FileDep,
    HealthService,
    KeyPair,
    datacenters_dep,
    file_dep,
    parse_kv_get,
    parse_kv_list,
    parse_node,
    parse_nodes,
    parse_service,
    parse_services,
)
from .encoding import go_json, go_time_format, go_yaml
from .errors import FunctionError
from .gofmt import format_v, go_type_name, is_struct

__all__ = [
    "MISSING",
    "DataSource",
    "MemoryDataSource",
    "RenderContext",
    "Scratch",
    "GoChan",
    "FUNCTIONS",
    "FUNCTION_ARITY",
    "CONTEXT_FUNCTIONS",
    "make_funcs",
]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""What a :class:`DataSource` returns for a dependency it has no answer for yet."""


class DataSource(Protocol):
    """Where rendered values come from: the watcher's cache in production, a dict in tests."""

    def get(self, dep: Dependency) -> Any:
        """The decoded value for ``dep`` (see ``Dependency.decode``), or :data:`MISSING`."""
        ...


class MemoryDataSource:
    """A dict-backed :class:`DataSource` (tests, ``-once`` previews, the bench).

    ``read_files`` makes ``file`` dependencies read straight from disk (missing file = missing
    data), which is what a one-shot render wants.
    """

    def __init__(self, values: Mapping[Dependency, Any] | None = None, *, read_files: bool = True) -> None:
        self._values: dict[Dependency, Any] = dict(values or {})
        self._read_files = read_files

    def set(self, dep: Dependency, value: Any) -> None:
        """Store an already-decoded value."""
        self._values[dep] = value

    def set_response(self, dep: Dependency, body: Any) -> None:
        """Store a raw Consul JSON body (``None`` = 404), decoded as the watcher would."""
        self._values[dep] = dep.decode(body)

    def delete(self, dep: Dependency) -> None:
        """Forget a dependency (it reads as missing again)."""
        self._values.pop(dep, None)

    def get(self, dep: Dependency) -> Any:
        if dep in self._values:
            return self._values[dep]
        if self._read_files and isinstance(dep, FileDep):
            try:
                return dep.read()
            except OSError:
                return MISSING
        return MISSING

    def __len__(self) -> int:
        return len(self._values)


class RenderContext:
    """Per-render state: the data source, used/missing dependencies, scratch pad, options."""

    __slots__ = ("source", "used", "missing", "env", "sandbox_path", "scratch", "now", "json_ints", "denied")

    def __init__(
        self,
        source: DataSource,
        *,
        env: Mapping[str, str] | None = None,
        sandbox_path: str | None = None,
        now: Callable[[], datetime] | None = None,
        json_ints: bool = False,
        denylist: Sequence[str] = (),
    ) -> None:
        self.source = source
        self.used: dict[Dependency, None] = {}
        self.missing: dict[Dependency, None] = {}
        self.env = env
        self.sandbox_path = sandbox_path
        self.scratch = Scratch()
        self.now = now or (lambda: datetime.now(UTC))
        self.json_ints = json_ints
        self.denied: frozenset[str] = (
            frozenset(n for pattern in denylist for n in fnmatch.filter(sorted(FUNCTIONS), pattern))
            if denylist
            else frozenset()
        )

    def recall(self, dep: Dependency) -> Any:
        """Record ``dep`` as used and return its value (recording it as missing if absent)."""
        self.used[dep] = None
        value = self.source.get(dep)
        if value is MISSING:
            self.missing[dep] = None
        return value

    def mark_missing(self, dep: Dependency) -> None:
        """Treat a present-but-unusable answer as missing (``key`` on an absent key, ``safeLs``)."""
        self.missing[dep] = None


# --------------------------------------------------------------------------------------------
# Helper objects exposed to templates


class Scratch:
    """consul-template's per-render scratch pad (``scratch.Set "k" v``, ``scratch.Get "k"``)."""

    _go_type = "*template.Scratch"
    _go_methods = frozenset({"Key", "Get", "Set", "SetX", "MapSet", "MapSetX", "MapValues"})

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def Key(self, k: str) -> bool:  # noqa: N802 - Go method names are the template API
        """Whether ``k`` was set (even to nil)."""
        return k in self.values

    def Get(self, k: str) -> Any:  # noqa: N802
        """The value at ``k`` or nil."""
        return self.values.get(k)

    def Set(self, k: str, v: Any) -> str:  # noqa: N802
        """Store ``v`` at ``k`` (overwrites); prints nothing."""
        self.values[k] = v
        return ""

    def SetX(self, k: str, v: Any) -> str:  # noqa: N802
        """Store ``v`` at ``k`` unless already set."""
        self.values.setdefault(k, v)
        return ""

    def _map(self, k: str, fn: str) -> dict[str, Any]:
        cur = self.values.setdefault(k, {})
        if not isinstance(cur, dict):
            raise FunctionError(f"scratch.{fn}: {k!r} is not a map")
        return cur

    def MapSet(self, k: str, mk: str, v: Any) -> str:  # noqa: N802
        """Store ``v`` under ``mk`` in the map at ``k``."""
        self._map(k, "MapSet")[mk] = v
        return ""

    def MapSetX(self, k: str, mk: str, v: Any) -> str:  # noqa: N802
        """Like ``MapSet`` without overwriting."""
        self._map(k, "MapSetX").setdefault(mk, v)
        return ""

    def MapValues(self, k: str) -> list[Any] | None:  # noqa: N802
        """The values of the map at ``k``, sorted by key."""
        cur = self.values.get(k)
        if not isinstance(cur, dict):
            return None
        return [cur[key] for key in sorted(cur)]

    # snake_case spellings for the Jinja dialect
    key = Key
    get = Get
    set = Set
    set_x = SetX
    map_set = MapSet
    map_set_x = MapSetX
    map_values = MapValues


class GoChan:
    """What ``loop`` returns: a Go channel of int64 (so ``range $i, $e := loop 3`` is an error)."""

    _go_type = "<-chan int64"

    def __init__(self, start: int, stop: int) -> None:
        self.start = start
        self.stop = stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return 0  # an unbuffered channel

    def __bool__(self) -> bool:
        return True

    def go_string(self) -> str:
        """Go prints a channel as its address."""
        return "0xc000010000"


# --------------------------------------------------------------------------------------------
# Argument checks (Go converts arguments to parameter types and errors on mismatch)


def _want_str(fn: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    raise FunctionError(f"{fn}: wrong type for value; expected string; got {go_type_name(v)}")


def _want_int(fn: str, v: Any) -> int:
    if isinstance(v, bool):
        raise FunctionError(f"{fn}: wrong type for value; expected int; got bool")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise FunctionError(f"{fn}: wrong type for value; expected int; got {go_type_name(v)}")


def _want_list(fn: str, v: Any) -> Sequence[Any]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return v
    raise FunctionError(f"{fn}: wrong type for value; expected slice; got {go_type_name(v)}")


# --------------------------------------------------------------------------------------------
# Data functions (first parameter: the RenderContext)


def fn_service(ctx: RenderContext, *s: Any) -> list[HealthService]:
    """``service "tag.name@dc~near|filter" ["filter"]`` → healthy instances (passing by default)."""
    parts = [_want_str("service", x) for x in s]
    if not parts or parts[0] == "":
        return []
    value = ctx.recall(parse_service("|".join(parts)))
    return [] if value is MISSING else value


def fn_connect(ctx: RenderContext, *s: Any) -> list[HealthService]:
    """``connect "name"``: Connect-capable instances (same syntax as ``service``)."""
    parts = [_want_str("connect", x) for x in s]
    if not parts or parts[0] == "":
        return []
    value = ctx.recall(parse_service("|".join(parts), connect=True))
    return [] if value is MISSING else value


def fn_services(ctx: RenderContext, *s: Any) -> list[CatalogSnippet]:
    """``services ["@dc"]`` → every service name with its tags, sorted by name."""
    value = ctx.recall(parse_services("".join(_want_str("services", x) for x in s)))
    return [] if value is MISSING else value


def fn_key(ctx: RenderContext, s: Any) -> str:
    """``key "path@dc"``: the value; the template is incomplete until the key exists."""
    path = _want_str("key", s)
    if not path:
        return ""
    dep = parse_kv_get(path, block=True)
    value = ctx.recall(dep)
    if value is MISSING:
        return ""
    if value is None:
        ctx.mark_missing(dep)  # consul-template keeps blocking on an absent key
        return ""
    return str(value)


def fn_key_exists(ctx: RenderContext, s: Any) -> bool:
    """``keyExists "path"``: never blocks."""
    path = _want_str("keyExists", s)
    if not path:
        return False
    value = ctx.recall(parse_kv_get(path))
    return value is not MISSING and value is not None


def fn_key_or_default(ctx: RenderContext, s: Any, default: Any) -> str:
    """``keyOrDefault "path" "default"``: default when absent, empty, or not fetched yet."""
    path = _want_str("keyOrDefault", s)
    d = _want_str("keyOrDefault", default)
    if not path:
        return d
    value = ctx.recall(parse_kv_get(path))
    if value is MISSING or value is None or value == "":
        return d
    return str(value)


def _kv_list(
    ctx: RenderContext, fn: str, s: Any, keep: Callable[[KeyPair], bool], safe: bool
) -> list[KeyPair]:
    prefix = _want_str(fn, s)
    if not prefix:
        return []
    dep = parse_kv_list(prefix)
    value = ctx.recall(dep)
    if value is MISSING:
        return []
    result = [p for p in value if keep(p)]
    if not result and safe:
        ctx.mark_missing(dep)  # safeLs/safeTree: an empty answer is treated as "no data yet"
    return result


def _is_direct_child(p: KeyPair) -> bool:
    return p.Key != "" and "/" not in p.Key


def _is_leaf(p: KeyPair) -> bool:
    return p.Key.rsplit("/", 1)[-1] != ""


def fn_ls(ctx: RenderContext, s: Any) -> list[KeyPair]:
    """``ls "prefix"``: direct children only."""
    return _kv_list(ctx, "ls", s, _is_direct_child, False)


def fn_safe_ls(ctx: RenderContext, s: Any) -> list[KeyPair]:
    """``safeLs``: like ``ls`` but an empty prefix blocks the render (consul-template#1131)."""
    return _kv_list(ctx, "safeLs", s, _is_direct_child, True)


def fn_tree(ctx: RenderContext, s: Any) -> list[KeyPair]:
    """``tree "prefix"``: every key below, folder keys (ending in ``/``) dropped."""
    return _kv_list(ctx, "tree", s, _is_leaf, False)


def fn_safe_tree(ctx: RenderContext, s: Any) -> list[KeyPair]:
    """``safeTree``: like ``tree`` but an empty prefix blocks the render."""
    return _kv_list(ctx, "safeTree", s, _is_leaf, True)


def fn_node(ctx: RenderContext, *s: Any) -> Any:
    """``node ["name@dc"]`` → the node and its services; nil until fetched."""
    value = ctx.recall(parse_node("".join(_want_str("node", x) for x in s)))
    return None if value is MISSING else value


def fn_nodes(ctx: RenderContext, *s: Any) -> list[Any]:
    """``nodes ["@dc~near"]`` → every node, sorted by name (or by RTT with ``~near``)."""
    value = ctx.recall(parse_nodes("".join(_want_str("nodes", x) for x in s)))
    return [] if value is MISSING else value


def fn_datacenters(ctx: RenderContext, *ignore: Any) -> list[str]:
    """``datacenters [true]`` → sorted datacenter names."""
    if len(ignore) > 1:
        raise FunctionError(f"datacenters: wrong number of arguments, expected 0 or 1, but got {len(ignore)}")
    value = ctx.recall(datacenters_dep(bool(ignore[0]) if ignore else False))
    return [] if value is MISSING else value


def fn_file(ctx: RenderContext, s: Any) -> str:
    """``file "/path"``: file contents, re-rendered when the file changes."""
    path = _want_str("file", s)
    if not path:
        return ""
    if ctx.sandbox_path:
        real = os.path.realpath(path)
        root = os.path.realpath(ctx.sandbox_path)
        if os.path.commonpath([real, root]) != root:
            raise FunctionError(f"'{path}' is outside of sandbox")
    value = ctx.recall(file_dep(path))
    return "" if value is MISSING or value is None else str(value)


def _env_lookup(ctx: RenderContext, name: str) -> str | None:
    if ctx.env is not None and name in ctx.env:
        return ctx.env[name]
    return os.environ.get(name)


def fn_env(ctx: RenderContext, s: Any) -> str:
    """``env "NAME"``: "" when unset (not a dependency)."""
    return _env_lookup(ctx, _want_str("env", s)) or ""


def fn_must_env(ctx: RenderContext, s: Any) -> str:
    """``mustEnv "NAME"``: error when unset or empty."""
    name = _want_str("mustEnv", s)
    v = _env_lookup(ctx, name)
    if not v:
        raise FunctionError(f"required environment variable {name} is empty")
    return v


def fn_env_or_default(ctx: RenderContext, s: Any, default: Any) -> str:
    """``envOrDefault "NAME" "d"``: the default only when unset (an empty value is kept)."""
    v = _env_lookup(ctx, _want_str("envOrDefault", s))
    return _want_str("envOrDefault", default) if v is None else v


def fn_scratch(ctx: RenderContext) -> Scratch:
    """``scratch``: the render's scratch pad."""
    return ctx.scratch


def fn_timestamp(ctx: RenderContext, *s: Any) -> str:
    """``timestamp ["layout"|"unix"]``: now, UTC; RFC 3339 by default."""
    if len(s) > 1:
        raise FunctionError(f"timestamp: wrong number of arguments, expected 0 or 1, but got {len(s)}")
    now = ctx.now().astimezone(UTC)
    if not s:
        return go_time_format(now, "2006-01-02T15:04:05Z07:00")
    layout = _want_str("timestamp", s[0])
    if layout == "unix":
        return str(int(now.timestamp()))
    return go_time_format(now, layout)


def fn_parse_json(ctx: RenderContext, s: Any) -> Any:
    """``parseJSON``: "" → empty map; numbers are float64 as in Go (ints in the Jinja dialect)."""
    text = _want_str("parseJSON", s)
    if text == "":
        return {}
    try:
        if ctx.json_ints:
            return json.loads(text)
        return json.loads(text, parse_int=float)
    except json.JSONDecodeError as e:
        raise FunctionError(f"parseJSON: {e}") from None


# --------------------------------------------------------------------------------------------
# Pure helpers


def fn_base64_decode(s: Any) -> str:
    """``base64Decode``."""
    try:
        return base64.b64decode(_want_str("base64Decode", s), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as e:
        raise FunctionError(f"base64Decode: {e}") from None


def fn_base64_encode(s: Any) -> str:
    """``base64Encode``."""
    return base64.b64encode(_want_str("base64Encode", s).encode()).decode()


def fn_base64_url_decode(s: Any) -> str:
    """``base64URLDecode``."""
    try:
        return base64.urlsafe_b64decode(_want_str("base64URLDecode", s)).decode("utf-8", "replace")
    except (binascii.Error, ValueError) as e:
        raise FunctionError(f"base64URLDecode: {e}") from None


def fn_base64_url_encode(s: Any) -> str:
    """``base64URLEncode``."""
    return base64.urlsafe_b64encode(_want_str("base64URLEncode", s).encode()).decode()


def fn_by_key(pairs: Any) -> dict[str, dict[str, KeyPair]]:
    """``tree "p" | byKey`` → top-level folder → {rest-of-key → pair}; keys with no rest dropped."""
    out: dict[str, dict[str, KeyPair]] = {}
    for pair in _want_list("byKey", pairs):
        top, _, rest = str(pair.Key).partition("/")
        if rest == "":
            continue
        out.setdefault(top, {})[rest] = dataclasses.replace(pair, Key=rest)
    return out


def _tags_of(x: Any) -> Sequence[str]:
    tags = getattr(x, "Tags", None)
    if tags is None:
        tags = getattr(x, "ServiceTags", None)
    return tags or []


def fn_by_tag(items: Any) -> dict[str, list[Any]]:
    """``service "web" | byTag`` → tag → instances (an instance appears under each of its tags)."""
    if items is None:
        return {}
    if not isinstance(items, (list, tuple)):
        raise FunctionError(f"byTag: wrong argument type {go_type_name(items)}")
    out: dict[str, list[Any]] = {}
    for x in items:
        if not is_struct(x):
            raise FunctionError(f"byTag: wrong argument type {go_type_name(items)}")
        for t in _tags_of(x):
            out.setdefault(t, []).append(x)
    return out


def fn_by_port(items: Any) -> dict[int, list[Any]]:
    """``service "web" | byPort`` → port → instances."""
    out: dict[int, list[Any]] = {}
    for x in _want_list("byPort", items):
        out.setdefault(int(getattr(x, "Port", 0)), []).append(x)
    return out


_META_NORMALIZE = re.compile(r"[^a-zA-Z0-9_-]")


def fn_by_meta(meta: Any, services: Any) -> dict[str, list[Any]]:
    """``service "redis|any" | byMeta "env,shard|int"`` → "prod_00001" → instances."""
    keys = _want_str("byMeta", meta).split(",")
    out: dict[str, list[Any]] = {}
    for svc in _want_list("byMeta", services):
        sm = getattr(svc, "ServiceMeta", None) or {}
        parts = []
        for key in keys:
            is_int = key.endswith("|int")
            real = key[: -len("|int")] if is_int else key
            value = sm.get(real, "") or ("0" if is_int else f"_no_{real}_")
            if is_int:
                try:
                    value = f"{int(value, 10):05d}"
                except ValueError:
                    raise FunctionError(
                        f'cannot parse {value} as number : strconv.Atoi: parsing "{value}": invalid syntax'
                    ) from None
            parts.append(_META_NORMALIZE.sub("_", value))
        out.setdefault("_".join(parts), []).append(svc)
    return out


def fn_in(haystack: Any, needle: Any) -> bool:
    """``in LIST NEEDLE`` (Go's typed equality: ints match ints, strings strings); substring on strings."""
    if isinstance(haystack, (list, tuple)):
        for x in haystack:
            if isinstance(x, bool) or isinstance(needle, bool):
                continue
            if isinstance(x, int) and isinstance(needle, int) and x == needle:
                return True
            if isinstance(x, float) and isinstance(needle, float) and x == needle:
                return True
            if isinstance(x, str) and isinstance(needle, str) and x == needle:
                return True
        return False
    if isinstance(haystack, str):
        return isinstance(needle, str) and needle in haystack
    return False


def fn_contains(needle: Any, haystack: Any) -> bool:
    """``.Tags | contains "prod"``."""
    return fn_in(haystack, needle)


def _contains_some(ret_true: bool, invert: bool, fn: str) -> Callable[[Any, Any], bool]:
    def impl(needles: Any, haystack: Any) -> bool:
        for n in _want_list(fn, needles):
            if fn_in(haystack, n) != invert:
                return not ret_true
        return ret_true

    impl.__doc__ = f"``{fn} NEEDLES LIST``."
    return impl


fn_contains_all = _contains_some(True, True, "containsAll")
fn_contains_any = _contains_some(False, False, "containsAny")
fn_contains_none = _contains_some(True, False, "containsNone")
fn_contains_not_all = _contains_some(False, True, "containsNotAll")


def _explode_into(m: dict[str, Any], key: str, value: Any, path: str) -> None:
    while "/" in key:
        top, key = key.split("/", 1)
        nxt = m.setdefault(top, {})
        if not isinstance(nxt, dict):
            raise FunctionError(f"explode: not a map: {path!r}: {top!r} already has value {m[top]!r}")
        m = nxt
    if key != "":
        m[key] = value


def fn_explode(pairs: Any) -> dict[str, Any]:
    """``tree "config" | explode`` → nested map by ``/``."""
    out: dict[str, Any] = {}
    for p in _want_list("explode", pairs):
        _explode_into(out, p.Key, p.Value, p.Key)
    return out


def fn_explode_map(m: Any) -> dict[str, Any]:
    """``explodeMap``: the same for a flat map."""
    if not isinstance(m, Mapping):
        raise FunctionError(f"explodeMap: wrong type for value; expected map; got {go_type_name(m)}")
    out: dict[str, Any] = {}
    for k in sorted(m):
        _explode_into(out, str(k), m[k], str(k))
    return out


def _merge(dst: dict[str, Any], src: Mapping[str, Any], override: bool) -> dict[str, Any]:
    out = dict(dst)
    for k, v in src.items():
        if k in out and isinstance(out[k], dict) and isinstance(v, Mapping):
            out[k] = _merge(out[k], v, override)
        elif k not in out or override or out[k] in (None, "", 0, False):
            out[k] = v
    return out


def fn_merge_map(dst: Any, src: Any) -> dict[str, Any]:
    """``mergeMap DST SRC``: fill what DST lacks from SRC."""
    return _merge(dict(dst or {}), src or {}, False)


def fn_merge_map_with_override(dst: Any, src: Any) -> dict[str, Any]:
    """``mergeMapWithOverride DST SRC``: SRC wins."""
    return _merge(dict(dst or {}), src or {}, True)


def fn_indent(spaces: Any, s: Any) -> str:
    """``indent N``: prefix every non-empty line (the first included) with N spaces."""
    n = _want_int("indent", spaces)
    if n < 0:
        raise FunctionError("indent value must be a positive integer")
    text = _want_str("indent", s)
    prefix = " " * n
    return "".join(
        (prefix + line) if line not in ("", "\n") else line for line in text.splitlines(keepends=True)
    )


def _loop_int(v: Any) -> int:
    if isinstance(v, bool):
        raise FunctionError("loop: bad argument type: bool")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        return fn_parse_int(v)
    raise FunctionError(f"loop: bad argument type: {go_type_name(v)}")


def fn_loop(*args: Any) -> GoChan:
    """``loop N`` / ``loop START STOP`` (ints or numeric strings)."""
    if len(args) == 1:
        return GoChan(0, _loop_int(args[0]))
    if len(args) == 2:
        return GoChan(_loop_int(args[0]), _loop_int(args[1]))
    raise FunctionError(f"loop: wrong number of arguments, expected 1 or 2, but got {len(args)}")


def fn_join(sep: Any, items: Any) -> str:
    """``$list | join ","``."""
    sep_s = _want_str("join", sep)
    return sep_s.join(x if isinstance(x, str) else format_v(x) for x in _want_list("join", items))


def _go_trim(s: str, cutset: str) -> str:
    return s.strip(cutset) if cutset else s


def fn_trim(cutset: Any, s: Any) -> str:
    """``trim CUTSET STR``."""
    return _go_trim(_want_str("trim", s), _want_str("trim", cutset))


def fn_trim_prefix(prefix: Any, s: Any) -> str:
    """``trimPrefix P STR``."""
    return _want_str("trimPrefix", s).removeprefix(_want_str("trimPrefix", prefix))


def fn_trim_suffix(suffix: Any, s: Any) -> str:
    """``trimSuffix S STR``."""
    return _want_str("trimSuffix", s).removesuffix(_want_str("trimSuffix", suffix))


_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def fn_trim_space(s: Any) -> str:
    """``trimSpace``: Go's Unicode white space."""
    return _want_str("trimSpace", s).strip(_GO_SPACE)


_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
          "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip


def fn_parse_bool(s: Any) -> bool:
    """``parseBool`` (strconv.ParseBool; "" → false)."""
    text = _want_str("parseBool", s)
    if text == "":
        return False
    if text not in _BOOLS:
        raise FunctionError(f'parseBool: strconv.ParseBool: parsing "{text}": invalid syntax')
    return _BOOLS[text]


_INT_RE = re.compile(r"\A[+-]?[0-9]+\Z")


def fn_parse_int(s: Any) -> int:
    """``parseInt`` (base-10 int64; "" → 0)."""
    text = _want_str("parseInt", s)
    if text == "":
        return 0
    if not _INT_RE.match(text):
        raise FunctionError(f'parseInt: strconv.ParseInt: parsing "{text}": invalid syntax')
    v = int(text)
    if not -(2**63) <= v < 2**63:
        raise FunctionError(f'parseInt: strconv.ParseInt: parsing "{text}": value out of range')
    return v


def fn_parse_uint(s: Any) -> int:
    """``parseUint`` (base-10 uint64; "" → 0)."""
    text = _want_str("parseUint", s)
    if text == "":
        return 0
    if not text.isascii() or not text.isdigit():
        raise FunctionError(f'parseUint: strconv.ParseUint: parsing "{text}": invalid syntax')
    v = int(text)
    if v >= 2**64:
        raise FunctionError(f'parseUint: strconv.ParseUint: parsing "{text}": value out of range')
    return v


_FLOAT_RE = re.compile(
    r"\A[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z", re.I
)


def fn_parse_float(s: Any) -> float:
    """``parseFloat`` ("" → 0)."""
    text = _want_str("parseFloat", s)
    if text == "":
        return 0.0
    if not _FLOAT_RE.match(text):
        raise FunctionError(f'parseFloat: strconv.ParseFloat: parsing "{text}": invalid syntax')
    return float(text)


def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern with Python's engine (``\\z`` → ``\\Z``; ``(?<n>`` → ``(?P<n>``)."""
    py = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern).replace("(?<", "(?P<").replace("(?P<=", "(?<=")
    py = py.replace("(?P<!", "(?<!")
    try:
        return re.compile(py)
    except re.error as e:
        raise FunctionError(f"error parsing regexp: {e}: `{pattern}`") from None


def fn_regex_match(pattern: Any, s: Any) -> bool:
    """``regexMatch RE STR`` (unanchored, like Go's MatchString)."""
    return _go_regex(_want_str("regexMatch", pattern)).search(_want_str("regexMatch", s)) is not None


_REPL_TOKEN = re.compile(r"\$(\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _go_expand(template: str, m: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``; unknown groups expand to ""."""

    def sub(t: re.Match[str]) -> str:
        if t.group(1) == "$":
            return "$"
        name = t.group(2) or t.group(3)
        try:
            g = m.group(int(name)) if name.isdigit() else m.group(name)
        except IndexError:
            return ""
        return g or ""

    return _REPL_TOKEN.sub(sub, template)


def fn_regex_replace_all(pattern: Any, repl: Any, s: Any) -> str:
    """``regexReplaceAll RE REPL STR`` (``$1`` refers to groups)."""
    rx = _go_regex(_want_str("regexReplaceAll", pattern))
    template = _want_str("regexReplaceAll", repl)
    return rx.sub(lambda m: _go_expand(template, m), _want_str("regexReplaceAll", s))


def fn_replace_all(old: Any, new: Any, s: Any) -> str:
    """``replaceAll FROM TO STR``."""
    return _want_str("replaceAll", s).replace(_want_str("replaceAll", old), _want_str("replaceAll", new))


def fn_sha256_hex(s: Any) -> str:
    """``sha256Hex``."""
    return hashlib.sha256(_want_str("sha256Hex", s).encode()).hexdigest()


def fn_md5sum(s: Any) -> str:
    """``md5sum``."""
    return hashlib.md5(_want_str("md5sum", s).encode(), usedforsecurity=False).hexdigest()


def fn_hmac_sha256_hex(msg: Any, key: Any) -> str:
    """``hmacSHA256Hex MSG KEY``."""
    return hmac.new(
        _want_str("hmacSHA256Hex", key).encode(), _want_str("hmacSHA256Hex", msg).encode(), "sha256"
    ).hexdigest()


def _go_split(s: str, sep: str) -> list[str]:
    if sep == "":
        return list(s)
    return s.split(sep)


def fn_split(sep: Any, s: Any) -> list[str]:
    """``split SEP STR``: input trimmed first; "" → empty list."""
    text = _want_str("split", s).strip(_GO_SPACE)
    if text == "":
        return []
    return _go_split(text, _want_str("split", sep))


def fn_split_to_map(sep1: Any, sep2: Any, s: Any) -> dict[str, str]:
    """``splitToMap "," "=" "a=1,b=2"`` → map; items without SEP2 are skipped."""
    text = _want_str("splitToMap", s).strip(_GO_SPACE)
    out: dict[str, str] = {}
    if text == "":
        return out
    s2 = _want_str("splitToMap", sep2)
    for item in _go_split(text, _want_str("splitToMap", sep1)):
        k, found, v = item.partition(s2)
        if found:
            out[k] = v
    return out


def fn_to_json(v: Any) -> str:
    """``toJSON`` (encoding/json: HTML-safe escapes, struct field order, sorted map keys)."""
    return go_json(v).strip()


def fn_to_json_pretty(v: Any) -> str:
    """``toJSONPretty`` (2-space indent)."""
    return go_json(v, indent="  ").strip()


def fn_to_unescaped_json(v: Any) -> str:
    """``toUnescapedJSON`` (no HTML escaping)."""
    return go_json(v, escape_html=False).strip()


def fn_to_unescaped_json_pretty(v: Any) -> str:
    """``toUnescapedJSONPretty``."""
    return go_json(v, indent="  ", escape_html=False).strip()


def fn_to_yaml(v: Any) -> str:
    """``toYAML`` (yaml.v2 style, trimmed)."""
    return go_yaml(v).strip()


def fn_to_lower(s: Any) -> str:
    """``toLower``."""
    return _want_str("toLower", s).lower()


def fn_to_upper(s: Any) -> str:
    """``toUpper``."""
    return _want_str("toUpper", s).upper()


def fn_to_title(s: Any) -> str:
    """``toTitle``: first letter of each word upper-cased, the rest left alone."""
    text = _want_str("toTitle", s)
    out = []
    prev_word = False
    for ch in text:
        if not prev_word and ch.isalpha():
            out.append(ch.upper())
        else:
            out.append(ch)
        prev_word = ch.isalnum() or ch in "_'’"
    return "".join(out)


# Math: ``add B A`` = A + B (the piped value is A). Mixed int/float allowed, like Go.


def _num(fn: str, v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FunctionError(f"{fn}: unknown type for {format_v(v)!r} ({go_type_name(v)})")
    return v


def _both(fn: str, b: Any, a: Any) -> tuple[int | float, int | float]:
    return _num(fn, a), _num(fn, b)


def fn_add(b: Any, a: Any) -> int | float:
    """``add B A`` → A + B."""
    x, y = _both("add", b, a)
    return x + y


def fn_subtract(b: Any, a: Any) -> int | float:
    """``subtract B A`` → A − B."""
    x, y = _both("subtract", b, a)
    return x - y


def fn_multiply(b: Any, a: Any) -> int | float:
    """``multiply B A`` → A × B."""
    x, y = _both("multiply", b, a)
    return x * y


def fn_divide(b: Any, a: Any) -> int | float:
    """``divide B A`` → A / B (integer division truncates toward zero, as in Go)."""
    x, y = _both("divide", b, a)
    if isinstance(x, int) and isinstance(y, int):
        if y == 0:
            raise FunctionError("runtime error: integer divide by zero")
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q
    if y == 0:
        return math.copysign(math.inf, x) * math.copysign(1.0, y) if x != 0 else math.nan
    return x / y


def fn_modulo(b: Any, a: Any) -> int:
    """``modulo B A`` → A mod B (ints only; the sign follows A, as in Go)."""
    x, y = _both("modulo", b, a)
    if not isinstance(x, int):
        raise FunctionError(f"modulo: unknown type for {format_v(a)!r} ({go_type_name(a)})")
    if not isinstance(y, int):
        raise FunctionError(f"modulo: unknown type for {format_v(b)!r} ({go_type_name(b)})")
    if y == 0:
        raise FunctionError("runtime error: integer divide by zero")
    r = abs(x) % abs(y)
    return -r if x < 0 else r


def fn_minimum(b: Any, a: Any) -> int | float:
    """``minimum B A``."""
    x, y = _both("minimum", b, a)
    return x if x < y else y


def fn_maximum(b: Any, a: Any) -> int | float:
    """``maximum B A``."""
    x, y = _both("maximum", b, a)
    return x if x > y else y


# --------------------------------------------------------------------------------------------
# Registry

CONTEXT_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "service": fn_service,
    "connect": fn_connect,
    "services": fn_services,
    "key": fn_key,
    "keyExists": fn_key_exists,
    "keyOrDefault": fn_key_or_default,
    "ls": fn_ls,
    "safeLs": fn_safe_ls,
    "tree": fn_tree,
    "safeTree": fn_safe_tree,
    "node": fn_node,
    "nodes": fn_nodes,
    "datacenters": fn_datacenters,
    "file": fn_file,
    "env": fn_env,
    "mustEnv": fn_must_env,
    "envOrDefault": fn_env_or_default,
    "scratch": fn_scratch,
    "timestamp": fn_timestamp,
    "parseJSON": fn_parse_json,
}
"""Functions whose first parameter is the :class:`RenderContext` (bound per render)."""

PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "base64Decode": fn_base64_decode,
    "base64Encode": fn_base64_encode,
    "base64URLDecode": fn_base64_url_decode,
    "base64URLEncode": fn_base64_url_encode,
    "byKey": fn_by_key,
    "byTag": fn_by_tag,
    "byPort": fn_by_port,
    "byMeta": fn_by_meta,
    "contains": fn_contains,
    "containsAll": fn_contains_all,
    "containsAny": fn_contains_any,
    "containsNone": fn_contains_none,
    "containsNotAll": fn_contains_not_all,
    "in": fn_in,
    "explode": fn_explode,
    "explodeMap": fn_explode_map,
    "mergeMap": fn_merge_map,
    "mergeMapWithOverride": fn_merge_map_with_override,
    "indent": fn_indent,
    "loop": fn_loop,
    "join": fn_join,
    "trim": fn_trim,
    "trimPrefix": fn_trim_prefix,
    "trimSuffix": fn_trim_suffix,
    "trimSpace": fn_trim_space,
    "parseBool": fn_parse_bool,
    "parseFloat": fn_parse_float,
    "parseInt": fn_parse_int,
    "parseUint": fn_parse_uint,
    "regexMatch": fn_regex_match,
    "regexReplaceAll": fn_regex_replace_all,
    "replaceAll": fn_replace_all,
    "sha256Hex": fn_sha256_hex,
    "md5sum": fn_md5sum,
    "hmacSHA256Hex": fn_hmac_sha256_hex,
    "split": fn_split,
    "splitToMap": fn_split_to_map,
    "toJSON": fn_to_json,
    "toJSONPretty": fn_to_json_pretty,
    "toUnescapedJSON": fn_to_unescaped_json,
    "toUnescapedJSONPretty": fn_to_unescaped_json_pretty,
    "toYAML": fn_to_yaml,
    "toLower": fn_to_lower,
    "toUpper": fn_to_upper,
    "toTitle": fn_to_title,
    "add": fn_add,
    "subtract": fn_subtract,
    "multiply": fn_multiply,
    "divide": fn_divide,
    "modulo": fn_modulo,
    "minimum": fn_minimum,
    "maximum": fn_maximum,
}
"""Functions that need no render state."""

FUNCTIONS: frozenset[str] = frozenset(CONTEXT_FUNCTIONS) | frozenset(PURE_FUNCTIONS)
"""Every library function name (Go spelling)."""


def _arity(fn: Callable[..., Any], skip: int) -> tuple[int, int | None]:
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return (sum(1 for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD), None)
    return (len(params), len(params))


FUNCTION_ARITY: dict[str, tuple[int, int | None]] = {
    **{name: _arity(fn, 1) for name, fn in CONTEXT_FUNCTIONS.items()},
    **{name: _arity(fn, 0) for name, fn in PURE_FUNCTIONS.items()},
}
"""(fixed parameters, maximum or None when variadic) per function, for Go's arity errors."""


def _denied(name: str) -> Callable[..., Any]:
    def impl(*_args: Any) -> Any:
        raise FunctionError("function is disabled")

    impl.__name__ = name
    return impl


def make_funcs(ctx: RenderContext, denylist: Sequence[str] = ()) -> dict[str, Callable[..., Any]]:
    """The function map for one render, bound to ``ctx``; ``denylist`` globs disable names."""
    funcs: dict[str, Callable[..., Any]] = dict(PURE_FUNCTIONS)
    for name, fn in CONTEXT_FUNCTIONS.items():
        funcs[name] = functools.partial(fn, ctx)
    for pattern in denylist:
        for name in fnmatch.filter(list(funcs), pattern):
            funcs[name] = _denied(name)
    return funcs


def snake_case(name: str) -> str:
    """``keyOrDefault`` → ``key_or_default``; ``toJSONPretty`` → ``to_json_pretty``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()
