"""``ctk event`` and ``ctk watch`` as real processes against a real ``ctk agent -dev``.

Handlers are shell snippets that append their stdin to a file, so each line of the file is one
handler run; the tests wait for lines, never for time. Every process started here is stopped by PID.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agentproc import ROOT, AgentProcess, ctk, wait_for
from toolkit.ops.watch import WatchError, run_handler

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(dev_agent: AgentProcess) -> dict[str, str]:
    return {"CONSUL_HTTP_ADDR": dev_agent.addr}


class Watch:
    """A ``ctk watch`` process whose handler appends stdin (one JSON line per run) to ``out``."""

    def __init__(self, tmp: Path, env: dict[str, str], *flags: str, handler: str = "") -> None:
        self.out = tmp / "handler.out"
        self.out.touch()
        cmd = handler or f"cat >> {shlex.quote(str(self.out))}"
        self.proc = subprocess.Popen([sys.executable, "-m", "toolkit.cli.main", "watch", *flags, cmd], cwd=ROOT,
                                     env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def runs(self) -> list[Any]:
        """The data of each completed handler run so far."""
        complete = self.out.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete]

    def wait_runs(self, n: int) -> list[Any]:
        wait_for(lambda: len(self.runs()) >= n or self.proc.poll() is not None, timeout_s=15)
        assert self.proc.poll() is None, f"watch exited early: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return self.runs()

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as a service manager would; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        _, err = self.proc.communicate()
        return code, err


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def put(agent: AgentProcess, key: str, value: str) -> int:
    assert httpx.put(f"{agent.url}/v1/kv/{key}", content=value.encode()).json() is True
    return int(httpx.get(f"{agent.url}/v1/kv/{key}").json()[0]["ModifyIndex"])


# ------------------------------------------------------------------ ctk event

def test_event_prints_its_id_and_watch_once_receives_the_base64_payload(env: dict[str, str], tmp_path: Path) -> None:
    fired = ctk("event", "-name", "deploy", "payload", env=env)
    assert fired.returncode == 0 and fired.stdout.startswith("Event ID: "), fired.stderr
    event_id = fired.stdout.split()[-1]
    as_json = json.loads(ctk("event", "-name", "deploy-json", "-node", "n.*", "--json", "x", env=env).stdout)
    assert as_json["Name"] == "deploy-json" and as_json["NodeFilter"] == "n.*" and as_json["ID"]

    printed = ctk("watch", "-type", "event", "-name", "deploy", "--once", "--json", env=env)
    assert printed.returncode == 0, printed.stderr
    [ev] = json.loads(printed.stdout)
    assert ev["ID"] == event_id and base64.b64decode(ev["Payload"]) == b"payload"

    out = tmp_path / "events.json"
    handled = ctk("watch", "-type", "event", "-name", "deploy", "--once", f"cat > {shlex.quote(str(out))}", env=env)
    assert handled.returncode == 0, handled.stderr
    assert [e["ID"] for e in json.loads(out.read_text())] == [event_id]


def test_event_watch_hands_only_new_events_to_the_handler(env: dict[str, str], tmp_path: Path,
                                                          watches: list[Watch]) -> None:
    w = Watch(tmp_path, env, "-type", "event", "-name", "release")
    watches.append(w)
    assert w.wait_runs(1) == [[]]
    ids = [ctk("event", "-name", "release", p, env=env).stdout.split()[-1] for p in ("v1",)]
    runs = w.wait_runs(2)
    assert [e["ID"] for e in runs[1]] == ids
    assert ctk("event", "-name", "other-name", env=env).returncode == 0  # moves the index, not this view
    v2 = ctk("event", "-name", "release", "v2", env=env).stdout.split()[-1]
    runs = w.wait_runs(3)
    assert len(runs) == 3 and [e["ID"] for e in runs[2]] == [v2]
    assert base64.b64decode(runs[2][0]["Payload"]) == b"v2"
    assert w.stop()[0] == 0


def test_event_errors_are_one_line(env: dict[str, str]) -> None:
    missing = ctk("event", "payload", env=env)
    assert missing.returncode == 1 and "Event name must be specified" in missing.stderr
    reserved = ctk("event", "-name", "_internal", env=env)
    assert reserved.returncode == 1 and "User events cannot start with '_'" in reserved.stderr
    tag_only = ctk("event", "-name", "x", "-tag", "v1", env=env)
    assert tag_only.returncode == 1 and "without service filter" in tag_only.stderr
    bad_regex = ctk("event", "-name", "x", "-node", "(", env=env)
    assert bad_regex.returncode == 1 and "node filter" in bad_regex.stderr
    down = ctk("event", "-name", "x", env={"CONSUL_HTTP_ADDR": "127.0.0.1:1"})
    assert down.returncode == 1 and "cannot reach the agent" in down.stderr
    for r in (missing, reserved, tag_only, bad_regex, down):
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2


# ------------------------------------------------------------------ ctk watch: kv

def test_key_watch_handler_sees_the_value_put_afterwards(env: dict[str, str], dev_agent: AgentProcess,
                                                        tmp_path: Path, watches: list[Watch]) -> None:
    idx_file = tmp_path / "index"
    out = tmp_path / "handler.out"
    handler = f"cat >> {shlex.quote(str(out))}; echo $CONSUL_INDEX >> {shlex.quote(str(idx_file))}"
    w = Watch(tmp_path, env, "-type", "key", "-key", "watch/k1", handler=handler)
    watches.append(w)
    assert w.wait_runs(1) == [None], "consul hands a missing key to the handler as null"
    modify_index = put(dev_agent, "watch/k1", "hello")
    runs = w.wait_runs(2)
    assert runs[1]["Key"] == "watch/k1" and base64.b64decode(runs[1]["Value"]) == b"hello"
    assert idx_file.read_text().split()[-1] == str(modify_index), "CONSUL_INDEX is the answer's X-Consul-Index"
    code, err = w.stop()
    assert code == 0 and "Traceback" not in err


def test_key_watch_once_runs_the_handler_with_the_current_value_and_exits(
        env: dict[str, str], dev_agent: AgentProcess, tmp_path: Path) -> None:
    put(dev_agent, "watch/once", "now")
    out = tmp_path / "v.json"
    r = ctk("watch", "-type", "key", "-key", "watch/once", "--once", f"cat > {shlex.quote(str(out))}", env=env)
    assert r.returncode == 0, r.stderr
    assert base64.b64decode(json.loads(out.read_text())["Value"]) == b"now"
    printed = ctk("watch", "-type", "key", "-key", "watch/once", env=env)
    assert printed.returncode == 0 and json.loads(printed.stdout)["Key"] == "watch/once", "no handler: print, exit"
    failing = ctk("watch", "-type", "key", "-key", "watch/once", "--once", "exit 4", env=env)
    assert failing.returncode == 1 and "handler exited with status 4" in failing.stderr


def test_keyprefix_watch_runs_the_handler_once_per_change(env: dict[str, str], dev_agent: AgentProcess,
                                                          tmp_path: Path, watches: list[Watch]) -> None:
    """put k1, put k2, put k2 again with the same value: each fires (ModifyIndex moves, as in Consul);
    a write under another prefix wakes nothing."""
    w = Watch(tmp_path, env, "-type", "keyprefix", "-prefix", "kp/")
    watches.append(w)
    assert w.wait_runs(1) == [None], "an empty prefix is null, as consul passes it"
    put(dev_agent, "kp/k1", "a")
    assert [p["Key"] for p in w.wait_runs(2)[1]] == ["kp/k1"]
    put(dev_agent, "kp/k2", "b")
    assert [p["Key"] for p in w.wait_runs(3)[2]] == ["kp/k1", "kp/k2"]
    same = put(dev_agent, "kp/k2", "b")
    runs = w.wait_runs(4)
    assert runs[3][1]["ModifyIndex"] == same and runs[3][1]["Value"] == runs[2][1]["Value"]
    put(dev_agent, "elsewhere/x", "1")  # must not produce a run; the next real change proves it did not
    put(dev_agent, "kp/k3", "c")
    runs = w.wait_runs(5)
    assert len(runs) == 5 and [p["Key"] for p in runs[4]] == ["kp/k1", "kp/k2", "kp/k3"]
    assert w.stop()[0] == 0


# ------------------------------------------------------------------ ctk watch: catalog / health

def test_service_watch_fires_when_an_instance_registers(env: dict[str, str], dev_agent: AgentProcess,
                                                        tmp_path: Path, watches: list[Watch]) -> None:
    w = Watch(tmp_path, env, "-type", "service", "-service", "watched-web")
    watches.append(w)
    assert w.wait_runs(1) == [[]]
    reg = {"Name": "watched-web", "ID": "watched-web-1", "Port": 8080, "Tags": ["v1"]}
    assert httpx.put(f"{dev_agent.url}/v1/agent/service/register", json=reg).status_code == 200
    try:
        wait_for(lambda: any(r for r in w.runs()), timeout_s=15)
        entry = next(r for r in w.runs() if r)[0]
        assert entry["Service"]["ID"] == "watched-web-1" and entry["Service"]["Port"] == 8080
        assert entry["Node"]["Node"] == "n1" and isinstance(entry["Checks"], list)
    finally:
        httpx.put(f"{dev_agent.url}/v1/agent/service/deregister/watched-web-1")
    wait_for(lambda: w.runs()[-1] == [], timeout_s=15)
    assert w.stop()[0] == 0


# ------------------------------------------------------------------ ctk watch: handler failure, usage

def test_a_failing_handler_is_reported_and_the_watch_goes_on(env: dict[str, str], dev_agent: AgentProcess,
                                                            tmp_path: Path, watches: list[Watch]) -> None:
    out = tmp_path / "handler.out"
    w = Watch(tmp_path, env, "-type", "key", "-key", "watch/fails",
              handler=f"cat >> {shlex.quote(str(out))}; exit 3")
    watches.append(w)
    w.wait_runs(1)
    put(dev_agent, "watch/fails", "x")
    assert len(w.wait_runs(2)) == 2, "the watch survived the first failure"
    code, err = w.stop()
    assert code == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and all("handler exited with status 3" in line for line in lines), err


def test_sigterm_during_a_handler_run_stops_both_and_exits_zero(env: dict[str, str], tmp_path: Path,
                                                                watches: list[Watch]) -> None:
    pid_file = tmp_path / "handler.pid"
    w = Watch(tmp_path, env, "-type", "nodes", handler=f"echo $$ > {shlex.quote(str(pid_file))}; exec sleep 60")
    watches.append(w)
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout_s=15)
    handler_pid = int(pid_file.read_text())
    code, err = w.stop()
    assert code == 0 and "Traceback" not in err
    wait_for(lambda: not _alive(handler_pid), timeout_s=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_watch_usage_and_agent_errors_are_one_line(env: dict[str, str]) -> None:
    cases = [
        (ctk("watch", env=env), "Watch type must be specified"),
        (ctk("watch", "-type", "key", "-key", "k", "-service", "web", env=env), "-service cannot be used"),
        (ctk("watch", "-type", "service", "-service", "web", "-passingonly=maybe", env=env), "passingonly"),
        (ctk("watch", "-type", "nodes", env={"CONSUL_HTTP_ADDR": "127.0.0.1:1"}), "cannot reach the agent"),
        (ctk("watch", "-type", "key", "-key", "a/../b", env=env), "'..' path segments are not allowed"),
    ]
    for r, message in cases:
        assert r.returncode == 1 and message in r.stderr, (message, r.stderr)
        assert "Traceback" not in r.stderr


def test_handler_gets_stdin_json_and_consul_index(tmp_path: Path) -> None:
    """run_handler itself: consul's contract (JSON on stdin, CONSUL_INDEX) and its exit status."""
    out = tmp_path / "h"
    code = run_handler([f"(echo $CONSUL_INDEX; cat) > {shlex.quote(str(out))}"], {"a": [1]}, 42)
    assert code == 0 and out.read_text() == '42\n{"a":[1]}\n'
    assert run_handler(["exit 7"], None, 1) == 7, "a handler that ignores stdin is not an error"
    assert run_handler(["true"], list(range(100_000)), 1) == 0, "nor is one that ignores a large stdin"
    with pytest.raises(WatchError, match="Error starting handler"):
        run_handler([str(tmp_path / "no-such-handler")], None, 1, shell=False)
