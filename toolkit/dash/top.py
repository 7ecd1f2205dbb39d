"""``ctk top``: a live terminal dashboard fed by blocking queries (see :class:`toolkit.dash.sources.Watcher`).

Keys: ``q`` quit, ``tab`` / ``1`` ``2`` ``3`` switch view (overview / services / timeline), ``/`` then text
filters services by name (``enter`` keeps it, ``backspace`` edits), ``esc`` clears the filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import time
import tty
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.table import Table
from rich.text import Text

from toolkit.dash import render
from toolkit.dash.model import ClusterView, Event, Timeline, Verdict, assess
from toolkit.dash.sources import AsyncConsul, Watcher

__all__ = ["SCREENS", "UiState", "handle_keys", "render_screen", "run_live"]

SCREENS = ("overview", "services", "timeline")
REDRAW_S = 1.0
NARROW = 130  # "ago" columns and last-contact values age even when nothing else changes


@dataclass
class UiState:
    screen: str = "overview"
    filter: str = ""
    editing: bool = False
    quit: bool = False


def handle_keys(ui: UiState, data: str) -> None:
    """Apply a chunk of terminal input to ``ui`` (pure; escape sequences such as arrow keys are ignored)."""
    i = 0
    while i < len(data):
        ch = data[i]
        i += 1
        if ch == "\x1b":
            if i < len(data) and data[i] in "[O":  # CSI/SS3 sequence: skip to its final byte
                i += 1
                while i < len(data) and not (data[i].isalpha() or data[i] == "~"):
                    i += 1
                i += 1
                continue
            ui.filter, ui.editing = "", False
        elif ui.editing:
            if ch in "\r\n":
                ui.editing = False
            elif ch in "\x7f\b":
                ui.filter = ui.filter[:-1]
            elif ch.isprintable():
                ui.filter += ch
        elif ch in "qQ":
            ui.quit = True
        elif ch == "\t":
            ui.screen = SCREENS[(SCREENS.index(ui.screen) + 1) % len(SCREENS)]
        elif ch in "123":
            ui.screen = SCREENS[int(ch) - 1]
        elif ch == "/":
            ui.editing, ui.filter = True, ""
            if ui.screen == "timeline":
                ui.screen = "services"


def _panel(title: str, body: RenderableType) -> RenderableType:
    if isinstance(body, Table):
        body.title = None
    return render.framed(title, body)


def _footer(ui: UiState, view: ClusterView | None, now: float) -> Text:
    t = Text()
    for key, what in (("q", "quit"), ("tab/1-3", "view"), ("/", "filter"), ("esc", "clear")):
        t.append(f" {key} ", style="reverse")
        t.append(f" {what}  ")
    t.append("  view: ", style="dim")
    t.append(ui.screen, style="bold")
    if ui.editing or ui.filter:
        t.append("   filter: ", style="dim")
        t.append(ui.filter + ("▏" if ui.editing else ""), style="bold cyan")
    if view is not None:
        t.append(f"   agent {view.agent}   updated {time.strftime('%H:%M:%S', time.localtime(view.taken_at))}",
                 style="dim")
    return t


def render_screen(view: ClusterView | None, verdict: Verdict | None, events: list[Event], ui: UiState,
                  now: float, connecting: str = "", width: int = 160) -> RenderableType:
    """The whole screen for ``ui.screen`` (pure: everything it shows is passed in).

    Below ``NARROW`` columns the overview stacks its panels instead of placing them side by side.
    """
    layout = Layout()
    if view is None or verdict is None:
        layout.split_column(Layout(Text(connecting or "connecting…", style="bold"), ratio=1),
                            Layout(_footer(ui, None, now), size=1))
        return layout
    head = render.header(view, verdict)
    head_lines = len(head.wrap(Console(width=max(20, width - 4)), max(20, width - 4))) + 2
    parts = [Layout(_panel("ctk top — cluster", head), size=head_lines)]
    if ui.screen == "overview":
        servers = Layout(_panel("Servers", render.servers_table(view, compact=width < NARROW)), ratio=2)
        members = Layout(_panel("Members", render.members_panel(view)), ratio=1)
        services = Layout(_panel("Services (unhealthy first)" + (f" matching '{ui.filter}'" if ui.filter else ""),
                                 render.services_table(view, ui.filter, limit=40)), ratio=1)
        timeline = Layout(_panel("Timeline", render.timeline_lines(events, now, limit=40)), ratio=1)
        server_rows = max(len(view.servers), 1) + 4
        if width >= NARROW:
            top_row = Layout(size=server_rows)
            top_row.split_row(servers, members)
            bottom = Layout(ratio=1)
            bottom.split_row(services, timeline)
            parts += [top_row, bottom]
        else:
            servers.size, members.size = server_rows, 2 + min(3, 1 + len(view.members_by_status()["failed"]))
            services.ratio = 2
            parts += [servers, members, services, timeline]
    elif ui.screen == "services":
        title = "Services" + (f" matching '{ui.filter}'" if ui.filter else "")
        parts += [Layout(_panel(title, render.services_table(view, ui.filter)), ratio=3),
                  Layout(_panel("Unhealthy instances", render.unhealthy_instances(view, ui.filter, limit=60)),
                         ratio=2)]
    else:
        parts.append(Layout(_panel(f"Timeline — last {len(events)} changes, newest first",
                                   render.timeline_lines(events, now)), ratio=1))
    parts.append(Layout(_footer(ui, view, now), size=1))
    layout.split_column(*parts)
    return layout


class _Terminal:
    """cbreak mode on stdin (when it is a terminal), always restored."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin.isatty() else None
        self.saved: list[Any] | None = None

    def __enter__(self) -> _Terminal:
        if self.fd is not None:
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


