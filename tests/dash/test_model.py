"""ClusterView, instance health and the verdict (pure: Consul-shaped answers in, no I/O, no sleeps)."""

from __future__ import annotations

from tests.dash.fixtures import addr, autopilot, check, healthy_sources, instance, member, raft, with_check
from toolkit.dash.model import CRITICAL, OK, WARNING, ClusterView, assess, instances_from_health, worst

NOW = 1_700_000_000.0


def view(src: object) -> ClusterView:
    from toolkit.dash.model import Sources

    assert isinstance(src, Sources)
    return ClusterView.build(src, NOW)


def test_healthy_cluster_is_ok_with_leader_voters_and_lag() -> None:
    v = view(healthy_sources(autopilot=autopilot(lag={"s3": 7})))
    assert v.leader_name == "s1" and v.leader_address == addr("s1") and v.term == 4
    assert [(s.name, s.state, s.voter, s.serf, s.healthy) for s in v.servers] == [
        ("s1", "leader", True, "alive", True), ("s2", "follower", True, "alive", True),
        ("s3", "follower", True, "alive", True)]
    assert {s.name: s.trails_by for s in v.servers} == {"s1": 0, "s2": 0, "s3": 7}
    assert (v.failure_tolerance, v.tolerance_source, v.voters, v.quorum, v.healthy_voters) == (1, "autopilot", 3, 2, 3)
    verdict = assess(v)
    assert verdict.code == OK and verdict.line().startswith("OK: leader present")


def test_leader_commit_index_comes_from_autopilot_when_the_local_agent_is_a_follower() -> None:
    src = healthy_sources(agent_self={"Stats": {"raft": {"state": "Follower", "term": "4", "commit_index": "90"}}},
                          autopilot=autopilot(index=120, lag={"s2": 20}))
    v = view(src)
    assert v.commit_index == 120
    assert {s.name: s.trails_by for s in v.servers} == {"s1": 0, "s2": 20, "s3": 0}


def test_failed_server_is_critical_and_tolerance_zero_is_reported() -> None:
    v = view(healthy_sources(autopilot=autopilot(failed=("s2",))))
    s2 = next(s for s in v.servers if s.name == "s2")
    assert s2.failed and s2.healthy is False and s2.trails_by is None
    verdict = assess(v)
    assert verdict.code == CRITICAL
    assert verdict.line().startswith("CRITICAL: failed server s2; failure tolerance 0")


def test_tolerance_is_computed_from_gossip_when_autopilot_is_unavailable() -> None:
    members = [member("s1"), member("s2", status=4), member("s3")]
    v = view(healthy_sources(autopilot=None, members=members, errors={"autopilot": "403 Permission denied"}))
    assert (v.failure_tolerance, v.tolerance_source, v.healthy_voters) == (0, "computed", 2)
    assert next(s for s in v.servers if s.name == "s2").serf == "failed"
    assert assess(v).code == CRITICAL
    # two of three gone: quorum lost, a negative tolerance says by how much
    members = [member("s1"), member("s2", status=4), member("s3", status=4)]
    v = view(healthy_sources(autopilot=None, members=members))
    assert v.failure_tolerance == -1 and not v.quorum_ok
    assert any("quorum lost: 1 of 3 voters healthy, 2 needed" in p.message for p in assess(v).problems)


def test_non_voters_do_not_count_toward_quorum() -> None:
    v = view(healthy_sources(raft=raft(voters=("s1", "s2")), autopilot=None))
    assert (v.voters, v.quorum, v.failure_tolerance) == (2, 2, 0)
    assert [s.voter for s in v.servers] == [True, True, False]


def test_no_leader_is_critical_and_servers_still_listed() -> None:
    v = view(healthy_sources(leader="", autopilot=None, agent_self=None,
                             errors={"autopilot": "500 No cluster leader"}))
    assert v.leader_address == "" and not v.has_leader and len(v.servers) == 3
    assert all(s.state == "follower" for s in v.servers)
    verdict = assess(v)
    assert verdict.code == CRITICAL and verdict.problems[0].message == "no cluster leader"


def test_unreachable_agent_is_critical() -> None:
    src = healthy_sources(reachable=False, errors={"agent": "cannot reach the agent at 127.0.0.1:8500"})
    verdict = assess(view(src))
    assert verdict.code == CRITICAL and "cannot reach the agent" in verdict.line()


def test_instance_status_is_the_worst_of_its_checks_and_its_nodes_checks() -> None:
    src = with_check(healthy_sources(), "c1", "serfHealth", "critical", "Agent not live or unreachable")
    src = with_check(src, "c2", "web-check", "warning", "slow")
    v = view(src)
    web = v.service("web")
    assert web is not None
    assert {i.id: i.status for i in web.instances} == {"web-1": "critical", "web-2": "warning"}
    assert (web.count("passing"), web.count("warning"), web.count("critical")) == (0, 1, 1)
    db = v.service("db")
    assert db is not None and db.status == "critical"  # node check failing takes the service down too
    assert [c.check_id for c in db.instances[0].checks] == ["serfHealth", "db-check"]


def test_counts_are_instances_not_checks() -> None:
    src = healthy_sources()
    assert src.checks is not None
    src.checks += [check("c1", "web-check-2", "critical", service_id="web-1"),
                   check("c1", "web-check-3", "critical", service_id="web-1")]
    web = view(src).service("web")
    assert web is not None and (web.count("critical"), web.count("passing")) == (1, 1)


