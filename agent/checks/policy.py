"""Who may register a script check: the guard against remote code execution.

A script check runs an arbitrary command as the agent's user. With script checks enabled for the HTTP API
and no ACLs, anyone who can reach port 8500 can run code (consul#3087, #4931, Metasploit
``consul_agent``). Consul therefore disables them by default and splits the switch
(``docs/discovery/checks.mdx``, ``enable_script_checks`` / ``enable_local_script_checks``):

- ``enable_script_checks``: script checks from config files **and** the HTTP API;
- ``enable_local_script_checks``: only from config files; the API refuses them.
"""

from __future__ import annotations

import logging
from typing import Literal

from .errors import ScriptChecksDisabled
from .spec import CheckSpec

__all__ = ["CheckSource", "script_checks_allowed", "require_script_checks_allowed"]

log = logging.getLogger(__name__)

CheckSource = Literal["http", "config"]

_DISABLED_LOCAL = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
    "'enable_local_script_checks' to true"
)
_DISABLED_REMOTE = "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"


def script_checks_allowed(
    source: CheckSource, enable_script_checks: bool, enable_local_script_checks: bool
) -> bool:
    """True if a script check coming from ``source`` may be registered."""
    if source == "http":
        return enable_script_checks
    return enable_script_checks or enable_local_script_checks


def require_script_checks_allowed(
    spec: CheckSpec,
    source: CheckSource,
    *,
    enable_script_checks: bool,
    enable_local_script_checks: bool,
    check_id: str = "",
) -> None:
    """Raise ``ScriptChecksDisabled`` (Consul's text) if ``spec`` is a script check the policy forbids.

    Allowed legacy ``script`` checks (shell string) are accepted with a deprecation warning: prefer
    ``args``, which runs without a shell and cannot be re-interpreted.
    """
    if spec.kind != "script":
        return
    if not script_checks_allowed(source, enable_script_checks, enable_local_script_checks):
        raise ScriptChecksDisabled(_DISABLED_REMOTE if source == "http" else _DISABLED_LOCAL)
    if spec.shell_script and not spec.args:
        log.warning(
            "check %s: the 'script' field is deprecated; use 'args' (runs without a shell)", check_id or "?"
        )
