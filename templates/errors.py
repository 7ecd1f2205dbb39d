"""One exception tree for ``templates/``.

The runner catches :class:`TemplateError` at the boundary and turns it into a log line and a
per-template status ("render failed: ..."), so a bad template or bad data never takes the
process down (consul-template#858, #1289) unless the operator asks for that.
"""

from __future__ import annotations

__all__ = [
    "TemplateError",
    "DependencyParseError",
    "TemplateSyntaxError",
    "TemplateExecError",
    "FunctionError",
    "WriteError",
]


class TemplateError(Exception):
    """Base class for every error raised by ``templates/``."""


class DependencyParseError(TemplateError, ValueError):
    """A dependency string such as ``"tag.web@dc1|passing"`` that does not parse."""


class TemplateSyntaxError(TemplateError):
    """The template text does not parse (Go: ``template: name:line: message``)."""


class TemplateExecError(TemplateError):
    """The template parsed but failed while executing (bad field, bad call, ...)."""


class FunctionError(TemplateError):
    """Raised by a template function; the interpreter wraps it as ``error calling NAME: ...``."""


class WriteError(TemplateError):
    """The destination could not be staged, checked or swapped (I/O or permission problem)."""
