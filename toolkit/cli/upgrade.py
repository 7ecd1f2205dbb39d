"""``ctk upgrade plan|run``: rolling upgrades, followers first and the leader last, behind health gates.

The logic (order, warnings, gates, refusals) lives in :mod:`toolkit.ops.upgrade`; this module reads
the cluster, renders, and turns a failed run into one ``Error:`` line and exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from toolkit.cli.app import CLIError, HttpAddr, JsonOut, Token, app, client, fail, out, print_json, table
from toolkit.client import ConsulClient
from toolkit.ops.upgrade import (
    Gate,
    GateResult,
    HTTPCluster,
    Member,
    Plan,
    Runner,
    RunOptions,
    Step,
    StepResult,
    UpgradeError,
    build_plan,
    parse_version,
    protocol_min_for,
    render_command,
)

__all__ = ["upgrade_app"]

upgrade_app = typer.Typer(no_args_is_help=True,
                          help="Rolling upgrades that never lose quorum: plan the order, then run it behind gates.")
app.add_typer(upgrade_app, name="upgrade")

CTK_PROTOCOL_MIN = 2  # the vsn_min tag every ctk agent gossips (agent/server.py member_tags)

To = Annotated[str | None, typer.Option("--to", help="target version (default: this ctk's version)")]


def _target(to: str | None) -> str:
    from agent.config import VERSION

    target = (to or VERSION).strip()
    if parse_version(target) is None:
        fail(f"--to {target!r}: expected a version such as 1.2.3")
    return target


def _read_plan(c: ConsulClient, target: str) -> Plan:
    from agent.config import VERSION

    api = HTTPCluster(c)
    members = api.members()
    raft, health, leader = api.raft_configuration(), api.autopilot_health(), api.leader()
    vsn_min = protocol_min_for(target, [Member.from_json(m) for m in members], local=(VERSION, CTK_PROTOCOL_MIN))
    return build_plan(members, raft, health, leader, target, vsn_min)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _print_plan(plan: Plan) -> None:
    tolerance = "unknown" if plan.failure_tolerance is None else str(plan.failure_tolerance)
    clients = sum(1 for s in plan.steps if s.role != "server")
    out.print(f"Upgrade to [bold]{plan.target}[/]: {_count(plan.servers, 'server')} "
              f"(leader {plan.leader or 'none'}, "
              f"failure tolerance {tolerance}), {_count(clients, 'client')}, "
              f"{len(plan.pending)} to restart")
    t = table("#", "Node", "Role", "Build", "Action", "Note")
    for i, s in enumerate(plan.steps, 1):
        role = "server (leader)" if s.leader else s.role
        action = "[dim]skip[/]" if s.action == "skip" else s.action
        t.add_row(str(i), s.node, role, s.current, action, s.note)
    out.print(t)
    if plan.warnings:
        out.print("\nWarnings:")
        for w in plan.warnings:
            mark = "[bold red]![/]" if w.blocking else "[yellow]![/]"
            out.print(f"  {mark} {w.kind}: {w.message}")


@upgrade_app.command("plan")
def plan_cmd(to: To = None, http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False) -> None:
    """Print the upgrade order (followers one at a time, the leader last, then clients) and its warnings.

    Warns about version jumps that need an intermediate release (ctk's rule: more than one minor
    version at a time, e.g. 0.1.x → 0.3.x), a cluster with no failure tolerance, and protocol
    versions that need the two-step -protocol upgrade. Exit code 0 whenever the plan could be read.
    """
    target = _target(to)
    with client(http_addr, token) as c:
        plan = _read_plan(c, target)
    if json_out:
        print_json(plan.to_json())
    else:
        _print_plan(plan)


class _RichReporter:
    """A spinner per gate while it waits (live only on a terminal), one permanent line per outcome."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def step_started(self, step: Step, command: str) -> None:
        who = "server, leader" if step.leader else step.role
        self.progress.console.print(f"[bold]{step.node}[/] ({who}): {command}")

    def gate_waiting(self, step: Step, gate: Gate, elapsed_s: float, detail: str) -> None:
        text = f"  {step.node}: waiting for {gate} — {detail}"
        if self.task is None:
            self.task = self.progress.add_task(text, total=None)
        else:
            self.progress.update(self.task, description=text)

    def gate_finished(self, step: Step, result: GateResult) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        mark = "[green]✓[/]" if result.passed else "[bold red]✗[/]"
        self.progress.console.print(f"  {mark} {result.gate} ({result.seconds:.1f}s) {result.detail}")

    def step_finished(self, result: StepResult) -> None:
        p, step = self.progress.console.print, result.step
        if result.result == "skipped":
            p(f"[bold]{step.node}[/]: [dim]{step.note or 'skipped'}[/]")
        elif result.result == "dry-run":
            p(f"would run for [bold]{step.node}[/]: {result.command}")
        elif result.result in ("upgraded", "restarted"):
            snap = f" (snapshot {result.snapshot})" if result.snapshot else ""
            p(f"[bold]{step.node}[/]: [green]{result.result}[/]{snap}")


