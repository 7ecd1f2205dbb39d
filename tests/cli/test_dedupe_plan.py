"""``ctk services dedupe``'s pure core on Consul-shaped JSON: grouping, the keeper, the removal path, verification.

Fixtures are ``/v1/health/service/<name>`` entries and ``/v1/agent/members`` rows as Consul returns them.
The executor runs against a small fake of the client (the real agents are in tests/cluster/test_dedupe.py).
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from rich.console import Console

from toolkit.cli.dedupe import plan_table
from toolkit.client import ConsulError, Response
from toolkit.ops.dedupe import (
    DedupeError,
    Instance,
    Verifier,
    build_plan,
    copies_elsewhere,
    instances_from_health,
    member_statuses,
    remove,
    verify,
)

NODE_ADDR = {"s1": "192.168.0.1", "s2": "192.168.0.2", "s3": "192.168.0.3"}
ALIVE = {"s1": "alive", "s2": "alive", "s3": "alive"}


def entry(node: str, sid: str, *, name: str = "web", addr: str = "10.0.0.5", port: int = 8080, index: int = 10,
          serf: str | None = "passing", service_checks: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ``/v1/health/service/<name>`` entry: node, service, the node's serfHealth and the service's checks."""
    checks = [] if serf is None else [{"Node": node, "CheckID": "serfHealth", "Status": serf, "ServiceID": ""}]
    checks += [{"Node": node, "CheckID": f"service:{sid}:{n}", "Status": st, "ServiceID": sid}
               for n, st in enumerate(service_checks)]
    return {"Node": {"Node": node, "Address": NODE_ADDR.get(node, "192.168.9.9")},
            "Service": {"ID": sid, "Service": name, "Address": addr, "Port": port, "ModifyIndex": index},
            "Checks": checks}


def plan_of(*entries: dict[str, Any], members: dict[str, str] | None = None, **kw: Any) -> Any:
    return build_plan(instances_from_health(entries, ALIVE if members is None else members), **kw)


def test_one_instance_registered_through_three_agents_is_one_group_keeping_the_newest() -> None:
    """consul#8930: one ID through two agents, plus the same endpoint under another ID."""
    plan = plan_of(entry("s1", "web-1", index=10), entry("s2", "web-1", index=20), entry("s3", "web-x", index=15))
    [g] = plan.groups
    assert (g.keep.node, g.keep.service_id) == ("s2", "web-1")
    assert g.keep_reason == "newest registration (ModifyIndex 20)"
    assert [(r.instance.node, r.instance.service_id, r.via, r.reason) for r in g.removals] == [
        ("s3", "web-x", "agent", "same address 10.0.0.5:8080 as web-1 on s2"),
        ("s1", "web-1", "agent", "same ID and address as web-1 on s2"),
    ]
    assert plan.to_json()["Duplicates"] == 2


def test_failing_copy_is_passed_over_even_when_newest() -> None:
    plan = plan_of(entry("s1", "web-1", index=10), entry("s2", "web-1", index=99, service_checks=("critical",)))
    [g] = plan.groups
    assert g.keep.node == "s1" and g.keep_reason == "not failing"
    assert g.removals[0].instance.status == "critical"


def test_a_dead_node_makes_its_copy_failing_through_serf_health() -> None:
    """The node's serfHealth counts in the instance's status, as in /v1/health/service?passing."""
    members = {**ALIVE, "s2": "failed"}
    plan = plan_of(entry("s1", "web-1", index=10), entry("s2", "web-1", index=99, serf="critical"), members=members)
    [g] = plan.groups
    assert g.keep.node == "s1" and g.keep_reason == "not failing"
    [r] = g.removals
    assert r.instance.status == "critical" and r.via == "catalog"  # no agent left to re-sync it


def test_copy_on_a_node_without_an_agent_loses_to_a_live_node_even_when_newer() -> None:
    members = {"s1": "alive"}  # s9 is a catalog-only node: no serfHealth, not a member
    plan = plan_of(entry("s1", "web-1", index=10), entry("s9", "web-1", index=50, serf=None), members=members)
    [g] = plan.groups
    assert g.keep.node == "s1" and g.keep_reason == "its node is alive"
    assert g.removals[0].instance.member == "absent" and g.removals[0].via == "catalog"


def test_passing_copy_beats_a_newer_warning_copy() -> None:
    plan = plan_of(entry("s1", "web-1", index=10), entry("s2", "web-1", index=50, service_checks=("warning",)))
    assert plan.groups[0].keep.node == "s1" and plan.groups[0].keep_reason == "passing"


@pytest.mark.parametrize(("member", "via"), [("alive", "agent"), ("leaving", "agent"), ("failed", "catalog"),
                                             ("left", "catalog"), ("none", "catalog")])
def test_removal_goes_through_the_agent_unless_it_is_gone(member: str, via: str) -> None:
    members = {**ALIVE, "s2": member}
    plan = plan_of(entry("s1", "web-1", index=10), entry("s2", "web-1", index=5), members=members)
    [r] = plan.removals
    assert r.instance.node == "s2" and r.via == via