async def run_live(address: str | None, token: str | None, console: Console | None = None) -> int:
    """Run the dashboard until ``q`` (or SIGINT/SIGTERM); the terminal is restored on every exit path."""
    console = console or Console()
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    stop = asyncio.Event()
    client = AsyncConsul(address, token)
    watcher = Watcher(client, changed.set)
    timeline = Timeline()
    ui = UiState()
    started = False
    start_task: asyncio.Task[None] | None = None

    def on_input(fd: int) -> None:
        try:
            data = os.read(fd, 1024).decode(errors="ignore")
        except OSError:
            data = ""
        if not data:  # stdin closed
            loop.remove_reader(fd)
            return
        handle_keys(ui, data)
        if ui.quit:
            stop.set()
        changed.set()

    with _Terminal() as term, contextlib.ExitStack() as cleanup:
        if term.fd is not None:
            loop.add_reader(term.fd, on_input, term.fd)
            cleanup.callback(loop.remove_reader, term.fd)
        for sig, cb in ((signal.SIGINT, stop.set), (signal.SIGTERM, stop.set), (signal.SIGWINCH, changed.set)):
            loop.add_signal_handler(sig, cb)
            cleanup.callback(loop.remove_signal_handler, sig)
        with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            try:
                live.update(render_screen(None, None, [], ui, time.time(), f"connecting to {client.address}…"),
                            refresh=True)
                start_task = asyncio.create_task(watcher.start())
                while not stop.is_set():
                    if not started and start_task.done():
                        start_task.result()
                        started = True
                    view = verdict = None
                    if started:
                        view = ClusterView.build(watcher.sources(), time.time())
                        timeline.observe(view)
                        verdict = assess(view)
                    live.update(render_screen(view, verdict, list(timeline.events), ui, time.time(),
                                              f"connecting to {client.address}…", console.size.width),
                                refresh=True)
                    changed.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(_first(changed, stop), timeout=REDRAW_S)
            finally:
                if start_task is not None and not start_task.done():
                    start_task.cancel()
                await watcher.stop()
                await client.aclose()
    return 0


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def plain_snapshot(view: ClusterView, events: list[Event] | None = None) -> RenderableType:
    """What ``ctk top`` prints when stdout is not a terminal (or with ``--once``)."""
    return Group(render.snapshot(view, assess(view), events or []))
