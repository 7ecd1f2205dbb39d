"""``ctk top``: a live cluster dashboard in the terminal (plain text when stdout is not a terminal)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Annotated

import typer

from toolkit.cli.app import HttpAddr, JsonOut, Token, app, fail, out, print_json
from toolkit.dash.model import ClusterView, assess
from toolkit.dash.sources import fetch_sources

__all__ = ["top"]


@app.command()
def top(
    once: Annotated[bool, typer.Option("--once", help="print one snapshot as text and exit")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Live dashboard: leader, servers (state, voter, lag), members, services, timeline of changes.

    Refreshed by blocking queries on the catalog and health (Raft/autopilot at most every 2 s).
    Keys: q quit, tab or 1/2/3 overview/services/timeline, / filter services by name, esc clear.
    When stdout is not a terminal (or with --once) prints one snapshot; --json prints it as JSON.
    """
    if json_out or once or not sys.stdout.isatty():
        src = asyncio.run(fetch_sources(http_addr, token))
        if not src.reachable:
            fail(src.errors.get("agent", "cannot reach the agent"))
        view = ClusterView.build(src, time.time())
        if json_out:
            print_json({**view.to_json(), "Verdict": assess(view).to_json()})
        else:
            from toolkit.dash.top import plain_snapshot

            out.print(plain_snapshot(view))
        return
    from toolkit.dash.top import run_live

    raise typer.Exit(asyncio.run(run_live(http_addr, token)))
