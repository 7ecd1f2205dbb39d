"""``toolkit.ops.watch``: the watch flags, the sans-IO change rules, the driver — no network, no sleeps."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from toolkit.client import ConsulError, Response
from toolkit.ops.watch import (
    Decision,
    WatchCore,
    WatchError,
    WatchSpec,
    handler_input,
    parse_bool,
    run_watch,
)


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def pair(key: str, value: str, modify_index: int) -> dict[str, Any]:
    return {"Key": key, "Value": value, "Flags": 0, "LockIndex": 0, "CreateIndex": 3, "ModifyIndex": modify_index}


def event(event_id: str, name: str = "deploy") -> dict[str, Any]:
    return {"ID": event_id, "Name": name, "Payload": "cGF5bG9hZA==", "NodeFilter": "", "ServiceFilter": "",
            "TagFilter": "", "Version": 1, "LTime": 0}


# ------------------------------------------------------------------ WatchSpec

@pytest.mark.parametrize(("kind", "flags", "path", "params"), [
    ("key", {"key": "app/cfg"}, "/v1/kv/app/cfg", {}),
    ("key", {"key": "/app/cfg", "stale": True}, "/v1/kv/app/cfg", {"stale": ""}),
    ("key", {"key": "odd key?#x"}, "/v1/kv/odd%20key%3F%23x", {}),
    ("keyprefix", {"prefix": "app/"}, "/v1/kv/app/", {"recurse": ""}),
    ("services", {}, "/v1/catalog/services", {}),
    ("nodes", {"filter": 'Node == "n1"'}, "/v1/catalog/nodes", {"filter": 'Node == "n1"'}),
    ("service", {"service": "web", "tag": ["v1", "blue"], "passingonly": True}, "/v1/health/service/web",
     {"tag": ["v1", "blue"], "passing": "1"}),
    ("service", {"service": "web", "passingonly": False}, "/v1/health/service/web", {}),
    ("service", {"service": "a/b"}, "/v1/health/service/a%2Fb", {}),
    ("checks", {}, "/v1/health/state/any", {}),
    ("checks", {"state": "critical", "datacenter": "dc2"}, "/v1/health/state/critical", {"dc": "dc2"}),
    ("checks", {"service": "web"}, "/v1/health/checks/web", {}),
    ("event", {}, "/v1/event/list", {}),
    ("event", {"name": "deploy"}, "/v1/event/list", {"name": "deploy"}),
])
def test_each_watch_type_maps_to_consuls_endpoint(kind: str, flags: dict[str, Any], path: str,
                                                  params: dict[str, Any]) -> None:
    """Consul's api/watch/funcs.go: which endpoint each -type reads, and with which query."""
    spec = WatchSpec.parse(kind, **flags)
    assert (spec.type, spec.path, spec.params) == (kind, path, params)


@pytest.mark.parametrize(("kind", "flags", "message"), [
    ("", {}, "Watch type must be specified"),
    ("kv", {}, "Unsupported watch type: kv"),
    ("key", {}, "-key"),
    ("keyprefix", {}, "-prefix"),
    ("key", {"key": "a/../b"}, "'..' path segments are not allowed"),
    ("keyprefix", {"prefix": "./"}, "'..' path segments are not allowed"),
    ("service", {}, "-service"),
    ("key", {"key": "k", "prefix": "p/"}, "-prefix cannot be used with -type key"),
    ("event", {"name": "x", "stale": True}, "-stale cannot be used with -type event"),
    ("services", {"service": "web", "tag": ["x"]}, "-service, -tag cannot be used with -type services"),
    ("checks", {"service": "web", "state": "passing"}, "Cannot specify service and state"),
    ("checks", {"state": "sad"}, "-state must be one of any, passing, warning, critical"),
])
def test_bad_watch_flags_name_the_flag(kind: str, flags: dict[str, Any], message: str) -> None:
    with pytest.raises(WatchError, match=message):
        WatchSpec.parse(kind, **flags)


def test_parse_bool_takes_gos_spellings_only() -> None:
    assert [parse_bool(v) for v in ("1", "t", "TRUE", "True", "0", "f", "false", "False")] == [True] * 4 + [False] * 4
    with pytest.raises(ValueError):
        parse_bool("yes")


