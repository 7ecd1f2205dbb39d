"""``?filter=``: Consul's go-bexpr expression language (``api-docs/features/filtering.mdx``).

The first half drives the sans-IO parser and evaluator directly (no agent, no sleeps); the second
half (``slow``) runs a real ``ctk agent -dev`` and checks every filterable endpoint over HTTP, with
raw httpx and with py-consul's ``filter_expr`` arguments.
"""

from __future__ import annotations

import threading
from typing import Any

import consul
import httpx
import pytest

from agent.http.encode import (
    agent_service_json,
    catalog_service_json,
    check_json,
    health_entry_json,
    node_json,
)
from agent.http.filter import (
    AGENT_SERVICE,
    CATALOG_SERVICE,
    HEALTH_CHECK,
    HEALTH_SERVICE_ENTRY,
    MAX_NESTING,
    MEMBER,
    NODE,
    And,
    Filter,
    FilterError,
    Match,
    Not,
    Op,
    Or,
    Shape,
    compile_filter,
    parse,
)
from agent.state.structs import HealthCheck, Node, ServiceInstance
from tests.agentproc import AgentProcess, wait_for

PREFIX = "Failed to create boolean expression evaluator: "


def m(selector: str, op: Op, value: str | None, negate: bool = False, spelling: str = "==") -> Match:
    return Match(tuple(selector.split(".")), op, negate, value, spelling)


# ------------------------------------------------------------------------------------------- parsing

def test_precedence_is_not_then_and_then_or() -> None:
    """Filtering doc: ``E1 and not E2 or E3`` is ``(E1 and (not E2)) or E3``."""
    a, b, c = m("a", Op.EQUAL, "1"), m("b", Op.EQUAL, "2"), m("c", Op.EQUAL, "3")
    assert parse("a == 1 and not b == 2 or c == 3") == Or((And((a, Not(b))), c))
    assert parse("a == 1 and not b == 2 or c == 3") == parse("( a == 1 and (not b == 2 )) or c == 3")
    assert parse("a == 1 or b == 2 and c == 3") == Or((a, And((b, c))))
    assert parse("(a == 1 or b == 2) and c == 3") == And((Or((a, b)), c))
    assert parse("a == 1 or b == 2 or c == 3") == Or((a, b, c))


def test_double_negation_cancels_and_parentheses_group() -> None:
    assert parse("not not a == 1") == m("a", Op.EQUAL, "1")
    assert parse("not (not (a == 1))") == m("a", Op.EQUAL, "1")
    assert parse("not not not a == 1") == Not(m("a", Op.EQUAL, "1"))
    assert parse("((a == 1))") == m("a", Op.EQUAL, "1")


def test_whitespace_is_insignificant_outside_strings() -> None:
    assert parse('Meta.env=="qa"') == parse(' Meta.env   ==\n\t"qa" ')
    spaced = parse('Meta.env == " qa "')
    assert isinstance(spaced, Match) and spaced.value == " qa "


@pytest.mark.parametrize(("text", "op", "negate", "value"), [
    ('Name == "x"', Op.EQUAL, False, "x"),
    ('Name != "x"', Op.EQUAL, True, "x"),
    ('"x" in Name', Op.IN, False, "x"),
    ('"x" not in Name', Op.IN, True, "x"),
    ('Name contains "x"', Op.IN, False, "x"),
    ('Name not contains "x"', Op.IN, True, "x"),
    ('Name matches "x"', Op.MATCHES, False, "x"),
    ('Name not matches "x"', Op.MATCHES, True, "x"),
    ("Name is empty", Op.IS_EMPTY, False, None),
    ("Name is not empty", Op.IS_EMPTY, True, None),
])
def test_every_match_operator(text: str, op: Op, negate: bool, value: str | None) -> None:
    """``contains`` is ``in`` with the operands swapped, as in go-bexpr."""
    node = parse(text)
    assert isinstance(node, Match)
    assert (node.selector, node.op, node.negate, node.value) == (("Name",), op, negate, value)


@pytest.mark.parametrize(("text", "selector"), [
    ("Meta.env is empty", ("Meta", "env")),
    ('Meta["key with spaces"] is empty', ("Meta", "key with spaces")),
    ('Meta[ `raw key` ] is empty', ("Meta", "raw key")),
    ('Service.Meta["a.b"].c is empty', ("Service", "Meta", "a.b", "c")),
    ("Meta.0 is empty", ("Meta", "0")),
    ("Service.Tags is empty", ("Service", "Tags")),
    ("in_use is empty", ("in_use",)),  # a keyword prefix is still an identifier
    ("Meta.not is empty", ("Meta", "not")),  # keywords are fine after the first segment
])
def test_selectors(text: str, selector: tuple[str, ...]) -> None:
    node = parse(text)
    assert isinstance(node, Match) and node.selector == selector


