"""The ``ctk`` commands (everything except ``ctk agent``, which the agent parses itself).

Conventions, the same on every command: ``--http-addr``/``CONSUL_HTTP_ADDR`` and
``--token``/``CONSUL_HTTP_TOKEN`` select the agent (ctk's or HashiCorp Consul's); ``--json`` prints
machine-readable output; failures print one ``Error: ...`` line on stderr and exit non-zero
(1 for errors, 2 where Consul uses 2, e.g. ``members`` matching nothing). Consul's single-dash
spellings (``-recurse``, ``-http-addr=...``) work because ``main.normalize_argv`` rewrites them.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from toolkit.client import ConsulClient, ConsulError, kv_path

__all__ = ["app", "run_app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ctk: a Consul toolkit. Works against ctk's agent and HashiCorp Consul alike.")
kv_app = typer.Typer(no_args_is_help=True, help="Key/value store: get, put, delete, export, import.")
catalog_app = typer.Typer(no_args_is_help=True, help="Read the catalog: services, nodes.")
services_app = typer.Typer(no_args_is_help=True, help="Register and deregister services with the local agent.")
app.add_typer(kv_app, name="kv")
app.add_typer(catalog_app, name="catalog")
app.add_typer(services_app, name="services")

# Piped output is for scripts and grep: never truncate a column to fit an imagined 80-column terminal.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 400)

HttpAddr = Annotated[str | None, typer.Option("--http-addr", envvar="CONSUL_HTTP_ADDR",
                                              help="agent address host:port (default 127.0.0.1:8500)")]
Token = Annotated[str | None, typer.Option("--token", envvar="CONSUL_HTTP_TOKEN", help="ACL token")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


class CLIError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    raise CLIError(message, code)


def client(http_addr: str | None, token: str | None) -> ConsulClient:
    return ConsulClient(http_addr, token)


def _kv_path(key: str) -> str:
    try:
        return kv_path(key)
    except ValueError as err:
        fail(f"kv key {err}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def table(*columns: str) -> Table:
    """A plain, grep-friendly table: no borders, one row per line."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, no_wrap=True)
    return t


# ------------------------------------------------------------------ general

@app.command()
def version(json_out: JsonOut = False) -> None:
    """Print ctk's version."""
    from agent.config import VERSION

    if json_out:
        print_json({"Version": VERSION, "Protocol": 2, "RaftProtocol": 3})
    else:
        out.print(f"ctk v{VERSION}\nProtocol 2 spoken by default, understands 2 to 3\nRaft protocol 3")


