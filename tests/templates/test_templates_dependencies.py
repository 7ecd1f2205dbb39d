"""Dependency strings → keys, HTTP requests and decoded shapes (consul-template's syntax)."""

from __future__ import annotations

import pytest

from templates.dependencies import (
    CatalogDatacentersDep,
    CatalogNode,
    CatalogNodeDep,
    CatalogNodesDep,
    CatalogServicesDep,
    FileDep,
    HealthService,
    HealthServiceDep,
    KeyPair,
    KVGetDep,
    KVListDep,
    Request,
    StrMap,
    aggregated_status,
    datacenters_dep,
    parse_kv_get,
    parse_kv_list,
    parse_node,
    parse_nodes,
    parse_service,
    parse_services,
)
from templates.errors import DependencyParseError

from .helpers import health_entry, kv_entry

# --------------------------------------------------------------------------------------------
# service


def test_service_full_syntax() -> None:
    d = parse_service("rails.web@dc1~_agent|passing,warning")
    assert d == HealthServiceDep(
        service="web", tag="rails", dc="dc1", near="_agent", filters=("passing", "warning")
    )
    assert d.name() == "health.service(rails.web@dc1~_agent|passing,warning)"


def test_service_default_is_passing_only_server_side() -> None:
    d = parse_service("web")
    assert d.filters == ("passing",)
    assert d.passing_only
    assert d.request().url() == "/v1/health/service/web?passing"


def test_service_request_matches_consul_api() -> None:
    assert parse_service("rails.web@dc1").request().url() == "/v1/health/service/web?tag=rails&dc=dc1&passing"
    # a non-default filter fetches everything and filters client-side
    assert parse_service("web|passing,warning").request().url() == "/v1/health/service/web"
    assert parse_service("web~n1").request().params == (("near", "n1"), ("passing", ""))


def test_service_tag_is_greedy_and_names_cannot_have_dots() -> None:
    d = parse_service("a.b.web")
    assert (d.tag, d.service) == ("a.b", "web")


def test_service_filters_sorted_and_deduplicated() -> None:
    assert parse_service("web|warning,passing,warning").filters == ("passing", "warning")
    assert parse_service("web") is parse_service("web")  # parsed once, then cached
    assert hash(parse_service("web", connect=False)) == hash(parse_service("web"))


def test_service_extra_args_equal_pipe_form() -> None:
    assert parse_service("web|any") == parse_service("|".join(["web", "any"]))


def test_equal_strings_are_one_key() -> None:
    keys = {parse_service("web"), parse_service("web|passing"), parse_service("web")}
    assert len(keys) == 1  # "web" and "web|passing" are identical in current consul-template


def test_service_query_options_and_node_meta() -> None:
    d = parse_service("web?ns=team&partition=p1&node-meta=rack:r1@dc2")
    assert (d.ns, d.partition, d.node_meta, d.dc) == ("team", "p1", ("rack:r1",), "dc2")
    assert d.request().params == (
        ("dc", "dc2"),
        ("node-meta", "rack:r1"),
        ("ns", "team"),
        ("partition", "p1"),
        ("passing", ""),
    )
    assert d.name() == "health.service(web?ns=team&partition=p1&node-meta=rack:r1@dc2|passing)"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "web|bogus",
        "web@",
        "we b",
        "web?color=red",
        "web?peer=a&sameness-group=b",
        "web?node-meta=nocolon",
    ],
)
def test_service_bad_strings(bad: str) -> None:
    with pytest.raises(DependencyParseError):
        parse_service(bad)


def test_connect_endpoint() -> None:
    d = parse_service("web", connect=True)
    assert d.request().path == "/v1/health/connect/web"
    assert d.name() == "health.connect(web|passing)"
    assert d != parse_service("web")


# --------------------------------------------------------------------------------------------
# health decoding


def test_health_decode_shape_and_address_fallback() -> None:
    body = [
        health_entry("n2", "10.0.0.2", 80, service_address="", tags=["b", "a"], meta={"weight": "5"}),
        health_entry("n1", "10.0.0.1", 81, service_address="192.168.1.1", node_meta={"rack": "r1"}),
    ]
    out = parse_service("web").decode(body)
    assert [s.Node for s in out] == ["n1", "n2"]  # sorted by node, then ID
    n1, n2 = out
    assert isinstance(n1, HealthService)
    assert n1.Address == "192.168.1.1" and n1.NodeAddress == "10.0.0.1"
    assert n2.Address == "10.0.0.2"  # falls back to the node address
    assert n2.Tags == ["a", "b"]  # sorted copy
    assert n2.ServiceMeta == {"weight": "5"} and isinstance(n2.ServiceMeta, StrMap)
    assert n1.NodeMeta == {"rack": "r1"}
    assert n1.ID == "web-n1" and n1.Name == "web" and n1.Port == 81
    assert n1.Status == "passing" and n1.Checks[0].CheckID == "serfHealth"
    assert n1.Weights.Passing == 1 and n1.NodeTaggedAddresses == {"lan": "10.0.0.1"}
    assert not hasattr(n1, "Meta")  # there is no .Meta on a health entry


def test_health_near_keeps_consul_order() -> None:
    body = [health_entry("n2", "10.0.0.2", 80), health_entry("n1", "10.0.0.1", 80)]
    assert [s.Node for s in parse_service("web~_agent").decode(body)] == ["n2", "n1"]


