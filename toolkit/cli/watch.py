"""``ctk event`` (fire a user event) and ``ctk watch`` (run a handler when a data view changes).

Both speak only the HTTP API (``PUT /v1/event/fire/:name``, blocking ``GET``s), so they work against
ctk's agent and HashiCorp Consul alike. The watch rules live in :mod:`toolkit.ops.watch`; this module
parses flags, installs the signal handling and prints.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from types import FrameType
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console

from toolkit.cli.app import CLIError, HttpAddr, JsonOut, Token, app, client, fail, out, print_json
from toolkit.ops.watch import TYPES, WatchCore, WatchError, WatchSpec, parse_bool, run_handler, run_watch

__all__ = ["event", "watch"]

_err = Console(stderr=True, highlight=False, soft_wrap=True)

Datacenter = Annotated[str, typer.Option("--datacenter", help="datacenter (default: the agent's)")]


@app.command()
def event(
    payload: Annotated[list[str] | None, typer.Argument(help="optional payload (keep it small: < 100 bytes)")] = None,
    name: Annotated[str, typer.Option("--name", help="name of the event (required)")] = "",
    node: Annotated[str, typer.Option("--node", help="regex: only nodes whose name matches")] = "",
    service: Annotated[str, typer.Option("--service", help="regex: only nodes running a matching service")] = "",
    tag: Annotated[str, typer.Option("--tag", help="regex on service tags (needs -service)")] = "",
    datacenter: Datacenter = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Fire a custom user event across the datacenter (like consul event); prints its ID.

    Delivery is best-effort gossip, not Raft. Handle events with: ctk watch -type event -name NAME HANDLER
    """
    if not name:
        fail("Event name must be specified (-name)")
    for flag, pattern in (("node", node), ("service", service), ("tag", tag)):
        if pattern:
            try:
                re.compile(pattern)
            except re.error as err:
                fail(f"Failed to compile {flag} filter regexp: {err}")
    if tag and not service:
        fail("Cannot provide tag filter without service filter (-tag needs -service)")
    if payload and len(payload) > 1:
        fail("Too many command line arguments: the payload is one argument (quote it)")
    params = {"node": node or None, "service": service or None, "tag": tag or None, "dc": datacenter or None}
    body = payload[0].encode() if payload else b""
    with client(http_addr, token) as c:
        fired = c.put(f"/v1/event/fire/{quote(name, safe='')}", params=params, content=body).json() or {}
    if json_out:
        print_json(fired)
    else:
        out.print(f"Event ID: {fired.get('ID', '')}")


class _Terminated(Exception):
    """Raised from the SIGTERM handler so the blocking request or sleep unwinds like Ctrl-C."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def watch(
    handler: Annotated[list[str] | None, typer.Argument(
        help="handler command: run on every change with the JSON on stdin and CONSUL_INDEX set")] = None,
    watch_type: Annotated[str, typer.Option("--type", help=f"what to watch: {', '.join(TYPES)}")] = "",
    key: Annotated[str, typer.Option("--key", help="key to watch (-type key)")] = "",
    prefix: Annotated[str, typer.Option("--prefix", help="key prefix to watch (-type keyprefix)")] = "",
    service: Annotated[str, typer.Option("--service", help="service (-type service; -type checks)")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="service tag filter (repeatable)")] = None,
    passingonly: Annotated[str, typer.Option("--passingonly", help="true: only passing instances")] = "",
    state: Annotated[str, typer.Option("--state", help="check state for -type checks: any, passing, ...")] = "",
    name: Annotated[str, typer.Option("--name", help="event name (-type event; default: all events)")] = "",
    filter_: Annotated[str, typer.Option("--filter", help="filter expression (services, nodes, service, checks)")] = "",
    stale: Annotated[bool, typer.Option("--stale", help="let any server answer (reads may lag)")] = False,
    shell: Annotated[str, typer.Option("--shell", help="run the handler through $SHELL -c (true|false)")] = "true",
    once: Annotated[bool, typer.Option("--once", help="exit after the first handler run (its status)")] = False,
    datacenter: Datacenter = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Watch a data view with blocking queries; run HANDLER on every change (like consul watch).

    The first answer runs the handler too. It gets the JSON on stdin and CONSUL_INDEX in its environment.
    Without a handler the current JSON is printed once and ctk exits, as consul does (--json: one line);
    to stream every change, use `cat` as the handler.
    A failing handler is reported on stderr and the watch goes on; agent errors are retried with backoff.
    Ctrl-C or SIGTERM ends the watch (exit 0). --once: exit after the first handler run, with its status.
    Put -- before a handler whose own arguments look like -flag=value.
    """
    try:
        passing = parse_bool(passingonly) if passingonly else None
    except ValueError:
        fail(f"Failed to parse passingonly flag: {passingonly!r} is not true or false")
    try:
        use_shell = parse_bool(shell)
    except ValueError:
        fail(f"Failed to parse shell flag: {shell!r} is not true or false")
    try:
        spec = WatchSpec.parse(watch_type, key=key, prefix=prefix, service=service, tag=tag or (),
                               passingonly=passing, state=state, name=name, datacenter=datacenter,
                               stale=stale, filter=filter_)
    except WatchError as err:
        fail(str(err))
    args = list(handler or [])
    if args and args[0] == "--":
        args = args[1:]
    outcome: dict[str, int] = {"code": 0}

    def on_change(index: int, data: Any) -> bool:
        if not args:
            text = (json.dumps(data, separators=(",", ":"), ensure_ascii=False) if json_out
                    else json.dumps(data, indent=4, ensure_ascii=False))
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            return False  # consul: "the latest values are dumped to stdout and the watch terminates"
        sys.stdout.flush()
        code = run_handler(args, data, index, shell=use_shell)
        if code != 0:
            what = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            tail = "" if once else "; still watching"
            _err.print(f"watch: handler {what} (CONSUL_INDEX={index}){tail}", markup=False)
            outcome["code"] = 1
        else:
            outcome["code"] = 0
        return not once

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with client(http_addr, token) as c:
            run_watch(WatchCore(spec), c, on_change, log=lambda line: _err.print(line, markup=False))
    except (KeyboardInterrupt, _Terminated):
        return  # an operator stopping the watch is a normal end
    except WatchError as err:
        fail(str(err))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if once and outcome["code"]:
        raise CLIError("", outcome["code"])  # the handler's failure was already reported
