"""ctk top's key handling and screens, rendered off-screen at a fixed size (pure)."""

from __future__ import annotations

from rich.console import Console

from tests.dash.fixtures import addr, autopilot, healthy_sources, with_check
from toolkit.dash.model import ClusterView, Event, Timeline, assess
from toolkit.dash.top import UiState, handle_keys, plain_snapshot, render_screen


def screen(ui: UiState, view: ClusterView | None, events: list[Event] | None = None, width: int = 160,
           height: int = 50) -> str:
    console = Console(width=width, height=height, record=True, color_system=None, force_terminal=False)
    verdict = assess(view) if view is not None else None
    console.print(render_screen(view, verdict, events or [], ui, 1_700_000_100.0, "connecting to x…", width))
    return console.export_text()


def test_keys_switch_views_filter_and_quit() -> None:
    ui = UiState()
    handle_keys(ui, "\t")
    assert ui.screen == "services"
    handle_keys(ui, "\t\t")
    assert ui.screen == "overview"
    handle_keys(ui, "3")
    assert ui.screen == "timeline"
    handle_keys(ui, "/weq")  # '/' starts a filter (and shows services); q while typing is text
    assert (ui.screen, ui.filter, ui.editing, ui.quit) == ("services", "weq", True, False)
    handle_keys(ui, "\x7f\r")
    assert (ui.filter, ui.editing) == ("we", False)
    handle_keys(ui, "\x1b[A\x1b[B")  # arrow keys: ignored, the filter stays
    assert ui.filter == "we"
    handle_keys(ui, "\x1b")
    assert (ui.filter, ui.editing) == ("", False)
    handle_keys(ui, "1q")
    assert ui.screen == "overview" and ui.quit


def test_overview_shows_leader_servers_members_services_and_timeline() -> None:
    src = with_check(healthy_sources(autopilot=autopilot(failed=("s3",))), "c1", "web-check", "critical", "503")
    view = ClusterView.build(src, 1_700_000_000.0)
    tl = Timeline()
    tl.observe(ClusterView.build(healthy_sources(), 1_699_999_990.0))
    tl.observe(view)
    text = screen(UiState(), view, list(tl.events))
    assert "leader s1 (10.0.0.1:8300)" in text and "failure tolerance 0 (autopilot)" in text
    assert "CRITICAL: failed server s3" in text
    row = next(line for line in text.splitlines() if " s3 " in line and "10.0.0.3:8300" in line)
    assert "failed" in row and "UNHEALTHY" in row
    assert "server s3: alive → failed" in text and "100s ago" in text
    web = next(line for line in text.splitlines() if line.startswith("│ web "))
    assert web.split()[1:6] == ["web", "2", "1", "0", "1"]
    assert len(text.splitlines()) == 50 and "q  quit" in text.splitlines()[-1]


def test_services_view_filters_and_lists_unhealthy_instances() -> None:
    view = ClusterView.build(with_check(healthy_sources(), "c2", "web-check", "warning", "slow answer"), 0)
    ui = UiState(screen="services", filter="we")
    text = screen(ui, view)
    assert "Services matching 'we'" in text and "filter: we" in text
    assert " db " not in text.split("Unhealthy instances")[0]
    assert "web-check: warning (slow answer)" in text


def test_timeline_view_and_leaderless_and_unreachable_headers() -> None:
    leaderless = ClusterView.build(healthy_sources(leader="", autopilot=None), 0)
    text = screen(UiState(screen="timeline"), leaderless, [Event(0, "leader", "critical", "leader lost (was s1)")])
    assert "NONE (no cluster leader)" in text and "leader lost (was s1)" in text
    down = ClusterView.build(healthy_sources(reachable=False, errors={"agent": "connection refused"}), 0)
    assert "agent 127.0.0.1:8500 unreachable, retrying" in screen(UiState(), down)
    assert "connecting to x…" in screen(UiState(), None)


def test_plain_snapshot_for_pipes() -> None:
    view = ClusterView.build(healthy_sources(leader=addr("s2"), autopilot=autopilot(leader="s2")), 0)
    console = Console(width=200, record=True, color_system=None)
    console.print(plain_snapshot(view))
    text = console.export_text()
    assert "leader s2" in text and "Servers" in text and "Unhealthy instances" in text
    assert "WARNING" not in text and "OK:" in text


def test_a_narrow_terminal_stacks_the_overview() -> None:
    view = ClusterView.build(healthy_sources(autopilot=autopilot(failed=("s3",))), 0)
    text = screen(UiState(), view, width=90, height=40)
    lines = text.splitlines()
    assert len(lines) == 40 and all(len(line) <= 90 for line in lines)
    row = next(line for line in lines if line.startswith("│ s3 "))
    assert "failed" in row and "UNHEALTHY" in row and "10.0.0.3" not in row  # compact: no address column
    assert any(line.startswith("│ CRITICAL: failed server s3") for line in lines)  # the header wraps, not crops
    order = [next(i for i, line in enumerate(lines) if title in line) for title in
             ("─ Servers", "─ Members", "─ Services", "─ Timeline")]
    assert order == sorted(order)
