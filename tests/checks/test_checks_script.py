"""Script runner with real processes: exit codes, output caps, timeouts that kill the whole group."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks import CheckScheduler, CheckSpec, set_child_subreaper
from agent.checks.script import ScriptProbe


def script(argv: list[str] | None = None, **extra: object) -> ScriptProbe:
    d: dict[str, object] = {"interval": "10s", **extra}
    if argv is not None:
        d["args"] = argv
    return ScriptProbe(CheckSpec.from_definition(d))


def sh(code: str, **extra: object) -> ScriptProbe:
    return script(["/bin/sh", "-c", code], **extra)


def proc_state(pid: int) -> str | None:
    """``None`` if the PID no longer exists, else its state letter (``Z`` = zombie: dead, unreaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def read_pid(path: Path) -> int:
    for _ in range(100):
        text = path.read_text() if path.exists() else ""
        if text.strip():
            return int(text)
        time.sleep(0.01)
    raise AssertionError("pid file never written")


@pytest.mark.parametrize(
    ("code", "status"), [(0, "passing"), (1, "warning"), (2, "critical"), (127, "critical")]
)
async def test_exit_codes(code: int, status: str) -> None:
    probe = sh(f"echo out; echo err >&2; exit {code}")
    r = await probe.run()
    assert (r.status, r.output) == (status, "out\nerr\n")
    assert probe.last_pid is not None and gone(probe.last_pid)  # reaped: no zombie


async def test_args_run_without_a_shell() -> None:
    r = await script(["/bin/echo", "$HOME", "; exit 2"]).run()
    assert (r.status, r.output) == ("passing", "$HOME ; exit 2\n")


async def test_legacy_script_runs_through_sh() -> None:
    r = await ScriptProbe(
        CheckSpec.from_definition({"script": "echo a | tr a b; exit 1", "interval": "1s"})
    ).run()
    assert (r.status, r.output) == ("warning", "b\n")


async def test_killed_by_signal_is_critical() -> None:
    r = await sh("kill -TERM $$").run()
    assert r.status == "critical"


async def test_spawn_failure_is_critical_with_go_wording(tmp_path: Path) -> None:
    r = await script(["ctk-no-such-command-xyz"]).run()
    assert (r.status, r.output) == (
        "critical",
        'exec: "ctk-no-such-command-xyz": executable file not found in $PATH',
    )
    not_exec = tmp_path / "check.sh"
    not_exec.write_text("#!/bin/sh\nexit 0\n")
    r = await script([str(not_exec)]).run()
    assert r.status == "critical" and r.output == f"fork/exec {not_exec}: permission denied"


async def test_output_flood_is_capped_while_reading() -> None:
    ten_mb = 10 * 1024 * 1024
    r = await sh(f"head -c {ten_mb} /dev/zero | tr '\\0' x; echo; echo LAST-LINE").run()
    assert r.status == "passing"
    assert len(r.output.encode()) <= 4096
    assert r.output.startswith("Captured ") and f" of {ten_mb + 11} bytes\n...\n" in r.output
    assert r.output.endswith("x\nLAST-LINE\n")


@pytest.fixture
def subreaper() -> Iterator[bool]:
    """Make this test process a child subreaper for one test, so orphans come back to us to be reaped."""
    enabled = set_child_subreaper(True)
    yield enabled
    if enabled:
        set_child_subreaper(False)


async def _hung_run(tmp_path: Path) -> tuple[ScriptProbe, int, int, str, str, float]:
    pidfile = tmp_path / "grandchild.pid"
    probe = sh(f"echo starting; sleep 1000 & echo $! > {pidfile}; wait", timeout="1s")
    started = time.monotonic()
    r = await probe.run()
    elapsed = time.monotonic() - started
    assert probe.last_pid is not None
    return probe, probe.last_pid, read_pid(pidfile), r.status, r.output, elapsed


async def test_hung_script_and_grandchild_are_killed(tmp_path: Path) -> None:
    _, leader, grandchild, status, output, elapsed = await _hung_run(tmp_path)
    assert status == "critical"
    assert output == "Timed out (1s) running check\n\nstarting\n"
    assert elapsed < 60  # returned once the timeout fired, not after `sleep 1000`
    assert gone(leader)  # our child: killed and reaped
    # The grandchild was re-parented when its parent died; it is dead — at most a zombie waiting for
    # PID 1 to collect it (the subreaper variant below shows it fully gone) — and never still running.
    assert proc_state(grandchild) in (None, "Z")


async def test_hung_script_with_subreaper_leaves_nothing(tmp_path: Path, subreaper: bool) -> None:
    if not subreaper:
        pytest.skip("PR_SET_CHILD_SUBREAPER unavailable")
    _, leader, grandchild, status, output, _ = await _hung_run(tmp_path)
    assert status == "critical" and output.startswith("Timed out (1s) running check")
    assert gone(leader) and gone(grandchild)  # both killed and reaped by us, at once


async def test_background_leftovers_are_killed_after_a_normal_exit(tmp_path: Path, subreaper: bool) -> None:
    pidfile = tmp_path / "bg.pid"
    r = await sh(f"sleep 1000 & echo $! > {pidfile}; echo done").run()
    assert (r.status, r.output) == ("passing", "done\n")
    bg = read_pid(pidfile)
    assert proc_state(bg) in (None, "Z")
    if subreaper:
        assert gone(bg)


async def test_removing_a_check_mid_run_kills_its_process_group(tmp_path: Path, subreaper: bool) -> None:
    pidfile = tmp_path / "gc.pid"
    started = asyncio.Event()
    spec = CheckSpec.from_definition(
        {
            "args": ["/bin/sh", "-c", f"sleep 1000 & echo $! > {pidfile}; wait"],
            "interval": "10s",
            "timeout": "30s",
        }
    )
    probes: list[ScriptProbe] = []

    def factory(s: CheckSpec) -> ScriptProbe:
        probes.append(ScriptProbe(s))
        return probes[-1]

    updates: list[str] = []
    scheduler = CheckScheduler(lambda c, s, o: updates.append(s), random=lambda: 0.0, probe_factory=factory)
    scheduler.add("hung", spec)
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            started.set()
            break
        await asyncio.sleep(0.01)
    assert started.is_set()
    grandchild = read_pid(pidfile)
    leader = probes[0].last_pid
    assert leader is not None
    scheduler.remove("hung")
    await scheduler.stop()  # awaits the cancelled run's cleanup
    assert gone(leader)
    assert proc_state(grandchild) in (None, "Z")
    if subreaper:
        assert gone(grandchild)
    assert updates == []


async def test_script_check_through_the_scheduler_real_clock() -> None:
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    def on_update(check_id: str, status: str, output: str) -> None:
        seen.append((status, output))
        if len(seen) == 2:
            done.set()

    scheduler = CheckScheduler(on_update, random=lambda: 0.0)
    scheduler.add(
        "s", CheckSpec.from_definition({"args": ["/bin/sh", "-c", "echo hi; exit 1"], "interval": "1s"})
    )
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await scheduler.stop()
    assert seen == [("warning", "hi\n"), ("warning", "hi\n")]
