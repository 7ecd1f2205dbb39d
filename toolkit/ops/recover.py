"""``ctk recover --peers``: write the ``raft/peers.json`` an outage recovery needs, without hand-editing.

The procedure is Consul's outage guide (see ``agent/raft/recovery.py`` for what a server does with the
file): stop every surviving server, put the *same* peers.json in each one's ``<data-dir>/raft/``, start
them. This module does the error-prone parts: it reads each data dir (node id, address, last log
index/term, the configuration it last knew), says which survivor has the most recent log, picks the
format the cluster needs (the ``{"id","address","non_voter"}`` list for raft protocol 3 — every ctk
server and Consul ≥ 1.0 — or the old ``"ip:port"`` list), backs up any file it replaces, and prints
the exact restart steps. Reading never modifies a data dir; ``--dry-run`` writes nothing at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.raft.filestorage import scan_records
from agent.raft.messages import Configuration, Entry, EntryKind, HardState, Snapshot

__all__ = ["DataDir", "RecoverError", "inspect_data_dir", "build_peers", "write_peers", "restart_steps"]


class RecoverError(Exception):
    """Something the operator must fix first; the message says what and where."""


@dataclass
class DataDir:
    path: Path
    kind: str  # "ctk" | "consul"
    node_id: str
    address: str = ""  # server RPC address ip:port, when known
    last_index: int = 0
    last_term: int = 0
    term: int = 0
    configuration: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "node_id": self.node_id, "address": self.address,
                "last_log_index": self.last_index, "last_log_term": self.last_term, "term": self.term,
                "configuration": self.configuration}


def inspect_data_dir(path: Path) -> DataDir:
    """Read a server's data dir without changing it."""
    if not path.is_dir():
        raise RecoverError(f"{path}: not a directory")
    node_id_file = path / "node-id"
    if not node_id_file.exists():
        raise RecoverError(f"{path}: no node-id file — is this an agent's -data-dir?")
    node_id = node_id_file.read_text().strip()
    raft = path / "raft"
    if (raft / "raft.db").exists() or (raft / "wal").exists():
        # HashiCorp Consul: BoltDB/WAL log that ctk does not parse; the id is all we can read.
        return DataDir(path, "consul", node_id)
    if not (raft / "log.bin").exists() and not (raft / "snapshot.bin").exists():
        raise RecoverError(f"{path}: no Raft data under raft/ — this agent was not a server (or never started)")
    dd = DataDir(path, "ctk", node_id)
    conf: Configuration | None = None
    if (raft / "snapshot.bin").exists():
        records = list(scan_records((raft / "snapshot.bin").read_bytes()))
        if records and records[0][1] == "S":
            snap = Snapshot.from_wire(records[0][2])
            dd.last_index, dd.last_term = snap.meta.index, snap.meta.term
            conf = snap.meta.configuration
    if (raft / "log.bin").exists():
        for _, kind, body in scan_records((raft / "log.bin").read_bytes()):
            if kind == "E":
                e = Entry.from_wire(body)  # a later record for an index overrides an earlier one (§5.3)
                dd.last_index, dd.last_term = e.index, e.term
                if e.kind is EntryKind.CONFIG:
                    conf = Configuration.decode(e.data)
            elif kind == "H":
                dd.term = HardState.from_wire(body).term
            elif kind == "R" and isinstance(body, list) and len(body) == 2:
                if int(body[0]) >= dd.last_index:
                    dd.last_index, dd.last_term = int(body[0]), int(body[1])
    if conf is not None:
        dd.configuration = [{"id": s.id, "address": s.address, "voter": conf.is_voter(s.id)} for s in conf.servers]
        me = conf.get(node_id)
        if me is not None:
            dd.address = me.address
    return dd


def build_peers(servers: list[tuple[str, str, bool]], fmt: str) -> Any:
    """The peers.json document: ``v3`` = ``[{"id","address","non_voter"}]``, ``v2`` = ``["ip:port"]``."""
    if not servers:
        raise RecoverError("no servers to put in peers.json")
    for sid, addr, _ in servers:
        if ":" not in addr:
            raise RecoverError(f"server {sid or addr}: address {addr!r} must be ip:port (the server RPC port, 8300)")
    if fmt == "v2":
        return [addr for _, addr, _ in servers]
    missing = [addr for sid, addr, _ in servers if not sid]
    if missing:
        raise RecoverError(f"raft protocol 3 needs every server's node id; missing for {', '.join(missing)} "
                           "(give --server ID=ADDRESS, or point --data-dir at its data dir)")
    return [{"id": sid, "address": addr, "non_voter": nonvoter} for sid, addr, nonvoter in servers]


def write_peers(data_dir: Path, document: Any, dry_run: bool) -> dict[str, str]:
    """Write ``raft/peers.json`` (backing up one already there); returns what was (or would be) done."""
    raft = data_dir / "raft"
    target = raft / "peers.json"
    result = {"path": str(target), "backup": ""}
    text = json.dumps(document, indent=2) + "\n"
    if target.exists():
        backup = target.with_name(f"peers.json.bak.{int(time.time())}")
        result["backup"] = str(backup)
        if not dry_run:
            target.rename(backup)
    if not dry_run:
        raft.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return result


def restart_steps(dirs: list[Path], binary: str = "ctk") -> list[str]:
    names = ", ".join(str(d) for d in dirs) or "each surviving server's data dir"
    return [
        "Make sure every server left out of peers.json is really gone (stopped, and will not come back with its old data).",
        f"Keep all surviving servers stopped until peers.json is in place in: {names}.",
        f"Start every surviving server with its usual command line ({binary} agent -server -data-dir ... -retry-join ...).",
        "Each server logs 'found peers.json file, recovering Raft configuration...' and deletes the file.",
        f"Check: {binary} operator raft list-peers  (a leader, every listed server a voter), then a test write.",
        "Servers that were not in peers.json must be wiped and joined again as new servers.",
    ]
