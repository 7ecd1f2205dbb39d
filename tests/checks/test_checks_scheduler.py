"""CheckScheduler logic on a fake clock: no sleeps, no sockets (ScriptedProbe stands in for runners)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest

from agent.checks import (
    CheckScheduler,
    CheckSpec,
    FakeClock,
    InvalidCheckStatus,
    NotTTLCheck,
    ScriptedProbe,
)

P, W, C = "passing", "warning", "critical"


class Harness:
    def __init__(self, random: Callable[[], float] = lambda: 0.5) -> None:
        self.clock = FakeClock()
        self.updates: list[tuple[float, str, str, str]] = []
        self.probes: dict[str, ScriptedProbe] = {}
        self._next: list[ScriptedProbe] = []
        self.scheduler = CheckScheduler(
            self._on_update, clock=self.clock, random=random, probe_factory=self._factory
        )

    def _on_update(self, check_id: str, status: str, output: str) -> None:
        self.updates.append((self.clock.now(), check_id, status, output))

    def _factory(self, spec: CheckSpec) -> ScriptedProbe:
        return self._next.pop(0)

    def add(
        self, check_id: str, spec: CheckSpec, results: list[tuple[str, str]], duration_s: float = 0.0
    ) -> ScriptedProbe:
        probe = ScriptedProbe(results, clock=self.clock, duration_s=duration_s)
        self._next.append(probe)
        self.probes[check_id] = probe
        self.scheduler.add(check_id, spec)
        return probe

    def statuses(self, check_id: str) -> list[str]:
        return [s for _, cid, s, _ in self.updates if cid == check_id]


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.scheduler.stop()


def tcp(interval: str = "10s", **extra: object) -> CheckSpec:
    return CheckSpec.from_definition({"tcp": "127.0.0.1:1", "interval": interval, **extra})


async def test_first_run_after_random_stagger_then_every_interval() -> None:
    h = Harness(random=lambda: 0.25)
    probe = h.add("c", tcp("10s"), [(P, "ok")])
    await h.clock.advance(2.4)
    assert probe.runs == 0
    await h.clock.advance(0.1)  # 2.5 s = 0.25 × 10 s
    assert probe.runs == 1
    await h.clock.advance(30.0)
    assert probe.started_at == [2.5, 12.5, 22.5, 32.5]
    await h.scheduler.stop()


async def test_stagger_is_within_zero_and_interval() -> None:
    h = Harness(random=lambda: 0.0)
    probe = h.add("c", tcp("10s"), [(P, "ok")])
    await h.clock.advance(0.0)
    assert probe.started_at == [0.0]
    await h.scheduler.stop()


async def test_slow_run_delays_the_next_one_and_never_overlaps(h: Harness) -> None:
    # A run takes 25 s with a 10 s interval: the next run starts 10 s after the previous finished.
    probe = h.add("slow", tcp("10s"), [(P, "ok")], duration_s=25.0)
    await h.clock.advance(200.0)
    assert probe.max_active == 1
    starts = probe.started_at
    assert starts[0] == 5.0
    assert all(b - a == pytest.approx(35.0) for a, b in zip(starts, starts[1:], strict=False))


async def test_every_result_is_reported_with_thresholds_applied(h: Harness) -> None:
    results = [(P, "up"), (C, "down1"), (C, "down2"), (C, "down3"), (P, "up again")]
    h.add("c", tcp("1s", failuresbeforecritical=3), results)
    await h.clock.advance(4.6)
    assert h.statuses("c") == [P, P, P, C, P]
    outputs = [o for _, _, _, o in h.updates]
    assert outputs == ["up", "up", "up", "down3", "up again"]  # held results keep the previous output
    assert h.scheduler.status("c") == (P, "up again")


async def test_status_change_logged_once_not_per_run(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.checks")
    h.add(
        "db",
        tcp("1s", status="passing"),
        [(P, "fine"), (C, "dial tcp 127.0.0.1:1: connect: connection refused")],
    )
    await h.clock.advance(60.0)
    assert len(h.statuses("db")) == 60
    lines = [r for r in caplog.records if r.name == "agent.checks"]
    assert len(lines) == 1
    msg = lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING
    assert "db" in msg and "passing -> critical" in msg and "connection refused" in msg
    assert "\n" not in msg


async def test_recovery_logs_one_info_line(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.checks")
    h.add("api", tcp("1s"), [(C, "HTTP GET x: 500"), (C, "HTTP GET x: 500"), (P, "HTTP GET x: 200 OK")])
    await h.clock.advance(10.0)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "agent.checks"]
    assert len(lines) == 1 and lines[0][0] == logging.INFO and "critical -> passing" in lines[0][1]


async def test_remove_stops_runs_and_closes_probe(h: Harness) -> None:
    probe = h.add("c", tcp("1s"), [(P, "ok")])
    await h.clock.advance(3.0)
    runs = probe.runs
    h.scheduler.remove("c")
    await h.clock.advance(10.0)
    assert probe.runs == runs and probe.closed
    assert "c" not in h.scheduler
    h.scheduler.remove("c")  # unknown: no-op


async def test_remove_during_a_run_never_reports_its_result(h: Harness) -> None:
    probe = h.add("c", tcp("10s"), [(C, "late")], duration_s=5.0)
    await h.clock.advance(6.0)  # started at 5 s, would finish at 10 s
    assert probe.active == 1
    h.scheduler.remove("c")
    await h.clock.advance(20.0)
    assert h.updates == [] and probe.active == 0


async def test_re_adding_replaces_the_previous_runner(h: Harness) -> None:
    old = h.add("c", tcp("1s"), [(P, "old")])
    await h.clock.advance(2.0)
    new = h.add("c", tcp("1s"), [(W, "new")])
    await h.clock.advance(3.0)
    assert old.closed and not new.closed
    assert h.updates[-1][2:] == (W, "new")
    assert len(h.scheduler) == 1


async def test_ttl_expiry_and_updates(h: Harness) -> None:
    h.scheduler.add("ttl", CheckSpec.from_definition({"ttl": "30s"}))
    await h.clock.advance(29.0)
    assert h.updates == []
    stored = h.scheduler.ttl_update("ttl", P, "alive")
    assert stored == "alive" and h.updates[-1][1:] == ("ttl", P, "alive")
    await h.clock.advance(29.0)  # deadline moved to 59 s
    assert h.statuses("ttl") == [P]
    await h.clock.advance(1.0)
    assert h.updates[-1] == (59.0, "ttl", C, "TTL expired (last output before timeout follows): alive")
    await h.clock.advance(300.0)  # fires once per silence
    assert h.statuses("ttl") == [P, C]
    h.scheduler.ttl_update("ttl", W, "slow")
    await h.clock.advance(30.0)
    assert h.statuses("ttl") == [P, C, W, C]


async def test_ttl_without_any_update_expires_with_plain_text(h: Harness) -> None:
    h.scheduler.add("t", CheckSpec.from_definition({"ttl": "5s", "status": "passing"}))
    await h.clock.advance(5.0)
    assert h.updates == [(5.0, "t", C, "TTL expired")]


async def test_ttl_output_is_truncated(h: Harness) -> None:
    h.scheduler.add("t", CheckSpec.from_definition({"ttl": "5s", "outputmaxsize": 100}))
    stored = h.scheduler.ttl_update("t", P, "x" * 500)
    assert stored.endswith(" of 500 bytes)") and len(stored) <= 100
    assert h.scheduler.status("t") == (P, stored)


async def test_ttl_update_errors(h: Harness) -> None:
    h.add("http", tcp("10s"), [(P, "ok")])
    h.scheduler.add("t", CheckSpec.from_definition({"ttl": "5s"}))
    with pytest.raises(NotTTLCheck, match='CheckID "http" does not have associated TTL'):
        h.scheduler.ttl_update("http", P, "")
    with pytest.raises(NotTTLCheck, match='CheckID "nope" does not have associated TTL'):
        h.scheduler.ttl_update("nope", P, "")
    with pytest.raises(InvalidCheckStatus, match="Invalid check status: 'up'"):
        h.scheduler.ttl_update("t", "up", "")


async def test_callback_errors_do_not_stop_checks(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    calls: list[str] = []

    def bad(check_id: str, status: str, output: str) -> None:
        calls.append(status)
        raise RuntimeError("owner bug")

    probe = ScriptedProbe([(P, "ok")], clock=clock)
    s = CheckScheduler(bad, clock=clock, random=lambda: 0.0, probe_factory=lambda spec: probe)
    s.add("c", tcp("1s"))
    await clock.advance(5.0)
    assert len(calls) == 6
    assert "on_update callback failed" in caplog.text
    await s.stop()


async def test_runner_exception_becomes_critical() -> None:
    clock = FakeClock()
    updates: list[tuple[str, str]] = []

    class Broken(ScriptedProbe):
        async def run(self):  # type: ignore[no-untyped-def]
            raise OSError("kaboom")

    s = CheckScheduler(
        lambda c, st, o: updates.append((st, o)),
        clock=clock,
        random=lambda: 0.0,
        probe_factory=lambda spec: Broken([(P, "")]),
    )
    s.add("c", tcp("1s", status="passing"))
    await clock.advance(0.0)
    assert updates and updates[0][0] == C and "kaboom" in updates[0][1]
    await s.stop()


async def test_stop_cancels_everything(h: Harness) -> None:
    probes = [h.add(f"c{i}", tcp("1s"), [(P, "ok")], duration_s=3.0) for i in range(5)]
    h.scheduler.add("t", CheckSpec.from_definition({"ttl": "5s"}))
    await h.clock.advance(1.0)
    await h.scheduler.stop()
    assert all(p.closed for p in probes)
    assert h.clock.sleepers == 0
    with pytest.raises(RuntimeError):
        h.scheduler.add("late", tcp())