def test_warning_check_and_single_server_tolerance_zero_are_warnings() -> None:
    assert assess(view(with_check(healthy_sources(), "c2", "web-check", "warning"))).code == WARNING
    v = view(healthy_sources(autopilot=dict(autopilot(), FailureTolerance=0)))
    verdict = assess(v)
    assert verdict.code == WARNING and "failure tolerance 0" in verdict.line()


def test_failed_client_is_a_warning_unless_it_ran_instances() -> None:
    src = healthy_sources(members=[member("s1"), member("s2"), member("s3"), member("c1", role="node"),
                                   member("c3", status=4, role="node")])
    assert src.checks is not None
    src.checks.append(check("c3", "serfHealth", "critical"))
    verdict = assess(view(src))
    assert verdict.code == WARNING and verdict.problems[0].message == "failed client c3"
    # the same failure on a client that runs web-1 takes that instance down: critical
    src = with_check(healthy_sources(members=[member("s1"), member("s2"), member("s3"),
                                              member("c1", status=4, role="node")]), "c1", "serfHealth", "critical")
    verdict = assess(view(src))
    assert verdict.code == CRITICAL
    assert "2 critical instances: db on c1, web on c1" in verdict.line()
    assert any(p.message == "failed client c1" and p.level == WARNING for p in verdict.problems)


def test_lagging_server_is_a_warning_with_how_far_it_trails() -> None:
    ap = autopilot(lag={"s3": 400}, unhealthy=("s3",))
    verdict = assess(view(healthy_sources(autopilot=ap)))
    assert verdict.code == WARNING and "unhealthy server s3 (trails by 400)" in verdict.line()


def test_partial_data_is_tolerated() -> None:
    v = view(healthy_sources(raft=None, instances=None, services=None, members=None, checks=None,
                             errors={"raft": "403"}))
    assert len(v.servers) == 3  # from autopilot alone
    assert v.services is None and v.members is None
    assert assess(v).code == OK
    empty = view(healthy_sources(raft=None, autopilot=None, leader=None, errors={"leader": "403 ACL"}))
    assert empty.servers == () and assess(empty).code == WARNING


def test_members_by_status_and_json_shape() -> None:
    src = healthy_sources(members=[member("s1"), member("s2"), member("s3"), member("c1", 4, "node"),
                                   member("c2", 3, "node"), member("c9", 2, "node")])
    v = view(src)
    by = v.members_by_status()
    assert [m.name for m in by["failed"]] == ["c1"] and [m.name for m in by["left"]] == ["c2"]
    assert [m.name for m in by["leaving"]] == ["c9"] and len(by["alive"]) == 3
    j = v.to_json()
    assert j["Leader"] == {"Address": addr("s1"), "Name": "s1"}
    assert j["Members"]["Counts"] == {"alive": 3, "leaving": 1, "left": 1, "failed": 1}
    assert j["Members"]["Failed"] == [{"Name": "c1", "Address": "10.0.0.1:8301", "Status": "failed", "Type": "client"}]
    web = next(s for s in j["Services"] if s["Name"] == "web")
    assert (web["Instances"], web["Passing"], web["Warning"], web["Critical"]) == (2, 2, 0, 0)
    assert {s["Name"]: s["TrailsBy"] for s in j["Servers"]} == {"s1": 0, "s2": 0, "s3": 0}


def test_instances_from_health_service_entries() -> None:
    entries = [{"Node": {"Node": "c2", "Address": "10.0.1.2"},
                "Service": {"ID": "web-2", "Service": "web", "Tags": ["a"], "Address": "", "Port": 81},
                "Checks": [check("c2", "web-check", "warning", service_id="web-2", output="slow\nmore"),
                           check("c2", "serfHealth")]},
               {"Node": {"Node": "c1", "Address": "10.0.1.1"},
                "Service": {"ID": "web-1", "Service": "web", "Tags": [], "Address": "192.0.2.1", "Port": 80},
                "Checks": []}]
    got = instances_from_health(entries)
    assert [(i.node, i.id, i.address, i.status) for i in got] == [
        ("c1", "web-1", "192.0.2.1", "passing"), ("c2", "web-2", "10.0.1.2", "warning")]
    assert [c.check_id for c in got[1].checks] == ["serfHealth", "web-check"]


def test_worst() -> None:
    assert worst([]) == "passing"
    assert worst(["passing", "warning"]) == "warning"
    assert worst(["warning", "critical", "passing"]) == "critical"
    assert worst(["maintenance?"]) == "critical"


def test_unknown_nodes_checks_without_instances_still_count() -> None:
    src = healthy_sources()
    assert src.checks is not None and src.instances is not None
    src.checks.append(check("s2", "_node_maintenance", "critical", name="Node Maintenance Mode"))
    src.instances.append(instance("web", "web-9", "c9"))  # an instance whose node has no checks at all
    v = view(src)
    verdict = assess(v)
    assert verdict.code == CRITICAL and "critical instance: consul on s2" in verdict.line()
    web = v.service("web")
    assert web is not None and {i.id: i.status for i in web.instances}["web-9"] == "passing"
