"""The composition root: the one place that builds and wires an agent's parts.

Config → state store → consensus (Standalone today; Raft for clusters) → local state + anti-entropy
→ check scheduler → session TTL timers → HTTP API. Nothing else constructs these; everything else
receives what it needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from agent import config as config_mod
from agent.checks.errors import InvalidCheckStatus, NotTTLCheck, ScriptChecksDisabled
from agent.checks.policy import require_script_checks_allowed
from agent.checks.reaper import REAP_INTERVAL_S, CriticalReaper
from agent.checks.scheduler import CheckScheduler
from agent.checks.script import enable_child_subreaper
from agent.client import RemoteConsensus, ServerPool
from agent.cluster_keyring import KEYRING_EVENT, ClusterKeyring, keyring_tag
from agent.config import AgentConfig, ConfigError
from agent.consensus import Consensus, ConsensusError
from agent.discovery import ServerDirectory, ServerInfo, server_info
from agent.dns import DNSServer
from agent.events import decode_event, encode_event, event_matches
from agent.gossip.core import Member, MemberEvent, MemberStatus, UserEventReceived
from agent.gossip.errors import EncodeError
from agent.gossip.keyring import Keyring, setup_keyring
from agent.gossip.node import GossipNode, RetryJoinError
from agent.http.app import build_app
from agent.http.core import HTTPError
from agent.local.definitions import (
    CheckDefinition,
    DefinitionError,
    ServiceDefinition,
    parse_check,
    parse_service,
)
from agent.local.state import LocalCheck, LocalState, UnknownCheck, UnknownService
from agent.local.sync import AntiEntropy, CatalogRows
from agent.raft.config import RaftConfig
from agent.raft.core import ConfigChangeOp
from agent.raft.filestorage import FileStorage
from agent.raft.messages import Configuration, Server
from agent.raft.node import RaftNode
from agent.raft.recovery import apply_peers_json
from agent.raft.transport import RPCError
from agent.session_timers import SessionTimers
from agent.standalone import Standalone
from agent.state import commands
from agent.state.commands import Command, result_to_wire
from agent.state.journal import Journal
from agent.state.store import Store
from agent.state.structs import CRITICAL, PASSING, SERF_CHECK_ID

__all__ = ["Agent", "run"]

log = logging.getLogger("ctk.agent")

SERVER_SERVICE = "consul"  # every server appears as service "consul", as in Consul
RAFT_TICK_S = 0.05  # × raft_multiplier (5 by default, 1 in -dev): election timeout 10 ticks = 0.5 s × multiplier
LEADER_RECONCILE_INTERVAL_S = 10.0
LEAVE_TIMEOUT_S = 10.0
DEFAULT_SERF_LAN_PORT = 8301  # a join address without a port means this, as in Consul
MAX_TRAILING_LOGS = 250  # autopilot's max_trailing_logs: a server further behind is not healthy
CLIENT_LEADER_POLL_S = 10.0
# Not passed back through a forwarded request: the client agent's own HTTP server sets these.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.config = cfg
        # CTK_BUILD_VERSION: the build this agent reports (member tag, /v1/agent/self, autopilot), for
        # packagers' own version strings and for rehearsing a rolling upgrade with one installed copy.
        self.version = os.environ.get("CTK_BUILD_VERSION") or config_mod.VERSION
        self.node_name = cfg.node_name
        self.datacenter = cfg.datacenter
        self.node_id = config_mod.persisted_node_id(cfg)
        self.store = Store()
        self.server_address = f"{cfg.advertise}:{cfg.ports.server}"
        self.serf_address = f"{cfg.advertise}:{cfg.ports.serf_lan}"
        self.raft: RaftNode | None = None
        self.directory: ServerDirectory | None = None
        self.gossip: GossipNode | None = None
        self.pool: ServerPool | None = None  # client agents: the servers requests are forwarded to
        self.exit_code = 0
        self.consensus: Consensus
        # Agent-local user events (Consul keeps the last 256 per agent; they arrive over gossip, not Raft).
        self.events = Store()
        self._event_index = 0
        self._ring: Keyring | None = None  # the gossip keyring (None: gossip not encrypted)
        if cfg.server and cfg.data_dir and not cfg.dev:
            # A real server: Raft over a durable log (one server with -bootstrap, or a cluster).
            self.raft = RaftNode(
                node_id=self.node_id, node_name=self.node_name, address=self.server_address, store=self.store,
                storage=FileStorage(Path(cfg.data_dir) / "raft"), raft_config=RaftConfig(),
                tick_s=RAFT_TICK_S * cfg.raft_multiplier, snapshot_threshold=cfg.raft_snapshot_threshold,
                on_leader_change=self._leader_changed, bind_host=cfg.bind_addr)
            self.raft.rpc_handlers.update({
                "session_renew": self._rpc_session_renew,
                "autopilot_health": lambda body: self.autopilot_health(),
                "write": self._rpc_write, "node_rows": self._rpc_node_rows, "http": self._rpc_http,
                "dns": self._rpc_dns,
            })
            self.consensus = self.raft
            self.gossip = self._gossip_node(Path(cfg.data_dir))
            self.directory = ServerDirectory(self.gossip, self._server_info)
        elif not cfg.server:
            # A client agent: gossip, its own services and checks; the state lives on the servers.
            self.gossip = self._gossip_node(Path(cfg.data_dir))
            self.directory = ServerDirectory(self.gossip, None, self.datacenter)
            self.pool = ServerPool(self.directory)
            self.consensus = RemoteConsensus(self.pool)
        else:
            # -dev (and -dev -data-dir): one in-process server that is its own leader at once.
            journal = Journal(Path(cfg.data_dir) / "state") if cfg.data_dir else None
            self.consensus = Standalone(self.store, self.server_address, self.node_id, self.node_name, journal,
                                        snapshot_threshold=cfg.raft_snapshot_threshold)
        self.keyring = ClusterKeyring(self._ring, self.gossip, self._retag)
        self.local = LocalState(on_change=self._local_changed)
        self.checks = CheckScheduler(self._check_result)
        self.reaper = CriticalReaper()
        self.local.on_check_added = self._start_check
        self.local.on_check_removed = self._stop_check
        self._reap_task: asyncio.Task[None] | None = None
        self.sync = AntiEntropy(self._node_record, self.local, self._catalog_rows, self.write,
                                cluster_size=self._cluster_size,
                                skip_services=frozenset({SERVER_SERVICE}) if cfg.server else frozenset(),
                                interval_s=cfg.ae_interval_s)
        self.sessions = SessionTimers(self.write)
        self.dns = DNSServer(self.store, cfg, node_address=cfg.advertise,
                             remote=self._remote_dns if self.pool is not None else None)
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._local_version = 0
        self._local_waiters: list[asyncio.Future[None]] = []
        self.http_address = ""
        self._leader_task: asyncio.Task[None] | None = None
        self._formation: asyncio.Task[None] | None = None
        self._formation_kick = asyncio.Event()
        self._leader_kick = asyncio.Event()
        self._join_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stable_since: dict[str, float] = {}
        self._http_session: ClientSession | None = None
        self.closing = False  # set on shutdown: blocking queries answer at once instead of holding exit

    def _gossip_node(self, data: Path) -> GossipNode:
        cfg = self.config
        self._ring = setup_keyring(data, cfg.encrypt or None)
        return GossipNode(
            config_mod.gossip_config(cfg), self.node_name, (cfg.bind_addr, cfg.ports.serf_lan),
            advertise=(cfg.advertise, cfg.ports.serf_lan), tags=self.member_tags(),
            seal=self._ring, on_member_event=self._member_event,
            on_user_event=self._user_event, snapshot_path=data / "serf" / "local.snapshot",
            rejoin_after_leave=cfg.rejoin_after_leave, default_join_port=DEFAULT_SERF_LAN_PORT)

    # --------------------------------------------------------------- writes

    async def write(self, command: Command) -> Any:
        return await self.consensus.apply(command)

    def _cluster_size(self) -> int:
        """Members gossip knows: anti-entropy's interval grows with it (``scale_factor``)."""
        return len(self.gossip.members()) if self.gossip is not None and self.gossip.running else 1

    async def _catalog_rows(self, node: str) -> CatalogRows:
        """The catalog's rows for ``node``, anti-entropy's input: from a server when this is a client."""
        if self.pool is not None:
            return CatalogRows.from_wire(await self.pool.call("node_rows", {"node": node}, idempotent=True))
        return CatalogRows.of(self.store, node)

    # --------------------------------------------------- serving client agents

    async def _rpc_write(self, command: Any) -> Any:
        assert self.raft is not None
        return result_to_wire(await self.raft.apply(command))

    async def _rpc_node_rows(self, body: Any) -> Any:
        assert self.raft is not None
        await self.raft.read_barrier("default")
        return CatalogRows.of(self.store, str(body.get("node", ""))).to_wire()

    async def _rpc_dns(self, body: Any) -> Any:
        return await self.dns.answer(bytes(body["query"]), bool(body.get("tcp")))

    async def _rpc_http(self, body: Any) -> Any:
        """A client agent's ``/v1`` request, answered by this server's own HTTP API (see agent/client.py)."""
        if not self.http_address:
            raise ConsensusError("this server has no HTTP listener to answer forwarded requests")
        path = str(body.get("path", ""))
        if not path.startswith("/v1/"):  # only API paths, and never a URL that could name another host
            raise ConsensusError(f"forwarded request path {path[:80]!r} is not under /v1/")
        host, _, port = self.http_address.rpartition(":")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if self._http_session is None:
            self._http_session = ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False)
        async with self._http_session.request(str(body["method"]), f"http://{host}:{port}{path}",
                                              headers=dict(body.get("headers") or {}),
                                              data=bytes(body.get("body") or b"")) as resp:
            payload = await resp.read()
            headers = [(k, v) for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS]
            return {"status": resp.status, "headers": headers, "body": payload}

    async def forward_http(self, method: str, path: str, headers: dict[str, str], body: bytes,
                           blocking: bool) -> dict[str, Any]:
        """A client agent sends a ``/v1`` request to a server; reads are retried on another server."""
        assert self.pool is not None
        timeout_s = self.config.max_query_time_s * 17 / 16 + 30 if blocking else 60.0
        result: dict[str, Any] = await self.pool.call(
            "http", {"method": method, "path": path, "headers": headers, "body": body},
            timeout_s=timeout_s, idempotent=method in ("GET", "HEAD"))
        return result

    async def _watch_leader(self) -> None:
        """A client agent's view of the leader (``/v1/agent/self``'s ``leader_addr``), kept fresh."""
        assert self.pool is not None
        while True:
            try:
                status = await self.pool.call("status", {}, timeout_s=2.0, idempotent=True)
                self.pool.leader_addr = str(status.get("leader_addr") or "")
            except ConsensusError:
                self.pool.leader_addr = ""
            await asyncio.sleep(CLIENT_LEADER_POLL_S)

    async def _remote_dns(self, query: bytes, tcp: bool) -> bytes:
        assert self.pool is not None
        answer: bytes = await self.pool.call("dns", {"query": query, "tcp": tcp}, timeout_s=5.0, idempotent=True)
        return answer

    # ---------------------------------------------------------- local state

    def _local_changed(self) -> None:
        self._local_version += 1
        for fut in self._local_waiters:
            if not fut.done():
                fut.set_result(None)
        self._local_waiters.clear()
        self.sync.trigger()

    async def wait_local_change(self, timeout_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._local_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass

    async def after_local_change(self) -> None:
        """Consul syncs synchronously after an agent-endpoint write; failures are only logged."""
        try:
            await self.sync.sync_once()
        except Exception as err:
            log.warning("sync after local change failed (will retry): %s", err)

    def _start_check(self, lc: LocalCheck) -> None:
        spec = lc.definition.spec
        if spec is not None:
            self.checks.add(lc.check_id, spec)
            self.reaper.track(lc.check_id, lc.definition.service_id, spec.deregister_critical_service_after_s,
                              lc.status, time.monotonic())

    def _stop_check(self, check_id: str) -> None:
        self.checks.remove(check_id)
        self.reaper.untrack(check_id)

    def _check_result(self, check_id: str, status: str, output: str) -> None:
        self.reaper.observe(check_id, status, time.monotonic())
        try:
            self.local.update_check(check_id, status, output, now=time.time())
        except UnknownCheck:
            pass

    async def _reap_loop(self) -> None:
        """``DeregisterCriticalServiceAfter``: sweep every 30 s, as Consul's agent does."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            for service_id in sorted(self.reaper.due(time.monotonic())):
                log.warning("service %s: critical longer than its DeregisterCriticalServiceAfter; deregistering",
                            service_id)
                self.reaper.forget_service(service_id)
                await self.deregister_service(service_id)

    def _check_script_policy(self, checks: Iterable[CheckDefinition], source: str) -> None:
        for chk in checks:
            if chk.spec is None or chk.spec.type != "script":
                continue
            try:
                require_script_checks_allowed(
                    chk.spec, "http" if source == "http" else "config", check_id=chk.check_id,
                    enable_script_checks=self.config.enable_script_checks,
                    enable_local_script_checks=self.config.enable_local_script_checks)
            except ScriptChecksDisabled as err:
                raise HTTPError(400, str(err)) from None

    async def register_service(self, svc: ServiceDefinition, source: str, replace_existing_checks: bool = False) -> None:
        self._check_script_policy(svc.checks, source)
        self.local.add_service(svc, source, replace_existing_checks)
        self._persist_local()
        await self.after_local_change()

    async def deregister_service(self, service_id: str) -> None:
        if service_id == SERVER_SERVICE and self.config.server:
            raise HTTPError(400, "Cannot deregister the consul service of a server")
        self.local.remove_service(service_id)
        self._persist_local()
        await self.after_local_change()

    async def register_check(self, chk: CheckDefinition, source: str) -> None:
        self._check_script_policy([chk], source)
        self.local.add_check(chk, source)
        self._persist_local()
        await self.after_local_change()

    async def deregister_check(self, check_id: str) -> None:
        self.local.remove_check(check_id)
        self._persist_local()
        await self.after_local_change()

    async def update_ttl_check(self, check_id: str, status: str, output: str) -> None:
        try:
            self.checks.ttl_update(check_id, status, output)
        except NotTTLCheck as err:
            raise HTTPError(500, str(err)) from None
        except InvalidCheckStatus as err:
            raise HTTPError(400, str(err)) from None
        await self.after_local_change()

    # ------------------------------------------------- persistence of local

    def _local_file(self) -> Path | None:
        return Path(self.config.data_dir) / "local-state.json" if self.config.data_dir else None

    def _persist_local(self) -> None:
        """API-registered services and checks survive restarts (Consul keeps them under the data dir)."""
        path = self._local_file()
        if path is None:
            return
        data = {
            "services": [_raw_service(ls.definition) for ls in self.local.services.values() if ls.source == "http"],
            "checks": [{"id": lc.check_id, "name": lc.definition.name, "serviceid": lc.definition.service_id,
                        "notes": lc.definition.notes, "status": lc.definition.status, **lc.definition.raw}
                       for lc in self.local.checks.values()
                       if lc.source == "http" and (not lc.definition.service_id
                                                   or self.local.services[lc.definition.service_id].source != "http")],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def _load_persisted_local(self) -> None:
        path = self._local_file()
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            for raw in data.get("services", []):
                self.local.add_service(parse_service(raw), "http")
            for raw in data.get("checks", []):
                self.local.add_check(parse_check(raw), "http")
        except (ValueError, DefinitionError, UnknownService) as err:
            log.error("%s: could not restore API-registered services: %s", path, err)

    # --------------------------------------------------------------- config

    def _load_config_definitions(self, cfg: AgentConfig) -> tuple[list[ServiceDefinition], list[CheckDefinition]]:
        """Parse config-file definitions. A malformed one is fatal (ConfigError naming file and field);
        one the script-check policy refuses is skipped with an error line, the rest still load."""
        services: list[ServiceDefinition] = []
        checks: list[CheckDefinition] = []
        errors: list[str] = []
        for raw, is_service in [(r, True) for r in cfg.services] + [(r, False) for r in cfg.checks]:
            source = raw.get("__source", "config")
            body = {k: v for k, v in raw.items() if k != "__source"}
            label = f"{source}: {'service' if is_service else 'check'} {body.get('name') or body.get('Name') or '?'}"
            try:
                if is_service:
                    svc = parse_service(body)
                    self._check_script_policy(svc.checks, "config")
                    services.append(svc)
                else:
                    chk = parse_check(body)
                    self._check_script_policy([chk], "config")
                    checks.append(chk)
            except DefinitionError as err:
                errors.append(f"{label}: {err}")
            except HTTPError as err:
                log.error("%s refused: %s", label, err.text)
        if errors:
            raise ConfigError("; ".join(errors))
        return services, checks

    def _apply_config_definitions(self, services: list[ServiceDefinition], checks: list[CheckDefinition]) -> None:
        for sid in [sid for sid, ls in self.local.services.items() if ls.source == "config"]:
            if sid not in {s.id for s in services}:
                self.local.remove_service(sid)
        for cid in [cid for cid, lc in self.local.checks.items() if lc.source == "config" and not lc.definition.service_id]:
            if cid not in {c.check_id for c in checks}:
                self.local.remove_check(cid)
        for svc in services:
            self.local.add_service(svc, "config")
        for chk in checks:
            try:
                self.local.add_check(chk, "config")
            except UnknownService as err:
                raise ConfigError(f"check {chk.check_id}: ServiceID {err.args[0]!r} does not exist") from None

    async def reload(self) -> list[str]:
        """SIGHUP / ``ctk reload``: re-read config files; on error keep the running configuration."""
        try:
            fresh = config_mod.from_sources(self.config.cli_flags)
            services, checks = self._load_config_definitions(fresh)
        except ConfigError as err:
            log.error("reload failed, keeping the running configuration: %s", err)
            return [str(err)]
        self._apply_config_definitions(services, checks)
        log.info("reloaded configuration: %d services, %d checks from files", len(services), len(checks))
        await self.after_local_change()
        return []

    # ---------------------------------------------------------------- node

    def _node_record(self) -> dict[str, Any]:
        addr = self.config.advertise
        return {
            "node": self.node_name,
            "address": addr,
            "id": self.node_id,
            "datacenter": self.datacenter,
            "tagged_addresses": {"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
            "meta": dict(self.config.node_meta) or {"consul-network-segment": ""},
        }

    async def _leader_reconcile(self) -> None:
        """What Consul's leader does with gossip (``agent/consul/leader.go`` reconcile): every alive
        member is a node with ``serfHealth`` passing (servers also get the ``consul`` service); a failed
        member's ``serfHealth`` goes critical (its services leave DNS and ``?passing``); a member that
        left is deregistered, and a server that left is taken out of the Raft configuration."""
        now = time.time()
        members: list[Member] = self.gossip.members() if self.gossip is not None and self.gossip.running else []
        if not members:
            members = [Member(self.node_name, self.config.advertise, self.config.ports.serf_lan,
                              self.member_tags(), MemberStatus.ALIVE, 0)]
        for m in members:
            if m.tags.get("dc", self.datacenter) != self.datacenter:
                continue
            if m.status in (MemberStatus.LEFT,):
                if m.name in self.store.nodes and m.name != self.node_name:
                    await self.write(commands.deregister(m.name, now=now))
                continue
            alive = m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.LEAVING)
            serf = {"node": m.name, "check_id": SERF_CHECK_ID, "name": "Serf Health Status",
                    "status": PASSING if alive else CRITICAL, "type": "",
                    "output": "Agent alive and reachable" if alive else "Agent not live or unreachable"}
            if m.name == self.node_name:
                node = self._node_record()
            else:
                node = {"node": m.name, "address": m.addr, "id": m.tags.get("id", "")}
            existing = self.store.nodes.get(m.name)
            skip = existing is not None and m.name != self.node_name
            current = self.store.checks.get(m.name, {}).get(SERF_CHECK_ID)
            if current is None or current.status != serf["status"] or existing is None:
                await self.write(commands.register(node, checks=[serf], skip_node_update=skip, now=now))
            info = server_info(m)
            if info is not None and alive:
                port = int(info.server_addr.rpartition(":")[2])
                svc = {"node": m.name, "id": SERVER_SERVICE, "service": SERVER_SERVICE, "port": port,
                       "meta": {"raft_version": "3", "serf_protocol_current": "2", "serf_protocol_min": "1",
                                "serf_protocol_max": "5", "version": self.version}}
                if SERVER_SERVICE not in self.store.services.get(m.name, {}):
                    await self.write(commands.register({"node": m.name}, service=svc, skip_node_update=True,
                                                       now=now))
        if self.raft is not None and self.directory is not None:
            await self._reconcile_servers(members)

    async def _reconcile_servers(self, members: list[Member]) -> None:
        """The Raft configuration follows gossip (Consul's leader and autopilot):

        - a server that left gracefully is removed;
        - a live server that is not in the configuration is added as a voter (``joinConsulServer``):
          one that joined, or one that was pruned while it was down and has come back;
        - with ``autopilot.cleanup_dead_servers`` (the default) a server gossip has declared failed is
          removed — but only while the servers left still hold a majority of the current voters and
          at least ``min_quorum`` remain, so pruning can never itself cost the quorum.
        """
        assert self.raft is not None and self.directory is not None
        conf = self.raft.current_configuration()
        for gone in self.directory.departed_servers():
            if gone.id in conf.ids and gone.id != self.node_id:
                log.info("server %s left; removing it from the Raft configuration", gone.name)
                await self.raft.change_membership(ConfigChangeOp.REMOVE_SERVER, gone.id)
        conf = self.raft.current_configuration()
        for info in self.directory.servers():
            if info.id not in conf.ids:
                log.info("adding server %s (%s) to the Raft configuration", info.name, info.server_addr)
                await self.raft.change_membership(ConfigChangeOp.ADD_VOTER, info.id, info.server_addr)
        if not self.config.cleanup_dead_servers:
            return
        conf = self.raft.current_configuration()
        failed = [info for m in members if m.status is MemberStatus.FAILED
                  for info in [server_info(m)] if info is not None and info.id in conf.ids and info.id != self.node_id]
        voters = len(conf.voters)
        failed_voters = sum(1 for f in failed if conf.is_voter(f.id))
        if not failed or voters - failed_voters <= voters // 2 or voters - failed_voters < self.config.min_quorum:
            return
        for dead in failed:
            log.info("autopilot: removing dead server %s (%s) from the Raft configuration", dead.name, dead.id)
            await self.raft.change_membership(ConfigChangeOp.REMOVE_SERVER, dead.id)

    def _member_event(self, event: MemberEvent) -> None:
        log.info("member %s: %s (%s:%d)", event.kind.value, event.member.name, event.member.addr, event.member.port)
        self._directory_changed()
        self._leader_kick.set()

    # ------------------------------------------------------------- cluster

    def _server_info(self) -> ServerInfo:
        return ServerInfo(id=self.node_id, name=self.node_name, datacenter=self.datacenter,
                          server_addr=self.server_address, serf_addr=self.serf_address,
                          expect=self.config.bootstrap_expect)

    def _directory_changed(self) -> None:
        if self.pool is not None and self.pool.addresses():
            self.sync.trigger()  # a client that just learned of a server syncs now, not after its retry pause
        if self.raft is not None and self.directory is not None:
            for info in self.directory.servers():
                if info.id != self.node_id:
                    self.raft.set_peer_address(info.id, info.server_addr)
        self._formation_kick.set()

    async def _form_cluster(self) -> None:
        """Bootstrap (``-bootstrap``, or ``-bootstrap-expect N`` once N servers are known) or join a
        cluster that already exists by asking its leader to add this server (thesis §4.1)."""
        assert self.raft is not None and self.directory is not None
        raft, directory, cfg = self.raft, self.directory, self.config
        while not raft.in_configuration():
            servers = directory.servers()
            others = [s for s in servers if s.id != self.node_id]
            probes = await asyncio.gather(*(self._probe_server(s.server_addr) for s in others))
            existing = [st for st in probes if st is not None and st.get("has_state")]
            if not raft.has_state() and cfg.bootstrap:
                raft.bootstrap(Configuration.of([Server(self.node_id, self.server_address)]))
            elif existing:
                leaders = {str(st["leader_addr"]) for st in existing if st.get("leader_addr")}
                for leader_addr in sorted(leaders):
                    try:
                        await raft.transport.call(leader_addr, "add_server",
                                                  {"id": self.node_id, "address": self.server_address}, timeout_s=10)
                        log.info("asked the leader at %s to add this server", leader_addr)
                        break
                    except RPCError as err:
                        log.info("joining through %s failed (will retry): %s", leader_addr, err)
            elif not raft.has_state() and cfg.bootstrap_expect:
                if len(servers) >= cfg.bootstrap_expect:
                    expects = {s.expect for s in servers if s.expect}
                    if len(expects) > 1:
                        log.error("servers disagree on -bootstrap-expect (%s); not bootstrapping",
                                  ", ".join(map(str, sorted(expects))))
                    else:
                        raft.bootstrap(Configuration.of([Server(s.id, s.server_addr) for s in servers]))
                else:
                    log.info("waiting for %d servers to bootstrap (%d known)", cfg.bootstrap_expect, len(servers))
            self._formation_kick.clear()
            try:
                await asyncio.wait_for(self._formation_kick.wait(), 1.0)
            except TimeoutError:
                pass
        log.info("this server is a member of the Raft configuration")

    async def _retry_join(self) -> None:
        """``-retry-join`` (and the member snapshot, after a crash or with ``-rejoin``)."""
        assert self.gossip is not None
        addresses = list(dict.fromkeys([*self.config.retry_join, *self.gossip.rejoin_addresses()]))
        if not addresses:
            return
        try:
            joined = await self.gossip.retry_join(addresses, self.config.retry_interval_s, self.config.retry_max)
            log.info("joined the cluster through %d address(es)", joined)
        except RetryJoinError as err:
            log.error("%s", err)
            self.exit_code = 1
            self._stop.set()

    async def _probe_server(self, server_addr: str) -> dict[str, Any] | None:
        """A server's Raft status over RPC (None when it does not answer within a second)."""
        assert self.raft is not None
        try:
            status: dict[str, Any] = await self.raft.transport.call(server_addr, "status", {}, timeout_s=1.0)
            return status
        except RPCError:
            return None

    def _leader_changed(self, leader_id: str | None, is_me: bool) -> None:
        if leader_id is not None:
            self.sync.trigger()
        if is_me and self._leader_task is None:
            self._leader_task = asyncio.create_task(self._leader_loop(), name="leader-duties")
        elif not is_me and self._leader_task is not None:
            self._leader_task.cancel()
            self._leader_task = None
            asyncio.ensure_future(self.sessions.stop())

    async def _leader_loop(self) -> None:
        """Leader-only duties: reconcile members into the catalog, session TTL timers, address updates."""
        self.sessions.start(self.store)
        while True:
            self._leader_kick.clear()
            try:
                await self._leader_reconcile()
                await self._reconcile_addresses()
            except ConsensusError as err:
                log.info("leader reconcile deferred: %s", err)
            try:
                await asyncio.wait_for(self._leader_kick.wait(), LEADER_RECONCILE_INTERVAL_S)
            except TimeoutError:
                pass

    async def _reconcile_addresses(self) -> None:
        """A server that came back on a new address gets it written into the configuration."""
        if self.raft is None or self.directory is None:
            return
        conf = self.raft.current_configuration()
        for info in self.directory.servers():  # this server included: the leader may have moved too
            current = conf.get(info.id)
            if current is not None and current.address != info.server_addr:
                log.info("updating server %s address %s -> %s", info.name, current.address, info.server_addr)
                op = ConfigChangeOp.ADD_VOTER if conf.is_voter(info.id) else ConfigChangeOp.ADD_NONVOTER
                await self.raft.change_membership(op, info.id, info.server_addr)

    def _rpc_session_renew(self, body: Any) -> bool:
        sess = self.store.sessions.get(str(body.get("id", "")))
        if sess is None:
            return False
        self.sessions.renewed(sess.id, sess.ttl)
        return True

    async def renew_session(self, session_id: str, ttl: str) -> None:
        """Session TTL timers live on the leader; a renew on a follower is forwarded there."""
        if self.raft is None or self.raft.is_leader():
            self.sessions.renewed(session_id, ttl)
            return
        leader = self.raft.leader_address()
        if not leader:
            raise ConsensusError("No cluster leader")
        await self.raft.transport.call(leader, "session_renew", {"id": session_id})

    async def autopilot_health(self) -> dict[str, Any]:
        """``/v1/operator/autopilot/health`` as Consul's leader computes it (``operator/autopilot.mdx``).

        A server is healthy when it answers within a second, is a voter or non-voter of the current
        configuration, and its log trails the leader's commit index by at most ``max_trailing_logs``
        (250). FailureTolerance = healthy voters − quorum. Answered by the leader; followers forward.
        """
        raft = self.raft
        if raft is None:
            cfg = self.consensus.configuration()
            server = cfg["Servers"][0]
            return {"Healthy": True, "FailureTolerance": 0, "Servers": [{
                "ID": server["ID"], "Name": self.node_name, "Address": server["Address"], "SerfStatus": "alive",
                "Version": self.version, "Leader": True, "LastContact": "0s", "LastTerm": 1,
                "LastIndex": self.store.last_index, "Healthy": True, "Voter": True,
                "StableSince": _iso(self.started_at)}]}
        if not raft.is_leader():
            leader = raft.leader_address()
            if not leader:
                raise ConsensusError("No cluster leader")
            result: dict[str, Any] = await raft.transport.call(leader, "autopilot_health", {}, timeout_s=5)
            return result
        conf = raft.current_configuration()
        me = raft.status_dict()
        names = {i.id: i.name for i in (self.directory.servers() if self.directory else [])}
        versions = {self.node_id: self.version}  # each server's own build, from its gossip tags
        for m in self.gossip.members() if self.gossip is not None and self.gossip.running else []:
            info = server_info(m)
            if info is not None and m.tags.get("build"):
                versions.setdefault(info.id, m.tags["build"].split(":")[0])

        async def probe(server: Server) -> tuple[Server, dict[str, Any] | None, float]:
            if server.id == self.node_id:
                return server, me, 0.0
            t0 = time.monotonic()
            try:
                st = await raft.transport.call(raft.peer_address(server.id) or server.address, "status", {},
                                               timeout_s=1.0)
                return server, st, time.monotonic() - t0
            except RPCError:
                return server, None, 0.0

        results = await asyncio.gather(*(probe(s) for s in conf.servers))
        now = time.time()
        servers_json = []
        healthy_voters = 0
        for server, st, rtt_s in results:
            ok = st is not None and me["commit_index"] - int(st.get("last_log_index", 0)) <= MAX_TRAILING_LOGS
            if ok:
                self._stable_since.setdefault(server.id, now)
            else:
                self._stable_since.pop(server.id, None)
            voter = conf.is_voter(server.id)
            healthy_voters += int(ok and voter)
            servers_json.append({
                "ID": server.id, "Name": names.get(server.id, self.node_name if server.id == self.node_id else ""),
                "Address": server.address, "SerfStatus": "alive" if st is not None else "failed",
                "Version": versions.get(server.id, ""), "Leader": server.id == self.node_id,
                "LastContact": "0s" if server.id == self.node_id else f"{rtt_s * 1000:.3f}ms" if st else "",
                "LastTerm": int(st.get("term", 0)) if st else 0,
                "LastIndex": int(st.get("last_log_index", 0)) if st else 0,
                "Healthy": ok, "Voter": voter,
                "StableSince": _iso(self._stable_since[server.id]) if server.id in self._stable_since else "",
            })
        voters = len(conf.voters)
        return {"Healthy": all(s["Healthy"] for s in servers_json),
                "FailureTolerance": max(0, healthy_voters - (voters // 2 + 1)), "Servers": servers_json}

    async def remove_peer(self, server_id: str = "", address: str = "") -> None:
        """``/v1/operator/raft/peer``: drop a (dead) server from the Raft configuration."""
        if self.raft is None:
            raise HTTPError(500, "this agent does not run Raft (a -dev or single in-process server)")
        conf = self.raft.current_configuration()
        target = conf.get(server_id) if server_id else next((s for s in conf.servers if s.address == address), None)
        if target is None:
            what = f"id {server_id!r}" if server_id else f"address {address!r}"
            raise HTTPError(500, f"no server with {what} in the Raft configuration")
        await self.raft.change_membership(ConfigChangeOp.REMOVE_SERVER, target.id)
        log.info("removed server %s (%s) from the Raft configuration", target.id, target.address)

    async def transfer_leadership(self, target_id: str = "") -> str | None:
        if self.raft is None:
            raise HTTPError(500, "this agent does not run Raft")
        if not self.raft.is_leader():
            raise HTTPError(500, "this server is not the leader; send the request to the leader")
        return await self.raft.transfer_leadership(target=target_id or None)

    async def leave_cluster(self) -> None:
        """Graceful leave: out of the catalog, leadership handed to an up-to-date peer, then out of the
        Raft configuration — so the remaining servers keep a quorum (unlike a failure, which does not
        shrink it)."""
        try:
            await self.write(commands.deregister(self.node_name, now=time.time()))
        except ConsensusError as err:
            log.warning("leave: could not deregister this node from the catalog: %s", err)
        raft = self.raft
        if raft is None or not raft.in_configuration():
            if self.gossip is not None and self.gossip.running:
                await self.gossip.leave()
            return
        if raft.is_leader() and len(raft.current_configuration().voters) > 1:
            new_leader = await raft.transfer_leadership()
            log.info("leave: leadership transferred to %s", new_leader or "nobody (transfer failed)")
        if len(raft.current_configuration().servers) > 1:
            try:
                await asyncio.wait_for(raft.change_membership(ConfigChangeOp.REMOVE_SERVER, self.node_id),
                                       LEAVE_TIMEOUT_S)
                log.info("leave: removed from the Raft configuration")
            except (ConsensusError, TimeoutError) as err:
                log.warning("leave: could not remove this server from the Raft configuration: %s", err)
        if self.gossip is not None and self.gossip.running:
            await self.gossip.leave()

    # ------------------------------------------------------------- members

    def member_tags(self) -> dict[str, str]:
        tags = {"dc": self.datacenter, "id": self.node_id, "segment": "", "vsn": "2", "vsn_min": "2",
                "vsn_max": "3", "build": f"{self.version}:ctk"}
        if self.config.server:
            tags.update(role="consul", port=str(self.config.ports.server), raft_vsn="3",
                        wan_join_port=str(self.config.ports.serf_wan))
            if self.config.bootstrap:
                tags["bootstrap"] = "1"
            if self.config.bootstrap_expect:
                tags["expect"] = str(self.config.bootstrap_expect)
        else:
            tags["role"] = "node"
        tags.update(keyring_tag(self._ring))
        return tags

    def _retag(self) -> None:
        if self.gossip is not None and self.gossip.running:
            self.gossip.set_tags(self.member_tags())

    def members_json(self, wan: bool = False) -> list[dict[str, Any]]:
        if wan and not self.config.server:
            return []
        if self.gossip is not None and self.gossip.running and not wan:
            return [{
                "Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": dict(m.tags), "Status": m.status_code,
                "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2, "DelegateMin": 2, "DelegateMax": 5,
                "DelegateCur": 4,
            } for m in sorted(self.gossip.members(), key=lambda m: m.name)]
        return [{
            "Name": f"{self.node_name}.{self.datacenter}" if wan else self.node_name,
            "Addr": self.config.advertise,
            "Port": self.config.ports.serf_wan if wan else self.config.ports.serf_lan,
            "Tags": self.member_tags(),
            "Status": 1,
            "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
            "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
        }]

    def self_json(self) -> dict[str, Any]:
        cfg = self.config
        checks = list(self.local.checks.values())
        stats: dict[str, dict[str, str]] = {
            "agent": {
                "check_monitors": str(sum(1 for c in checks if c.definition.type == "script")),
                "check_ttls": str(sum(1 for c in checks if c.definition.type == "ttl")),
                "checks": str(len(checks)),
                "services": str(len(self.local.services)),
            },
            "build": {"prerelease": "", "revision": "ctk", "version": self.version, "version_metadata": ""},
            "consul": {
                "acl": "disabled",
                "bootstrap": str(cfg.bootstrap).lower(),
                "known_datacenters": "1",
                "leader": str(self.consensus.is_leader()).lower(),
                "leader_addr": self.consensus.leader_address(),
                "server": str(cfg.server).lower(),
            },
            "runtime": {"arch": os.uname().machine, "cpu_count": str(os.cpu_count() or 1),
                        "os": os.uname().sysname.lower(), "version": "python"},
        }
        if cfg.server:
            stats["raft"] = self.consensus.stats()
        return {
            "Config": {
                "Datacenter": self.datacenter, "PrimaryDatacenter": self.datacenter, "NodeName": self.node_name,
                "NodeID": self.node_id, "Revision": "ctk", "Server": cfg.server, "Version": self.version,
                "BuildDate": "",
            },
            "DebugConfig": {
                "Bootstrap": cfg.bootstrap, "BootstrapExpect": cfg.bootstrap_expect, "DataDir": cfg.data_dir,
                "ClientAddrs": [cfg.client_addr], "BindAddr": cfg.bind_addr, "DevMode": cfg.dev,
                "EnableScriptChecks": cfg.enable_script_checks,
                "EnableLocalScriptChecks": cfg.enable_local_script_checks,
                "HTTPPort": cfg.ports.http, "DNSPort": cfg.ports.dns, "ServerPort": cfg.ports.server,
                "SerfPortLAN": cfg.ports.serf_lan, "DNSDomain": cfg.domain, "RetryJoinLAN": list(cfg.retry_join),
            },
            "Coord": None,
            "Member": next((m for m in self.members_json() if m["Name"] == self.node_name), self.members_json()[0]),
            "Stats": stats,
            "Meta": dict(cfg.node_meta) or {"consul-network-segment": ""},
        }

    async def fire_event(self, record: dict[str, Any]) -> None:
        """``/v1/event/fire``: a serf user event to every agent (the sender included, via gossip's own
        delivery); an agent without gossip (``-dev``) just records it."""
        if self.gossip is None or not self.gossip.running:
            self._record_event(record)
            return
        try:
            self.gossip.user_event(str(record["name"]), encode_event(record), coalesce=False)
        except EncodeError as err:
            raise HTTPError(400, f"event too large for gossip: {err}") from None

    def _user_event(self, event: UserEventReceived) -> None:
        if event.name == KEYRING_EVENT:
            self.keyring.handle(event.payload)
            return
        try:
            record = decode_event(event.name, event.payload, event.ltime)
        except ValueError as err:
            log.warning("dropping malformed user event %r: %s", event.name, err)
            return
        if event_matches(record, self.node_name, self.local.services.values()):
            self._record_event(record)

    def _record_event(self, record: dict[str, Any]) -> None:
        """Into this agent's event buffer (the last 256), waking ``/v1/event/list`` watchers."""
        self._event_index += 1
        self.events.apply(self._event_index, commands.event(record))

    async def join(self, addresses: list[str], wan: bool = False) -> int:
        """``/v1/agent/join``: servers hello the address now; an agent with no cluster layer accepts it."""
        if self.gossip is None:
            log.info("join %s accepted (this agent runs no cluster layer)", ", ".join(addresses))
            return len(addresses)
        joined = await self.gossip.join(addresses)
        if joined == 0:
            raise HTTPError(500, f"failed to join {', '.join(addresses)}: no agent answered")
        return joined

    async def force_leave(self, node: str, prune: bool = False) -> None:
        """``force-leave``: a failed member becomes left (the leader then deregisters it)."""
        if node == self.node_name:
            raise HTTPError(500, "cannot force-leave self")
        if self.gossip is not None and self.gossip.member(node) is not None:
            self.gossip.force_leave(node, prune=prune)
            return
        if node not in self.store.nodes:
            raise HTTPError(500, f"agent: No node found with name '{node}'")

    def request_leave(self) -> None:
        log.info("graceful leave requested")

        async def leave_then_stop() -> None:
            try:
                await self.leave_cluster()
            finally:
                self._stop.set()

        task = asyncio.create_task(leave_then_stop(), name="leave")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.config
        enable_child_subreaper()  # orphans of killed check scripts are reaped here, not left as zombies
        for key in cfg.ignored_keys:
            log.warning("config key %r is not implemented by ctk and was ignored", key)
        services, checks = self._load_config_definitions(cfg)
        if isinstance(self.consensus, Standalone):
            replayed = self.consensus.recover()
            if replayed or self.store.last_index:
                log.info("restored state at index %d (%d log records replayed)", self.store.last_index, replayed)
        if self.raft is not None and self.directory is not None:
            raft_dir = Path(cfg.data_dir) / "raft"
            raft_dir.mkdir(parents=True, exist_ok=True)
            apply_peers_json(raft_dir, self.raft.storage, self.node_id, self.server_address)
            await self.raft.start()
            assert self.gossip is not None
            await self.gossip.start()
            self._join_task = asyncio.create_task(self._retry_join(), name="retry-join")
            self._formation = asyncio.create_task(self._form_cluster(), name="cluster-formation")
        elif self.gossip is not None:  # a client agent
            await self.gossip.start()
            self._join_task = asyncio.create_task(self._retry_join(), name="retry-join")
            self._leader_task = asyncio.create_task(self._watch_leader(), name="leader-watch")
        self._apply_config_definitions(services, checks)
        self._load_persisted_local()
        if self.pool is None and self.raft is None:
            await self._leader_reconcile()
            await self.sync.sync_once()
            self.sessions.start(self.store)
        self.sync.start()
        self._reap_task = asyncio.create_task(self._reap_loop(), name="critical-reaper")
        if cfg.ports.http >= 0:
            app = build_app(self)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, cfg.client_addr, cfg.ports.http, reuse_address=True, backlog=1024,
                               shutdown_timeout=2.0)
            await site.start()
            self.http_address = f"{cfg.client_addr}:{cfg.ports.http}"
        await self.dns.start()
        dns = ", ".join(f"{h}:{p}" for h, p in self.dns.addresses) or "off"
        log.info("ctk agent %s running: node=%s dc=%s server=%s http=%s dns=%s data_dir=%s",
                 self.version, self.node_name, self.datacenter, cfg.server, self.http_address or "off", dns,
                 cfg.data_dir or "(in memory)")
        if cfg.dev:
            log.info("dev mode: in-memory state, this agent is its own leader; do not use in production")

    async def wait(self) -> None:
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self.closing = True
        self.store.hub.notify(everything=True)  # every waiting blocking query returns now
        for task in (self._reap_task, self._formation, self._leader_task, self._join_task):
            if task is not None:
                task.cancel()
        if self.gossip is not None:
            await self.gossip.close()
        await self.sync.stop()
        await self.sessions.stop()
        await self.checks.stop()
        await self.dns.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.consensus.close()
        if self._http_session is not None:
            await self._http_session.close()


def _raw_service(svc: ServiceDefinition) -> dict[str, Any]:
    return {
        "id": svc.id, "name": svc.name, "tags": svc.tags, "address": svc.address,
        "taggedaddresses": svc.tagged_addresses, "meta": svc.meta, "port": svc.port, "weights": svc.weights,
        "enabletagoverride": svc.enable_tag_override, "kind": svc.kind,
        "checks": [{"id": c.check_id, "name": c.name, "notes": c.notes, "status": c.status,
                    **{k: v for k, v in c.raw.items() if k not in ("id", "checkid", "name", "notes", "status",
                                                                   "serviceid")}}
                   for c in svc.checks],
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _setup_logging(cfg: AgentConfig) -> None:
    level = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
             "warning": logging.WARNING, "err": logging.ERROR, "error": logging.ERROR}[cfg.log_level.lower()]
    fmt = ('{"@timestamp":"%(asctime)s","@level":"%(levelname)s","@module":"%(name)s","@message":%(message)r}'
           if cfg.log_json else "%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    logging.basicConfig(level=level, format=fmt)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


async def _main(cfg: AgentConfig) -> int:
    agent = Agent(cfg)
    try:
        await agent.start()
    except OSError as err:
        log.error("cannot start: %s", err)
        await agent.close()
        return 1
    except ConfigError as err:
        log.error("%s", err)
        await agent.close()
        return 1
    if cfg.pid_file:
        Path(cfg.pid_file).write_text(str(os.getpid()))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(agent.reload()))
    loop.add_signal_handler(signal.SIGINT, agent.stop)
    loop.add_signal_handler(signal.SIGTERM, agent.stop)
    await agent.wait()
    log.info("shutting down")
    await agent.close()
    return agent.exit_code


def run(argv: list[str]) -> int:
    """``ctk agent ...``: parse flags, load config, run until signalled. Returns the exit code."""
    try:
        cfg = config_mod.load(argv)
    except ConfigError as err:
        print(f"error: {err}", flush=True)
        return 1
    _setup_logging(cfg)
    try:
        return asyncio.run(_main(cfg))
    except KeyboardInterrupt:
        return 0