def test_handler_input_is_compact_json_and_a_newline_like_gos_encoder() -> None:
    assert handler_input(None) == b"null\n"
    assert handler_input({"Key": "k", "Value": "é"}) == '{"Key":"k","Value":"é"}\n'.encode()


# ------------------------------------------------------------------ WatchCore: index and change rules

def test_first_request_does_not_block_and_later_ones_carry_index_and_wait() -> None:
    core = WatchCore(WatchSpec.parse("services"), wait_s=60)
    first = core.request()
    assert "index" not in first.params and "wait" not in first.params
    core.on_response(200, 42, body({"consul": []}), now=0)
    nxt = core.request()
    assert nxt.params["index"] == "42" and nxt.params["wait"] == "60000ms"
    assert nxt.timeout_s > 60 * (1 + 1 / 16), "the client must outwait the server's wait plus jitter"


def test_first_answer_fires_even_for_a_missing_key_which_is_null() -> None:
    """Consul runs the handler on the first result; a missing key is a nil pair, JSON null."""
    core = WatchCore(WatchSpec.parse("key", key="k"))
    d = core.on_response(404, 7, b"", now=0)
    assert d.fire and d.data is None and d.index == 7
    assert core.request().params["index"] == "7", "a missing key is blocked on like any other"


def test_key_watch_hands_over_the_pair_not_the_one_element_list() -> None:
    core = WatchCore(WatchSpec.parse("key", key="k"))
    d = core.on_response(200, 9, body([pair("k", "dg==", 9)]), now=0)
    assert d.fire and d.data == pair("k", "dg==", 9)


def test_same_index_is_a_spurious_wake_up_and_fires_nothing() -> None:
    """Consul docs (blocking queries): returning is not a guarantee of change, e.g. the wait expired."""
    core = WatchCore(WatchSpec.parse("keyprefix", prefix="app/"))
    assert core.on_response(200, 5, body([pair("app/a", "MQ==", 5)]), now=0).fire
    again = core.on_response(200, 5, body([pair("app/a", "MQ==", 5)]), now=10)
    assert again == Decision()
    assert core.request().params["index"] == "5"


def test_index_moved_but_data_equal_fires_nothing() -> None:
    """A coarse wake-up (another key under a different prefix was written): the view did not change."""
    core = WatchCore(WatchSpec.parse("services"))
    core.on_response(200, 5, body({"consul": []}), now=0)
    d = core.on_response(200, 8, body({"consul": []}), now=10)
    assert not d.fire
    assert core.request().params["index"] == "8", "the new index is still used for the next request"


def test_changed_data_fires_with_the_new_index() -> None:
    core = WatchCore(WatchSpec.parse("keyprefix", prefix="app/"))
    core.on_response(404, 4, b"", now=0)
    d = core.on_response(200, 6, body([pair("app/a", "MQ==", 6)]), now=10)
    assert d.fire and d.index == 6 and d.data == [pair("app/a", "MQ==", 6)]


def test_a_put_with_the_same_value_fires_because_modify_index_changed() -> None:
    """Consul deep-compares the decoded pairs, ModifyIndex included: rewriting a value is a change."""
    core = WatchCore(WatchSpec.parse("key", key="k"))
    core.on_response(200, 6, body([pair("k", "MQ==", 6)]), now=0)
    d = core.on_response(200, 7, body([pair("k", "MQ==", 7)]), now=10)
    assert d.fire and d.data["ModifyIndex"] == 7


def test_index_going_backwards_resets_to_a_non_blocking_read() -> None:
    """Consul docs: if the index goes backwards (snapshot restore...), reset it to 0 and re-read."""
    core = WatchCore(WatchSpec.parse("services"))
    core.on_response(200, 100, body({"consul": [], "web": []}), now=0)
    d = core.on_response(200, 40, body({"consul": []}), now=10)
    assert d.fire and d.data == {"consul": []}, "the restored view is new data"
    assert "index" not in core.request().params
    settled = core.on_response(200, 40, body({"consul": []}), now=20)
    assert not settled.fire
    assert core.request().params["index"] == "40"


