"""Regular expressions from the network (``?filter=`` ``matches``, user-event filters) go through RE2.

RE2 is Go's regexp engine, so patterns mean what they mean in Consul, and matching is linear in the
input: no pattern a client sends (``(a+)+$``) can stall the event loop, as Python's backtracking
``re`` can.
"""

from __future__ import annotations

from typing import Any

import re2  # google-re2

__all__ = ["compile_re2", "RegexError"]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the client's error, not a line on the agent's stderr


class RegexError(ValueError):
    """The pattern is not valid RE2; the message is RE2's reason."""


def compile_re2(pattern: str) -> Any:
    """A compiled RE2 pattern (``.search(text)`` as with ``re``); :class:`RegexError` if invalid."""
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        raise RegexError(reason) from None
