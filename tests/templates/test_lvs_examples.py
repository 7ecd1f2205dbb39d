"""``examples/lvs``: the keepalived and ipvsadm templates against a real agent, with their checks.

The checks are the ones in ``examples/lvs/ctk-template.hcl``: ``keepalived -t -f {staged}``
(Debian's keepalived; skipped with a reason when it is not installed) and ``ipvsadm-check.py``.
Neither touches the kernel, so no IPVS is needed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from templates.config import Config, TemplateConfig, load_config_file
from templates.runner import Runner
from tests.agentproc import ROOT, AgentProcess

EXAMPLE = ROOT / "examples" / "lvs"
KEEPALIVED = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
CHECKER = EXAMPLE / "ipvsadm-check.py"


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ipvsadm_check", CHECKER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------ the checker alone

GOOD_RULES = """\
# comment lines and trailing comments are fine (ipvsadm ignores them)
-A -t 192.0.2.10:80 -s wrr
-a -t 192.0.2.10:80 -r 10.0.0.11:8080 -m -w 2   # web-1
-a -t 192.0.2.10:80 -r 10.0.0.12:8080 -m -w 1
-A -u [2001:db8::1]:53 -s rr -p 300
-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -g
-A -f 7 -s sh
-a -f 7 -r 10.0.0.13 -i -w 0
--add-service --tcp-service=192.0.2.11:443 --scheduler=lc
-a -t 192.0.2.11:443 -r 10.0.0.11:443 --masquerading --weight=5
"""


def test_checker_accepts_valid_rules() -> None:
    assert load_checker().check_text(GOOD_RULES, "r") == []


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("-a -t 192.0.2.10:80 -r 10.0.0.1:80 -m", "is not defined above"),
        ("-A -t 192.0.2.10:80 -s bogus", "unknown scheduler 'bogus'"),
        ("-A -t 192.0.2.10 -s rr", "needs a port"),
        ("-A -t 300.0.0.1:80 -s rr", "is not an IP address"),
        ("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 10.0.0.1:80 -m -w heavy", "-w weight: want a number"),
        ("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 10.0.0.1:80 -m -w 70000", "in 0..65535"),
        ("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 10.0.0.1:80 -m -g", "choose one forwarding method"),
        ("-A -t 192.0.2.10:80 -s rr\n-A -t 192.0.2.10:80 -s rr", "added twice"),
        ("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -r 10.0.0.1:80\n-a -t 192.0.2.10:80 -r 10.0.0.1:80",
         "real server 10.0.0.1:80 is added twice"),
        ("-A -t 192.0.2.10:80 -s rr\n-a -t 192.0.2.10:80 -m", "needs a real server"),
        ("-A -t 192.0.2.10:99999 -s rr", "invalid port"),
        ("-X -t 192.0.2.10:80", "a rule starts with"),
        ("-A -t 192.0.2.10:80 -s rr -q", "unknown option '-q'"),
        ("-A -t 192.0.2.10:80 -s rr -r 10.0.0.1", "belongs to a real server rule"),
    ],
)
def test_checker_rejects_with_file_and_line(rules: str, problem: str) -> None:
    problems = load_checker().check_text(rules, "rules")
    assert problems and problem in problems[-1] and problems[-1].startswith("rules:")


def test_checker_cli_exit_codes(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(GOOD_RULES)
    bad.write_text("-A -t 192.0.2.10:80 -s nope\n")
    assert subprocess.run([sys.executable, str(CHECKER), str(good)]).returncode == 0
    p = subprocess.run([sys.executable, str(CHECKER), str(bad)], capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith(f"{bad}:1: -s: unknown scheduler")


# ------------------------------------------------------------------------------ against an agent


def register(agent: AgentProcess, sid: str, address: str, port: int, weight: str | None, healthy: bool = True) -> None:
    body = {"Name": "web", "ID": sid, "Address": address, "Port": port, "Check": {"TTL": "60s"},
            "Meta": {"weight": weight} if weight else {}}
    assert httpx.put(f"{agent.url}/v1/agent/service/register", json=body).status_code == 200
    verb = "pass" if healthy else "fail"
    assert httpx.put(f"{agent.url}/v1/agent/check/{verb}/service:{sid}").status_code == 200


def example_templates(tmp_path: Path) -> list[TemplateConfig]:
    """The example's template blocks, pointed at the shipped sources and at tmp_path."""
    blocks = load_config_file(EXAMPLE / "ctk-template.hcl")["templates"]
    out = []
    for t in blocks:
        src = EXAMPLE / Path(t.source).name
        out.append(dataclasses.replace(t, source=str(src), destination=str(tmp_path / Path(t.destination).name),
                                       command=None))
    return out


