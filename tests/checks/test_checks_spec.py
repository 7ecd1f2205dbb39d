"""CheckSpec.from_definition: Consul's validation texts, defaults and clamps; the script-check policy."""

from __future__ import annotations

import logging

import pytest

from agent.checks import (
    CheckSpec,
    InvalidCheck,
    ScriptChecksDisabled,
    require_script_checks_allowed,
    script_checks_allowed,
)


def spec(**d: object) -> CheckSpec:
    return CheckSpec.from_definition(d)


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        (
            {"http": "http://127.0.0.1/", "interval": "10s", "ttl": "10s"},
            "Interval and TTL cannot both be specified",
        ),
        (
            {"http": "http://127.0.0.1/"},
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
        ),
        (
            {"tcp": "127.0.0.1:1", "interval": "0s"},
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
        ),
        ({"args": ["true"]}, "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
        ({"script": "true"}, "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
        ({}, "TTL must be > 0 for TTL checks"),
        ({"ttl": "0s"}, "TTL must be > 0 for TTL checks"),
        ({"interval": "10s"}, "TTL must be > 0 for TTL checks"),
        ({"ttl": "10s", "outputmaxsize": -1}, "MaxOutputMaxSize must be positive"),
        (
            {"ttl": "10s", "failuresbeforewarning": 3, "failuresbeforecritical": 2},
            "FailuresBeforeWarning can't be higher than FailuresBeforeCritical",
        ),
        ({"ttl": "10s", "status": "ok"}, "Status for checks must 'passing', 'warning', 'critical'"),
        ({"aliasservice": "web", "ttl": "5s"}, "TTL must be not be set for Alias checks"),
        (
            {"aliasservice": "web", "tcp": "127.0.0.1:1", "interval": "5s"},
            "Interval cannot be set for Alias checks",
        ),
    ],
)
def test_consul_validation_texts(definition: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidCheck) as err:
        CheckSpec.from_definition(definition)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("definition", "kind"),
    [
        ({"grpc": "127.0.0.1:1", "interval": "5s"}, "grpc"),
        ({"udp": "127.0.0.1:1", "interval": "5s"}, "udp"),
        ({"h2ping": "127.0.0.1:1", "interval": "5s"}, "h2ping"),
        ({"osservice": "nginx", "interval": "5s"}, "os_service"),
        ({"args": ["true"], "dockercontainerid": "abc", "interval": "5s"}, "docker"),
        ({"aliasservice": "web"}, "alias"),
    ],
)
def test_unsupported_types_are_refused_clearly(definition: dict[str, object], kind: str) -> None:
    with pytest.raises(InvalidCheck, match=f"^{kind} checks are not supported"):
        CheckSpec.from_definition(definition)


def test_http_defaults() -> None:
    s = spec(http="http://127.0.0.1:8080/health", interval="10s")
    assert (s.kind, s.type, s.interval_s, s.timeout_s, s.method) == ("http", "http", 10.0, 10.0, "GET")
    assert s.status == "critical"
    assert s.output_max_size == 4096
    assert (s.success_before_passing, s.failures_before_warning, s.failures_before_critical) == (0, 0, 0)
    assert s.deregister_critical_service_after_s == 0.0


def test_http_fields() -> None:
    s = spec(
        http="https://127.0.0.1:8443/",
        interval=5_000_000_000,  # JSON number = nanoseconds
        timeout="2s",
        method="POST",
        header={"X-A": ["1", "2"], "X-B": "3"},
        body='{"ok":true}',
        tlsskipverify=True,
        tlsservername="svc.internal",
        disableredirects=True,
        status="passing",
    )
    assert s.interval_s == 5.0 and s.timeout_s == 2.0 and s.method == "POST"
    assert s.header == {"X-A": ["1", "2"], "X-B": ["3"]}
    assert s.body == '{"ok":true}' and s.tls_skip_verify and s.tls_server_name == "svc.internal"
    assert s.disable_redirects and s.status == "passing"


def test_kinds_and_default_timeouts() -> None:
    assert spec(tcp="127.0.0.1:22", interval="10s").timeout_s == 10.0
    script = spec(args=["/bin/true"], interval="10s")
    assert (script.kind, script.timeout_s, script.command) == ("script", 30.0, ["/bin/true"])
    ttl = spec(ttl="30s")
    assert (ttl.kind, ttl.ttl_s, ttl.timeout_s, ttl.interval_s) == ("ttl", 30.0, 0.0, 0.0)


