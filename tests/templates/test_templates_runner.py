"""``templates/runner.py`` driven by an in-memory watcher and a fake clock (no agent, no sleeps).

The loop's waits are event-driven: the test changes data (which wakes the runner), advances the
fake clock and pokes it, then ``settle()``s until the runner is idle again.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from templates.config import Config, ConfigError, TemplateConfig, WaitConfig
from templates.dependencies import Dependency, parse_kv_get, parse_service
from templates.functions import MISSING
from templates.runner import Quiescence, Runner
from templates.watcher import WatchEvent
from tests.templates.helpers import health_entry

KEY = parse_kv_get("app/k", block=True)
KEY2 = parse_kv_get("app/k2", block=True)
WEB = parse_service("web")


class FakeWatcher:
    """The watcher's interface over a dict; ``set()`` is a change arriving from Consul."""

    def __init__(self, values: dict[Dependency, Any] | None = None) -> None:
        self.values: dict[Dependency, Any] = dict(values or {})
        self.changed = asyncio.Event()
        self.on_change: Any = None
        self.on_event: Any = None
        self.watched: set[Dependency] = set()
        self._changes: set[Dependency] = set()
        self.closed = False

    def get(self, dep: Dependency) -> Any:
        return self.values.get(dep, MISSING)

    def answered(self, dep: Dependency) -> bool:
        return dep in self.values

    def error_of(self, dep: Dependency) -> str | None:
        return None

    def watch(self, deps: Iterable[Dependency]) -> None:
        self.watched = set(deps)

    def take_changes(self) -> set[Dependency]:
        out, self._changes = self._changes, set()
        return out

    def status(self) -> list[dict[str, Any]]:
        return [{"name": d.name()} for d in sorted(self.watched)]

    async def close(self) -> None:
        self.closed = True

    @property
    def open_polls(self) -> int:
        return len(self.watched)

    def set(self, dep: Dependency, value: Any) -> None:
        self.values[dep] = value
        self._changes.add(dep)
        self.changed.set()
        if self.on_change is not None:
            self.on_change()

    def event(self, dep: Dependency, message: str) -> None:
        if self.on_event is not None:
            self.on_event(WatchEvent("error", dep, message))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def tcfg(tmp_path: Path, name: str, contents: str, **kw: Any) -> TemplateConfig:
    return TemplateConfig(contents=contents, destination=str(tmp_path / name), origin=name, **kw)


@asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[Runner]:
    task = asyncio.create_task(runner.run())
    try:
        await runner.settle()
        yield runner
    finally:
        runner.stop()
        assert await asyncio.wait_for(task, 10) == 0


def read(p: Path) -> str:
    return p.read_text() if p.exists() else "<missing>"


# ------------------------------------------------------------------------------ quiescence (pure)


def test_quiescence_min_after_last_change_capped_by_max() -> None:
    q = Quiescence(WaitConfig(1.0, 3.0))
    assert not q.due(0)
    assert q.tick(10.0) == 11.0
    assert q.tick(10.5) == 11.5  # each change pushes the render out by min ...
    assert q.tick(11.4) == 12.4
    assert q.tick(12.5) == 13.0  # ... but never past first + max
    assert not q.due(12.9) and q.due(13.0)
    q.reset()
    assert not q.due(100) and q.tick(100) == 101  # a new burst starts over


# ------------------------------------------------------------------------------ the loop


async def test_first_render_waits_for_data_then_writes_and_reports(tmp_path: Path) -> None:
    fw = FakeWatcher()
    status = tmp_path / "status.json"
    cfg = Config(templates=(tcfg(tmp_path, "out", 'v={{ key "app/k" }}'),), status_file=str(status))
    dest = tmp_path / "out"
    async with running(Runner(cfg, watcher=fw)) as r:
        assert not dest.exists() and fw.watched == {KEY}
        st = json.loads(status.read_text())
        assert st["templates"][0]["waiting_on"] == ["kv.block(app/k)"] and st["open_long_polls"] == 1
        fw.set(KEY, "1")
        await r.settle()
        assert read(dest) == "v=1"
        st = json.loads(status.read_text())
        t = st["templates"][0]
        assert t["last_action"] == "written" and t["last_write"] and t["waiting_on"] == [] and t["last_error"] is None
        fw.set(KEY, None)  # the key was deleted: `key` blocks again, the file stays
        await r.settle()
        assert read(dest) == "v=1"
        assert r.states[0].waiting_on == ["kv.block(app/k) (key does not exist)"]
    assert fw.closed
    assert "stopped" in json.loads(status.read_text())


