"""``ctk services`` (no subcommand, or ``ctk services list``): instances per service with
passing/warning/critical counts; ``-service NAME`` shows every instance with its checks and their output.

``ctk services register|deregister`` are unchanged: the list is the group's default action.
An instance's status is the worst of its own checks and its node's checks (``serfHealth``, maintenance).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.text import Text

from toolkit.cli.app import HttpAddr, JsonOut, Token, client, fail, out, print_json, services_app, table
from toolkit.dash import render
from toolkit.dash.model import ClusterView, instances_from_health, worst
from toolkit.dash.sources import fetch_sources

__all__ = ["services_default", "services_list"]

ServiceName = Annotated[str, typer.Option("--service", help="show one service: every instance, check and output")]
Unhealthy = Annotated[bool, typer.Option("--unhealthy", help="only services with a warning or critical instance")]


@services_app.callback(invoke_without_command=True, no_args_is_help=False,
                       help="List services with instance health (the default), or register/deregister "
                            "services with the local agent.")
def services_default(ctx: typer.Context, service: ServiceName = "", unhealthy: Unhealthy = False,
                     http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False) -> None:
    if ctx.invoked_subcommand is None:
        show(service, unhealthy, http_addr, token, json_out)
        return
    typed = [f"--{name.replace('_out', '').replace('_', '-')}" for name in ctx.params
             if (src := ctx.get_parameter_source(name)) is not None and src.name == "COMMANDLINE"]
    if typed:  # `ctk services --http-addr X register ...` would silently talk to the default agent
        fail(f"{', '.join(typed)} must come after the subcommand: ctk services {ctx.invoked_subcommand} "
             f"{' '.join(typed)} ...")


@services_app.command("list")
def services_list(service: ServiceName = "", unhealthy: Unhealthy = False,
                  http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False) -> None:
    """Instances per service with passing/warning/critical counts (same as plain ``ctk services``)."""
    show(service, unhealthy, http_addr, token, json_out)


def show(service: str, unhealthy: bool, http_addr: str | None, token: str | None, json_out: bool) -> None:
    if service:
        _detail(service, http_addr, token, json_out)
        return
    src = asyncio.run(fetch_sources(http_addr, token))
    if not src.reachable:
        fail(src.errors.get("agent", "cannot reach the agent"))
    view = ClusterView.build(src, time.time())
    if view.services is None:
        fail("cannot read the catalog: " + (src.errors.get("services") or src.errors.get("instances") or "?"))
    services = [s for s in view.services if not unhealthy or s.status != "passing"]
    if json_out:
        print_json([s.to_json() for s in services])
        return
    t = table("Service", "Instances", "Passing", "Warning", "Critical", "Tags")
    for s in services:
        p, w, c = s.count("passing"), s.count("warning"), s.count("critical")
        t.add_row(Text(s.name, style=render.STATUS_STYLE[s.status] if s.status != "passing" else ""),
                  str(len(s.instances)), str(p), Text(str(w), style="yellow" if w else ""),
                  Text(str(c), style="bold red" if c else ""), ",".join(s.tags))
    out.print(t)


def _detail(name: str, http_addr: str | None, token: str | None, json_out: bool) -> None:
    with client(http_addr, token) as c:
        entries = c.get(f"/v1/health/service/{name}", params={"stale": ""}).json() or []
    instances = instances_from_health(entries)
    if not instances:
        fail(f"No service named '{name}' (no registered instances)")
    counts = {s: sum(1 for i in instances if i.status == s) for s in ("passing", "warning", "critical")}
    if json_out:
        print_json({"Name": name, "Instances": len(instances), "Passing": counts["passing"],
                    "Warning": counts["warning"], "Critical": counts["critical"],
                    "Status": worst(i.status for i in instances), "Nodes": [i.to_json() for i in instances]})
        return
    out.print(Text.assemble((name, "bold"), f"  {len(instances)} instances: ",
                            (f"{counts['passing']} passing", "green"), ", ",
                            (f"{counts['warning']} warning", "yellow" if counts["warning"] else ""), ", ",
                            (f"{counts['critical']} critical", "bold red" if counts["critical"] else "")))
    out.print()
    out.print(render.instances_table(instances))