def test_a_zero_index_never_turns_into_a_non_blocking_spin() -> None:
    """Consul docs: clients should treat an index below 1 as 1."""
    core = WatchCore(WatchSpec.parse("nodes"))
    core.on_response(200, 0, body([]), now=0)
    assert core.request().params["index"] == "1"


# ------------------------------------------------------------------ WatchCore: errors

def test_unreachable_agent_before_the_first_answer_is_fatal() -> None:
    """consul watch checks the agent before watching: a wrong address fails instead of retrying."""
    core = WatchCore(WatchSpec.parse("services"))
    d = core.on_error("cannot reach the agent at 127.0.0.1:1 (connection refused)", 0)
    assert d.fatal and "cannot reach" in (d.message or "")


def test_a_4xx_before_the_first_answer_is_fatal_but_a_5xx_is_retried() -> None:
    assert WatchCore(WatchSpec.parse("nodes", filter="bad ==")).on_response(
        400, 0, b"Failed to create boolean expression evaluator", now=0).fatal
    d = WatchCore(WatchSpec.parse("nodes")).on_response(500, 0, b"No cluster leader", now=0)
    assert not d.fatal and d.delay_s == 1.0 and "No cluster leader" in (d.message or "")


def test_errors_back_off_one_second_doubling_to_thirty() -> None:
    core = WatchCore(WatchSpec.parse("services"))
    core.on_response(200, 3, body({"consul": []}), now=0)
    delays = [core.on_error("the agent at x did not answer in time").delay_s for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert "index" not in core.request().params, "after an error the next read does not block"


def test_recovery_logs_once_and_an_unchanged_view_does_not_fire_again() -> None:
    core = WatchCore(WatchSpec.parse("services"))
    core.on_response(200, 3, body({"consul": []}), now=0)
    err = core.on_error("cannot reach the agent at x (connection refused)")
    assert not err.fatal and err.message == "watch: cannot reach the agent at x (connection refused); retrying in 1s"
    back = core.on_response(200, 3, body({"consul": []}), now=10)
    assert not back.fire and back.message == "watch: agent answering again"
    assert core.on_error("boom").delay_s == 1, "a success resets the backoff"


def test_an_agent_restarted_empty_fires_with_its_new_view() -> None:
    core = WatchCore(WatchSpec.parse("key", key="k"))
    core.on_response(200, 900, body([pair("k", "MQ==", 900)]), now=0)
    core.on_error("cannot reach the agent")
    d = core.on_response(404, 12, b"", now=5)
    assert d.fire and d.data is None and d.index == 12


@pytest.mark.parametrize(("status", "payload", "message"), [
    (200, b"<html>proxy</html>", "not JSON"),
    (404, b"", "Unexpected response code: 404"),
    (403, b"Permission denied", "Unexpected response code: 403 (Permission denied)"),
])
def test_bad_answers_are_errors_with_one_line(status: int, payload: bytes, message: str) -> None:
    core = WatchCore(WatchSpec.parse("services"))
    core.on_response(200, 3, body({}), now=0)
    d = core.on_response(status, 3, payload, now=1)
    assert not d.fire and d.delay_s == 1 and message in (d.message or "")


# ------------------------------------------------------------------ WatchCore: events

def test_event_watch_fires_first_with_every_event_then_only_with_new_ids() -> None:
    """Consul's eventWatch prunes to the events after the last one handled; ctk tracks them by ID."""
    core = WatchCore(WatchSpec.parse("event", name="deploy"))
    first = core.on_response(200, 0xA, body([event("e1"), event("e2")]), now=0)
    assert first.fire and [e["ID"] for e in first.data] == ["e1", "e2"]
    nxt = core.on_response(200, 0xB, body([event("e1"), event("e2"), event("e3")]), now=1)
    assert nxt.fire and [e["ID"] for e in nxt.data] == ["e3"] and nxt.index == 0xB


def test_event_watch_ignores_an_index_moved_by_another_names_event() -> None:
    """The list index hashes the agent's newest event of any name; a filtered list may not change."""
    core = WatchCore(WatchSpec.parse("event", name="deploy"))
    core.on_response(200, 0xA, body([event("e1")]), now=0)
    assert not core.on_response(200, 0xC, body([event("e1")]), now=1).fire
    assert core.request().params["index"] == str(0xC)


def test_event_index_is_a_hash_so_a_smaller_one_is_not_a_reset() -> None:
    core = WatchCore(WatchSpec.parse("event"))
    core.on_response(200, 2**63 + 5, body([event("e1")]), now=0)
    d = core.on_response(200, 17, body([event("e1"), event("e2")]), now=1)
    assert d.fire and [e["ID"] for e in d.data] == ["e2"]
    assert core.request().params["index"] == "17", "blocking resumes on the new hash, no re-read at 0"


def test_event_watch_with_no_events_yet_fires_an_empty_list_first() -> None:
    core = WatchCore(WatchSpec.parse("event", name="deploy"))
    d = core.on_response(200, 1, body([]), now=0)
    assert d.fire and d.data == []


# ------------------------------------------------------------------ WatchCore: rate limit

def test_fast_answers_are_rate_limited_after_a_burst() -> None:
    """A proxy that strips X-Consul-Index would make every read return at once; cap the loop."""
    core = WatchCore(WatchSpec.parse("services"), rate_per_s=10, burst=5)
    delays = [core.on_response(200, 3, body({}), now=0.0).delay_s for _ in range(7)]
    assert delays[:5] == [0, 0, 0, 0, 0] and delays[5] == pytest.approx(0.1) and delays[6] == pytest.approx(0.2)
    assert core.on_response(200, 3, body({}), now=60.0).delay_s == 0, "an idle minute refills the bucket"


# ------------------------------------------------------------------ run_watch driver

class FakeAgent:
    """Scripted answers (``Response``) or errors (``ConsulError``) for the driver, in order."""

    def __init__(self, script: list[Response | ConsulError]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                ok: tuple[int, ...] = (200,), timeout_s: float | None = None) -> Response:
        self.requests.append({"method": method, "path": path, "params": dict(params or {}), "timeout_s": timeout_s})
        item = self.script.pop(0)
        if isinstance(item, ConsulError):
            raise item
        return item


def answer(index: int, data: Any, status: int = 200) -> Response:
    return Response(status, httpx.Headers({"X-Consul-Index": str(index)}), body(data) if data is not None else b"")


def test_driver_fires_on_changes_sleeps_on_errors_and_stops_when_told() -> None:
    agent = FakeAgent([
        answer(3, {"consul": []}),
        answer(3, {"consul": []}),  # wait expired
        ConsulError("Unexpected response code: 500 (No cluster leader)", 500),
        ConsulError("cannot reach the agent at x (connection refused)"),
        answer(3, {"consul": []}),  # back, nothing new
        answer(9, {"consul": [], "web": ["v1"]}),
    ])
    fired: list[tuple[int, Any]] = []
    slept: list[float] = []
    logged: list[str] = []

    def on_change(index: int, data: Any) -> bool:
        fired.append((index, data))
        return len(fired) < 2

    run_watch(WatchCore(WatchSpec.parse("services")), agent, on_change, log=logged.append, sleep=slept.append,
              clock=lambda: 100.0 * len(agent.requests))
    assert fired == [(3, {"consul": []}), (9, {"consul": [], "web": ["v1"]})]
    assert slept == [1, 2]
    assert logged == ["watch: Unexpected response code: 500 (No cluster leader); retrying in 1s",
                      "watch: cannot reach the agent at x (connection refused); retrying in 2s",
                      "watch: agent answering again"]
    assert [r["params"].get("index") for r in agent.requests] == [None, "3", "3", None, None, "3"]
    assert all(r["method"] == "GET" and r["path"] == "/v1/catalog/services" for r in agent.requests)
    assert not agent.script


def test_driver_raises_a_one_line_error_when_the_agent_is_wrong_from_the_start() -> None:
    agent = FakeAgent([ConsulError("Unexpected response code: 403 (ACL not found)", 403)])
    with pytest.raises(WatchError, match=r"^Unexpected response code: 403 \(ACL not found\)$"):
        run_watch(WatchCore(WatchSpec.parse("nodes")), agent, lambda i, d: True, log=print, sleep=print)
