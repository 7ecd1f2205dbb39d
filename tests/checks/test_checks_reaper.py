"""CriticalReaper: deregister_critical_service_after."""

from __future__ import annotations

from agent.checks import CriticalReaper


def test_critical_longer_than_threshold_is_due() -> None:
    r = CriticalReaper()
    r.track("c1", "web", 60.0, "passing", now=0.0)
    r.observe("c1", "critical", now=10.0)
    assert r.due(70.0) == set()  # exactly 60 s: Consul compares with ">"
    assert r.due(70.5) == {"web"}
    assert r.critical_for("c1", 70.5) == 60.5


def test_registration_as_critical_starts_the_clock() -> None:
    r = CriticalReaper()
    r.track("c1", "web", 60.0, "critical", now=0.0)
    assert r.due(61.0) == {"web"}


def test_non_critical_result_resets() -> None:
    r = CriticalReaper()
    r.track("c1", "web", 60.0, "critical", now=0.0)
    r.observe("c1", "critical", now=30.0)  # repeated critical does not restart the clock
    r.observe("c1", "passing", now=50.0)
    r.observe("c1", "critical", now=55.0)
    assert r.due(100.0) == set()
    assert r.due(116.0) == {"web"}
    r.observe("c1", "warning", now=117.0)
    assert r.due(1000.0) == set()


def test_node_checks_and_unset_thresholds_are_ignored() -> None:
    r = CriticalReaper()
    r.track("node", "", 60.0, "critical", now=0.0)
    r.track("c2", "web", 0.0, "critical", now=0.0)
    assert r.due(1e9) == set()


def test_one_service_many_checks_and_forget() -> None:
    r = CriticalReaper()
    r.track("a", "web", 60.0, "critical", now=0.0)
    r.track("b", "web", 120.0, "critical", now=0.0)
    r.track("c", "db", 60.0, "passing", now=0.0)
    assert r.due(61.0) == {"web"}
    r.forget_service("web")
    assert r.due(1e9) == set()
    r.untrack("c")
    r.observe("c", "critical", now=0.0)  # untracked: ignored
    assert r.due(1e9) == set()
