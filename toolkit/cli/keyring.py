"""``ctk keyring``: the gossip encryption keyring across the cluster (``consul keyring``).

Rotation, as operators do it: ``ctk keygen`` → ``ctk keyring -install NEW`` → ``-use NEW`` →
``-remove OLD``; ``-list`` between steps shows how many members hold / use each key. Each change
returns once every live member has applied it, or fails naming the members that did not.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from toolkit.cli.app import HttpAddr, JsonOut, Token, app, client, fail, out, print_json

__all__ = ["keyring"]


@app.command()
def keyring(
    list_: Annotated[bool, typer.Option("--list", help="list installed keys and how many members hold each")] = False,
    install: Annotated[str, typer.Option("--install", help="install KEY on every member")] = "",
    use: Annotated[str, typer.Option("--use", help="make KEY the primary (encrypting) key everywhere")] = "",
    remove: Annotated[str, typer.Option("--remove", help="remove KEY from every member")] = "",
    http_addr: HttpAddr = None, token: Token = None, json_out: JsonOut = False,
) -> None:
    """Manage the gossip encryption keys of the cluster: exactly one of -list, -install, -use, -remove."""
    chosen = [name for name, v in (("-list", list_), ("-install", install), ("-use", use), ("-remove", remove)) if v]
    if len(chosen) != 1:
        fail("keyring: exactly one of -list, -install KEY, -use KEY, -remove KEY is required", 2)
    with client(http_addr, token) as c:
        if list_:
            pools: list[dict[str, Any]] = c.get("/v1/operator/keyring").json() or []
            if json_out:
                print_json(pools)
                return
            out.print("==> Gathering installed encryption keys...")
            for pool in pools:
                total = pool.get("NumNodes", 0)
                kind = "WAN" if pool.get("WAN") else "LAN"
                out.print(f"\n{pool.get('Datacenter', '')} ({kind}):")
                primaries = pool.get("PrimaryKeys") or {}
                for key, count in sorted((pool.get("Keys") or {}).items()):
                    mark = f" (primary on {primaries[key]})" if key in primaries else ""
                    out.print(f"  {key} [{count}/{total}]{mark}", markup=False)
                for node, msg in sorted((pool.get("Messages") or {}).items()):
                    out.print(f"  ! {node}: {msg}", markup=False)
            return
        verb, key, method = (("Installing", install, "POST") if install else ("Changing primary to", use, "PUT")
                             if use else ("Removing", remove, "DELETE"))
        if not json_out:
            out.print(f"==> {verb} gossip encryption key...")
        c.request(method, "/v1/operator/keyring", json_body={"Key": key}, timeout_s=30)
    if json_out:
        print_json({"Operation": chosen[0].lstrip("-"), "Key": key, "Success": True})
    else:
        out.print("==> Done: every live member applied the change.")
