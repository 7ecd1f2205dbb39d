"""diff() and Timeline: what changed and when, from successive views (pure, explicit timestamps)."""

from __future__ import annotations

from tests.dash.fixtures import addr, autopilot, check, healthy_sources, instance, member, with_check
from toolkit.dash.model import MAX_EVENTS_PER_KIND, ClusterView, Sources, Timeline, diff


def at(t: float, src: Sources) -> ClusterView:
    return ClusterView.build(src, t)


def messages(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.message for e in events]


def test_identical_views_produce_nothing() -> None:
    assert diff(at(1, healthy_sources()), at(2, healthy_sources())) == []


def test_leader_change_is_stamped_with_the_new_views_time() -> None:
    new = healthy_sources(leader=addr("s2"), autopilot=autopilot(leader="s2"))
    new.agent_self = {"Stats": {"raft": {"state": "Follower", "term": "5", "commit_index": "100"}}}
    [ev] = diff(at(10, healthy_sources()), at(12.5, new))
    assert (ev.at, ev.kind, ev.message, ev.detail) == (12.5, "leader", "leader changed: s1 → s2", "term 5")


def test_leaderless_gap_reads_lost_then_changed_with_the_old_leaders_name() -> None:
    tl = Timeline()
    tl.observe(at(1, healthy_sources()))
    assert tl.observe(at(2, healthy_sources())) == []
    lost = tl.observe(at(3, healthy_sources(leader="", autopilot=None)))
    assert messages(lost) == ["leader lost (was s1)"] and lost[0].level == "critical"
    back = tl.observe(at(5, healthy_sources(leader=addr("s3"), autopilot=autopilot(leader="s3", failed=("s1",)))))
    assert messages(back) == ["leader changed: s1 → s3", "server s1: alive → failed"]
    assert [e.at for e in tl.events] == [3, 5, 5]


def test_server_failure_and_recovery_events() -> None:
    before = at(1, healthy_sources())
    failed = at(2, healthy_sources(autopilot=autopilot(failed=("s2",))))
    assert messages(diff(before, failed)) == ["server s2: alive → failed", "server s2 unhealthy"]
    assert messages(diff(failed, before)) == ["server s2: failed → alive", "server s2 healthy again"]
    assert [e.level for e in diff(failed, before)] == ["ok", "ok"]


def test_instances_registered_and_deregistered() -> None:
    src = healthy_sources()
    assert src.instances is not None
    src.instances = [i for i in src.instances if i["ServiceID"] != "db-1"] + [instance("api", "api-1", "c2")]
    evs = diff(at(1, healthy_sources()), at(2, src))
    assert messages(evs) == ["registered api (api-1 on c2)", "deregistered db (db-1 on c1)"]
    assert {e.kind for e in evs} == {"instance"}


def test_check_status_change_carries_the_first_output_line() -> None:
    new = with_check(healthy_sources(), "c1", "web-check", "critical", "\nHTTP GET http://x: 503 Service Unavailable\nmore")
    [ev] = diff(at(1, healthy_sources()), at(2, new))
    assert ev.message == "check web-check on c1 (web-1): passing → critical"
    assert ev.detail == "HTTP GET http://x: 503 Service Unavailable" and ev.level == "critical"
    [back] = diff(at(2, new), at(3, healthy_sources()))
    assert back.level == "ok" and back.message.endswith("critical → passing")


def test_member_status_changes() -> None:
    new = healthy_sources(members=[member("s1"), member("s2"), member("s3"), member("c1", 4, "node"),
                                   member("c3", 1, "node")])
    evs = diff(at(1, healthy_sources()), at(2, new))
    assert messages(evs) == ["member c1: alive → failed", "member c3 joined (alive)", "member c2 reaped"]
    assert evs[0].level == "critical"


def test_unread_parts_are_not_mistaken_for_mass_deregistration() -> None:
    partial = healthy_sources(instances=None, services=None, checks=None, members=None, raft=None, autopilot=None,
                              leader=None)
    assert diff(at(1, healthy_sources()), at(2, partial)) == []
    assert diff(at(2, partial), at(3, healthy_sources())) == []


def test_a_burst_is_summarised() -> None:
    src = healthy_sources()
    assert src.instances is not None and src.services is not None
    src.instances += [instance("batch", f"batch-{i}", "c1") for i in range(50)]
    evs = diff(at(1, healthy_sources()), at(2, src))
    assert len(evs) == MAX_EVENTS_PER_KIND
    assert evs[-1].message == f"… and {50 - MAX_EVENTS_PER_KIND + 1} more instance changes"


def test_timeline_is_bounded_and_oldest_first() -> None:
    tl = Timeline(maxlen=200)
    tl.observe(at(0, healthy_sources()))
    for t in range(1, 151):
        status = "critical" if t % 2 else "passing"
        tl.observe(at(t, with_check(healthy_sources(), "c1", "db-check", status)))
    assert len(tl.events) == 150
    for t in range(151, 301):
        status = "critical" if t % 2 else "passing"
        tl.observe(at(t, with_check(healthy_sources(), "c1", "db-check", status)))
    assert len(tl.events) == 200
    assert tl.events[0].at == 101 and tl.events[-1].at == 300


def test_unreachable_agent_is_one_event_and_the_baseline_survives_the_outage() -> None:
    tl = Timeline()
    tl.observe(at(1, healthy_sources()))
    down = healthy_sources(reachable=False, errors={"agent": "cannot reach the agent at 127.0.0.1:8500"})
    assert messages(tl.observe(at(2, down))) == ["agent 127.0.0.1:8500 unreachable"]
    assert tl.observe(at(3, down)) == []
    src = healthy_sources()
    assert src.checks is not None
    src.checks.append(check("c2", "new-check", "warning", service_id="web-2"))  # a new check: no status change
    back = tl.observe(at(4, with_check(src, "c2", "web-check", "critical")))
    assert messages(back) == ["agent 127.0.0.1:8500 reachable again",
                              "check web-check on c2 (web-2): passing → critical"]
