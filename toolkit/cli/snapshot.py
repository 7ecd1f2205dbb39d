"""``ctk snapshot save|restore|inspect``: back up and restore the whole state (Consul's archive format)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.app import HttpAddr, JsonOut, Token, app, client, fail, out, print_json, table

snapshot_app = typer.Typer(no_args_is_help=True, help="Save, restore and inspect state snapshots.")
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("save")
def save(
    file: Annotated[Path, typer.Argument(help="where to write the archive")],
    stale: Annotated[bool, typer.Option("--stale", help="allow any server to answer (no leader needed)")] = False,
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Save a snapshot of the cluster's state to FILE (written atomically)."""
    from agent.state.archive import read_archive

    with client(http_addr, token) as c:
        r = c.get("/v1/snapshot", params={"stale": "" if stale else None}, timeout_s=120)
    meta = read_archive(r.body).meta  # verify before keeping it
    tmp = file.with_name(file.name + ".tmp")
    try:
        tmp.write_bytes(r.body)
        tmp.replace(file)
    except OSError as err:
        fail(f"cannot write {file}: {err.strerror}")
    if json_out:
        print_json({"File": str(file), "Index": meta.get("Index"), "Size": len(r.body)})
    else:
        out.print(f"Saved and verified snapshot to index {meta.get('Index')}: {file}")


def _load(file: Path) -> tuple[bytes, Any]:
    from agent.state.archive import ArchiveError, read_archive

    try:
        blob = file.read_bytes()
    except OSError as err:
        fail(f"cannot read {file}: {err.strerror}")
    try:
        return blob, read_archive(blob)
    except ArchiveError as err:
        fail(f"{file}: {err}")


@snapshot_app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="an archive written by 'snapshot save' (ctk's)")],
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Restore the cluster's state from FILE (replaces everything; replicated to every server)."""
    blob, archive = _load(file)
    with client(http_addr, token) as c:
        c.put("/v1/snapshot", content=blob, timeout_s=120)
    if json_out:
        print_json({"Restored": str(file), "Index": archive.meta.get("Index")})
    else:
        out.print(f"Restored snapshot from {file} (taken at index {archive.meta.get('Index')})")


@snapshot_app.command("inspect")
def inspect(file: Annotated[Path, typer.Argument(help="a snapshot archive")], json_out: JsonOut = False) -> None:
    """Show a snapshot's metadata and what it holds, without any agent."""
    from agent.state.store import Store

    _, archive = _load(file)
    store = Store()
    try:
        store.restore(archive.state)
    except Exception as err:
        fail(f"{file}: state.bin is not a ctk state snapshot: {err}")
    counts = {"Nodes": len(store.nodes), "Services": sum(len(t) for t in store.services.values()),
              "Checks": sum(len(t) for t in store.checks.values()), "KV": len(store.kv),
              "Tombstones": len(store.tombstones), "Sessions": len(store.sessions)}
    meta = archive.meta
    info = {"ID": meta.get("ID"), "Size": meta.get("Size"), "Index": meta.get("Index"), "Term": meta.get("Term"),
            "Version": meta.get("Version"), **counts}
    if json_out:
        print_json(info)
        return
    t = table("Field", "Value")
    for k, v in info.items():
        t.add_row(k, str(v))
    out.print(t)