async def render_once(agent: AgentProcess, templates: list[TemplateConfig]) -> Runner:
    r = Runner(Config(consul_address=agent.addr, once=True, once_timeout_s=20, templates=tuple(templates)))
    await r.run()
    return r


@pytest.fixture
def lvs_agent(dev_agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> AgentProcess:
    monkeypatch.setenv("PATH", f"{EXAMPLE}:{os.environ['PATH']}")  # checks find ipvsadm-check.py
    httpx.delete(f"{dev_agent.url}/v1/kv/lvs/?recurse")
    assert httpx.put(f"{dev_agent.url}/v1/kv/lvs/web/vip", content=b"192.0.2.10").json() is True
    assert httpx.put(f"{dev_agent.url}/v1/kv/lvs/web/port", content=b"80").json() is True
    for sid in ("web-1", "web-2", "web-3", "web-bad"):
        httpx.put(f"{dev_agent.url}/v1/agent/service/deregister/{sid}")
    register(dev_agent, "web-1", "10.0.0.11", 8080, "3")
    register(dev_agent, "web-2", "10.0.0.12", 8080, None)
    register(dev_agent, "web-3", "10.0.0.13", 8080, "1", healthy=False)  # critical: not a real server
    return dev_agent


@pytest.mark.slow
async def test_ipvsadm_rules_render_and_pass_the_check(lvs_agent: AgentProcess, tmp_path: Path) -> None:
    _, ipvs = example_templates(tmp_path)
    r = await render_once(lvs_agent, [ipvs])
    assert r.states[0].last_action == "written", r.states[0].last_error
    rules = [ln for ln in Path(ipvs.destination).read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules == [
        "-A -t 192.0.2.10:80 -s wrr",
        "-a -t 192.0.2.10:80 -r 10.0.0.11:8080 -m -w 3",
        "-a -t 192.0.2.10:80 -r 10.0.0.12:8080 -m -w 1",
    ]
    assert load_checker().check_text(Path(ipvs.destination).read_text()) == []


@pytest.mark.slow
async def test_ipvsadm_check_refuses_a_bad_render(lvs_agent: AgentProcess, tmp_path: Path) -> None:
    register(lvs_agent, "web-bad", "10.0.0.14", 8080, "heavy")  # a typo in service meta
    _, ipvs = example_templates(tmp_path)
    Path(ipvs.destination).write_text("previous\n")
    r = await render_once(lvs_agent, [ipvs])
    st = r.states[0]
    assert st.last_action == "check_failed" and "-w weight: want a number in 0..65535, got 'heavy'" in (st.last_error or "")
    assert Path(ipvs.destination).read_text() == "previous\n"


@pytest.mark.slow
@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed (apt-get install -y keepalived)")
async def test_keepalived_config_renders_and_passes_keepalived_t(lvs_agent: AgentProcess, tmp_path: Path) -> None:
    keep, _ = example_templates(tmp_path)
    r = await render_once(lvs_agent, [keep])
    st = r.states[0]
    assert st.last_action == "written", st.last_error
    text = Path(keep.destination).read_text()
    assert "virtual_server 192.0.2.10 80 {" in text
    assert "real_server 10.0.0.11 8080 {\n        weight 3" in text
    assert "real_server 10.0.0.12 8080 {\n        weight 1" in text
    assert "10.0.0.13" not in text  # its check is critical
    p = subprocess.run([KEEPALIVED, "-t", "-f", keep.destination], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived is not installed (apt-get install -y keepalived)")
async def test_keepalived_check_refuses_a_bad_render_and_guard_refuses_no_instances(
    lvs_agent: AgentProcess, tmp_path: Path
) -> None:
    register(lvs_agent, "web-bad", "10.0.0.14", 8080, "heavy")
    keep, _ = example_templates(tmp_path)
    Path(keep.destination).write_text("previous\n")
    r = await render_once(lvs_agent, [keep])
    st = r.states[0]
    assert st.last_action == "check_failed"  # keepalived -t: invalid weight
    assert "heavy" in (st.last_error or "") and Path(keep.destination).read_text() == "previous\n"
    for sid in ("web-1", "web-2", "web-bad"):
        httpx.put(f"{lvs_agent.url}/v1/agent/check/fail/service:{sid}")
    r = await render_once(lvs_agent, [keep])
    st = r.states[0]
    assert st.last_action == "refused" and "below min_instances = 1" in (st.last_error or "")
    assert Path(keep.destination).read_text() == "previous\n"
    # without the guard the render is still a valid keepalived config (the virtual server is left out)
    r = await render_once(lvs_agent, [dataclasses.replace(keep, min_instances=0)])
    assert r.states[0].last_action == "written", r.states[0].last_error
    lines = Path(keep.destination).read_text().splitlines()
    assert not [ln for ln in lines if ln.startswith("virtual_server")]