def test_script_args_aliases_and_legacy_shell() -> None:
    assert spec(scriptargs=["a"], args=["b"], interval="1s").command == ["a"]
    assert spec(args=["b"], interval="1s").command == ["b"]
    legacy = spec(script="echo hi | tr a-z A-Z", interval="1s")
    assert legacy.kind == "script"
    assert legacy.command == ["/bin/sh", "-c", "echo hi | tr a-z A-Z"]
    assert spec(args=["x"], script="y", interval="1s").shell_script == ""


def test_type_precedence_follows_consul() -> None:
    assert spec(http="http://127.0.0.1/", tcp="127.0.0.1:1", interval="1s").kind == "http"
    assert spec(tcp="127.0.0.1:1", args=["true"], interval="1s").kind == "tcp"


def test_interval_below_one_second_is_raised_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = CheckSpec.from_definition({"tcp": "127.0.0.1:1", "interval": "100ms"}, check_id="db")
    assert s.interval_s == 1.0
    assert any("db" in r.getMessage() and "minimum" in r.getMessage() for r in caplog.records)


def test_short_ttl_is_kept() -> None:
    assert spec(ttl="500ms").ttl_s == 0.5


def test_deregister_after_is_raised_to_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = spec(ttl="10s", deregistercriticalserviceafter="10s")
    assert s.deregister_critical_service_after_s == 60.0
    assert "minimum" in caplog.text
    assert spec(ttl="10s", deregistercriticalserviceafter="90m").deregister_critical_service_after_s == 5400.0
    assert spec(ttl="10s").deregister_critical_service_after_s == 0.0


def test_output_max_size_can_only_lower_the_agent_limit() -> None:
    assert spec(ttl="1s", outputmaxsize=100).output_max_size == 100
    assert spec(ttl="1s", outputmaxsize=100_000).output_max_size == 4096
    s = CheckSpec.from_definition({"ttl": "1s"}, agent_output_max_size=8192)
    assert s.output_max_size == 8192


def test_failures_before_warning_defaults_to_critical_threshold() -> None:
    s = spec(tcp="127.0.0.1:1", interval="1s", failuresbeforecritical=3)
    assert (s.failures_before_warning, s.failures_before_critical) == (3, 3)
    s = spec(tcp="127.0.0.1:1", interval="1s", failuresbeforewarning=1, failuresbeforecritical=3)
    assert (s.failures_before_warning, s.failures_before_critical) == (1, 3)


@pytest.mark.parametrize(
    "definition",
    [
        {"ttl": "ten seconds"},
        {"ttl": True},
        {"http": 5, "interval": "1s"},
        {"args": "ls -l", "interval": "1s"},
        {"ttl": "1s", "failuresbeforecritical": "many"},
        {"ttl": "1s", "tlsskipverify": "maybe"},
        {"ttl": "1s", "header": {"X": [1]}},
    ],
)
def test_wrong_types_are_invalid_checks_not_tracebacks(definition: dict[str, object]) -> None:
    with pytest.raises(InvalidCheck):
        CheckSpec.from_definition(definition)


def test_unknown_keys_are_ignored() -> None:
    assert spec(ttl="1s", name="x", notes="y", serviceid="web", whatever=1).kind == "ttl"


@pytest.mark.parametrize(
    ("source", "script", "local", "allowed"),
    [
        ("http", False, False, False),
        ("http", False, True, False),
        ("http", True, False, True),
        ("http", True, True, True),
        ("config", False, False, False),
        ("config", False, True, True),
        ("config", True, False, True),
        ("config", True, True, True),
    ],
)
def test_script_check_policy(source: str, script: bool, local: bool, allowed: bool) -> None:
    assert script_checks_allowed(source, script, local) is allowed  # type: ignore[arg-type]


def test_require_script_checks_allowed_uses_consul_texts(caplog: pytest.LogCaptureFixture) -> None:
    s = spec(args=["true"], interval="1s")
    with pytest.raises(ScriptChecksDisabled, match="from remote calls"):
        require_script_checks_allowed(s, "http", enable_script_checks=False, enable_local_script_checks=True)
    with pytest.raises(ScriptChecksDisabled, match="'enable_local_script_checks' to true"):
        require_script_checks_allowed(
            s, "config", enable_script_checks=False, enable_local_script_checks=False
        )
    require_script_checks_allowed(s, "config", enable_script_checks=False, enable_local_script_checks=True)
    # Non-script checks are never affected.
    require_script_checks_allowed(
        spec(ttl="1s"), "http", enable_script_checks=False, enable_local_script_checks=False
    )
    # The legacy shell form is accepted with a deprecation warning when allowed.
    with caplog.at_level(logging.WARNING):
        require_script_checks_allowed(
            spec(script="true", interval="1s"),
            "config",
            enable_script_checks=True,
            enable_local_script_checks=False,
            check_id="legacy",
        )
    assert "deprecated" in caplog.text and "legacy" in caplog.text