@pytest.mark.parametrize(("text", "value"), [
    (r'a == "tab\there"', "tab\there"),
    (r'a == "q\"uote"', 'q"uote'),
    (r'a == "\u00e9\x41\101\\"', "éAA\\"),
    (r'a == "\xc3\xa9"', "é"),  # \x is a byte, as in Go strings
    (r"a == `raw \n stays`", r"raw \n stays"),
    ("a == 42", "42"),
    ("a == -1.5", "-1.5"),
    ("a == 0", "0"),
    ("a == passing", "passing"),  # a bare selector stands for its own text
    ("a == host.example", "host.example"),
    ("a == empty", "empty"),
])
def test_values(text: str, value: str) -> None:
    node = parse(text)
    assert isinstance(node, Match) and node.value == value


@pytest.mark.parametrize(("text", "message"), [
    ("", "1:1 (0): expected a selector or a value, found end of input"),
    ("Meta.env ==", '1:12 (11): expected a value after "==", found end of input'),
    ('== "x"', "1:1 (0): expected a selector or a value"),
    ('a == 1 and', "1:11 (10): expected a selector or a value, found end of input"),
    ("(a == 1", "1:1 (0): Unmatched parentheses"),
    ("a == 1)", '1:7 (6): expected "and", "or" or end of input, found ")"'),
    ("a = 1", '1:3 (2): unexpected character "="'),
    ("a == 1 b == 2", '1:8 (7): expected "and", "or" or end of input, found "b"'),
    ('"x" in "y"', "Invalid selector"),
    ('"x" == a', 'expected a selector before "=="'),
    ("a == 1abc", "1:6 (5): Invalid number literal"),
    ("a == 01", "Invalid number literal"),
    ("a == 0x1f", "Invalid number literal"),  # only quoted: "0x1f"
    ('a == "open', "1:6 (5): Unterminated string literal"),
    ("a == `open", "Unterminated string literal"),
    ('a == "line\nbreak"', "newline in string literal"),
    (r'a == "\q"', r"invalid escape sequence \q"),
    ("Meta[x] == 1", "Invalid index"),
    ('Meta["x" == 1', "1:5 (4): Unclosed index expression"),
    ("Meta. == 1", "Invalid selector"),
    ("a is full", 'expected "empty" after "is"'),
    ('a like "x"', "expected an operator"),
    ('a not "x"', "expected an operator"),
    ("a == 1 AND b == 2", 'found "AND"'),  # keywords are lower case
    ("Node == host-name", 'unexpected character "-"'),  # consul#6467: quote such values
    ("a == 1 and\n  b ==", "2:7 (17): expected a value"),
])
def test_syntax_errors_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(FilterError) as err:
        parse(text)
    assert message in str(err.value)


def test_nesting_is_bounded() -> None:
    """A hostile request must get a 400, not exhaust the parser's stack."""
    deep = "(" * (MAX_NESTING + 1) + "a == 1" + ")" * (MAX_NESTING + 1)
    with pytest.raises(FilterError, match="nests too deeply"):
        parse(deep)
    with pytest.raises(FilterError, match="nests too deeply"):
        parse("not " * (MAX_NESTING + 1) + "a == 1")
    ok = "(" * MAX_NESTING + "a == 1" + ")" * MAX_NESTING
    assert parse(ok) == m("a", Op.EQUAL, "1")


# ------------------------------------------------------------------------------------- evaluation

