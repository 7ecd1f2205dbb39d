"""The template runtime against real ``ctk agent -dev`` processes (and the ``ctk template`` CLI).

Shared long-polls are counted twice: by the runner and by a small proxy between it and the
agent that counts concurrent blocking requests per path. Agent outages are real (SIGKILL, a
new agent on the same port). Everything polls with timeouts; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web

from templates.config import Config, TemplateConfig
from templates.runner import Runner
from templates.watcher import Watcher
from tests.agentproc import ROOT, AgentProcess, free_port, wait_for

pytestmark = pytest.mark.slow


async def until(pred: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        await asyncio.sleep(0.05)


def put_kv(agent: AgentProcess, key: str, value: str) -> None:
    assert httpx.put(f"{agent.url}/v1/kv/{key}", content=value.encode()).json() is True


def register_web(agent: AgentProcess, sid: str, port: int) -> None:
    body = {"Name": "web", "ID": sid, "Address": "127.0.0.1", "Port": port, "Check": {"TTL": "60s"}}
    assert httpx.put(f"{agent.url}/v1/agent/service/register", json=body).status_code == 200
    assert httpx.put(f"{agent.url}/v1/agent/check/pass/service:{sid}").status_code == 200


class CountingProxy:
    """Forwards to the agent and counts blocking requests (``?index=``) open per path."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.open: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        blocking = "index" in request.query
        self.total[request.path] += 1
        if blocking:
            self.open[request.path] += 1
            self.peak[request.path] = max(self.peak[request.path], self.open[request.path])
        try:
            async with self.session.get(self.upstream + request.path_qs) as r:
                body = await r.read()
                headers = {k: v for k, v in r.headers.items() if k.lower().startswith("x-consul")}
                return web.Response(body=body, status=r.status, headers=headers,
                                    content_type=r.content_type)
        finally:
            if blocking:
                self.open[request.path] -= 1


@asynccontextmanager
async def counting_proxy(upstream: str) -> AsyncIterator[tuple[CountingProxy, str]]:
    proxy = CountingProxy(upstream)
    proxy.session = aiohttp.ClientSession()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield proxy, f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await proxy.session.close()
        await runner.cleanup()


@asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[Runner]:
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        assert await asyncio.wait_for(task, 15) == 0


# ------------------------------------------------------------------------------ shared watches


async def test_fifty_templates_over_one_service_share_one_long_poll(dev_agent: AgentProcess, tmp_path: Path) -> None:
    register_web(dev_agent, "web-1", 8001)
    register_web(dev_agent, "web-2", 8002)
    put_kv(dev_agent, "shared/k", "v1")
    templates = tuple(
        TemplateConfig(
            contents='{{ range service "web" }}{{ .ID }} {{ .Port }}\n{{ end }}'
            + ('{{ key "shared/k" }}\n' if i % 2 else ""),
            destination=str(tmp_path / f"t{i:02d}.conf"),
            origin=f"t{i}",
        )
        for i in range(50)
    )
    async with counting_proxy(dev_agent.url) as (proxy, addr):
        cfg = Config(consul_address=addr, block_query_wait_s=5, templates=templates)
        async with running(Runner(cfg)) as r:
            await until(lambda: all((tmp_path / f"t{i:02d}.conf").exists() for i in range(50)), what="50 files")
            await until(lambda: r.open_polls == 2 and sum(proxy.open.values()) == 2, what="two open polls")
            assert proxy.open["/v1/health/service/web"] == 1 and proxy.open["/v1/kv/shared/k"] == 1
            assert "web-1 8001\nweb-2 8002\n" in (tmp_path / "t00.conf").read_text()
            put_kv(dev_agent, "shared/k", "v2")
            await until(lambda: all((tmp_path / f"t{i:02d}.conf").read_text().endswith("v2\n")
                                    for i in range(1, 50, 2)), what="25 files updated")
            register_web(dev_agent, "web-3", 8003)
            await until(lambda: all("web-3 8003" in (tmp_path / f"t{i:02d}.conf").read_text()
                                    for i in range(50)), what="50 files list web-3")
            await until(lambda: r.open_polls == 2 and sum(proxy.open.values()) == 2, what="two open polls")
            assert proxy.peak["/v1/health/service/web"] == 1 and proxy.peak["/v1/kv/shared/k"] == 1
            status = r.status()
            assert status["open_long_polls"] == 2 and status["watched_dependencies"] == 2
        assert sum(proxy.open.values()) == 0  # stopping closed the long-polls


# ------------------------------------------------------------------------------ agent outages


