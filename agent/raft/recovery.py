"""Manual outage recovery with ``<data-dir>/raft/peers.json`` (Consul's outage guide, ``peersjson.go``).

When a cluster has lost its quorum for good, the operator writes the *same* ``peers.json`` on every
surviving server and restarts them. At start a server that finds the file:

1. parses it — the old format (raft protocol ≤ 2: a list of ``"ip:port"`` strings) or the newer one
   (a list of ``{"id", "address", "non_voter"}``);
2. replays its whole log into a scratch state machine (this commits whatever was uncommitted, as
   hashicorp's ``RecoverCluster`` does) and replaces log and configuration with one snapshot that
   carries the new configuration;
3. deletes the file and logs that it did.

ctk servers are identified by node id. In the old format the IDs are addresses, so they are mapped to
node ids through the configuration the server already has (and its own address), which keeps the old
file format usable on a ctk cluster.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import msgpack

from agent.state.store import Store

from .errors import RaftError
from .messages import Configuration, EntryKind, HardState, Server, Snapshot, SnapshotMeta, Suffrage
from .storage import Storage, bootstrap

__all__ = ["RecoveryError", "parse_peers_json", "apply_peers_json", "PEERS_FILE"]

log = logging.getLogger(__name__)
PEERS_FILE = "peers.json"


class RecoveryError(RaftError):
    """A peers.json that cannot be used; startup stops with this message."""


def parse_peers_json(text: str, *, known: Configuration | None = None, self_id: str = "",
                     self_address: str = "") -> Configuration:
    try:
        data: Any = json.loads(text)
    except ValueError as err:
        raise RecoveryError(f"peers.json is not valid JSON: {err}") from None
    if not isinstance(data, list) or not data:
        raise RecoveryError("peers.json must be a non-empty JSON list (of \"ip:port\" strings or "
                            "{\"id\", \"address\", \"non_voter\"} objects)")
    by_address = {s.address: s.id for s in (known.servers if known else ())}
    if self_address:
        by_address.setdefault(self_address, self_id)
    servers: list[Server] = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            if ":" not in item:
                raise RecoveryError(f"peers.json entry {i}: {item!r} is not ip:port")
            servers.append(Server(id=by_address.get(item, item), address=item))
        elif isinstance(item, dict):
            sid, addr = item.get("id"), item.get("address")
            if not isinstance(sid, str) or not sid or not isinstance(addr, str) or ":" not in addr:
                raise RecoveryError(f"peers.json entry {i}: needs a non-empty \"id\" and an \"address\" ip:port")
            nonvoter = bool(item.get("non_voter", False))
            servers.append(Server(id=sid, address=addr, suffrage=Suffrage.NONVOTER if nonvoter else Suffrage.VOTER))
        else:
            raise RecoveryError(f"peers.json entry {i}: expected a string or an object")
    ids = [s.id for s in servers]
    if len(set(ids)) != len(ids):
        raise RecoveryError("peers.json lists a server twice")
    conf = Configuration.of(servers)
    if not conf.voters:
        raise RecoveryError("peers.json has no voters")
    return conf


def apply_peers_json(raft_dir: Path, storage: Storage, self_id: str, self_address: str) -> Configuration | None:
    """If ``raft_dir/peers.json`` exists, recover with it (see module docstring) and delete it."""
    path = raft_dir / PEERS_FILE
    if not path.exists():
        return None
    log.warning("found %s, recovering Raft configuration...", path)
    state = storage.load()
    known: Configuration | None = state.snapshot.meta.configuration if state.snapshot else None
    for e in state.entries:
        if e.kind is EntryKind.CONFIG:
            known = Configuration.decode(e.data)
    conf = parse_peers_json(path.read_text(), known=known, self_id=self_id, self_address=self_address)
    if self_id not in conf.ids:
        log.warning("peers.json does not list this server (%s, %s); it will not take part in elections",
                    self_id, self_address)
    empty = state.snapshot is None and not state.entries and state.hard_state == HardState()
    if empty:
        bootstrap(storage, conf)
    else:
        fsm = Store()
        if state.snapshot is not None:
            fsm.restore(state.snapshot.data)
        last_index, last_term = state.offset_index, state.offset_term
        for e in state.entries:
            if e.kind is EntryKind.NORMAL:
                fsm.apply(e.index, msgpack.unpackb(e.data, raw=False, strict_map_key=False))
            last_index, last_term = e.index, e.term
        snap = Snapshot(SnapshotMeta(index=last_index, term=last_term, configuration=conf,
                                     configuration_index=last_index), fsm.snapshot())
        hs = HardState(term=state.hard_state.term, vote=None, commit=last_index)
        storage.save(hs, [], snap)
    path.unlink()
    log.warning("deleted peers.json file after successful recovery; configuration is now %s",
                ", ".join(f"{s.id}@{s.address}" for s in conf.servers))
    return conf