async def test_quiescence_one_write_per_burst_and_max_cap(tmp_path: Path) -> None:
    clock = Clock()
    fw = FakeWatcher({KEY: "0"})
    cmd_log = tmp_path / "cmd.log"
    t = tcfg(tmp_path, "out", '{{ key "app/k" }}', wait=WaitConfig(1.0, 3.0),
             command=f"cat {tmp_path / 'out'} >> {cmd_log}; echo >> {cmd_log}")
    async with running(Runner(Config(templates=(t,)), watcher=fw, clock=clock)) as r:
        dest = tmp_path / "out"
        assert read(dest) == "0"  # the first render is immediate despite wait
        for i, at in enumerate([10.0, 10.5, 10.9], 1):  # a burst, changes < min apart
            clock.t = 1000 + at
            fw.set(KEY, str(i))
            await r.settle()
            assert read(dest) == "0"
        clock.t = 1000 + 11.8  # 0.9s after the last change: not yet
        r.poke()
        await r.settle()
        assert read(dest) == "0"
        clock.t = 1000 + 11.9  # min after the last change: one render, with the last value
        r.poke()
        await r.settle()
        assert read(dest) == "3"
        # a continuous stream of changes still renders at first + max
        for k, at in enumerate([20.0, 20.8, 21.6, 22.4], 4):
            clock.t = 1000 + at
            fw.set(KEY, str(k))
            await r.settle()
        assert read(dest) == "3"
        clock.t = 1000 + 23.0
        r.poke()
        await r.settle()
        assert read(dest) == "7"
    assert cmd_log.read_text().split() == ["0", "3", "7"]  # one reload per burst


async def test_only_templates_whose_dependencies_changed_are_rendered(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "a", KEY2: "b"})
    cfg = Config(templates=(tcfg(tmp_path, "one", '{{ key "app/k" }}'), tcfg(tmp_path, "two", '{{ key "app/k2" }}')))
    async with running(Runner(cfg, watcher=fw)) as r:
        one, two = r.states
        before = (one.last_render, two.last_render)
        fw.set(KEY, "a2")
        await r.settle()
        assert one.last_render != before[0] and two.last_render == before[1]
        assert read(tmp_path / "one") == "a2"


async def test_guards_refuse_empty_output_and_too_few_instances(tmp_path: Path) -> None:
    body = [health_entry("n1", "10.0.0.1", 80), health_entry("n2", "10.0.0.2", 80)]
    fw = FakeWatcher({KEY: "x", WEB: WEB.decode(body)})
    servers = '{{ range service "web" }}{{ .Address }}\n{{ end }}'
    cfg = Config(templates=(
        tcfg(tmp_path, "empty", '{{ if eq (key "app/k") "x" }}content{{ end }}', allow_empty=False),
        tcfg(tmp_path, "servers", servers, min_instances=2),
    ))
    async with running(Runner(cfg, watcher=fw)) as r:
        assert read(tmp_path / "empty") == "content"
        assert read(tmp_path / "servers") == "10.0.0.1\n10.0.0.2\n"
        fw.set(KEY, "y")
        fw.set(WEB, WEB.decode(body[:1]))
        await r.settle()
        assert read(tmp_path / "empty") == "content" and read(tmp_path / "servers") == "10.0.0.1\n10.0.0.2\n"
        empty, servers_st = r.states
        assert empty.last_action == "refused" and "empty" in (empty.last_error or "")
        assert servers_st.last_action == "refused" and "below min_instances = 2" in (servers_st.last_error or "")
        fw.set(WEB, WEB.decode(body + [health_entry("n3", "10.0.0.3", 80)]))
        await r.settle()
        assert read(tmp_path / "servers").count("\n") == 3 and servers_st.last_error is None


async def test_failed_check_keeps_the_file_and_is_not_rerun_for_the_same_output(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "good", KEY2: "1"})
    checks = tmp_path / "checks.log"
    t = tcfg(tmp_path, "out", '{{ key "app/k" }} {{ key "app/k2" | len | eq 99 }}',
             check=f"echo run >> {checks}; grep -q good {{staged}}", command="true")
    async with running(Runner(Config(templates=(t,)), watcher=fw)) as r:
        dest = tmp_path / "out"
        assert read(dest) == "good false"
        fw.set(KEY, "bad")
        await r.settle()
        st = r.states[0]
        assert read(dest) == "good false" and st.last_action == "check_failed"
        assert "check failed (exit status 1)" in (st.last_error or "") and "not touched" in (st.last_error or "")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctk-")]  # staged file removed
        runs = checks.read_text().count("run")
        fw.set(KEY2, "2")  # changes the data but not the output: the same bytes are not re-checked
        await r.settle()
        assert checks.read_text().count("run") == runs
        fw.set(KEY, "good again")
        await r.settle()
        assert read(dest) == "good again false" and st.last_error is None


