"""Anti-entropy: make the catalog's view of this node match the agent's local state.

``docs/architecture/anti-entropy.mdx``: after any local change the agent syncs at once; besides, a full
sync runs every ``ae_interval`` (1 min, scaled up above 128 nodes, plus random stagger). A full sync
registers what is missing or different and deregisters what this node has in the catalog but the
agent does not know — which is why a ``/v1/catalog/deregister`` of an agent-owned service comes back.
``serfHealth`` and (on servers) the ``consul`` service are the leader's, never touched here.

:func:`plan` is pure (local state + catalog rows → commands); :class:`AntiEntropy` is the driver.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.local.state import LocalCheck, LocalState
from agent.state import commands
from agent.state.commands import Command
from agent.state.store import CommandError, Store
from agent.state.structs import SERF_CHECK_ID, HealthCheck, Node, ServiceInstance, from_record, to_record

__all__ = ["plan", "AntiEntropy", "CatalogRows", "scale_factor", "OUTPUT_SYNC_INTERVAL_S"]

log = logging.getLogger(__name__)

AE_INTERVAL_S = 60.0
RETRY_AFTER_FAILURE_S = 15.0
OUTPUT_SYNC_INTERVAL_S = 300.0  # Consul's check_update_interval
OWNED_BY_LEADER = {SERF_CHECK_ID}


def scale_factor(cluster_size: int) -> int:
    """ae_interval multiplier: 1 up to 128 nodes, then +1 per doubling (``agent/ae/ae.go``)."""
    if cluster_size <= 128:
        return 1
    return int(math.ceil(math.log2(cluster_size) - math.log2(128))) + 1


def _check_record(node: str, lc: LocalCheck, output: str) -> dict[str, Any]:
    d = lc.definition
    spec = d.spec
    return {
        "node": node,
        "check_id": d.check_id,
        "name": d.name,
        "status": lc.status,
        "notes": d.notes,
        "output": output,
        "service_id": d.service_id,
        "type": spec.type if spec is not None else ("maintenance" if lc.source == "maintenance" else ""),
        "interval": _fmt(spec.interval_s) if spec is not None and spec.type != "ttl" else "",
        "timeout": _fmt(spec.timeout_s) if spec is not None and spec.type in ("http", "tcp", "script") else "",
        "definition": d.definition_json(),
    }


def _fmt(seconds: float) -> str:
    from agent.durations import format_duration

    return format_duration(seconds)


@dataclass(frozen=True)
class CatalogRows:
    """What the catalog holds for one node: the input :func:`plan` compares local state with.

    A server reads it from its own store; a client agent asks a server (``node_rows`` RPC), so the
    records travel as plain dicts (:meth:`to_wire` / :meth:`from_wire`)."""

    node: Node | None = None
    services: dict[str, ServiceInstance] = field(default_factory=dict)
    checks: dict[str, HealthCheck] = field(default_factory=dict)

    @classmethod
    def of(cls, store: Store, name: str) -> CatalogRows:
        return cls(store.nodes.get(name), dict(store.services.get(name, {})), dict(store.checks.get(name, {})))

    def to_wire(self) -> dict[str, Any]:
        return {"node": to_record(self.node) if self.node is not None else None,
                "services": [to_record(s) for s in self.services.values()],
                "checks": [to_record(c) for c in self.checks.values()]}

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> CatalogRows:
        services = [from_record(ServiceInstance, r) for r in wire.get("services") or []]
        checks = [from_record(HealthCheck, r) for r in wire.get("checks") or []]
        node = wire.get("node")
        return cls(from_record(Node, node) if node else None, {s.id: s for s in services},
                   {c.check_id: c for c in checks})


def plan(node: dict[str, Any], local: LocalState, rows: CatalogRows, now: float,
         skip_services: frozenset[str] = frozenset()) -> list[Command]:
    """Commands that bring the catalog's ``rows`` for ``node`` in line with ``local``."""
    name = node["node"]
    out: list[Command] = []
    existing = rows.node
    if existing is None or any(getattr(existing, k) != v for k, v in node.items() if k != "node"):
        out.append(commands.register(node, now=now))
    cat_services = rows.services
    cat_checks = rows.checks
    for sid, ls in local.services.items():
        rec = ls.definition.record(name)
        cur = cat_services.get(sid)
        if cur is None or _service_differs(to_record(cur), rec):
            if cur is not None and ls.definition.enable_tag_override:
                rec["tags"] = list(cur.tags)  # EnableTagOverride: the catalog's tags win
                if not _service_differs(to_record(cur), rec):
                    continue
            out.append(commands.register({"node": name}, service=rec, skip_node_update=True, now=now))
    for sid in cat_services:
        if sid not in local.services and sid not in skip_services:
            out.append(commands.deregister(name, service_id=sid, now=now))
    for cid, lc in local.checks.items():
        cat = cat_checks.get(cid)
        output = lc.output
        if cat is not None and cat.status == lc.status and cat.output != lc.output:
            # Output-only change: hold it back until check_update_interval has passed.
            if lc.output_dirty_since is not None and now - lc.output_dirty_since < OUTPUT_SYNC_INTERVAL_S:
                output = cat.output
        rec = _check_record(name, lc, output)
        if cat is None or _check_differs(to_record(cat), rec):
            out.append(commands.register({"node": name}, checks=[rec], skip_node_update=True, now=now))
    for cid, stale in cat_checks.items():
        if cid in local.checks or cid in OWNED_BY_LEADER:
            continue
        if stale.service_id and stale.service_id in skip_services:
            continue
        out.append(commands.deregister(name, check_id=cid, now=now))
    return out