def _member_rows(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from toolkit.dash.model import MEMBER_STATUS as status_names
    rows = []
    for m in members:
        tags = m.get("Tags") or {}
        role = tags.get("role", "")
        build = tags.get("build", "")
        rows.append({
            "Node": m.get("Name", ""),
            "Address": f"{m.get('Addr', '')}:{m.get('Port', '')}",
            "Status": status_names.get(int(m.get("Status", 0)), "unknown"),
            "Type": "server" if role == "consul" else "client" if role == "node" else "unknown",
            "Build": build.split(":")[0] if build else "< 0.3",
            "Protocol": tags.get("vsn", ""),
            "DC": tags.get("dc", ""),
            "Partition": "default",
            "Segment": "<all>" if role == "consul" else "<default>",
            "Tags": tags,
        })
    rows.sort(key=lambda r: (r["Type"] != "server", r["Node"]))
    return rows


@app.command()
def members(
    detailed: Annotated[bool, typer.Option("--detailed", help="show every gossip tag")] = False,
    status: Annotated[str, typer.Option("--status", help="only members whose status matches this regex")] = "",
    wan: Annotated[bool, typer.Option("--wan", help="list the WAN pool (servers of every datacenter)")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """List the members of the cluster as gossip sees them (Consul's columns)."""
    with client(http_addr, token) as c:
        rows = _member_rows(c.members(wan=wan))
    if status:
        try:
            rx = re.compile(status)
        except re.error as err:
            fail(f"-status: invalid regular expression: {err}")
        rows = [r for r in rows if rx.search(r["Status"])]
    if json_out:
        print_json(rows)
    elif detailed:
        t = table("Node", "Address", "Status", "Tags")
        for r in rows:
            t.add_row(r["Node"], r["Address"], _status_style(r["Status"]),
                      ",".join(f"{k}={v}" for k, v in sorted(r["Tags"].items())))
        out.print(t)
    else:
        t = table("Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment")
        for r in rows:
            t.add_row(r["Node"], r["Address"], _status_style(r["Status"]), r["Type"], r["Build"], r["Protocol"],
                      r["DC"], r["Partition"], r["Segment"])
        out.print(t)
    if not rows:
        raise CLIError("", 2)


def _status_style(status: str) -> str:
    return {"alive": "[green]alive[/]", "failed": "[bold red]failed[/]", "left": "[dim]left[/]"}.get(status, status)


@app.command()
def info(http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False) -> None:
    """Agent and cluster details (``consul info``): agent, build, consul, raft, runtime sections."""
    with client(http_addr, token) as c:
        stats: dict[str, dict[str, Any]] = c.self_info().get("Stats") or {}
    if json_out:
        print_json(stats)
        return
    lines = []
    for section in sorted(stats):
        lines.append(f"{section}:")
        for key in sorted(stats[section]):
            lines.append(f"\t{key} = {stats[section][key]}")
    sys.stdout.write("\n".join(lines) + "\n")


@app.command()
def reload(http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False) -> None:
    """Reload the agent's configuration files (like SIGHUP)."""
    with client(http_addr, token) as c:
        c.put("/v1/agent/reload")
    _ok(json_out, "Configuration reload triggered", {"Reloaded": True})


@app.command()
def leave(
    force: Annotated[bool, typer.Option("--force", help="leave even if the cluster would lose its quorum")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Gracefully leave the cluster and shut the agent down.

    On a server, first checks that the servers that remain can still form a quorum; a leave that
    would take the cluster down is refused unless --force.
    """
    with client(http_addr, token) as c:
        me = c.self_info().get("Config") or {}
        if me.get("Server") and not force:
            problem = _leave_would_break_quorum(c, str(me.get("NodeID", "")))
            if problem:
                fail(f"refusing to leave: {problem}. Bring the other servers back first, or use --force.")
        c.put("/v1/agent/leave")
    _ok(json_out, "Graceful leave complete", {"Left": True})


def _leave_would_break_quorum(c: ConsulClient, my_id: str) -> str:
    r = c.request("GET", "/v1/operator/autopilot/health", ok=(200, 429, 500, 404))
    if r.status in (404, 500):
        return ""  # a Consul without autopilot, or no leader already: nothing a leave can make worse
    servers = [s for s in (r.json() or {}).get("Servers", []) if s.get("Voter")]
    remaining = [s for s in servers if s.get("ID") != my_id]
    if not remaining:
        return ""
    healthy = [s for s in remaining if s.get("Healthy")]
    quorum = len(remaining) // 2 + 1
    if len(healthy) >= quorum:
        return ""
    down = ", ".join(s.get("Name") or s.get("Address", "?") for s in remaining if not s.get("Healthy"))
    return (f"{len(healthy)} of the {len(remaining)} servers that would remain are healthy, {quorum} are needed "
            f"for a quorum (unhealthy: {down})")


def _ok(json_out: bool, text: str, data: dict[str, Any]) -> None:
    if json_out:
        print_json(data)
    else:
        out.print(text)


@app.command()
def join(
    addresses: Annotated[list[str], typer.Argument(help="LAN addresses of agents to join (host = port 8301)")],
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Tell the agent to join a cluster through the given agents."""
    joined = []
    with client(http_addr, token) as c:
        for address in addresses:
            c.put(f"/v1/agent/join/{address}")
            joined.append(address)
    _ok(json_out, f"Successfully joined cluster by contacting {len(joined)} nodes.", {"Joined": joined})


@app.command("force-leave")
def force_leave(
    node: Annotated[str, typer.Argument(help="name of a failed member")],
    prune: Annotated[bool, typer.Option("--prune", help="remove it from the member list entirely")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Move a failed member to 'left' now (the leader then deregisters it and removes a server from Raft)."""
    with client(http_addr, token) as c:
        c.put(f"/v1/agent/force-leave/{node}", params={"prune": "" if prune else None})
    _ok(json_out, f"Force-left {node}" + (" (pruned)" if prune else ""), {"Node": node, "Prune": prune})


@app.command()
def keygen(json_out: JsonOut = False) -> None:
    """Print a new gossip encryption key (32 random bytes, base64) for -encrypt."""
    from agent.gossip.keyring import generate_key

    key = generate_key()
    if json_out:
        print_json({"Key": key})
    else:
        sys.stdout.write(key + "\n")


@app.command()
def maint(
    enable: Annotated[bool, typer.Option("--enable", help="put the node (or -service) in maintenance")] = False,
    disable: Annotated[bool, typer.Option("--disable", help="take the node (or -service) out of maintenance")] = False,
    service: Annotated[str, typer.Option("--service", help="a service ID instead of the whole node")] = "",
    reason: Annotated[str, typer.Option("--reason", help="shown as the maintenance check's notes")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Node or service maintenance mode (``consul maint``); with no flags, list what is in maintenance."""
    if enable and disable:
        fail("Only one of -enable or -disable may be given")
    with client(http_addr, token) as c:
        if not enable and not disable:
            if service or reason:
                fail("-service and -reason need -enable or -disable")
            checks = c.get("/v1/agent/checks").json() or {}
            rows = [{"Kind": "Node" if cid == "_node_maintenance" else "Service",
                     "ID": ch.get("Node") if cid == "_node_maintenance" else ch.get("ServiceID"),
                     "Reason": ch.get("Notes", "")}
                    for cid, ch in sorted(checks.items()) if cid.startswith(("_node_maintenance", "_service_maintenance:"))]
            if json_out:
                print_json(rows)
            else:
                for r in rows:
                    out.print(f"{r['Kind']}:\n  ID: {r['ID']}\n  Reason: {r['Reason']}")
            return
        params = {"enable": "true" if enable else "false", "reason": reason or None}
        path = f"/v1/agent/service/maintenance/{service}" if service else "/v1/agent/maintenance"
        try:
            c.put(path, params=params)
        except ConsulError as err:
            if err.status == 404:
                fail(f"No service registered with ID \"{service}\"")
            raise
    what = f"service: {service}" if service else "node"
    _ok(json_out, f"{'Maintenance mode enabled' if enable else 'Maintenance mode disabled'} for {what}",
        {"Service": service or None, "Enabled": enable})


# ----------------------------------------------------------------------- kv

def _decode(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


@kv_app.command("get")
def kv_get(
    key: Annotated[str, typer.Argument(help="key (or prefix with -recurse/-keys)")] = "",
    recurse: Annotated[bool, typer.Option("--recurse", help="every key under the prefix")] = False,
    keys: Annotated[bool, typer.Option("--keys", help="list key names only")] = False,
    separator: Annotated[str, typer.Option("--separator", help="with -keys: group by this separator")] = "/",
    detailed: Annotated[bool, typer.Option("--detailed", help="show every field")] = False,
    base64_out: Annotated[bool, typer.Option("--base64", help="print values base64-encoded")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Read a key, a prefix (-recurse) or key names (-keys)."""
    with client(http_addr, token) as c:
        if keys:
            r = c.get(_kv_path(key), params={"keys": "", "separator": separator or None}, ok=(200, 404))
            names = r.json() or []
            if json_out:
                print_json(names)
            else:
                sys.stdout.write("".join(n + "\n" for n in names))
            return
        if recurse:
            r = c.get(_kv_path(key), params={"recurse": ""}, ok=(200, 404))
            entries = r.json() or []
            if json_out:
                print_json(entries)
                return
            for e in entries:
                v = e.get("Value") or ""
                if detailed:
                    _print_detailed(e, base64_out)
                    sys.stdout.write("\n")
                else:
                    sys.stdout.write(f"{e['Key']}:{v if base64_out else _text(_decode(v))}\n")
            return
        if not key:
            fail("Missing KEY argument")
        r = c.get(_kv_path(key), ok=(200, 404))
        if r.status == 404:
            fail(f"No key exists at: {key}")
        entry = r.json()[0]
        if json_out:
            print_json(entry)
        elif detailed:
            _print_detailed(entry, base64_out)
        else:
            v = entry.get("Value") or ""
            sys.stdout.write((v if base64_out else _text(_decode(v))) + "\n")


def _print_detailed(e: dict[str, Any], base64_out: bool) -> None:
    v = e.get("Value") or ""
    fields = {
        "CreateIndex": e.get("CreateIndex"), "Flags": e.get("Flags"), "Key": e.get("Key"),
        "LockIndex": e.get("LockIndex"), "ModifyIndex": e.get("ModifyIndex"), "Session": e.get("Session") or "-",
        "Value": v if base64_out else _text(_decode(v)),
    }
    for k, val in fields.items():
        sys.stdout.write(f"{k:<16} {val}\n")


@kv_app.command("put")
def kv_put(
    key: Annotated[str, typer.Argument(help="key to write")],
    value: Annotated[str | None, typer.Argument(help="value; '-' reads stdin, '@file' reads a file")] = None,
    flags: Annotated[int | None, typer.Option("--flags", help="opaque unsigned integer stored with the key")] = None,
    cas: Annotated[bool, typer.Option("--cas", help="check-and-set: write only if -modify-index matches")] = False,
    modify_index: Annotated[int | None, typer.Option("--modify-index", help="index for -cas (0: only if absent)")] = None,
    acquire: Annotated[bool, typer.Option("--acquire", help="take the lock with -session")] = False,
    release: Annotated[bool, typer.Option("--release", help="release the lock held by -session")] = False,
    session: Annotated[str, typer.Option("--session", help="session ID for -acquire/-release")] = "",
    base64_in: Annotated[bool, typer.Option("--base64", help="the value is base64-encoded")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Write a key (optionally check-and-set, or acquire/release a lock)."""
    data = _read_value(value)
    if base64_in:
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError:
            fail("-base64: the value is not valid base64")
    params: dict[str, Any] = {}
    if flags is not None:
        if flags < 0:
            fail("-flags must be an unsigned integer")
        params["flags"] = flags
    if cas:
        if modify_index is None:
            fail("Must specify -modify-index with -cas")
        params["cas"] = modify_index
    if acquire or release:
        if not session:
            fail("Must specify -session with -acquire or -release")
        params["acquire" if acquire else "release"] = session
    with client(http_addr, token) as c:
        ok = c.put(_kv_path(key), params=params, content=data).json()
    if not ok:
        reason = "CAS failed" if cas else "lock not acquired" if acquire else "lock not held by this session"
        if json_out:
            print_json({"Key": key, "Written": False, "Reason": reason})
        fail(f"Did not write to {key}: {reason}")
    _ok(json_out, f"Success! Data written to: {key}", {"Key": key, "Written": True})


def _read_value(value: str | None) -> bytes:
    if value is None:
        return b""
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_bytes()
        except OSError as err:
            fail(f"cannot read {path}: {err.strerror}")
    return value.encode()


@kv_app.command("delete")
def kv_delete(
    key: Annotated[str, typer.Argument(help="key (or prefix with -recurse)")] = "",
    recurse: Annotated[bool, typer.Option("--recurse", help="delete every key under the prefix")] = False,
    cas: Annotated[bool, typer.Option("--cas", help="delete only if -modify-index matches")] = False,
    modify_index: Annotated[int | None, typer.Option("--modify-index")] = None,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Delete a key or, with -recurse, a whole prefix."""
    if not key and not recurse:
        fail("Missing KEY argument (use -recurse with an empty prefix to delete everything)")
    if cas and recurse:
        fail("Cannot specify both -cas and -recurse")
    params: dict[str, Any] = {}
    if recurse:
        params["recurse"] = ""
    if cas:
        if modify_index is None:
            fail("Must specify -modify-index with -cas")
        params["cas"] = modify_index
    with client(http_addr, token) as c:
        ok = c.delete(_kv_path(key), params=params).json()
    if not ok:
        fail(f"Did not delete key {key}: CAS failed")
    what = f"Success! Deleted keys with prefix: {key}" if recurse else f"Success! Deleted key: {key}"
    _ok(json_out, what, {"Key": key, "Deleted": True})


@kv_app.command("export")
def kv_export(
    prefix: Annotated[str, typer.Argument(help="prefix to export (default: everything)")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Export keys as JSON ``[{"key","flags","value"(base64)}]``, the format ``kv import`` reads."""
    with client(http_addr, token) as c:
        entries = c.get(_kv_path(prefix), params={"recurse": ""}, ok=(200, 404)).json() or []
    print_json([{"key": e["Key"], "flags": e.get("Flags", 0), "value": e.get("Value") or ""} for e in entries])


@kv_app.command("import")
def kv_import(
    source: Annotated[str, typer.Argument(help="file written by 'kv export', '-' for stdin, or @file")] = "-",
    prefix: Annotated[str, typer.Option("--prefix", help="prepend this to every imported key")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Import keys from ``kv export`` JSON."""
    if source == "-":
        raw = sys.stdin.read()
    else:
        path = Path(source[1:] if source.startswith("@") else source)
        try:
            raw = path.read_text()
        except OSError as err:
            fail(f"cannot read {path}: {err.strerror}")
    try:
        entries = json.loads(raw)
        if not isinstance(entries, list):
            raise ValueError("expected a JSON list")
        items = [(prefix + str(e["key"]), int(e.get("flags", 0)), _decode(e.get("value"))) for e in entries]
    except (ValueError, KeyError, TypeError) as err:
        fail(f"import data is not 'kv export' JSON: {err}")
    done = []
    with client(http_addr, token) as c:
        for key, flags, value in items:
            c.put(_kv_path(key), params={"flags": flags}, content=value)
            done.append(key)
            if not json_out:
                out.print(f"Imported: {key}")
    if json_out:
        print_json({"Imported": done})


# ------------------------------------------------------------------ catalog

@catalog_app.command("services")
def catalog_services(
    tags: Annotated[bool, typer.Option("--tags", help="show each service's tags")] = False,
    node: Annotated[str, typer.Option("--node", help="only services on this node")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """List the services in the catalog."""
    with client(http_addr, token) as c:
        if node:
            body = c.get(f"/v1/catalog/node-services/{node}").json()
            if body is None:
                fail(f"No node found with name '{node}'")
            services: dict[str, list[str]] = {}
            for s in body.get("Services") or []:
                services.setdefault(s["Service"], []).extend(s.get("Tags") or [])
        else:
            services = c.get("/v1/catalog/services").json() or {}
    if json_out:
        print_json(services)
        return
    for name in sorted(services):
        line = name
        if tags:
            line = f"{name:<30} {','.join(sorted(set(services[name])))}"
        sys.stdout.write(line + "\n")


@catalog_app.command("nodes")
def catalog_nodes(
    service: Annotated[str, typer.Option("--service", help="only nodes running this service")] = "",
    detailed: Annotated[bool, typer.Option("--detailed", help="show tagged addresses and meta")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """List the nodes in the catalog."""
    with client(http_addr, token) as c:
        if service:
            rows = c.get(f"/v1/catalog/service/{service}").json() or []
            nodes = [{"Node": r["Node"], "ID": r["ID"], "Address": r["Address"], "Datacenter": r["Datacenter"],
                      "TaggedAddresses": r.get("TaggedAddresses"), "Meta": r.get("NodeMeta")} for r in rows]
        else:
            nodes = c.get("/v1/catalog/nodes").json() or []
    if json_out:
        print_json(nodes)
        return
    cols = ["Node", "ID", "Address", "DC"] + (["TaggedAddresses", "Meta"] if detailed else [])
    t = table(*cols)
    for n in nodes:
        row = [n["Node"], (n.get("ID") or "")[:8], n["Address"], n.get("Datacenter", "")]
        if detailed:
            row += [",".join(f"{k}={v}" for k, v in sorted((n.get("TaggedAddresses") or {}).items())),
                    ",".join(f"{k}={v}" for k, v in sorted((n.get("Meta") or {}).items()))]
        t.add_row(*row)
    out.print(t)


# ----------------------------------------------------------------- services

@services_app.command("register")
def services_register(
    files: Annotated[list[Path] | None, typer.Argument(help="service definition files (JSON or HCL)")] = None,
    name: Annotated[str, typer.Option("--name", help="service name (instead of a file)")] = "",
    service_id: Annotated[str, typer.Option("--id", help="service ID (default: the name)")] = "",
    address: Annotated[str, typer.Option("--address")] = "",
    port: Annotated[int, typer.Option("--port")] = 0,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag (repeatable)")] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="key=value (repeatable)")] = None,
    unique: Annotated[bool, typer.Option("--unique", help="refuse if another node already has this ID, healthy")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="remove the ID from other nodes (through their agents) first")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Register services with the local agent (so anti-entropy keeps them).

    --unique refuses an ID that is already registered and healthy on another node (a second copy is a
    duplicate); --replace removes those copies through their owning agents, then registers here.
    """
    definitions: list[dict[str, Any]] = []
    for f in files or []:
        definitions.extend(_service_definitions(f))
    if name:
        m = {}
        for item in meta or []:
            k, sep, v = item.partition("=")
            if not sep:
                fail(f"-meta {item!r}: expected key=value")
            m[k] = v
        definitions.append({"Name": name, "ID": service_id or name, "Address": address, "Port": port,
                            "Tags": tag or [], "Meta": m})
    if not definitions:
        fail("nothing to register: give definition files or -name")
    registered = []
    replaced: list[dict[str, Any]] = []
    with client(http_addr, token) as c:
        if unique or replace:
            from toolkit.cli.dedupe import ensure_unique

            replaced = ensure_unique(c, definitions, replace, http_addr, token, json_out)
        for d in definitions:
            c.put("/v1/agent/service/register", json_body=d)
            sid = d.get("ID") or d.get("id") or d.get("Name") or d.get("name")
            registered.append(sid)
            if not json_out:
                out.print(f"Registered service: {d.get('Name') or d.get('name')}")
    if json_out:
        print_json({"Registered": registered, **({"Replaced": replaced} if replace else {})})


def _service_definitions(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror}")
    try:
        if path.suffix == ".hcl":
            import hcl

            data = hcl.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:
        fail(f"{path}: parse error: {err}")
    if not isinstance(data, dict):
        fail(f"{path}: expected an object")
    found: list[dict[str, Any]] = []
    for key in ("service", "services", "Service", "Services"):
        v = data.get(key)
        if isinstance(v, dict):
            found.append(v)
        elif isinstance(v, list):
            found.extend(x for x in v if isinstance(x, dict))
    if not found and ("Name" in data or "name" in data):
        found.append(data)  # a bare definition, as PUT /v1/agent/service/register takes it
    if not found:
        fail(f"{path}: no service definition found")
    return found


@services_app.command("deregister")
def services_deregister(
    service_ids: Annotated[list[str] | None, typer.Argument(help="service IDs")] = None,
    service_id: Annotated[str, typer.Option("--id", help="service ID")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Deregister services from the local agent."""
    ids = list(service_ids or []) + ([service_id] if service_id else [])
    if not ids:
        fail("give a service ID (-id or argument)")
    with client(http_addr, token) as c:
        for sid in ids:
            c.put(f"/v1/agent/service/deregister/{sid}")
            if not json_out:
                out.print(f"Deregistered service: {sid}")
    if json_out:
        print_json({"Deregistered": ids})


# --------------------------------------------------------------------- run

def run_app(argv: list[str]) -> int:
    import toolkit.cli.dedupe  # noqa: F401  (registers `services dedupe`)
    import toolkit.cli.operator  # noqa: F401  (registers `operator` and `recover`)
    import toolkit.cli.snapshot  # noqa: F401
    import toolkit.cli.template  # noqa: F401  (registers `template`)
    import toolkit.cli.upgrade  # noqa: F401  (registers `upgrade plan|run`)
    import toolkit.cli.watch  # noqa: F401  (registers `event` and `watch`)
    from toolkit.cli import health, keyring, services_view, top  # noqa: F401  (`health`, `keyring`, `top`, `services` list)

    err = Console(stderr=True, highlight=False)
    try:
        app(args=argv, prog_name="ctk", standalone_mode=False)
    except CLIError as e:
        if str(e):
            err.print(f"[red]Error:[/] {e}")
        return e.code
    except ConsulError as e:
        err.print(f"[red]Error:[/] {e}")
        return 1
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        err.print("Aborted.")
        return 1
    except Exception as e:  # usage errors and anything unexpected: one line, never a traceback
        format_message = getattr(e, "format_message", None)
        if callable(format_message):  # click's UsageError/BadParameter (vendored inside typer)
            err.print(f"[red]Error:[/] {format_message()}")
            return int(getattr(e, "exit_code", 2))
        err.print(f"[red]Error:[/] {type(e).__name__}: {e}")
        return 1
    return 0
