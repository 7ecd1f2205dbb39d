"""Rich renderables for a :class:`ClusterView`: shared by ``ctk top``, ``ctk health`` and ``ctk services``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from toolkit.dash.model import ClusterView, Event, Instance, ServiceSummary, Verdict

__all__ = ["header", "instances_table", "members_panel", "servers_table", "services_table", "snapshot",
           "timeline_lines", "unhealthy_instances", "verdict_text"]

STATUS_STYLE = {"passing": "green", "warning": "yellow", "critical": "bold red", "alive": "green",
                "failed": "bold red", "left": "dim", "leaving": "yellow", "unknown": "dim"}
LEVEL_STYLE = {"OK": "bold green", "WARNING": "bold yellow", "CRITICAL": "bold red",
               "ok": "green", "info": "", "warning": "yellow", "critical": "bold red"}


def _table(*columns: str, title: str | None = None) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", title=title,
              title_justify="left", title_style="bold")
    for c in columns:
        t.add_column(c, no_wrap=True, overflow="ellipsis")
    return t


def _styled(value: str, style_key: str | None = None) -> Text:
    return Text(value, style=STATUS_STYLE.get(style_key if style_key is not None else value, ""))


def verdict_text(verdict: Verdict) -> Text:
    line = verdict.line()
    status, _, rest = line.partition(":")
    return Text.assemble((status, LEVEL_STYLE[verdict.status]), ":" + rest)


def header(view: ClusterView, verdict: Verdict, note: str = "") -> Text:
    """The cluster line: agent, leader, term, failure tolerance, autopilot health, verdict."""
    t = Text()
    if not view.reachable:
        t.append(f"agent {view.agent} unreachable, retrying", style="bold white on red")
        t.append("  (showing the last known state)\n", style="dim")
    t.append("leader ", style="bold")
    if view.leader_address:
        t.append(f"{view.leader_name}", style="bold green")
        if view.leader_name != view.leader_address:
            t.append(f" ({view.leader_address})", style="dim")
    elif view.leader_address == "":
        t.append("NONE (no cluster leader)", style="bold white on red")
    else:
        t.append("unknown", style="yellow")
    t.append("   term ", style="bold")
    t.append(str(view.term) if view.term is not None else "?")
    t.append("   failure tolerance ", style="bold")
    if view.failure_tolerance is None:
        t.append("?", style="yellow")
    else:
        ft = view.failure_tolerance
        t.append(str(ft), style="bold red" if ft < 0 else "yellow" if ft == 0 else "green")
        t.append(f" ({view.tolerance_source})", style="dim")
    t.append("   quorum ", style="bold")
    t.append(f"{view.healthy_voters}/{view.voters} voters healthy, {view.quorum} needed" if view.voters else "?")
    t.append("   healthy ", style="bold")
    if view.autopilot_healthy is None:
        t.append("?", style="yellow")
    else:
        t.append("yes" if view.autopilot_healthy else "NO", style="green" if view.autopilot_healthy else "bold red")
    t.append("\n")
    t.append_text(verdict_text(verdict))
    if note:
        t.append("\n" + note, style="dim")
    return t


def servers_table(view: ClusterView, compact: bool = False) -> Table:
    """One row per Raft server; ``compact`` (narrow terminals) leaves out the address and term."""
    cols = ["Server", "Address", "State", "Voter", "Serf", "Health", "Last contact", "Trails by", "Term"]
    if compact:
        cols = [c for c in cols if c not in ("Address", "Term")]
    t = _table(*cols, title="Servers")
    for s in view.servers:
        health = "?" if s.healthy is None else "healthy" if s.healthy else "UNHEALTHY"
        hstyle = "dim" if s.healthy is None else "green" if s.healthy else "bold red"
        cells: dict[str, RenderableType] = {
            "Server": Text(s.name or "?", style="bold red" if s.failed else ""), "Address": s.address,
            "State": Text(s.state, style="bold green" if s.state == "leader" else ""),
            "Voter": "yes" if s.voter else "no", "Serf": _styled(s.serf), "Health": Text(health, style=hstyle),
            "Last contact": s.last_contact or "—", "Trails by": "—" if s.trails_by is None else str(s.trails_by),
            "Term": "—" if s.last_term is None else str(s.last_term)}
        t.add_row(*(cells[c] for c in cols))
    if not view.servers:
        t.add_row(Text(view.errors.get("raft") or "no Raft data", style="yellow"), *[""] * (len(cols) - 1))
    return t


def members_panel(view: ClusterView, limit: int = 12) -> RenderableType:
    """Counts by status, then the failed members (red) and leaving ones by name."""
    if view.members is None:
        return Text("Members\n", style="bold") + Text(view.errors.get("members", "not read"), style="yellow")
    by = view.members_by_status()
    counts = Text("Members  ", style="bold")
    for status in ("alive", "failed", "leaving", "left"):
        n = len(by.get(status, []))
        counts.append(f"{status} {n}", style=STATUS_STYLE[status] if n else "dim")
        counts.append("   ")
    rows: list[RenderableType] = [counts]
    for status in ("failed", "leaving"):
        for m in by.get(status, [])[:limit]:
            rows.append(Text.assemble((f"  {status:<8}", STATUS_STYLE[status]), f" {m.name}  {m.address}  {m.role}"))
    return Group(*rows)


def _service_sort_key(s: ServiceSummary) -> tuple[int, str]:
    return ({"critical": 0, "warning": 1}.get(s.status, 2), s.name)


def services_table(view: ClusterView, name_filter: str = "", limit: int | None = None,
                   unhealthy_first: bool = True) -> Table:
    t = _table("Service", "Instances", "Passing", "Warning", "Critical", "Tags", title="Services")
    services = [s for s in view.services or () if name_filter.lower() in s.name.lower()]
    if unhealthy_first:
        services.sort(key=_service_sort_key)
    shown = services if limit is None else services[:limit]
    for s in shown:
        p, w, c = s.count("passing"), s.count("warning"), s.count("critical")
        t.add_row(Text(s.name, style=STATUS_STYLE[s.status] if s.status != "passing" else ""), str(len(s.instances)),
                  Text(str(p), style="green" if p else "dim"), Text(str(w), style="yellow" if w else "dim"),
                  Text(str(c), style="bold red" if c else "dim"), ",".join(s.tags))
    if view.services is None:
        t.add_row(Text(view.errors.get("services") or view.errors.get("instances") or "not read", style="yellow"),
                  "", "", "", "", "")
    elif limit is not None and len(services) > limit:
        t.add_row(Text(f"… {len(services) - limit} more (press 2)", style="dim"), "", "", "", "", "")
    elif not services and name_filter:
        t.add_row(Text(f"no service matches '{name_filter}'", style="dim"), "", "", "", "", "")
    return t


def unhealthy_instances(view: ClusterView, name_filter: str = "", limit: int | None = None) -> Table:
    """Only what is unhealthy: each non-passing instance with its failing checks' first output line."""
    t = _table("Service", "Node", "ID", "Status", "Failing checks", title="Unhealthy instances")
    rows = [i for i in view.instances() if i.status != "passing" and name_filter.lower() in i.service.lower()]
    rows.sort(key=lambda i: (i.status != "critical", i.service, i.node))
    for i in rows[:limit]:
        bad = "; ".join(f"{c.name or c.check_id}: {c.status}" + (f" ({_line(c.output)})" if c.output else "")
                        for c in i.checks if c.status != "passing")
        t.add_row(i.service, i.node, i.id, _styled(i.status), bad)
    if not rows:
        t.add_row(Text("none", style="green"), "", "", "", "")
    elif limit is not None and len(rows) > limit:
        t.add_row(Text(f"… {len(rows) - limit} more", style="dim"), "", "", "", "")
    return t