def test_health_client_side_filters() -> None:
    body = [
        health_entry("ok", "10.0.0.1", 80),
        health_entry("warn", "10.0.0.2", 80, checks=[("serfHealth", "passing"), ("http", "warning")]),
        health_entry("crit", "10.0.0.3", 80, checks=[("http", "critical"), ("x", "warning")]),
        health_entry("maint", "10.0.0.4", 80, checks=[("_node_maintenance", "critical")]),
    ]

    def nodes(q: str) -> list[str]:
        return [s.Node for s in parse_service(q).decode(body)]

    assert nodes("web|passing,warning") == ["ok", "warn"]
    assert nodes("web|critical") == ["crit"]
    assert nodes("web|maintenance") == ["maint"]
    assert nodes("web|any") == ["crit", "maint", "ok", "warn"]


def test_aggregated_status_precedence() -> None:
    assert aggregated_status([]) == "passing"
    assert aggregated_status(
        [{"CheckID": "a", "Status": "warning"}, {"CheckID": "b", "Status": "critical"}]
    ) == ("critical")
    assert aggregated_status([{"CheckID": "_service_maintenance:web", "Status": "critical"}]) == "maintenance"
    assert aggregated_status([{"CheckID": "a", "Status": "weird"}]) == ""


# --------------------------------------------------------------------------------------------
# catalog


def test_services_decode_sorted_snippets() -> None:
    d = parse_services("@dc2")
    assert d == CatalogServicesDep(dc="dc2")
    assert d.request().url() == "/v1/catalog/services?dc=dc2"
    out = d.decode({"web": ["b", "a"], "consul": []})
    assert [(s.Name, list(s.Tags)) for s in out] == [("consul", []), ("web", ["a", "b"])]
    assert parse_services().name() == "catalog.services"


def test_nodes_and_node() -> None:
    d = parse_nodes("@dc1~n3")
    assert d == CatalogNodesDep(dc="dc1", near="n3")
    assert d.request().url() == "/v1/catalog/nodes?dc=dc1&near=n3"
    nodes = parse_nodes().decode(
        [{"Node": "b", "Address": "2", "Meta": {"x": "y"}}, {"Node": "a", "Address": "1", "ID": "i"}]
    )
    assert [n.Node for n in nodes] == ["a", "b"] and nodes[1].Meta == {"x": "y"}

    nd = parse_node("n1@dc1")
    assert nd == CatalogNodeDep(node="n1", dc="dc1")
    assert nd.request().url() == "/v1/catalog/node/n1?dc=dc1"
    body = {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Services": {"b": {"ID": "b", "Service": "web", "Port": 80}, "a": {"ID": "a", "Service": "api"}},
    }
    cn = nd.decode(body)
    assert isinstance(cn, CatalogNode) and cn.Node is not None and cn.Node.Address == "10.0.0.1"
    assert [s.Service for s in cn.Services] == ["api", "web"]
    assert nd.decode(None) == CatalogNode()  # unknown node → empty object


def test_local_node_needs_agent_name() -> None:
    d = parse_node("")
    assert d.needs_local_node
    assert d.request(local_node="me").path == "/v1/catalog/node/me"
    with pytest.raises(ValueError):
        d.request()


def test_datacenters_not_blocking() -> None:
    d = datacenters_dep()
    assert d == CatalogDatacentersDep()
    assert d.request() == Request("/v1/catalog/datacenters", (), blocking=False)
    assert not d.blocking
    assert d.decode(["dc2", "dc1"]) == ["dc1", "dc2"]


# --------------------------------------------------------------------------------------------
# KV


def test_key_variants_are_distinct_keys() -> None:
    block = parse_kv_get("/service/redis/maxconns@dc1", block=True)
    get = parse_kv_get("service/redis/maxconns@dc1")
    assert block.path == "service/redis/maxconns"  # leading "/" dropped
    assert block.name() == "kv.block(service/redis/maxconns@dc1)"
    assert get.name() == "kv.get(service/redis/maxconns@dc1)"
    assert block != get and isinstance(get, KVGetDep)
    assert get.request().url() == "/v1/kv/service/redis/maxconns?dc=dc1"


def test_key_decode() -> None:
    d = parse_kv_get("foo")
    assert d.decode([kv_entry("foo", "bar")]) == "bar"
    assert d.decode(None) is None  # 404
    assert d.decode([kv_entry("foo", None)]) == ""  # exists, no value


def test_kv_list_request_and_relative_keys() -> None:
    d = parse_kv_list("service/redis")
    assert d == KVListDep(prefix="service/redis")
    assert d.request().url() == "/v1/kv/service/redis?recurse"
    assert d.name() == "kv.list(service/redis)"
    pairs = d.decode(
        [kv_entry("service/redis/maxconns", "15", flags=42), kv_entry("service/redis/nested/a", "x")]
    )
    assert pairs[0] == KeyPair(
        Path="service/redis/maxconns", Key="maxconns", Value="15", CreateIndex=10, ModifyIndex=10, Flags=42
    )
    assert pairs[1].Key == "nested/a"
    assert d.decode(None) == []


def test_file_dep_is_local() -> None:
    d = FileDep("/etc/hostname")
    assert d.request() is None and not d.blocking
    assert d.name() == "file(/etc/hostname)"


def test_dependency_keys_order_by_name() -> None:
    deps = [parse_service("web"), parse_kv_get("a"), parse_services()]
    assert [d.name() for d in sorted(deps)] == [
        "catalog.services",
        "health.service(web|passing)",
        "kv.get(a)",
    ]
