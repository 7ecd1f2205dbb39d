"""``ctk services dedupe``: remove duplicate service instances so that they stay removed.

Also the guard behind ``ctk services register --unique/--replace``. The logic (what is a duplicate,
which copy stays, how a copy is removed) is :mod:`toolkit.ops.dedupe`; this module reads the cluster,
prints the plan and runs it.

Exit codes: 0 nothing to do, or every duplicate removed (and, with --verify, still gone after the wait);
1 a failure (a removal failed, a duplicate came back, the agent could not be read); 2 dry run that found
duplicates (nothing changed).
"""

from __future__ import annotations

from types import TracebackType
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.text import Text

from toolkit.cli.app import CLIError, HttpAddr, JsonOut, Token, fail, out, print_json, services_app, table
from toolkit.client import ConsulClient, base_url
from toolkit.ops.dedupe import (
    DedupeError,
    Instance,
    Outcome,
    Plan,
    build_plan,
    copies_elsewhere,
    gather,
    instances_from_health,
    member_statuses,
    remove,
    verify,
)

__all__ = ["AgentPool", "ensure_unique", "plan_table", "services_dedupe"]

# A full anti-entropy sync comes every 1 min + a random stagger of up to 1 min (ae.go, below 129 nodes):
# waiting 2m10s lets every agent run one, so a copy that would come back has come back.
DEFAULT_VERIFY_WAIT = "2m10s"
DRY_RUN = "dry run: nothing changed; re-run with --yes"
ROOT_CAUSE = ("Duplicates appear when a client registers one instance through more than one agent; register "
              "through the agent on the instance's own host (ctk services register --unique refuses a second copy).")


class AgentPool:
    """Clients for the agents that own instances: ``<scheme>://<node address>:<agent port>``.

    The agent ctk talks to (``--http-addr``) is used as-is for its own node, so a node whose agent only
    listens on 127.0.0.1 is still handled when ctk runs there.
    """

    def __init__(self, main: ConsulClient, local_node: str, http_addr: str | None, token: str | None,
                 agent_port: int | None) -> None:
        try:
            url = httpx.URL(base_url(http_addr))
        except ValueError as err:
            fail(str(err))
        self.main, self.local_node, self.token = main, local_node, token
        self.scheme = url.scheme
        self.port = agent_port or url.port or 8500
        self._clients: dict[str, ConsulClient] = {}

    def __call__(self, i: Instance) -> tuple[ConsulClient, str]:
        if i.node == self.local_node:
            return self.main, base_url(self.main.address)
        host = f"[{i.node_address}]" if ":" in i.node_address else i.node_address
        url = f"{self.scheme}://{host}:{self.port}"
        if url not in self._clients:
            self._clients[url] = ConsulClient(url, self.token, timeout_s=10.0)
        return self._clients[url], url

    def __enter__(self) -> AgentPool:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        for c in self._clients.values():
            c.close()


def _duration(text: str, flag: str) -> float:
    from agent.durations import DurationError, parse_duration_s

    try:
        seconds = parse_duration_s(text)
    except DurationError as err:
        fail(f"{flag} {text!r}: {err} (use a Go duration such as 90s, 2m, 1m30s)")
    if seconds < 0:
        fail(f"{flag} {text!r}: must not be negative")
    return seconds


def plan_table(plan: Plan) -> Any:
    """The plan as a rich table: each group's kept copy, then the copies to remove and why."""
    t = table("Service", "Action", "Node", "ID", "Address", "Status", "Agent", "Index", "Why")
    status_style = {"passing": "green", "warning": "yellow", "critical": "bold red"}
    for g in plan.groups:
        k = g.keep
        t.add_row(g.service, Text("keep", style="green"), k.node, k.service_id, k.endpoint,
                  Text(k.status, style=status_style.get(k.status, "")), k.member, str(k.modify_index), g.keep_reason)
        for r in g.removals:
            i = r.instance
            t.add_row(g.service, Text(f"remove via {r.via}", style="bold"), i.node, i.service_id, i.endpoint,
                      Text(i.status, style=status_style.get(i.status, "")), i.member, str(i.modify_index), r.reason)
    return t


def _print_conflicts(plan: Plan) -> None:
    for c in plan.id_conflicts:
        where = ", ".join(f"{i.node} ({i.endpoint})" for i in c.copies)
        out.print(f"[yellow]note:[/] service {c.service}: ID {c.service_id} is on several nodes with different "
                  f"addresses: {where}; not treated as duplicates (--same-id-any-address would keep only one)")