async def test_failed_reload_restores_previous_files_and_reruns_the_command(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "good", KEY2: "good"})
    log = tmp_path / "reload.log"
    # one reload shared by two templates; it fails when any file says BAD
    cmd = f"cat {tmp_path / 'a'} {tmp_path / 'b'} | tr '\\n' ' ' >> {log}; echo >> {log}; ! grep -q BAD {tmp_path}/a {tmp_path}/b"
    cfg = Config(templates=(
        tcfg(tmp_path, "a", '{{ key "app/k" }}\n', command=cmd, backup=True, perms=0o640),
        tcfg(tmp_path, "b", '{{ key "app/k2" }}\n', command=cmd),
        tcfg(tmp_path, "c", '{{ key "app/k" }} copy\n'),
    ))
    async with running(Runner(cfg, watcher=fw)) as r:
        assert log.read_text().splitlines() == ["good good "]  # both written, reload ran once
        fw.set(KEY, "BAD")
        await r.settle()
        a, b, c = r.states
        assert read(tmp_path / "a") == "good\n" and read(tmp_path / "b") == "good\n"
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
        assert log.read_text().splitlines() == ["good good ", "BAD good ", "good good "]  # fail, restore, re-run
        assert a.last_action == "rolled_back" and "previous file restored" in (a.last_error or "")
        assert b.last_action is not None and b.last_action != "rolled_back"  # b was not written this pass
        assert read(tmp_path / "c") == "BAD copy\n" and c.last_action == "written"  # other commands unaffected
        assert r.commands[cmd]["ok"] is True
        assert a.retry_at is not None  # the new content is retried later, with backoff


async def test_commands_shared_by_templates_run_once_per_pass_in_config_order(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "1"})
    order = tmp_path / "order"
    reload_x = f"echo x >> {order}"
    reload_y = f"echo y >> {order}"
    cfg = Config(templates=tuple(
        tcfg(tmp_path, f"t{i}", f'{i} {{{{ key "app/k" }}}}', command=c)
        for i, c in enumerate([reload_y, reload_x, reload_y, reload_x, reload_y])
    ))
    async with running(Runner(cfg, watcher=fw)) as r:
        assert order.read_text().split() == ["y", "x"]
        fw.set(KEY, "2")
        await r.settle()
        assert order.read_text().split() == ["y", "x", "y", "x"]
        assert r.command_runs == [reload_y, reload_x, reload_y, reload_x]


async def test_unchanged_output_writes_nothing_and_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("same")
    fw = FakeWatcher({KEY: "same"})
    async with running(Runner(Config(templates=(tcfg(tmp_path, "out", '{{ key "app/k" }}', command="false"),)),
                              watcher=fw)) as r:
        assert r.states[0].last_action == "unchanged" and r.command_runs == []


async def test_render_error_is_logged_and_the_daemon_carries_on(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: '{"a": 1}'})
    t = tcfg(tmp_path, "out", '{{ with key "app/k" | parseJSON }}{{ .a }}{{ end }}')
    async with running(Runner(Config(templates=(t,)), watcher=fw)) as r:
        assert read(tmp_path / "out") == "1"
        fw.set(KEY, "{not json")
        await r.settle()
        assert read(tmp_path / "out") == "1"
        st = r.states[0]
        assert st.last_action == "render_failed" and "parseJSON" in (st.last_error or "")
        fw.set(KEY, '{"a": 2}')
        await r.settle()
        assert read(tmp_path / "out") == "2" and st.last_error is None


async def test_write_error_is_reported(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "x"})
    t = tcfg(tmp_path, "missing-dir/out", '{{ key "app/k" }}', create_dest_dirs=False)
    async with running(Runner(Config(templates=(t,)), watcher=fw)) as r:
        st = r.states[0]
        assert st.last_action == "write_failed" and "parent directory is missing" in (st.last_error or "")


async def test_watch_events_rewrite_the_status_file(tmp_path: Path) -> None:
    fw = FakeWatcher()
    status = tmp_path / "s.json"
    async with running(Runner(Config(templates=(tcfg(tmp_path, "o", '{{ key "app/k" }}'),), status_file=str(status)),
                              watcher=fw)):
        status.unlink()
        fw.event(KEY, "connection refused")
        assert json.loads(status.read_text())["templates"][0]["waiting_on"] == ["kv.block(app/k)"]


async def test_sighup_reload_applies_a_new_config_and_keeps_the_old_one_if_bad(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "1", KEY2: "2"})
    first = Config(templates=(tcfg(tmp_path, "one", '{{ key "app/k" }}'),))
    configs: list[Config | Exception] = [
        Config(templates=(tcfg(tmp_path, "one", '{{ key "app/k" }}'), tcfg(tmp_path, "two", '{{ key "app/k2" }}'))),
        ConfigError("c.hcl: template[1].wait.min: invalid duration '5x'"),
    ]

    def reload() -> Config:
        nxt = configs.pop(0)
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    async with running(Runner(first, watcher=fw, reload_config=reload)) as r:
        r.request_reload()
        await r.settle()
        assert read(tmp_path / "two") == "2" and len(r.states) == 2
        assert fw.watched == {KEY, KEY2}
        r.request_reload()  # a bad file: logged, the running configuration stays
        await r.settle()
        assert len(r.states) == 2 and r.config.templates[1].destination.endswith("two")


