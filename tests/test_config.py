"""Agent configuration: Consul's flag spellings, config files as operators write them, clear errors."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from agent import config
from agent.config import ConfigError
from agent.local.definitions import parse_check, parse_service
from tests.agentproc import SHARED, AgentProcess, wait_for

FIXTURES = SHARED / "fixtures" / "config-dir"


def test_single_and_double_dash_flags_are_the_same() -> None:
    a = config.load(["-dev", "-node=n1", "-http-port", "8501", "-dc", "east", "-dns-port", "-1"])
    b = config.load(["--dev", "--node", "n1", "--http-port=8501", "--datacenter=east", "--dns-port=-1"])
    assert a == b
    assert (a.node_name, a.ports.http, a.ports.dns, a.datacenter, a.server) == ("n1", 8501, -1, "east", True)


def test_bootstrap_expect_flag_and_validation(tmp_path: Path) -> None:
    cfg = config.load(["-server", "-bootstrap-expect", "3", "-data-dir", str(tmp_path), "-bind=127.0.0.11"])
    assert cfg.bootstrap_expect == 3 and cfg.bind_addr == "127.0.0.11"
    with pytest.raises(ConfigError, match="-data-dir is required"):
        config.load(["-server"])
    with pytest.raises(ConfigError, match="requires -server"):
        config.load(["-bootstrap-expect", "3", "-data-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="unrecognized arguments"):
        config.load(["-dev", "-no-such-flag"])


def test_every_fixture_loads_as_written() -> None:
    cfg = config.load(["-dev", "-config-dir", str(FIXTURES)])
    names = sorted(s.get("name") for s in cfg.services)
    assert names == ["hello", "test", "web", "web3"]
    services = {s.name: s for s in (parse_service({k: v for k, v in raw.items() if k != "__source"})
                                    for raw in cfg.services)}
    hello = services["hello"]
    assert hello.id == "hello" and hello.checks[0].spec is not None
    assert hello.checks[0].spec.deregister_critical_service_after_s == 60  # CamelCase key in a lowercase file
    assert hello.checks[0].spec.timeout_s == 1
    assert services["web3"].checks[0].check_id == "service:web3"
    assert services["web"].checks[0].spec is not None and services["web"].checks[0].spec.type == "script"
    [ping] = [parse_check({k: v for k, v in raw.items() if k != "__source"}) for raw in cfg.checks]
    assert ping.name == "ping" and ping.spec is not None and ping.spec.args == ["ping", "-c1", "127.0.0.1"]


def test_hcl_and_json_merge_in_lexical_order_flags_win(tmp_path: Path) -> None:
    (tmp_path / "a.hcl").write_text('datacenter = "east"\nports { http = 9000 }\nretry_join = ["10.0.0.1"]\n'
                                    'service { name = "api" port = 80 }\n')
    (tmp_path / "b.json").write_text(json.dumps({"ports": {"dns": 9600}, "retry_join": ["10.0.0.2"],
                                                 "service": {"name": "db", "port": 5432}}))
    cfg = config.load(["-dev", "-config-dir", str(tmp_path), "-http-port", "9100"])
    assert cfg.datacenter == "east"
    assert (cfg.ports.http, cfg.ports.dns) == (9100, 9600)
    assert cfg.retry_join == ("10.0.0.1", "10.0.0.2")
    assert [s["name"] for s in cfg.services] == ["api", "db"]


def test_unknown_consul_keys_are_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"telemetry": {"statsd_address": "x"}, "acl": {"enabled": False},
                                                 "datacenter": "dc9"}))
    cfg = config.load(["-dev", "-config-dir", str(tmp_path)])
    assert cfg.datacenter == "dc9" and set(cfg.ignored_keys) == {"telemetry", "acl"}


@pytest.mark.parametrize("content,needle", [
    ('{"datacenter": ', "parse error"),
    ('{"ports": {"http": "lots"}}', "field 'http' must be a number"),
    ('{"server": "yes please"}', "field 'server' must be a boolean"),
    ('{"dns_config": {"node_ttl": "soon"}}', "dns_config.node_ttl"),
])
def test_bad_file_names_path_and_field(tmp_path: Path, content: str, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ConfigError) as err:
        config.load(["-dev", "-config-file", str(bad)])
    assert str(bad) in str(err.value) and needle in str(err.value)


@pytest.mark.slow
def test_reload_on_sighup_and_bad_file_keeps_running_config(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.json").write_text(json.dumps({"service": {"name": "one", "port": 1}}))
    with AgentProcess("-dev", "-config-dir", str(conf), log_path=tmp_path / "log") as agent:
        url = agent.url + "/v1/agent/services"
        assert set(httpx.get(url).json()) == {"one"}
        (conf / "b.json").write_text(json.dumps({"service": {"name": "two", "port": 2}}))
        agent.send(signal.SIGHUP)
        wait_for(lambda: set(httpx.get(url).json()) == {"one", "two"})
        (conf / "c.json").write_text('{"service": {"name": ')  # broken
        r = httpx.put(agent.url + "/v1/agent/reload")
        assert r.status_code == 500 and "c.json" in r.text
        assert set(httpx.get(url).json()) == {"one", "two"}  # the running configuration stayed
        assert agent.proc is not None and agent.proc.poll() is None