@services_app.command("dedupe")
def services_dedupe(
    services: Annotated[list[str] | None, typer.Argument(help="service names (default: every service)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="remove the duplicates (without it: show the plan only)")] = False,
    keep_node: Annotated[str, typer.Option("--keep-node", help="keep the copy on this node")] = "",
    verify_on: Annotated[bool, typer.Option("--verify/--no-verify",
                                            help="with --yes: watch the catalog afterwards and fail if a "
                                                 "duplicate comes back")] = True,
    verify_wait: Annotated[str, typer.Option("--verify-wait", help="how long --verify watches (Go duration; "
                                             "default: the 1m anti-entropy interval plus a margin)")] = DEFAULT_VERIFY_WAIT,
    agent_port: Annotated[int | None, typer.Option("--agent-port", help="HTTP port of the owning agents "
                                                   "(default: the port of --http-addr)")] = None,
    same_id_any_address: Annotated[bool, typer.Option("--same-id-any-address",
                                                      help="also treat one explicit service ID on several nodes "
                                                           "as duplicates when their addresses differ")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Find duplicate service instances and remove them through the agents that own them.

    A duplicate is the same service address and port registered under several IDs or nodes (typically
    one instance registered through two agents). The copy kept is the healthiest (not failing, node
    alive), then the newest; --keep-node overrides. Copies are removed through their own agent, since a
    catalog delete comes back at the agent's next anti-entropy sync; the catalog is used only for nodes
    whose agent is failed, left or not a member. Without --yes nothing changes.

    Exit codes: 0 nothing to do / all removed (and verified); 1 failure or a duplicate came back;
    2 dry run that found duplicates.
    """
    wait_s = _duration(verify_wait, "--verify-wait")
    with ConsulClient(http_addr, token) as c:
        instances, local_node, missing = gather(c, list(services or []))
        if missing and services:
            fail(f"no service named {', '.join(repr(m) for m in missing)} in the catalog")
        try:
            plan = build_plan(instances, keep_node=keep_node, same_id_any_address=same_id_any_address)
        except DedupeError as err:
            fail(str(err))
        report: dict[str, Any] = {**plan.to_json(), "DryRun": not yes}
        if not plan.groups:
            if json_out:
                print_json({**report, "OK": True})
            else:
                _print_conflicts(plan)
                out.print("No duplicate service instances found.")
            return
        if not json_out:
            out.print(plan_table(plan))
            _print_conflicts(plan)
            out.print(Text(ROOT_CAUSE, style="dim"))
        if not yes:
            if json_out:
                print_json(report)
            else:
                out.print(DRY_RUN)
            raise CLIError("", 2)
        with AgentPool(c, local_node, http_addr, token, agent_port) as agents:
            outcomes = [remove(r.instance, c, agents) for r in plan.removals]
        report["Removed"] = [o.to_json() for o in outcomes]
        failed = [o for o in outcomes if not o.ok]
        if not json_out:
            for o in outcomes:
                _print_outcome(o)
        done = [o.instance for o in outcomes if o.ok]
        problems = [f"could not remove {o.instance.service_id} from {o.instance.node}: {o.detail}" for o in failed]
        if verify_on and done:
            if not json_out:
                out.print(f"Watching the catalog for {verify_wait} to check that the removed copies stay gone...")
            v = verify(c, done, wait_s)
            report["Verify"] = {"WaitSeconds": wait_s, "CameBack": [i.to_json() for i in v.came_back],
                                "StillPresent": [i.to_json() for i in v.still_present]}
            problems += [f"{i.service_id} on {i.node} came back after it was removed (something re-registers it: "
                         f"the application itself, or a service definition file on that agent)" for i in v.came_back]
            problems += [f"{i.service_id} on {i.node} is still in the catalog" for i in v.still_present]
            if v.ok and not json_out:
                out.print(f"Verified: {len(done)} removed cop{'y' if len(done) == 1 else 'ies'} still gone "
                          f"after {verify_wait}.")
    report["OK"] = not problems
    if json_out:
        print_json(report)
    if problems:
        fail("; ".join(problems))


def _print_outcome(o: Outcome) -> None:
    i = o.instance
    if o.ok:
        how = f"through its agent ({o.detail})" if o.via == "agent" else f"from the catalog ({o.detail})"
        out.print(f"Removed {i.service_id} on {i.node} {how}")
    else:
        out.print(f"[bold red]FAILED[/] to remove {i.service_id} on {i.node}: {o.detail}")


def ensure_unique(c: ConsulClient, definitions: list[dict[str, Any]], replace: bool, http_addr: str | None,
                  token: str | None, json_out: bool) -> list[dict[str, Any]]:
    """``register --unique``: refuse a service ID that another node already has, healthy.

    With ``replace`` those copies are removed first, through their owning agents (same rule as dedupe).
    Every definition is checked before anything changes. Returns what was removed.
    """
    members = member_statuses(c.get("/v1/agent/members", params={"segment": "_all"}).json() or [])
    local_node = str((c.self_info().get("Config") or {}).get("NodeName", ""))
    elsewhere: list[Instance] = []
    for d in definitions:
        name = str(d.get("Name") or d.get("name") or "")
        sid = str(d.get("ID") or d.get("id") or name)
        entries = (c.get(f"/v1/health/service/{quote(name, safe='')}").json() or []) if name else []
        copies = copies_elsewhere(instances_from_health(entries, members), sid, local_node)
        healthy = [i for i in copies if i.status != "critical"]
        if healthy and not replace:
            i = healthy[0]
            fail(f"service ID {sid!r} is already registered on node {i.node} ({i.node_address}) at {i.endpoint} "
                 f"and is {i.status}; registering it on {local_node} too would make a duplicate. "
                 f"Use --replace to move it here, or choose another --id.")
        if not replace:
            for i in copies:
                typer.echo(f"note: a critical copy of {sid} remains on {i.node} ({i.endpoint}); "
                           f"'ctk services dedupe {name}' can remove it", err=True)
        else:
            elsewhere.extend(copies)
    removed: list[dict[str, Any]] = []
    if elsewhere:
        with AgentPool(c, local_node, http_addr, token, None) as agents:
            for i in elsewhere:
                o = remove(i, c, agents)
                if not o.ok:
                    fail(f"--replace: could not remove {i.service_id} from {i.node}: {o.detail}")
                removed.append(o.to_json())
                if not json_out:
                    _print_outcome(o)
    return removed