async def test_agent_down_at_start_and_mid_run_keeps_last_good_output_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    dest = tmp_path / "out.conf"
    status = tmp_path / "status.json"
    cfg = Config(consul_address=f"127.0.0.1:{port}", status_file=str(status), block_query_wait_s=5,
                 templates=(TemplateConfig(contents='value={{ key "app/v" }}\n', destination=str(dest), origin="t"),))
    watcher = Watcher(cfg.consul_address, wait_s=5, backoff_max_s=0.5)
    agents: list[AgentProcess] = []

    def start_agent() -> AgentProcess:
        a = AgentProcess("-dev", "-node", "n1", log_path=tmp_path / f"agent{len(agents)}.log")
        a.http_port = port
        agents.append(a)
        return a.start()

    try:
        async with running(Runner(cfg, watcher=watcher)) as r:
            await until(lambda: watcher.status() and watcher.status()[0]["consecutive_errors"] >= 2, what="errors")
            assert not dest.exists()
            st = json.loads(status.read_text())
            assert st["dependencies"][0]["failing"] and "Cannot connect" in st["dependencies"][0]["last_error"]
            assert "consul:" in st["templates"][0]["waiting_on"][0]

            agent = await asyncio.to_thread(start_agent)  # the agent comes up: ctk notices by itself
            put_kv(agent, "app/v", "one")
            await until(lambda: dest.exists() and dest.read_text() == "value=one\n", what="first render")
            assert not watcher.status()[0]["failing"]

            agent.stop(signal.SIGKILL)  # the agent dies mid-run
            await until(lambda: watcher.status()[0]["failing"], what="failure noticed")
            assert dest.read_text() == "value=one\n"  # the last good file stays
            assert r.states[0].last_error is None and watcher.get(r.states[0].deps.__iter__().__next__()) == "one"

            agent = await asyncio.to_thread(start_agent)  # a new agent on the same port (fresh state)
            put_kv(agent, "app/v", "two")
            await until(lambda: dest.read_text() == "value=two\n", what="render after recovery")
            assert not json.loads(status.read_text())["dependencies"][0]["failing"]
    finally:
        for a in agents:
            a.stop(signal.SIGKILL)


# ------------------------------------------------------------------------------ live source edits


async def test_template_source_edits_are_picked_up_and_broken_edits_rejected(dev_agent: AgentProcess,
                                                                             tmp_path: Path) -> None:
    put_kv(dev_agent, "edit/k", "v")
    src = tmp_path / "t.ctmpl"
    src.write_text('one {{ key "edit/k" }}\n')
    dest = tmp_path / "out"
    cfg = Config(consul_address=dev_agent.addr, block_query_wait_s=5,
                 templates=(TemplateConfig(source=str(src), destination=str(dest), origin="t"),))
    async with running(Runner(cfg)) as r:
        await until(lambda: dest.exists() and dest.read_text() == "one v\n")
        src.write_text('two {{ key "edit/k" }}\n')
        await until(lambda: dest.read_text() == "two v\n", what="edit picked up")
        src.write_text("three {{ if }}\n")
        await until(lambda: "edited source rejected" in (r.states[0].last_error or ""), what="bad edit rejected")
        assert dest.read_text() == "two v\n"
        put_kv(dev_agent, "edit/k", "w")  # the previous version keeps rendering new data
        await until(lambda: dest.read_text() == "two w\n")


# ------------------------------------------------------------------------------ CLI


@pytest.fixture
def work(tmp_path: Path, dev_agent: AgentProcess) -> Path:
    put_kv(dev_agent, "cli/greeting", "hello")
    (tmp_path / "in.ctmpl").write_text('greeting={{ key "cli/greeting" }}\n')
    return tmp_path


def run_ctk(work: Path, *args: str, agent: AgentProcess | None = None) -> subprocess.CompletedProcess[str]:
    env = {"CONSUL_HTTP_ADDR": agent.addr} if agent else {}
    return subprocess.run([sys.executable, "-m", "toolkit.cli.main", *args], cwd=work, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=60)


def test_cli_once_writes_runs_the_command_and_exits_0(work: Path, dev_agent: AgentProcess) -> None:
    p = run_ctk(work, "template", "-once", "in.ctmpl:out.conf:echo reloaded:$(cat out.conf) > cmd.out",
                agent=dev_agent)
    assert p.returncode == 0, p.stderr
    assert (work / "out.conf").read_text() == "greeting=hello\n"
    assert (work / "cmd.out").read_text() == "reloaded:greeting=hello\n"
    assert "wrote" in p.stderr and "ok" in p.stderr
    again = run_ctk(work, "template", "-once", "-template", "in.ctmpl:out.conf:touch ran-again", agent=dev_agent)
    assert again.returncode == 0 and not (work / "ran-again").exists()  # identical file: no command


def test_cli_once_missing_key_exits_1_with_the_reason(work: Path, dev_agent: AgentProcess) -> None:
    (work / "k.ctmpl").write_text('{{ key "cli/does-not-exist" }}')
    p = run_ctk(work, "template", "-once", "-consul-addr", dev_agent.addr, "k.ctmpl:k.out")
    assert p.returncode == 1
    assert "kv.block(cli/does-not-exist) (key does not exist)" in p.stderr and not (work / "k.out").exists()