def _service_differs(cur: dict[str, Any], want: dict[str, Any]) -> bool:
    return any(cur.get(k) != v for k, v in want.items())


def _check_differs(cur: dict[str, Any], want: dict[str, Any]) -> bool:
    return any(cur.get(k) != v for k, v in want.items())


class AntiEntropy:
    """Runs :func:`plan` after every local change and every ``ae_interval``; retries on failure."""

    def __init__(
        self,
        node: Callable[[], dict[str, Any]],
        local: LocalState,
        rows: Callable[[str], Awaitable[CatalogRows]],
        write: Callable[[Command], Awaitable[Any]],
        cluster_size: Callable[[], int] = lambda: 1,
        skip_services: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
        interval_s: float = AE_INTERVAL_S,
    ) -> None:
        self.interval_s = interval_s
        self.node = node
        self.local = local
        self.rows = rows
        self.write = write
        self.cluster_size = cluster_size
        self.skip_services = skip_services
        self.rng = rng or random.Random()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self.sync_count = 0

    def trigger(self) -> None:
        self._kick.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="anti-entropy")

    async def sync_once(self) -> int:
        """One full sync pass; returns the number of commands it needed."""
        self.synced.clear()
        node = self.node()
        cmds = plan(node, self.local, await self.rows(node["node"]), time.time(), self.skip_services)
        for cmd in cmds:
            result = await self.write(cmd)
            if isinstance(result, CommandError):
                log.warning("anti-entropy: catalog refused %s: %s", cmd.get("op"), result)
        self.sync_count += 1
        self.synced.set()
        return len(cmds)

    async def _run(self) -> None:
        self._kick.set()
        while True:
            # ae.go: Interval + RandomStagger(scale × Interval) — at most 2 min below 129 nodes.
            timeout = self.interval_s + self.rng.uniform(0, self.interval_s * scale_factor(self.cluster_size()))
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure: log, retry soon; never kill the loop
                log.warning("anti-entropy sync failed, retrying in %.0fs: %s", RETRY_AFTER_FAILURE_S, err)
                try:  # a trigger (a local change, a server appearing) retries sooner
                    await asyncio.wait_for(self._kick.wait(),
                                           RETRY_AFTER_FAILURE_S + self.rng.uniform(0, RETRY_AFTER_FAILURE_S))
                except TimeoutError:
                    pass
                self._kick.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