def test_keep_node_overrides_health_and_age() -> None:
    plan = plan_of(entry("s1", "web-1", index=99), entry("s2", "web-1", index=5, service_checks=("critical",)),
                   keep_node="s2")
    [g] = plan.groups
    assert g.keep.node == "s2" and g.keep_reason == "--keep-node s2"
    assert [r.instance.node for r in g.removals] == ["s1"]


def test_keep_node_with_no_copy_there_is_an_error_naming_the_candidates() -> None:
    with pytest.raises(DedupeError, match=r"--keep-node s7: .*nodes with duplicates: s1, s2"):
        plan_of(entry("s1", "web-1"), entry("s2", "web-1"), keep_node="s7")


def test_id_defaulting_to_the_name_on_every_node_is_not_a_duplicate() -> None:
    """Every node running ``web`` through its own agent has ID ``web`` and its own address: normal Consul."""
    plan = plan_of(*(entry(n, "web", addr="") for n in ("s1", "s2", "s3")))
    assert plan.groups == () and plan.id_conflicts == ()


def test_explicit_id_on_nodes_with_different_addresses_is_reported_unless_asked() -> None:
    entries = (entry("s1", "web-8080", addr="10.0.0.5"), entry("s2", "web-8080", addr="10.0.0.6"))
    plan = plan_of(*entries)
    assert plan.groups == ()
    [c] = plan.id_conflicts
    assert c.service_id == "web-8080" and [i.node for i in c.copies] == ["s1", "s2"]
    forced = plan_of(*entries, same_id_any_address=True)
    [g] = forced.groups
    assert g.removals[0].reason == f"same ID as the copy on {g.keep.node} ({g.keep.endpoint})"


def test_empty_service_address_means_the_node_address() -> None:
    same_node = plan_of(entry("s1", "web-a", addr=""), entry("s1", "web-b", addr=""))
    [g] = same_node.groups
    assert g.keep.endpoint == "192.168.0.1:8080"
    other_nodes = plan_of(entry("s1", "web-a", addr=""), entry("s2", "web-b", addr=""))
    assert other_nodes.groups == ()


def test_same_endpoint_different_port_or_service_is_not_a_duplicate() -> None:
    plan = plan_of(entry("s1", "web-1", port=8080), entry("s2", "web-2", port=8081),
                   entry("s3", "api-1", name="api", port=8080))
    assert plan.groups == ()


def test_the_servers_consul_service_is_never_touched() -> None:
    plan = plan_of(entry("s1", "consul", name="consul", port=8300), entry("s2", "consul", name="consul", port=8300),
                   same_id_any_address=True)
    assert plan.groups == ()


def test_member_statuses_and_aggregate_status_from_api_json() -> None:
    members = member_statuses([{"Name": "s1", "Status": 1}, {"Name": "s2", "Status": 4}, {"Name": "s3", "Status": 3}])
    assert members == {"s1": "alive", "s2": "failed", "s3": "left"}
    [i] = instances_from_health([entry("s2", "web-1", serf="critical", service_checks=("passing",))], members)
    assert (i.status, i.serf_health, i.member, i.node_alive) == ("critical", "critical", "failed", False)
    [j] = instances_from_health([entry("s4", "web-1", serf=None)], members)
    assert (j.status, j.member, j.via) == ("passing", "absent", "catalog")


def test_plan_json_is_serialisable_and_table_shows_keep_and_remove_rows() -> None:
    plan = plan_of(entry("s1", "web-1", index=10), entry("s2", "web-1", index=20))
    doc = json.loads(json.dumps(plan.to_json()))
    assert doc["Groups"][0]["Keep"]["Node"] == "s2" and doc["Groups"][0]["Remove"][0]["Via"] == "agent"
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(plan_table(plan))
    lines = buf.getvalue().splitlines()
    assert any("keep" in ln and "s2" in ln and "newest registration" in ln for ln in lines)
    assert any("remove via agent" in ln and "s1" in ln and "same ID and address" in ln for ln in lines)


def test_copies_elsewhere_ignores_the_local_node() -> None:
    inst = instances_from_health([entry("s1", "api-1"), entry("s2", "api-1"), entry("s3", "api-2")], ALIVE)
    assert [i.node for i in copies_elsewhere(inst, "api-1", "s2")] == ["s1"]
    assert copies_elsewhere(inst, "api-1", "s9")[0].node == "s1"
    assert copies_elsewhere(inst, "api-9", "s1") == []


# -------------------------------------------------------------- verification

def _inst(node: str, sid: str = "web-1") -> Instance:
    [i] = instances_from_health([entry(node, sid)], ALIVE)
    return i


def test_verifier_tells_gone_from_came_back_from_still_present() -> None:
    gone, back, stuck = _inst("s1"), _inst("s2"), _inst("s3")
    v = Verifier([gone, back, stuck])
    v.observe({("s2", "web-1"), ("s3", "web-1")})  # right after removal, s2 not yet synced away
    v.observe({("s3", "web-1")})
    v.observe({("s2", "web-1"), ("s3", "web-1")})  # s2 re-registered by its agent or the app
    assert v.came_back == [back] and v.still_present == [stuck] and not v.ok