def instances_table(instances: Sequence[Instance]) -> Group:
    """``ctk services -service NAME``: every instance and every check with its output."""
    parts: list[RenderableType] = []
    for i in instances:
        head = Text.assemble((f"{i.node}", "bold"), f"  {i.id}  {i.address}:{i.port}  ", (i.status, STATUS_STYLE[i.status]))
        if i.tags:
            head.append(f"  tags={','.join(i.tags)}", style="dim")
        parts.append(head)
        t = _table("Check", "Kind", "Status", "Output")
        for c in i.checks:
            t.add_row(c.name or c.check_id, "service" if c.service_id else "node", _styled(c.status),
                      _line(c.output, 120) or "—")
        parts.append(t)
    return Group(*parts)


def _line(text: str, limit: int = 80) -> str:
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _ago(at: float, now: float) -> str:
    d = max(0, int(now - at))
    if d < 120:
        return f"{d}s ago"
    return f"{d // 60}m ago" if d < 7200 else f"{d // 3600}h ago" if d < 172800 else f"{d // 86400}d ago"


def timeline_lines(events: Iterable[Event], now: float | None = None, limit: int | None = None) -> Group:
    """Newest first, one line each: time, how long ago, what changed (check output or term dimmed)."""
    now = time.time() if now is None else now
    lines: list[RenderableType] = []
    evs = list(events)[::-1]
    for e in evs[:limit]:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(time.strftime("%H:%M:%S", time.localtime(e.at)))
        line.append(f" {_ago(e.at, now):>8}  ", style="dim")
        line.append(e.message, style=LEVEL_STYLE.get(e.level, ""))
        if e.detail:
            line.append(f"  {e.detail}", style="dim")
        lines.append(line)
    if not evs:
        lines.append(Text("no changes seen yet", style="dim"))
    return Group(*lines)


def snapshot(view: ClusterView, verdict: Verdict, events: Iterable[Event] = ()) -> Group:
    """The overview as one printable block (``ctk top --once`` and non-terminal output)."""
    parts: list[RenderableType] = [header(view, verdict), Text(""), servers_table(view), Text(""),
                                   members_panel(view), Text(""), services_table(view), Text(""),
                                   unhealthy_instances(view)]
    evs = list(events)
    if evs:
        parts += [Text(""), Text("Timeline (recent changes)", style="bold"), timeline_lines(evs)]
    return Group(*parts)


def framed(title: str, body: RenderableType) -> Panel:
    return Panel(body, title=title, title_align="left", box=box.ROUNDED, padding=(0, 1))
