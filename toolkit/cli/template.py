"""``ctk template``: render Consul data into files, safely (the consul-template equivalent).

    ctk template upstream.ctmpl:/etc/nginx/upstream.conf:"nginx -s reload"
    ctk template -config site.hcl -status-file /run/ctk-template.json
    ctk template -once -dry -template "in.ctmpl:out.conf"

Flags keep consul-template's spellings (``-template``, ``-config``, ``-consul-addr``, ``-once``,
``-dry``, ``-wait``, ``-max-stale``); flags beat config files, which beat the environment
(``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``). A bad configuration is one ``Error:`` line naming
the file and field, exit 2. Long-running mode logs to stderr and only stops on SIGINT/SIGTERM;
SIGHUP re-reads the configuration.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.app import CLIError, JsonOut, app, print_json

__all__ = ["template_cmd", "setup_logging"]


def setup_logging(level: str) -> None:
    """One line per event on stderr: ``2026-01-02T03:04:05 [INFO] template x: wrote ...``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("ctk.template")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False


def _config_error(message: str) -> CLIError:
    # Printed here rather than through rich: one line, never wrapped, no markup interpretation.
    sys.stderr.write(f"Error: {message}\n")
    return CLIError("", 2)


@app.command("template")
def template_cmd(
    specs: Annotated[
        list[str] | None,
        typer.Argument(help="templates as SRC:DEST[:COMMAND] (the command may contain colons)", show_default=False),
    ] = None,
    template: Annotated[
        list[str] | None, typer.Option("--template", help="SRC:DEST[:COMMAND], repeatable (consul-template's flag)")
    ] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", help="HCL/JSON config file or directory, repeatable")
    ] = None,
    http_addr: Annotated[
        str | None,
        typer.Option("--http-addr", "--consul-addr", help="agent address (default $CONSUL_HTTP_ADDR, 127.0.0.1:8500)"),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", "--consul-token", help="ACL token (default $CONSUL_HTTP_TOKEN)")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="render every template once, run the commands, exit 0/1")] = False,
    dry: Annotated[bool, typer.Option("--dry", help="print renders to stdout; write nothing, run nothing")] = False,
    wait: Annotated[
        str | None, typer.Option("--wait", help="quiescence min[:max], e.g. 2s:10s (max defaults to 4×min)")
    ] = None,
    max_stale: Annotated[
        str | None, typer.Option("--max-stale", help="accept answers this stale (default 2s; 0 = leader only)")
    ] = None,
    status_file: Annotated[
        str | None, typer.Option("--status-file", help="JSON status, rewritten atomically on every event")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="with -once: give up waiting for data after this long (default 30s)")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug, info, warn or err (default info)")
    ] = None,
    pid_file: Annotated[str | None, typer.Option("--pid-file", help="write ctk's pid here while running")] = None,
    json_out: JsonOut = False,
) -> None:
    """Render templates from Consul data; check, install and reload only what is valid."""
    from templates.config import Config, ConfigError, build_config, parse_duration, parse_wait
    from templates.runner import Runner
    from templates.watcher import base_url

    overrides: dict[str, Any] = {"consul_address": http_addr, "token": token, "status_file": status_file,
                                 "pid_file": pid_file}
    try:
        if wait is not None:
            overrides["wait"] = parse_wait(wait, "-wait")
        if max_stale is not None:
            overrides["max_stale_s"] = parse_duration(max_stale, "-max-stale")
        if timeout is not None:
            overrides["once_timeout_s"] = parse_duration(timeout, "-timeout")
        if log_level is not None:
            lvl = {"err": "error", "warn": "warning", "trace": "debug"}.get(log_level.lower(), log_level.lower())
            if lvl not in ("debug", "info", "warning", "error"):
                raise ConfigError(f"-log-level: want debug, info, warn or err, got {log_level!r}")
            overrides["log_level"] = lvl
    except ConfigError as e:
        raise _config_error(str(e)) from None
    if once:
        overrides["once"] = True
    if dry:
        overrides["dry"] = True
    paths = [Path(p) for p in (config or [])]
    template_specs = [*(specs or []), *(template or [])]

    def load() -> Config:
        return build_config(config_paths=paths, template_specs=template_specs, overrides=overrides)

    try:
        cfg = load()
        base_url(cfg.consul_address)  # validates the address (no unix:// sockets)
        runner = Runner(cfg, reload_config=load, json_lines=json_out and cfg.dry and not cfg.once,
                        dry_to_report=json_out and cfg.once)
    except ConfigError as e:
        raise _config_error(str(e)) from None
    except ValueError as e:  # a unix:// address
        raise _config_error(f"consul address: {e}") from None
    setup_logging("warning" if json_out and cfg.once and cfg.log_level == "info" else cfg.log_level)

    code = asyncio.run(runner.run(install_signals=True))
    if json_out and cfg.once:
        report = runner.report or runner.status()
        report["ok"] = code == 0
        print_json(report)
    if code:
        raise CLIError("", code)