@upgrade_app.command("run")
def run_cmd(
    exec_: Annotated[str, typer.Option("--exec", help="command that upgrades and restarts one node; "
                                                      "{node} and {address} are filled in (shell-quoted)")],
    to: To = None,
    snapshot_dir: Annotated[Path | None, typer.Option("--snapshot-dir", help="save a snapshot here before each "
                                                      "node (<node>-<timestamp>.snap)")] = None,
    stabilize: Annotated[str, typer.Option("--stabilize", help="how long the leader and every server's health "
                                           "must hold after each node (Go duration)")] = "10s",
    gate_timeout: Annotated[str, typer.Option("--gate-timeout", help="time limit for each gate and for --exec "
                                              "(Go duration)")] = "2m",
    max_lag: Annotated[int, typer.Option("--max-lag", help="log entries a restarted server may trail the "
                                         "leader by")] = 10,
    force: Annotated[bool, typer.Option("--force", help="go on despite zero failure tolerance or blocking "
                                        "warnings")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the commands it would run; change "
                                          "nothing")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Perform the plan: per node, snapshot, run --exec, then wait for the gates; stop at the first failure.

    Gates after each restart: the node is alive with the new build, a leader exists, (servers) its log
    has caught up with the leader's, and the cluster stayed stable for --stabilize. A server is not
    restarted while failure tolerance is 0 in a multi-server cluster, unless --force. Exit code 0 when
    every node is at the target, 1 on the first failed gate, exec or refusal (later nodes untouched).
    """
    from agent.durations import DurationError, parse_duration_s

    target = _target(to)
    durations: dict[str, float] = {}
    for flag, text in (("--stabilize", stabilize), ("--gate-timeout", gate_timeout)):
        try:
            durations[flag] = parse_duration_s(text)
        except DurationError as err:
            fail(f"{flag}: {err}")
        if durations[flag] < 0:
            fail(f"{flag}: must not be negative")
    if max_lag < 0:
        fail("--max-lag: must not be negative")
    if not exec_.strip():
        fail("--exec: give the command that upgrades and restarts {node}")
    try:
        render_command(exec_, Step("node", "127.0.0.1", "server", "", "upgrade"))
    except UpgradeError as err:
        fail(str(err))
    opts = RunOptions(target=target, exec_template=exec_, snapshot_dir=snapshot_dir,
                      gate_timeout_s=durations["--gate-timeout"], stabilize_s=durations["--stabilize"],
                      max_lag=max_lag, force=force, dry_run=dry_run)
    with client(http_addr, token) as c:
        plan = _read_plan(c, target)
        if json_out:
            try:
                result = Runner(HTTPCluster(c), opts).run(plan)
            except UpgradeError as err:
                fail(str(err))
            print_json({"Plan": plan.to_json(), **result.to_json()})
        else:
            _print_plan(plan)
            out.print()
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=out, transient=True) as progress:
                try:
                    result = Runner(HTTPCluster(c), opts, reporter=_RichReporter(progress)).run(plan)
                except UpgradeError as err:
                    fail(str(err))
    if result.error:
        raise CLIError(result.error, 1)
    if not json_out and not dry_run:
        done = sum(1 for s in result.steps if s.result in ("upgraded", "restarted"))
        skipped = sum(1 for s in result.steps if s.result == "skipped")
        out.print(f"\nEvery member is at {target}: {done} restarted, {skipped} already there.")
