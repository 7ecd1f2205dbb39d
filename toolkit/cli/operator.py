"""``ctk operator raft ...`` and ``ctk recover --peers``: Raft inspection and outage recovery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.app import (
    CLIError,
    HttpAddr,
    JsonOut,
    Token,
    app,
    client,
    fail,
    out,
    print_json,
    table,
)
from toolkit.client import ConsulClient, ConsulError

operator_app = typer.Typer(no_args_is_help=True, help="Cluster-level operations (Raft).")
raft_app = typer.Typer(no_args_is_help=True, help="Inspect and change the Raft configuration.")
operator_app.add_typer(raft_app, name="raft")
app.add_typer(operator_app, name="operator")


@raft_app.command("list-peers")
def list_peers(
    stale: Annotated[bool, typer.Option("--stale", help="answer from any server, even with no leader")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """The Raft servers: Node, ID, Address, State, Voter, RaftProtocol."""
    with client(http_addr, token) as c:
        cfg = c.get("/v1/operator/raft/configuration", params={"stale": "" if stale else None}).json()
    servers = cfg.get("Servers") or []
    if json_out:
        print_json(cfg)
        return
    t = table("Node", "ID", "Address", "State", "Voter", "RaftProtocol")
    for s in servers:
        t.add_row(s.get("Node", ""), s.get("ID", ""), s.get("Address", ""),
                  "[bold]leader[/]" if s.get("Leader") else "follower", str(s.get("Voter", False)).lower(),
                  str(s.get("ProtocolVersion", "3")))
    out.print(t)


@raft_app.command("remove-peer")
def remove_peer(
    address: Annotated[str, typer.Option("--address", help="ip:port of the server to remove")] = "",
    server_id: Annotated[str, typer.Option("--id", help="node id of the server to remove")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Remove a failed server from the Raft configuration (needs a leader)."""
    if bool(address) == bool(server_id):
        fail("give exactly one of -address or -id")
    with client(http_addr, token) as c:
        c.delete("/v1/operator/raft/peer", params={"address": address or None, "id": server_id or None})
    what = address or server_id
    if json_out:
        print_json({"Removed": what})
    else:
        out.print(f"Removed peer with {'address' if address else 'id'} \"{what}\"")


@app.command()
def recover(
    peers: Annotated[bool, typer.Option("--peers", help="write raft/peers.json for an outage recovery")] = False,
    data_dir: Annotated[list[Path] | None, typer.Option("--data-dir", help="a surviving server's data dir (repeatable)")] = None,
    server: Annotated[list[str] | None, typer.Option("--server", help="ID=IP:PORT (or IP:PORT for the old format) of a server to keep; repeatable")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto | v3 (ids, raft protocol 3) | v2 (\"ip:port\" list)")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be written; change nothing")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="then wait for a leader and a successful write at --http-addr")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds --verify waits")] = 120.0,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Guided outage recovery: inspect survivors' data dirs and write identical peers.json files."""
    from toolkit.ops.recover import (
        RecoverError,
        build_peers,
        inspect_data_dir,
        restart_steps,
        write_peers,
    )

    if not peers and not verify:
        fail("nothing to do: use --peers (write peers.json) and/or --verify")
    report: dict[str, Any] = {}
    if peers:
        dirs = list(data_dir or [])
        if not dirs and not server:
            fail("--peers needs --data-dir (surviving servers' data dirs) and/or --server ID=IP:PORT")
        try:
            inspected = [inspect_data_dir(d) for d in dirs]
        except RecoverError as err:
            fail(str(err))
        newest = max(inspected, key=lambda d: (d.last_term, d.last_index), default=None)
        chosen: list[tuple[str, str, bool]] = []
        for item in server or []:
            sid, sep, addr = item.partition("=")
            if not sep:
                sid, addr = "", item
            chosen.append((sid.strip(), addr.strip(), False))
        if not chosen:
            for d in inspected:
                if not d.address:
                    fail(f"{d.path}: the server's address is not recorded ({d.kind} data dir); "
                         f"give --server {d.node_id}=IP:PORT")
                chosen.append((d.node_id, d.address, False))
        wanted_fmt = fmt
        if fmt == "auto":
            wanted_fmt = "v3" if all(sid for sid, _, _ in chosen) else "v2"
        if wanted_fmt not in ("v2", "v3"):
            fail(f"--format {fmt!r}: expected auto, v2 or v3")
        try:
            document = build_peers(chosen, wanted_fmt)
        except RecoverError as err:
            fail(str(err))
        writes = [write_peers(d.path, document, dry_run) for d in inspected]
        report = {"survivors": [d.to_json() for d in inspected], "most_recent": newest.to_json() if newest else None,
                  "format": wanted_fmt, "peers": document, "written": writes, "dry_run": dry_run,
                  "steps": restart_steps([d.path for d in inspected])}
        if not json_out:
            _print_recover(report)
    if verify:
        report["verify"] = _verify(http_addr, token, timeout, quiet=json_out)
    if json_out:
        print_json(report)
    if verify and not report["verify"]["ok"]:
        raise CLIError("", 1)


def _print_recover(report: dict[str, Any]) -> None:
    import json as _json

    if report["survivors"]:
        t = table("Data dir", "Node ID", "Address", "Last log index", "Last log term", "")
        newest = report["most_recent"]
        for d in report["survivors"]:
            mark = "[bold green]most recent log[/]" if newest and d["path"] == newest["path"] else ""
            t.add_row(d["path"], d["node_id"], d["address"] or "?", str(d["last_log_index"]),
                      str(d["last_log_term"]), mark)
        out.print(t)
    out.print(f"peers.json ({report['format']}{', dry run: nothing written' if report['dry_run'] else ''}):")
    out.print(_json.dumps(report["peers"], indent=2), markup=False)
    for w in report["written"]:
        verb = "would write" if report["dry_run"] else "wrote"
        out.print(f"{verb} {w['path']}" + (f" (previous file {'would be ' if report['dry_run'] else ''}kept as {w['backup']})"
                                          if w["backup"] else ""))
    out.print("\nNext steps:")
    for i, step in enumerate(report["steps"], 1):
        out.print(f"  {i}. {step}")


def _verify(http_addr: str | None, token: str | None, timeout_s: float, quiet: bool) -> dict[str, Any]:
    """Wait for a leader, then prove the cluster takes writes (a key written and deleted)."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    if not quiet:
        out.print(f"waiting up to {timeout_s:.0f}s for a leader and a successful write ...")
    with ConsulClient(http_addr, token, timeout_s=5) as c:
        while time.monotonic() < deadline:
            try:
                leader = c.get("/v1/status/leader").json()
                if leader:
                    key = f"ctk/recover/verify-{int(time.time() * 1000)}"
                    if c.put(f"/v1/kv/{key}", content=b"ok").json() is True:
                        c.delete(f"/v1/kv/{key}")
                        if not quiet:
                            out.print(f"[green]recovered:[/] leader {leader}, writes succeed")
                        return {"ok": True, "leader": leader}
                last_error = "no leader yet"
            except ConsulError as err:
                last_error = str(err)
            time.sleep(0.5)
    if not quiet:
        out.print(f"[red]not recovered within {timeout_s:.0f}s:[/] {last_error}")
    return {"ok": False, "error": last_error}