def test_verifier_is_ok_only_after_a_read_with_everything_gone() -> None:
    v = Verifier([_inst("s1")])
    assert not v.ok  # nothing read yet
    v.observe({("s1", "web-2"), ("s2", "web-1")})  # other IDs on s1, same ID elsewhere: not the removed copy
    assert v.ok


class FakeClient:
    """Answers by (method, path) from a table; records calls. Stands in for one agent's ConsulClient."""

    def __init__(self, answers: dict[tuple[str, str], Any], name: str = "") -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, Any]] = []
        self.name = name

    def _answer(self, method: str, path: str, kw: dict[str, Any]) -> Response:
        self.calls.append((method, path, kw.get("json_body")))
        a = self.answers.get((method, path), (200, None))
        if isinstance(a, Exception):
            raise a
        if callable(a):
            a = a()
        status, body = a
        if status not in kw.get("ok", (200,)):
            raise ConsulError(f"Unexpected response code: {status}", status)
        return Response(status, httpx.Headers(), json.dumps(body).encode() if body is not None else b"")

    def get(self, path: str, **kw: Any) -> Response:
        return self._answer("GET", path, kw)

    def put(self, path: str, **kw: Any) -> Response:
        return self._answer("PUT", path, kw)


def _self(node: str, owns: tuple[str, ...] = ("web-1",)) -> dict[tuple[str, str], Any]:
    """An agent's answers: who it is, and the services it owns (its local state)."""
    return {("GET", "/v1/agent/self"): (200, {"Config": {"NodeName": node}}),
            ("GET", "/v1/agent/services"): (200, {sid: {"ID": sid} for sid in owns})}


def test_remove_goes_through_the_owning_agent_and_never_the_catalog() -> None:
    agent, catalog = FakeClient(_self("s2")), FakeClient({})
    o = remove(_inst("s2"), catalog, lambda i: (agent, "http://192.168.0.2:8500"))
    assert o.ok and o.via == "agent"
    assert ("PUT", "/v1/agent/service/deregister/web-1", None) in agent.calls and catalog.calls == []


def test_remove_refuses_an_agent_that_is_another_node() -> None:
    """Reaching s1's agent by mistake must not deregister s1's copy of the same ID (maybe the one kept)."""
    agent, catalog = FakeClient(_self("s1")), FakeClient({})
    o = remove(_inst("s2"), catalog, lambda i: (agent, "http://x:1"))
    assert not o.ok and "is node 's1', not 's2'" in o.detail and "--agent-port" in o.detail
    assert [c[:2] for c in agent.calls] == [("GET", "/v1/agent/self")] and catalog.calls == []


def test_unreachable_owning_agent_is_a_failure_not_a_catalog_delete() -> None:
    agent = FakeClient({("GET", "/v1/agent/self"): ConsulError("cannot reach the agent")})
    catalog = FakeClient({})
    o = remove(_inst("s2"), catalog, lambda i: (agent, "http://192.168.0.2:8500"))
    assert not o.ok and "ctk services deregister web-1' on s2" in o.detail and catalog.calls == []


@pytest.mark.parametrize("answers", [_self("s2", owns=()),  # not in the agent's local state: never asked
                                     {**_self("s2"), ("PUT", "/v1/agent/service/deregister/web-1"): (404, None)}])
def test_agent_that_does_not_own_the_id_falls_back_to_the_catalog(answers: dict[tuple[str, str], Any]) -> None:
    """A copy written onto a live node through the catalog: its agent cannot re-sync it, so the catalog delete sticks."""
    agent = FakeClient(answers)
    catalog = FakeClient({("PUT", "/v1/catalog/deregister"): (200, True)})
    o = remove(_inst("s2"), catalog, lambda i: (agent, "u"))
    assert o.ok and o.via == "catalog" and "does not own it" in o.detail
    assert catalog.calls == [("PUT", "/v1/catalog/deregister", {"Node": "s2", "ServiceID": "web-1"})]


def test_copy_on_a_failed_node_is_removed_from_the_catalog_without_asking_its_agent() -> None:
    [dead] = instances_from_health([entry("s3", "web-1", serf="critical")], {"s3": "failed"})
    catalog = FakeClient({})

    def no_agent(i: Instance) -> tuple[FakeClient, str]:
        raise AssertionError("a failed agent must not be contacted")

    o = remove(dead, catalog, no_agent)
    assert o.ok and o.via == "catalog" and o.detail == "agent of s3 is failed"


def test_verify_reads_until_the_wait_is_over_without_sleeping() -> None:
    now = [0.0]
    rows = iter([[{"Node": "s2", "ServiceID": "web-1"}], [], [], []])
    catalog = FakeClient({("GET", "/v1/catalog/service/web"): lambda: (200, next(rows))})
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    v = verify(catalog, [_inst("s2")], 5.0, poll_s=2.0, clock=lambda: now[0], sleep=sleep)
    assert v.ok and v.reads == 4 and slept == [2.0, 2.0, 1.0] and now[0] == 5.0
