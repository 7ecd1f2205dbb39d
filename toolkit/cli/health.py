"""``ctk health``: "is my cluster OK?" as one verdict line and one exit code, for people, scripts and cron.

Exit codes: 0 OK (leader present, quorum healthy, no failed servers, no critical checks);
1 WARNING (failure tolerance 0, an unhealthy/lagging server, warning checks, failed clients, Raft data
unreadable); 2 CRITICAL (agent unreachable, no leader, a failed server, quorum lost, critical checks).
"""

from __future__ import annotations

import asyncio
import time

from rich.text import Text

from toolkit.cli.app import CLIError, HttpAddr, JsonOut, Token, app, out, print_json
from toolkit.dash import render
from toolkit.dash.model import LEVEL_NAMES, ClusterView, assess
from toolkit.dash.sources import fetch_sources

__all__ = ["health"]


@app.command()
def health(http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False) -> None:
    """Is the cluster OK? Prints a one-line verdict, then details. Exit code: 0 OK, 1 WARNING, 2 CRITICAL.

    CRITICAL (2): agent unreachable, no leader, a failed server, quorum lost, critical checks.
    WARNING (1): failure tolerance 0, an unhealthy (lagging) server, warning checks, failed clients.
    OK (0): leader present, quorum healthy (autopilot healthy, tolerance >= 1), nothing failing.
    """
    view = ClusterView.build(asyncio.run(fetch_sources(http_addr, token)), time.time())
    verdict = assess(view)
    if json_out:
        print_json({**verdict.to_json(), "Cluster": view.to_json()})
    else:
        out.print(render.verdict_text(verdict))
        if view.reachable:
            _details(view, verdict)
    if verdict.code:
        raise CLIError("", verdict.code)


def _details(view: ClusterView, verdict: object) -> None:
    from toolkit.dash.model import Verdict

    assert isinstance(verdict, Verdict)
    if verdict.problems:
        out.print()
        for p in verdict.problems:
            out.print(Text.assemble((f"  {LEVEL_NAMES[p.level]:<9}", render.LEVEL_STYLE[LEVEL_NAMES[p.level]]),
                                    f" {p.message}"))
    out.print()
    head = render.header(view, verdict)
    out.print(Text("\n").join(head.split("\n")[:-1]))  # the cluster line; the verdict is already on top
    out.print()
    out.print(render.servers_table(view))
    out.print()
    out.print(render.members_panel(view))
    if view.services is not None:
        insts = view.instances()
        counts = {s: sum(1 for i in insts if i.status == s) for s in ("passing", "warning", "critical")}
        out.print(f"Services  {len(view.services)} services, {len(insts)} instances: "
                  f"{counts['passing']} passing, {counts['warning']} warning, {counts['critical']} critical"
                  "   (details: ctk services)")
    for source, err in sorted(view.errors.items()):
        out.print(Text(f"note: could not read {source}: {err}", style="dim"))