# The Filtering doc's agent example: three redis instances.
REDIS = {
    "redis1": {"ID": "redis1", "Service": "redis", "Tags": ["primary", "production"],
               "Meta": {"env": "production", "foo": "bar"}, "Port": 1234, "Address": "",
               "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False},
    "redis2": {"ID": "redis2", "Service": "redis", "Tags": ["secondary", "production"],
               "Meta": {"env": "production", "foo": "bar"}, "Port": 1235, "Address": "",
               "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False},
    "redis3": {"ID": "redis3", "Service": "redis", "Tags": ["primary", "qa"], "Meta": {"env": "qa"},
               "Port": 1234, "Address": "", "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False},
}


def _catalog_entry(node: str, os: str | None, tags: list[str], env: str, port: int = 9090) -> dict[str, Any]:
    return {"ID": f"id-{node}", "Node": node, "Address": "198.18.0.1", "Datacenter": "dc1",
            "TaggedAddresses": None, "NodeMeta": {"os": os, "arch": "arm"} if os else None,
            "ServiceKind": "", "ServiceID": "api-internal", "ServiceName": "api-internal", "ServiceTags": tags,
            "ServiceAddress": "", "ServiceTaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
            "ServiceWeights": {"Passing": 1, "Warning": 1}, "ServiceMeta": {"environment": env},
            "ServicePort": port, "ServiceEnableTagOverride": False, "ServiceProxy": {}, "ServiceConnect": {},
            "CreateIndex": 30, "ModifyIndex": 30}


# The Filtering doc's catalog example, plus a node with no meta at all (NodeMeta: null).
API_INTERNAL = [
    _catalog_entry("node-1", "darwin", ["tag"], "qa"),
    _catalog_entry("node-2", "linux", ["test", "tag"], "production"),
    _catalog_entry("node-4", "freebsd", [], "qa"),
    _catalog_entry("node-5", None, ["tag"], "qa", port=8080),
]


def nodes_matching(expr: str) -> list[str]:
    return [e["Node"] for e in compile_filter(expr, CATALOG_SERVICE).select(API_INTERNAL)]


def test_docs_agent_example_filters_map_values() -> None:
    """Filtering doc, agent API: ``Meta.env == "qa"`` keeps redis3, keyed as before."""
    out = compile_filter('Meta.env == "qa"', AGENT_SERVICE).select_values(REDIS)
    assert out == {"redis3": REDIS["redis3"]}


def test_docs_catalog_example() -> None:
    """Filtering doc, catalog API: ``NodeMeta.os == "linux"``."""
    assert nodes_matching('NodeMeta.os == "linux"') == ["node-2"]


def test_docs_health_example() -> None:
    """Filtering doc, health API: ``ServiceName != ""`` drops the node-level check."""
    checks = [{"Node": "node-1", "CheckID": "node-health", "Name": "Node level check", "Status": "critical",
               "ServiceID": "", "ServiceName": "", "ServiceTags": []},
              {"Node": "node-1", "CheckID": "svc-web-health", "Name": "Service level check - web",
               "Status": "warning", "ServiceID": "", "ServiceName": "web", "ServiceTags": []}]
    out = compile_filter('ServiceName != ""', HEALTH_CHECK).select(checks)
    assert [c["CheckID"] for c in out] == ["svc-web-health"]


@pytest.mark.parametrize(("expr", "expected"), [
    # strings: equality, substring, regex, emptiness
    ('Node == "node-1"', ["node-1"]),
    ('Node != "node-1"', ["node-2", "node-4", "node-5"]),
    ('"-4" in Node', ["node-4"]),
    ('"-4" not in Node', ["node-1", "node-2", "node-5"]),
    ('Node contains "-2"', ["node-2"]),
    ('Node matches "[45]$"', ["node-4", "node-5"]),
    ('Node matches "ode"', ["node-1", "node-2", "node-4", "node-5"]),  # unanchored, as RE2's Match
    ('Node not matches "^node-[12]"', ["node-4", "node-5"]),
    ("ServiceAddress is empty", ["node-1", "node-2", "node-4", "node-5"]),
    ("Address is not empty", ["node-1", "node-2", "node-4", "node-5"]),
    # lists of strings
    ('"test" in ServiceTags', ["node-2"]),
    ('ServiceTags contains "tag"', ["node-1", "node-2", "node-5"]),
    ('ServiceTags not contains "tag"', ["node-4"]),
    ('"tag" not in ServiceTags', ["node-4"]),
    ("ServiceTags is empty", ["node-4"]),
    ("ServiceTags is not empty", ["node-1", "node-2", "node-5"]),
    # maps: keys, values, emptiness (a null map is empty)
    ('"os" in NodeMeta', ["node-1", "node-2", "node-4"]),
    ('"os" not in NodeMeta', ["node-5"]),
    ("NodeMeta is empty", ["node-5"]),
    ("NodeMeta is not empty", ["node-1", "node-2", "node-4"]),
    ('NodeMeta["os"] == `freebsd`', ["node-4"]),
    ("NodeMeta.os matches `^(darwin|linux)$`", ["node-1", "node-2"]),
    ("TaggedAddresses is empty", ["node-1", "node-2", "node-4", "node-5"]),
    ("ServiceTaggedAddresses.lan.Port == 80", ["node-1", "node-2", "node-4", "node-5"]),
    ('ServiceTaggedAddresses.wan.Address == "x"', []),
    # numbers compare numerically, whatever the spelling; booleans take Go's spellings
    ("ServicePort == 8080", ["node-5"]),
    ('ServicePort == "8080"', ["node-5"]),
    ('ServicePort == "0x1f90"', ["node-5"]),  # Go's ParseInt base 0: hex, octal (017), binary
    ('ServicePort == "017620"', ["node-5"]),
    ("ServicePort != 8080", ["node-1", "node-2", "node-4"]),
    ("ServiceWeights.Passing == 1", ["node-1", "node-2", "node-4", "node-5"]),
    ("ServiceEnableTagOverride == false", ["node-1", "node-2", "node-4", "node-5"]),
    ("ServiceEnableTagOverride == t", []),
    ('ServiceEnableTagOverride != "1"', ["node-1", "node-2", "node-4", "node-5"]),
    # Connect/proxy selectors Consul documents: present, zero-valued
    ("ServiceConnect.Native == false", ["node-1", "node-2", "node-4", "node-5"]),
    ("ServiceProxy.Upstreams is empty", ["node-1", "node-2", "node-4", "node-5"]),
    ('ServiceProxy.DestinationServiceName == ""', ["node-1", "node-2", "node-4", "node-5"]),
    # combinations
    ('ServiceMeta.environment == qa and not NodeMeta.os == "darwin"', ["node-4", "node-5"]),
    ('NodeMeta.os == linux or ServicePort == 8080 and "tag" in ServiceTags', ["node-2", "node-5"]),
    ('(NodeMeta.os == linux or ServicePort == 8080) and ServiceTags is empty', []),
    ('not (Node == "node-1" or Node == "node-2")', ["node-4", "node-5"]),
])
def test_operators_on_a_catalog_result(expr: str, expected: list[str]) -> None:
    assert nodes_matching(expr) == expected


@pytest.mark.parametrize(("expr", "expected"), [
    # go-bexpr: a missing map key is equal to nothing, contains nothing, matches nothing, and is empty
    ('NodeMeta.missing == ""', []),
    ('NodeMeta.missing != "x"', ["node-1", "node-2", "node-4", "node-5"]),
    ('"x" in NodeMeta.missing', []),
    ('"x" not in NodeMeta.missing', ["node-1", "node-2", "node-4", "node-5"]),
    ("NodeMeta.missing is empty", ["node-1", "node-2", "node-4", "node-5"]),
    ("NodeMeta.missing is not empty", []),
    ('NodeMeta.missing matches ".*"', []),
    ('NodeMeta.missing not matches "x"', ["node-1", "node-2", "node-4", "node-5"]),
    # on a null map (node-5) the same holds for a key that others do have
    ('NodeMeta.os != "linux"', ["node-1", "node-4", "node-5"]),
    ('NodeMeta.os == ""', []),
])
def test_missing_map_keys(expr: str, expected: list[str]) -> None:
    assert nodes_matching(expr) == expected


def _health_entry(node: str, statuses: list[str], env: str) -> dict[str, Any]:
    return {"Node": {"Node": node, "Meta": {"rack": "r1"}},
            "Service": {"ID": f"web-{node}", "Service": "web", "Tags": ["v1"], "Meta": {"env": env},
                        "Port": 80},
            "Checks": [{"CheckID": f"c{i}", "Status": s, "ServiceTags": ["v1"]} for i, s in enumerate(statuses)]}


HEALTH = [_health_entry("a", ["passing", "passing"], "prod"), _health_entry("b", ["passing", "critical"], "prod"),
          _health_entry("c", [], "qa")]


@pytest.mark.parametrize(("expr", "expected"), [
    ('Checks.Status == "critical"', ["b"]),
    ('Checks.Status == "passing"', ["a", "b"]),
    ('Checks.Status != "passing"', ["b"]),  # any check not passing; an empty list matches nothing
    ('not Checks.Status != "passing"', ["a", "c"]),  # every check passing (vacuously, for none)
    ("Checks is empty", ["c"]),
    ('"v1" in Checks.ServiceTags', ["a", "b"]),
    ('Service.Meta.env == prod and Node.Meta.rack == r1', ["a", "b"]),
    ('Service.Tags contains "v1" and Service.Port == 80', ["a", "b", "c"]),
    ('Node.Node matches "^[ac]$"', ["a", "c"]),
])
def test_lists_of_objects_match_when_any_element_does(expr: str, expected: list[str]) -> None:
    """go-bexpr walks a selector through a list of structs (``Checks.Status``) as an implicit *any*."""
    out = compile_filter(expr, HEALTH_SERVICE_ENTRY).select(HEALTH)
    assert [e["Node"]["Node"] for e in out] == expected


@pytest.mark.parametrize(("shape", "expr", "message"), [
    (CATALOG_SERVICE, 'Foo == "x"', 'Selector "Foo" is not valid'),
    (CATALOG_SERVICE, 'ServiceWeights.Critical == 1', 'Selector "ServiceWeights.Critical" is not valid'),
    (CATALOG_SERVICE, 'ServiceTags.x == "y"', 'Selector "ServiceTags.x" is not valid'),
    (CATALOG_SERVICE, 'NodeMeta.a.b == "y"', 'Selector "NodeMeta.a.b" is not valid'),
    (CATALOG_SERVICE, '"x" in Meta', 'Selector "Meta" is not valid'),  # Meta is NodeMeta here
    (HEALTH_SERVICE_ENTRY, 'Service.Name == "web"', 'Selector "Service.Name" is not valid'),
    (HEALTH_SERVICE_ENTRY, 'Checks.Foo == "x"', 'Selector "Checks.Foo" is not valid'),
    (NODE, 'node == "x"', 'Selector "node" is not valid'),  # selectors are case-sensitive
    (CATALOG_SERVICE, 'ServiceTags == "x"', 'Invalid match operator "==" for selector "ServiceTags"'),
    (CATALOG_SERVICE, '"8" in ServicePort', 'Invalid match operator "in" for selector "ServicePort"'),
    (CATALOG_SERVICE, 'ServicePort matches "8"', 'Invalid match operator "matches" for selector "ServicePort"'),
    (CATALOG_SERVICE, "ServicePort is empty", 'Invalid match operator "is empty" for selector "ServicePort"'),
    (CATALOG_SERVICE, "ServiceWeights is empty", 'Invalid match operator "is empty"'),
    (CATALOG_SERVICE, 'NodeMeta == "x"', 'Invalid match operator "==" for selector "NodeMeta"'),
    (CATALOG_SERVICE, 'ServiceProxy.Upstreams contains "x"', 'Invalid match operator "contains"'),
    (CATALOG_SERVICE, "ServicePort == abc", 'Failed to coerce value "abc" for selector "ServicePort"'),
    (CATALOG_SERVICE, "ServicePort == 1.5", 'Failed to coerce value "1.5"'),
    (CATALOG_SERVICE, "ServiceEnableTagOverride == yes", 'Failed to coerce value "yes"'),
    (CATALOG_SERVICE, 'Node matches "("', 'Failed to compile regular expression "("'),
    (CATALOG_SERVICE, 'Node matches "a(?=b)"', "invalid perl operator: (?="),
    (CATALOG_SERVICE, r'Node matches "(a)\\1"', r"invalid escape sequence: \1"),
    (CATALOG_SERVICE, 'Node matches "a++"', "bad repetition operator: ++"),
])
def test_validation_against_the_result_shape(shape: Shape, expr: str, message: str) -> None:
    """go-bexpr validates selectors, operators and values against the type before evaluating."""
    with pytest.raises(FilterError) as err:
        compile_filter(expr, shape)
    assert message in str(err.value)


def test_re2_only_patterns_mean_the_same() -> None:
    """Escapes and classes are not mistaken for Perl syntax; ``\\z`` is RE2's end of text."""
    catastrophic = compile_filter(r'Node matches "(a+)+$"', NODE)  # exponential in a backtracking engine
    assert catastrophic.select([{"Node": "a" * 100_000 + "b"}]) == []  # RE2: linear, returns at once
    entries = [{"Node": "a+b"}, {"Node": "ab"}, {"Node": "x\\1"}]
    assert [e["Node"] for e in compile_filter(r'Node matches "^[*+]+$|a\\+b"', NODE).select(entries)] == ["a+b"]
    assert [e["Node"] for e in compile_filter(r'Node matches `b\z`', NODE).select(entries)] == ["a+b", "ab"]
    assert [e["Node"] for e in compile_filter(r"Node matches `\\1`", NODE).select(entries)] == ["x\\1"]


def test_map_typed_fields_accept_any_key() -> None:
    for expr in ('Meta["any key at all"] == "x"', "TaggedAddresses.lan_ipv4 == x", "Meta.k1_b matches x"):
        assert compile_filter(expr, NODE).matches({"Meta": {}}) is False


def test_empty_expression_is_no_filter() -> None:
    """Consul ignores ``?filter=`` with no value; the filter passes entries through untouched."""
    flt = compile_filter("", NODE)
    assert flt.matches_everything and flt.select(API_INTERNAL) == API_INTERNAL
    assert flt.select_values(REDIS) == REDIS and flt.select_values(REDIS) is not REDIS
    assert not compile_filter("Node == x", NODE).matches_everything


def test_compiled_filters_are_shared_per_expression_and_shape() -> None:
    """Thousands of blocking queries with one ``?filter=`` compile it once."""
    assert compile_filter("Node == x", NODE) is compile_filter("Node == x", NODE)
    assert compile_filter("Node == x", NODE) is not compile_filter("Node == x", CATALOG_SERVICE)
    assert isinstance(compile_filter("Node == x", NODE), Filter)


def test_shapes_cover_every_field_ctk_returns() -> None:
    """Each key the encoders emit must be a selector of its endpoint's shape (guards against drift)."""
    n = Node(node="n1", address="10.0.0.1", id="x", tagged_addresses={"lan": "10.0.0.1"}, meta={"a": "b"})
    s = ServiceInstance(node="n1", id="web-1", service="web", tags=["t"], kind="connect-proxy",
                        tagged_addresses={"lan": {"Address": "10.0.0.1", "Port": 80}}, meta={"k": "v"})
    c = HealthCheck(node="n1", check_id="c", name="c", service_id="web-1", service_name="web",
                    definition={"HTTP": "http://x", "Header": {"A": ["b"]}, "TLSSkipVerify": True, "TCP": "x:1"})
    samples: list[tuple[Shape, dict[str, Any]]] = [
        (NODE, node_json(n, "dc1")),
        (CATALOG_SERVICE, catalog_service_json(n, s, "dc1")),
        (AGENT_SERVICE, agent_service_json(s, "dc1")),
        (HEALTH_CHECK, check_json(c)),
        (HEALTH_SERVICE_ENTRY, health_entry_json(n, s, [c], "dc1")),
    ]
    for shape, sample in samples:
        for selector in _selectors(sample):
            _valid_selector(shape, selector)
    for key in ("Name", "Addr", "Port", "Tags", "Status", "ProtocolCur", "DelegateCur"):
        _valid_selector(MEMBER, key)


def _selectors(value: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted path in a JSON object, descending into objects and lists of objects."""
    out = []
    for key, sub in value.items():
        out.append(prefix + key)
        items = sub if isinstance(sub, list) else [sub]
        for item in items:
            if isinstance(item, dict):
                out += _selectors(item, f"{prefix}{key}.")
    return out


def _valid_selector(shape: Shape, selector: str) -> None:
    """A selector is valid iff some operator gets past the selector check (operators vary by type)."""
    errors = []
    for op in ('== "1"', "is empty", 'contains "1"'):
        try:
            compile_filter(f"{selector} {op}", shape)
            return
        except FilterError as err:
            errors.append(str(err))
    assert not any("is not valid" in e for e in errors), (selector, errors)


def test_values_typed_by_the_field_evaluate_against_real_encoder_output() -> None:
    n = Node(node="n1", address="10.0.0.1", meta={"rack": "r1"})
    s = ServiceInstance(node="n1", id="web-1", service="web", tags=["v2"], port=8080, enable_tag_override=True)
    entry = catalog_service_json(n, s, "dc1")
    for expr in ("ServicePort == 8080", "ServiceEnableTagOverride == true", 'NodeMeta.rack == "r1"',
                 '"v2" in ServiceTags', "ServiceWeights.Warning == 1", 'Datacenter == "dc1"',
                 "TaggedAddresses is empty", "ServiceProxy.LocalServicePort == 0"):
        assert compile_filter(expr, CATALOG_SERVICE).matches(entry), expr


# --------------------------------------------------------------------------------- a real agent

@pytest.fixture(scope="module")
def http(dev_agent: AgentProcess) -> httpx.Client:
    """The agent with the Filtering doc's redis instances and a few catalog-only nodes registered."""
    client = httpx.Client(base_url=dev_agent.url, timeout=5)
    for sid, svc in REDIS.items():
        body = {"ID": sid, "Name": "redis", "Tags": svc["Tags"], "Meta": svc["Meta"], "Port": svc["Port"],
                "Check": {"TTL": "30s"}}
        assert client.put("/v1/agent/service/register", json=body).status_code == 200
    assert client.put("/v1/agent/check/pass/service:redis1").status_code == 200
    for name, os in (("node-2", "linux"), ("node-4", "freebsd")):
        body = {"Node": name, "Address": "198.18.0.2", "NodeMeta": {"os": os},
                "Service": {"ID": "api-internal", "Service": "api-internal", "Port": 9090,
                            "Tags": ["tag"], "Meta": {"environment": "production" if os == "linux" else "qa"}},
                "Check": {"CheckID": "node-health", "Name": "node level", "Status": "critical"}}
        assert client.put("/v1/catalog/register", json=body).json() is True
    # Anti-entropy carries the agent's services and check states to the catalog.
    wait_for(lambda: [c["ServiceID"] for c in client.get("/v1/health/state/passing").json()
                      if c["ServiceID"].startswith("redis")] == ["redis1"]
             and len(client.get("/v1/catalog/service/redis").json()) == 3)
    return client


def get(http: httpx.Client, path: str, expr: str, **params: str) -> Any:
    r = http.get(path, params={"filter": expr, **params})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_agent_services_and_checks(http: httpx.Client) -> None:
    assert set(get(http, "/v1/agent/services", 'Meta.env == "qa"')) == {"redis3"}
    assert set(get(http, "/v1/agent/services", '"primary" in Tags and Port == 1234')) == {"redis1", "redis3"}
    assert set(get(http, "/v1/agent/services", "")) == {"redis1", "redis2", "redis3"}
    checks = get(http, "/v1/agent/checks", "Status == passing")
    assert set(checks) == {"service:redis1"} and checks["service:redis1"]["ServiceName"] == "redis"
    assert set(get(http, "/v1/agent/checks", '"secondary" in ServiceTags')) == {"service:redis2"}


@pytest.mark.slow
def test_agent_members(http: httpx.Client) -> None:
    assert [m["Name"] for m in get(http, "/v1/agent/members", "Name == n1 and Status == 1")] == ["n1"]
    assert get(http, "/v1/agent/members", "Name != n1") == []


@pytest.mark.slow
def test_catalog_endpoints(http: httpx.Client) -> None:
    assert [n["Node"] for n in get(http, "/v1/catalog/nodes", 'Meta.os == "linux"')] == ["node-2"]
    assert [n["Node"] for n in get(http, "/v1/catalog/nodes", '"os" not in Meta or Meta.os == freebsd')] \
        == ["n1", "node-4"]
    # keys that are not identifiers take the bracket form (the dev node's meta, as in Consul)
    assert [n["Node"] for n in get(http, "/v1/catalog/nodes", 'Meta["consul-network-segment"] == ""')] == ["n1"]
    redis = get(http, "/v1/catalog/service/redis", '"primary" in ServiceTags')
    assert sorted(e["ServiceID"] for e in redis) == ["redis1", "redis3"]
    api = get(http, "/v1/catalog/service/api-internal", 'NodeMeta.os == "linux"')
    assert [e["Node"] for e in api] == ["node-2"]
    # catalog/services filters instances, then lists names with the tags of the instances that matched
    assert get(http, "/v1/catalog/services", "ServiceMeta.env == qa") == {"redis": ["primary", "qa"]}
    assert get(http, "/v1/catalog/services", "NodeMeta.os == linux") == {"api-internal": ["tag"]}
    assert "consul" in get(http, "/v1/catalog/services", "")
    listed = get(http, "/v1/catalog/node-services/n1", "Service == redis and Port == 1235")
    assert listed["Node"]["Node"] == "n1" and [s["ID"] for s in listed["Services"]] == ["redis2"]
    mapped = get(http, "/v1/catalog/node/n1", 'Meta.env == "production"')
    assert set(mapped["Services"]) == {"redis1", "redis2"}


@pytest.mark.slow
def test_health_endpoints(http: httpx.Client) -> None:
    node_checks = get(http, "/v1/health/node/n1", 'ServiceName != ""')
    assert node_checks and all(c["ServiceName"] == "redis" for c in node_checks)
    assert [c["CheckID"] for c in get(http, "/v1/health/node/n1", "CheckID == serfHealth")] == ["serfHealth"]
    assert [c["ServiceID"] for c in get(http, "/v1/health/checks/redis", "Status == passing")] == ["redis1"]
    critical = get(http, "/v1/health/state/critical", "Node matches `^node-`")
    assert sorted(c["Node"] for c in critical) == ["node-2", "node-4"]
    assert get(http, "/v1/health/state/any", 'Node == "nobody"') == []
    entries = get(http, "/v1/health/service/redis", 'Service.Meta.env == production and Checks.Status == critical')
    assert [e["Service"]["ID"] for e in entries] == ["redis2"]
    entries = get(http, "/v1/health/service/redis", 'Node.Node == n1 and not Checks.Status != passing')
    assert [e["Service"]["ID"] for e in entries] == ["redis1"]


FILTERABLE = ["/v1/agent/services", "/v1/agent/checks", "/v1/agent/members", "/v1/catalog/nodes",
              "/v1/catalog/services", "/v1/catalog/service/redis", "/v1/catalog/node/n1",
              "/v1/catalog/node-services/n1", "/v1/health/node/n1", "/v1/health/checks/redis",
              "/v1/health/state/any", "/v1/health/service/redis"]


@pytest.mark.slow
@pytest.mark.parametrize("path", FILTERABLE)
def test_invalid_expressions_are_400_on_every_filterable_endpoint(http: httpx.Client, path: str) -> None:
    """Never unfiltered data for a filter the agent did not understand; the reason says why.

    ``index``/``wait`` are set: the expression is checked before the query blocks, so this is
    answered at once (the client's 5 s timeout would fail a 30 s long-poll)."""
    r = http.get(path, params={"filter": "Foo == ", "index": "999999", "wait": "30s"})
    assert r.status_code == 400 and r.text.startswith(PREFIX), r.text
    assert "expected a value" in r.text
    r = http.get(path, params={"filter": "NoSuchField == x", "index": "999999", "wait": "30s"})
    assert r.status_code == 400 and r.text == PREFIX + 'Selector "NoSuchField" is not valid'


@pytest.mark.slow
def test_filtered_bodies_do_not_share_the_unfiltered_cache_entry(http: httpx.Client) -> None:
    """The body cache encodes once per (query, index): a filtered answer must never be replayed
    to an unfiltered query at the same index, nor the other way round."""
    full = http.get("/v1/catalog/service/redis")
    index = full.headers["X-Consul-Index"]
    for _ in range(2):
        filtered = http.get("/v1/catalog/service/redis", params={"filter": "ServiceID == redis2"})
        again = http.get("/v1/catalog/service/redis")
        assert filtered.headers["X-Consul-Index"] == again.headers["X-Consul-Index"] == index
        assert [e["ServiceID"] for e in filtered.json()] == ["redis2"]
        assert again.json() == full.json() and len(again.json()) == 3


@pytest.mark.slow
def test_blocking_query_with_a_filter_blocks_on_the_unfiltered_index(http: httpx.Client) -> None:
    """As in Consul, the filter does not change the index: a write to the table wakes the query even
    when the filtered answer stays the same."""
    r = http.get("/v1/catalog/nodes", params={"filter": "Meta.os == linux"})
    index = int(r.headers["X-Consul-Index"])
    assert int(http.get("/v1/catalog/nodes").headers["X-Consul-Index"]) == index
    result: dict[str, httpx.Response] = {}

    def long_poll() -> None:
        result["r"] = http.get("/v1/catalog/nodes", params={"filter": "Meta.os == linux", "index": str(index),
                                                            "wait": "4s"})

    t = threading.Thread(target=long_poll)
    t.start()
    body = {"Node": "node-9", "Address": "198.18.0.9", "NodeMeta": {"os": "plan9"}}
    assert http.put("/v1/catalog/register", json=body).json() is True
    t.join(timeout=5)
    woke = result["r"]
    assert woke.status_code == 200 and int(woke.headers["X-Consul-Index"]) > index
    assert [n["Node"] for n in woke.json()] == ["node-2"]


@pytest.mark.slow
def test_pyconsul_filter_expr(dev_agent: AgentProcess, http: httpx.Client) -> None:
    """py-consul passes ``filter_expr`` as ``?filter=`` on its agent, catalog and health calls."""
    c = consul.Consul(host=dev_agent.host, port=dev_agent.http_port)
    assert set(c.agent.services(filter_expr='Meta.env == "qa"')) == {"redis3"}
    _, nodes = c.catalog.nodes(filter_expr='Meta.os == "linux"')
    assert [n["Node"] for n in nodes] == ["node-2"]
    _, services = c.catalog.services(filter_expr="ServiceMeta.env == qa")
    assert services == {"redis": ["primary", "qa"]}
    _, entries = c.health.service("redis", filter_expr='"secondary" in Service.Tags')
    assert [e["Service"]["ID"] for e in entries] == ["redis2"]
    _, checks = c.health.state("any", filter_expr="Status == passing and ServiceID == redis1")
    assert [ch["CheckID"] for ch in checks] == ["service:redis1"]
    with pytest.raises(consul.ConsulException, match="is not valid"):
        c.catalog.nodes(filter_expr="Bogus == 1")