def test_cli_dry_prints_and_json_reports(work: Path, dev_agent: AgentProcess) -> None:
    p = run_ctk(work, "template", "-once", "-dry", "in.ctmpl:out.conf", agent=dev_agent)
    assert p.returncode == 0 and p.stdout == "> out.conf\ngreeting=hello\n"
    assert not (work / "out.conf").exists()
    p = run_ctk(work, "template", "-once", "-dry", "--json", "in.ctmpl:out.conf", agent=dev_agent)
    report = json.loads(p.stdout)
    assert report["ok"] is True and report["templates"][0]["text"] == "greeting=hello\n"
    assert report["templates"][0]["dependencies"] == ["kv.block(cli/greeting)"]
    p = run_ctk(work, "template", "-once", "--json", "in.ctmpl:out.conf", agent=dev_agent)
    report = json.loads(p.stdout)
    assert report["ok"] and report["templates"][0]["last_action"] == "written"


def test_cli_once_with_agent_down_gives_up_after_timeout(work: Path) -> None:
    p = run_ctk(work, "template", "-once", "-timeout", "1s", "-consul-addr", f"127.0.0.1:{free_port()}",
                "in.ctmpl:out.conf")
    assert p.returncode == 1 and "timed out after 1s" in p.stderr and "Cannot connect" in p.stderr


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"c.hcl": 'template {\n source = "in.ctmpl"\n destination = "o"\n comand = "x"\n}\n'}, ["-config", "c.hcl"],
         "Error: c.hcl: template[1].comand: unknown field (did you mean command?)"),
        ({"c.hcl": 'template {\n source = "in.ctmpl"\n destination = "o"\n wait = "2s:1s"\n}\n'},
         ["-config", "c.hcl"], "Error: c.hcl: template[1].wait: min (2s) must not be greater than max (1s)"),
        ({"c.hcl": "template {"}, ["-config", "c.hcl"], "Error: c.hcl: invalid HCL:"),
        ({}, ["-config", "missing.hcl"], "Error: missing.hcl: no such file"),
        ({}, ["-wait", "soon", "in.ctmpl:o"], "Error: -wait: invalid duration 'soon'"),
        ({}, ["in.ctmpl"], 'Error: -template "in.ctmpl": missing destination'),
        ({"bad.ctmpl": "{{ range }}"}, ["bad.ctmpl:o"], 'Error: -template "bad.ctmpl:o": bad.ctmpl: template:'),
        ({}, [], "Error: no templates"),
    ],
)
def test_cli_bad_config_is_one_line_and_exit_2(work: Path, files: dict[str, str], args: list[str],
                                                message: str) -> None:
    for name, text in files.items():
        (work / name).write_text(text)
    p = run_ctk(work, "template", *args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), p.stderr


def test_cli_daemon_sighup_reloads_and_sigterm_stops_cleanly(work: Path, dev_agent: AgentProcess) -> None:
    conf = work / "ct.hcl"
    conf.write_text('template {\n source = "in.ctmpl"\n destination = "a.out"\n}\n')
    status = work / "status.json"
    log = work / "stderr.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli.main", "template", "-config", "ct.hcl", "-consul-addr", dev_agent.addr,
         "-status-file", str(status), "-pid-file", "ctk.pid"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: (work / "a.out").exists(), 20)
        assert (work / "ctk.pid").read_text().strip() == str(proc.pid)
        conf.write_text('template {\n source = "in.ctmpl"\n destination = "a.out"\n}\n'
                        'template {\n source = "in.ctmpl"\n destination = "b.out"\n}\n')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (work / "b.out").exists(), 20)
        conf.write_text("template {")  # a broken edit + HUP: logged, still running the old config
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in log.read_text(), 20)
        put_kv(dev_agent, "cli/greeting", "bye")
        wait_for(lambda: (work / "b.out").read_text() == "greeting=bye\n", 20)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = log.read_text()
    assert proc.returncode == 0
    assert "configuration reloaded: 2 template(s)" in err
    assert "reload failed, keeping the running configuration: ct.hcl: invalid HCL" in err
    assert "received SIGTERM: stopping" in err
    assert not (work / "ctk.pid").exists()
    final = json.loads(status.read_text())
    assert final["stopped"] and [t["destination"] for t in final["templates"]] == ["a.out", "b.out"]
    # one log line per event: every line is timestamped
    assert all(line[:4].isdigit() and " [" in line for line in err.strip().splitlines()), err


def test_cli_log_lines_and_status_file_when_agent_is_unreachable(work: Path) -> None:
    port = free_port()
    status = work / "s.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli.main", "template", "-consul-addr", f"127.0.0.1:{port}",
         "-status-file", str(status), "in.ctmpl:o"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: status.exists() and json.loads(status.read_text())["dependencies"]
                 and json.loads(status.read_text())["dependencies"][0]["consecutive_errors"] >= 2, 20)
        assert proc.poll() is None  # never exits because the agent is down
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "consul: kv.block(cli/greeting): GET /v1/kv/cli/greeting failed (Cannot connect" in err
    assert "no data yet" in err

