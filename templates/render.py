"""``render()``: one pass of a template over a data source, in either dialect.

A pass never blocks and never fails for lack of data: it returns the text, every dependency the
template touched and the ones that had no data yet. The runner watches ``dependencies`` and
only writes ``text`` when ``complete`` is true (consul-template's rule: nothing is written until
a pass has zero missing dependencies).

Dialect auto-detection (``syntax="auto"``), first rule that decides wins:

1. the file name: ``.ctmpl``, ``.tmpl``, ``.gotmpl``, ``.tpl`` → Go; ``.j2``, ``.jinja``,
   ``.jinja2`` → Jinja;
2. custom delimiters (anything but ``{{ }}``) → Go (consul-template's ``left_delimiter``);
3. a Go-only marker: an action starting with ``.``, ``$``, a comment ``/*`` or a Go keyword
   (``range``, ``end``, ``if``, ``else``, ``with``, ``define``, ``template``, ``block``), e.g.
   ``{{ range service "web" }}``, ``{{ .Address }}``, ``{{- if`` → Go;
4. a Jinja-only marker: ``{%`` or ``{#`` → Jinja;
5. otherwise (only ``{{ expr }}`` actions): Go if it parses as Go, else Jinja if it parses as
   Jinja, else Go (so the reported error is Go's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .dependencies import Dependency
from .errors import TemplateError, TemplateSyntaxError
from .functions import FUNCTION_ARITY, FUNCTIONS, DataSource, RenderContext, make_funcs
from .gotemplate import GoTemplate
from .jinja import JinjaTemplate, parses_as_jinja

__all__ = ["Syntax", "RenderResult", "Template", "render", "detect_syntax"]

Syntax = Literal["go", "jinja"]

_GO_SUFFIXES = (".ctmpl", ".tmpl", ".gotmpl", ".tpl")
_JINJA_SUFFIXES = (".j2", ".jinja", ".jinja2")
_GO_MARKER = re.compile(
    r"\{\{-?\s*(?:/\*|\.|\$|(?:range|end|if|else|with|define|template|block|break|continue)\b)"
)
_JINJA_MARKER = re.compile(r"\{%|\{#")


@dataclass(frozen=True)
class RenderResult:
    """The outcome of one pass.

    ``complete`` is true only when every dependency had data; an incomplete ``text`` must not
    be written (it is built from empty placeholders).
    """

    text: str
    dependencies: frozenset[Dependency]
    missing: frozenset[Dependency] = field(default_factory=frozenset)
    syntax: Syntax = "go"

    @property
    def complete(self) -> bool:
        """Nothing was missing."""
        return not self.missing

    def waiting_on(self) -> list[str]:
        """Canonical names of the missing dependencies, sorted (for "waiting on ..." logs)."""
        return sorted(d.name() for d in self.missing)


def detect_syntax(text: str, path: str | None = None, delims: Sequence[str] | None = None) -> Syntax:
    """Pick the dialect for ``text`` by the rules in the module docstring."""
    if path:
        low = path.lower()
        if low.endswith(_GO_SUFFIXES):
            return "go"
        if low.endswith(_JINJA_SUFFIXES):
            return "jinja"
    left, right = tuple(delims) if delims else ("{{", "}}")
    if (left, right) != ("{{", "}}"):
        return "go"
    if _GO_MARKER.search(text):
        return "go"
    if _JINJA_MARKER.search(text):
        return "jinja"
    try:
        GoTemplate(text, func_names=FUNCTIONS)
        return "go"
    except TemplateSyntaxError:
        if parses_as_jinja(text):
            return "jinja"
        return "go"


class Template:
    """A template compiled once and rendered on every data change.

    Parse errors surface here (:class:`~templates.errors.TemplateSyntaxError`), execution
    errors from :meth:`render` (:class:`~templates.errors.TemplateExecError`).
    """

    def __init__(
        self,
        text: str,
        *,
        syntax: Syntax | Literal["auto"] = "auto",
        name: str = "template",
        path: str | None = None,
        delims: Sequence[str] | None = None,
        error_on_missing_key: bool = False,
        function_denylist: Sequence[str] = (),
        sandbox_path: str | None = None,
        env: Mapping[str, str] | None = None,
        trim_blocks: bool = True,
        lstrip_blocks: bool = True,
    ) -> None:
        if delims is not None and len(delims) != 2:
            raise ValueError("delims must be a (left, right) pair")
        self.syntax: Syntax = detect_syntax(text, path, delims) if syntax == "auto" else syntax
        if self.syntax not in ("go", "jinja"):
            raise ValueError(f"unknown template syntax {syntax!r} (want go, jinja or auto)")
        self.name = name
        self.error_on_missing_key = error_on_missing_key
        self.function_denylist = tuple(function_denylist)
        self.sandbox_path = sandbox_path
        self.env = env
        left, right = (delims[0] or "{{", delims[1] or "}}") if delims else ("{{", "}}")
        self._go: GoTemplate | None = None
        self._jinja: JinjaTemplate | None = None
        if self.syntax == "go":
            self._go = GoTemplate(text, name, left_delim=left, right_delim=right, func_names=FUNCTIONS)
        else:
            self._jinja = JinjaTemplate(
                text,
                name,
                delims=(left, right),
                strict=error_on_missing_key,
                trim_blocks=trim_blocks,
                lstrip_blocks=lstrip_blocks,
            )

    def render(self, source: DataSource, *, now: Callable[[], datetime] | None = None) -> RenderResult:
        """One pass over ``source``: text + used + missing dependencies.

        A :class:`~templates.errors.TemplateError` raised while executing carries
        ``dependencies`` and ``missing`` (frozensets) of the partial pass.
        """
        ctx = RenderContext(
            source,
            env=self.env,
            sandbox_path=self.sandbox_path,
            now=now,
            json_ints=self.syntax == "jinja",
            denylist=self.function_denylist,
        )
        try:
            if self._go is not None:
                funcs = make_funcs(ctx, self.function_denylist)
                text = self._go.execute(
                    None, funcs, arity=FUNCTION_ARITY, missingkey_error=self.error_on_missing_key
                )
            else:
                assert self._jinja is not None
                text = self._jinja.render(ctx)
        except TemplateError as e:
            # What the pass touched before failing: the runner keeps watching it, and an error
            # while data is still missing (``index (service "x") 0`` on the empty first pass)
            # is "waiting", not a failure.
            e.dependencies = frozenset(ctx.used)  # type: ignore[attr-defined]
            e.missing = frozenset(ctx.missing)  # type: ignore[attr-defined]
            raise
        return RenderResult(
            text=text,
            dependencies=frozenset(ctx.used),
            missing=frozenset(ctx.missing),
            syntax=self.syntax,
        )


_CACHE: dict[tuple[Any, ...], Template] = {}
_CACHE_MAX = 64


def render(
    template_text: str,
    data_source: DataSource,
    *,
    syntax: Syntax | Literal["auto"] = "auto",
    delims: Sequence[str] | None = None,
    path: str | None = None,
    name: str = "template",
    error_on_missing_key: bool = False,
    now: Callable[[], datetime] | None = None,
) -> RenderResult:
    """Render ``template_text`` once (compiled templates are cached by text and options)."""
    key = (template_text, syntax, tuple(delims) if delims else None, path, name, error_on_missing_key)
    tmpl = _CACHE.get(key)
    if tmpl is None:
        tmpl = Template(
            template_text,
            syntax=syntax,
            delims=delims,
            path=path,
            name=name,
            error_on_missing_key=error_on_missing_key,
        )
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = tmpl
    return tmpl.render(data_source, now=now)
