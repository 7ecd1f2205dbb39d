"""The native Jinja2 dialect: consul-template's functions as Jinja globals and filters.

Every library function is a global (``service("web")``, ``key_or_default("k", "d")``) and a
filter (``s.Tags | contains("prod")``), under its Go name and a snake_case alias. As a filter the
piped value takes the place of the **last** argument, exactly like a Go pipeline, so
``{{ .Tags | join "," }}`` translates to ``{{ s.Tags | join(",") }}`` and
``{{ 10 | divide 2 }}`` to ``{{ 10 | divide(2) }}``.

Where Jinja already has a filter of the same name (``join``, ``indent``, ``trim``) ctk's version
is used when called with consul-template's arguments; the Jinja built-in is used when called the
Jinja way (no argument, or keyword arguments such as ``indent(4, first=True)``), so existing
Jinja habits keep working. ``in`` is a Jinja keyword; its function is ``in_``. ``scratch`` is the
render's scratch object (``scratch.Set("k", v)``). Inside ``{% for %}`` the name ``loop`` is
Jinja's loop variable; use ``range`` (Jinja's) there.

Environment defaults, chosen for config files: ``trim_blocks`` and ``lstrip_blocks`` on (a
``{% ... %}`` line leaves no blank line behind), trailing newline kept, no autoescaping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jinja2
import jinja2.filters
from jinja2 import pass_context
from jinja2.runtime import Context

from .errors import FunctionError, TemplateExecError, TemplateSyntaxError
from .functions import (
    CONTEXT_FUNCTIONS,
    FUNCTION_ARITY,
    PURE_FUNCTIONS,
    RenderContext,
    snake_case,
)

__all__ = ["JinjaTemplate", "jinja_environment", "jinja_names"]

_CTX_VAR = "__ctk_render__"
_JINJA_KEYWORDS = frozenset({"in", "not", "and", "or", "is", "if", "else", "for", "true", "false", "none"})


def _clean(v: Any) -> Any:
    """Jinja values → what the Go-shaped functions expect (Undefined → nil, generators → lists)."""
    if isinstance(v, jinja2.Undefined):
        return None
    if isinstance(v, Iterator):
        return list(v)
    return v


def _fail(name: str, e: Exception) -> TemplateExecError:
    return TemplateExecError(f"error calling {name}: {e}")


def _make_global(name: str, fn: Callable[..., Any], needs_ctx: bool) -> Callable[..., Any]:
    @pass_context
    def call(context: Context, *args: Any) -> Any:
        rc: RenderContext = context[_CTX_VAR]
        if name in rc.denied:
            raise _fail(name, FunctionError("function is disabled"))
        argv = [_clean(a) for a in args]
        try:
            return fn(rc, *argv) if needs_ctx else fn(*argv)
        except FunctionError as e:
            raise _fail(name, e) from None

    return call


def _fits(name: str, nargs: int) -> bool:
    fixed, most = FUNCTION_ARITY[name]
    return nargs >= fixed if most is None else fixed <= nargs <= most


def _make_filter(
    name: str, fn: Callable[..., Any], needs_ctx: bool, builtin: Callable[..., Any] | None
) -> Callable[..., Any]:
    @pass_context
    def filt(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        if builtin is not None and (kwargs or not _fits(name, len(args) + 1)):
            return _call_builtin(builtin, context, value, args, kwargs)
        if kwargs:
            raise TemplateExecError(f"{name}: keyword arguments are not supported")
        rc: RenderContext = context[_CTX_VAR]
        if name in rc.denied:
            raise _fail(name, FunctionError("function is disabled"))
        argv = [*(_clean(a) for a in args), _clean(value)]
        try:
            return fn(rc, *argv) if needs_ctx else fn(*argv)
        except FunctionError as e:
            raise _fail(name, e) from None

    return filt


def _call_builtin(
    builtin: Callable[..., Any], context: Context, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call a Jinja built-in filter with whatever first argument it asks for."""
    tag = getattr(getattr(builtin, "jinja_pass_arg", None), "name", None)
    if tag == "context":
        return builtin(context, value, *args, **kwargs)
    if tag == "eval_context":
        return builtin(context.eval_ctx, value, *args, **kwargs)
    if tag == "environment":
        return builtin(context.environment, value, *args, **kwargs)
    return builtin(value, *args, **kwargs)


def jinja_names() -> dict[str, str]:
    """Alias → Go name for every exposed function (snake_case and Go spellings)."""
    names: dict[str, str] = {}
    for go_name in [*CONTEXT_FUNCTIONS, *PURE_FUNCTIONS]:
        for alias in {go_name, snake_case(go_name)}:
            if alias in _JINJA_KEYWORDS:
                alias = alias + "_"
            names[alias] = go_name
    return names


@functools.lru_cache(maxsize=16)
def jinja_environment(
    *,
    trim_blocks: bool = True,
    lstrip_blocks: bool = True,
    strict: bool = False,
    variable_start: str = "{{",
    variable_end: str = "}}",
) -> jinja2.Environment:
    """A shared environment per option set (templates compile once and are cached by callers)."""
    env = jinja2.Environment(
        trim_blocks=trim_blocks,
        lstrip_blocks=lstrip_blocks,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        variable_start_string=variable_start,
        variable_end_string=variable_end,
        extensions=["jinja2.ext.loopcontrols"],
    )
    for alias, go_name in jinja_names().items():
        needs_ctx = go_name in CONTEXT_FUNCTIONS
        fn = CONTEXT_FUNCTIONS[go_name] if needs_ctx else PURE_FUNCTIONS[go_name]
        env.globals[alias] = _make_global(go_name, fn, needs_ctx)
        builtin = jinja2.filters.FILTERS.get(alias)
        env.filters[alias] = _make_filter(go_name, fn, needs_ctx, builtin)
    return env


class JinjaTemplate:
    """A compiled Jinja template bound to the ctk function library."""

    def __init__(
        self,
        text: str,
        name: str = "template",
        *,
        delims: tuple[str, str] | None = None,
        strict: bool = False,
        trim_blocks: bool = True,
        lstrip_blocks: bool = True,
    ) -> None:
        start, end = delims or ("{{", "}}")
        self.env = jinja_environment(
            trim_blocks=trim_blocks,
            lstrip_blocks=lstrip_blocks,
            strict=strict,
            variable_start=start,
            variable_end=end,
        )
        self.name = name
        try:
            self.template = self.env.from_string(text)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateSyntaxError(f"template: {name}:{e.lineno}: {e.message}") from None

    def render(self, ctx: RenderContext, variables: Mapping[str, Any] | None = None) -> str:
        """Render with ``ctx`` supplying data, scratch and options."""
        data: dict[str, Any] = dict(variables or {})
        data[_CTX_VAR] = ctx
        data.setdefault("scratch", ctx.scratch)
        try:
            return self.template.render(data)
        except TemplateExecError:
            raise
        except jinja2.UndefinedError as e:
            raise TemplateExecError(f"template: {self.name}: {e}") from None
        except jinja2.TemplateError as e:
            raise TemplateExecError(f"template: {self.name}: {e}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as e:
            raise TemplateExecError(f"template: {self.name}: {type(e).__name__}: {e}") from None


def parses_as_jinja(text: str, delims: Sequence[str] | None = None) -> bool:
    """Whether ``text`` is valid Jinja (used by syntax auto-detection)."""
    start, end = tuple(delims) if delims else ("{{", "}}")
    env = jinja_environment(variable_start=start, variable_end=end)
    try:
        env.parse(text)
    except jinja2.TemplateSyntaxError:
        return False
    return True