async def test_dry_prints_and_writes_nothing(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "1"})
    out = io.StringIO()
    cfg = Config(templates=(tcfg(tmp_path, "out", 'v={{ key "app/k" }}', command="touch ran"),), dry=True)
    async with running(Runner(cfg, watcher=fw, stdout=out)) as r:
        fw.set(KEY, "2")
        await r.settle()
    assert out.getvalue() == f"> {tmp_path / 'out'}\nv=1\n> {tmp_path / 'out'}\nv=2\n"
    assert not (tmp_path / "out").exists() and r.command_runs == []


async def test_template_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^bad: contents: template: contents:1: .*unclosed"):
        Runner(Config(templates=(tcfg(tmp_path, "bad", "{{ if "),)), watcher=FakeWatcher())


# ------------------------------------------------------------------------------ -once


async def test_once_renders_writes_runs_commands_and_exits_0(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "1", KEY2: "2"})
    cfg = Config(once=True, templates=(
        tcfg(tmp_path, "a", '{{ key "app/k" }}', command=f"echo ran >> {tmp_path}/log"),
        tcfg(tmp_path, "b", '{{ key "app/k2" }}', command=f"echo ran >> {tmp_path}/log"),
    ))
    r = Runner(cfg, watcher=fw)
    assert await r.run() == 0
    assert read(tmp_path / "a") == "1" and read(tmp_path / "b") == "2"
    assert read(tmp_path / "log") == "ran\n"
    assert r.report is not None and r.report["ok"] is True


async def test_once_reports_a_missing_key_instead_of_hanging(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: None})  # answered: 404
    r = Runner(Config(once=True, templates=(tcfg(tmp_path, "a", '{{ key "app/k" }}'),)), watcher=fw)
    assert await r.run() == 1
    st = r.states[0]
    assert "blocked on data that does not exist" in (st.last_error or "")
    assert "kv.block(app/k) (key does not exist)" in (st.last_error or "")
    assert not (tmp_path / "a").exists()


async def test_once_fails_when_a_check_or_command_fails(tmp_path: Path) -> None:
    fw = FakeWatcher({KEY: "1"})
    r = Runner(Config(once=True, templates=(tcfg(tmp_path, "a", '{{ key "app/k" }}', command="exit 3"),)), watcher=fw)
    assert await r.run() == 1
    assert not (tmp_path / "a").exists()  # new file rolled back (removed) after the failed command
    r2 = Runner(Config(once=True, templates=(tcfg(tmp_path, "b", '{{ key "app/k" }}', check="false {staged}"),)),
                watcher=FakeWatcher({KEY: "1"}))
    assert await r2.run() == 1
    assert r2.states[0].last_action == "check_failed"


async def test_once_times_out_waiting_for_data(tmp_path: Path) -> None:
    r = Runner(Config(once=True, once_timeout_s=0.0, templates=(tcfg(tmp_path, "a", '{{ key "app/k" }}'),)),
               watcher=FakeWatcher())
    assert await r.run() == 1
    assert "timed out after 0s" in (r.states[0].last_error or "")


async def test_error_while_data_is_missing_is_waiting_not_failure(tmp_path: Path) -> None:
    # consul-template exits here (README: "index (service "foo") 0" fails on the empty first pass)
    fw = FakeWatcher()
    t = tcfg(tmp_path, "out", '{{ (index (service "web") 0).Address }}')
    async with running(Runner(Config(templates=(t,)), watcher=fw)) as r:
        st = r.states[0]
        assert st.last_action == "waiting" and st.last_error is None and fw.watched == {WEB}
        fw.set(WEB, WEB.decode([health_entry("n1", "10.0.0.9", 80)]))
        await r.settle()
        assert read(tmp_path / "out") == "10.0.0.9"
        fw.set(WEB, [])  # now the same error with complete data is a real failure
        await r.settle()
        assert st.last_action == "render_failed" and "index out of range" in (st.last_error or "")
        assert read(tmp_path / "out") == "10.0.0.9"


async def test_once_interrupted_writes_nothing(tmp_path: Path) -> None:
    fw = FakeWatcher()
    r = Runner(Config(once=True, templates=(tcfg(tmp_path, "a", '{{ key "app/k" }}'),)), watcher=fw)
    task = asyncio.create_task(r.run())
    await r.settle()
    r.stop()
    fw.values[KEY] = "late"
    assert await asyncio.wait_for(task, 10) == 1
    assert not (tmp_path / "a").exists()
