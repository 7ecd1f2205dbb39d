"""The asyncio driver around :class:`agent.raft.core.RaftCore`: clocks, disk, sockets, the FSM.

It implements :class:`agent.consensus.Consensus`, so the HTTP API writes through Raft exactly as it
wrote through the single-server stand-in. One task owns the core and handles each ``Ready`` in the
order its docstring prescribes: persist (one ``Storage.save`` = one fsync for every proposal that
arrived since the last one: group commit) → send → restore/apply → reads → advance. While an fsync
is in flight, ticks, messages and proposals keep stepping the core, so the next batch builds up.

Writes on a follower are forwarded to the leader over the transport's RPC channel (Consul's
``rpc_hold_timeout``: held up to 7 s while there is no leader). Reads honour Consul's modes
(``api-docs/features/consistency.mdx``): ``default`` is served under the leader lease (or a ReadIndex
round when the lease lapsed); ``consistent`` always confirms leadership with a quorum first (thesis
§6.4); on a follower both ask the leader for a read index and wait until they have applied it;
``stale`` is answered from whatever this server has.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack

from agent.consensus import ConsensusError, NoLeader
from agent.durations import format_duration
from agent.state.commands import Command, result_from_wire, result_to_wire
from agent.state.store import Store

from .config import RaftConfig
from .core import ConfigChange, ConfigChangeOp, RaftCore, Ready, Role
from .errors import ConfigChangeError, LeadershipTransferError, LeaseExpired, NotLeader, ProposalDropped
from .messages import Configuration, EntryKind, Message, Server
from .storage import Storage
from .transport import NotSent, RPCError, TCPTransport

__all__ = ["RaftNode", "LeadershipLost"]

log = logging.getLogger(__name__)

RPC_HOLD_TIMEOUT_S = 7.0  # Consul's performance.rpc_hold_timeout


class LeadershipLost(ConsensusError):
    def __init__(self) -> None:
        super().__init__("leadership lost while committing the write")


class RaftNode:
    def __init__(
        self,
        *,
        node_id: str,
        node_name: str,
        address: str,
        store: Store,
        storage: Storage,
        raft_config: RaftConfig | None = None,
        tick_s: float = 0.05,
        snapshot_threshold: int = 16384,
        rng: random.Random | None = None,
        on_leader_change: Callable[[str | None, bool], None] | None = None,
        bind_host: str | None = None,
    ) -> None:
        self.id = node_id
        self.name = node_name
        self.address = address
        self.store = store
        self.storage = storage
        self.raft_config = raft_config or RaftConfig()
        self.tick_s = tick_s
        self.snapshot_threshold = snapshot_threshold
        self.rng = rng or random.Random()
        self.on_leader_change = on_leader_change or (lambda leader_id, is_me: None)
        host, _, port = address.rpartition(":")
        self.transport = TCPTransport(bind_host or host, int(port), self._on_message, self._rpc)
        self.rpc_handlers: dict[str, Callable[[Any], Any]] = {}
        self.core: RaftCore | None = None
        self.applied_index = 0
        self.last_snapshot_index = 0
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._proposals: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._read_ids = itertools.count(1)
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._leader_waiters: list[asyncio.Future[None]] = []
        self._addresses: dict[str, str] = {}
        self._configured: dict[str, str] = {}
        self._durable_term_vote: tuple[int, str | None] = (0, None)
        self._address_overrides: dict[str, str] = {}
        self._role = Role.FOLLOWER
        self._leader_id: str | None = None
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.core = RaftCore(self.id, self.storage, self.rng, self.raft_config)
        state = self.storage.load()
        self._durable_term_vote = (state.hard_state.term, state.hard_state.vote)
        if state.snapshot is not None:
            self.store.restore(state.snapshot.data)
            self.applied_index = self.last_snapshot_index = state.snapshot.meta.index
        self._update_addresses(self.core.status().latest_configuration)
        await self.transport.start()
        self._tasks = [asyncio.create_task(self._run(), name="raft-ready"),
                       asyncio.create_task(self._ticker(), name="raft-ticker")]
        self._kick.set()

    def has_state(self) -> bool:
        """True once this server is part of a cluster (bootstrapped, joined, or recovered)."""
        return self.core is not None and bool(self.core.status().latest_configuration.servers)

    def in_configuration(self) -> bool:
        return self.core is not None and self.id in self.core.status().latest_configuration.ids

    def bootstrap(self, configuration: Configuration) -> None:
        """Seed an empty server with the cluster's first configuration, then rebuild the core on it."""
        from .storage import bootstrap as seed

        seed(self.storage, configuration)
        hs = self.storage.load().hard_state
        self._durable_term_vote = (hs.term, hs.vote)
        self.core = RaftCore(self.id, self.storage, self.rng, self.raft_config)
        self._update_addresses(configuration)
        for t in self._tasks:
            t.cancel()
        self._tasks = [asyncio.create_task(self._run(), name="raft-ready"),
                       asyncio.create_task(self._ticker(), name="raft-ticker")]
        self._kick.set()
        log.info("bootstrapped Raft with %d server(s): %s", len(configuration.servers),
                 ", ".join(f"{s.id}@{s.address}" for s in configuration.servers))

    async def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_all(ConsensusError("server shutting down"))
        await self.transport.close()
        close = getattr(self.storage, "close", None)
        if callable(close):
            close()

    async def _ticker(self) -> None:
        assert self.core is not None
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.core.tick()
            self._kick.set()

    def _on_message(self, msg: Message) -> None:
        if self.core is not None and not self._closed:
            self.core.step(msg)
            self._kick.set()

    # ---------------------------------------------------------------- ready

    async def _run(self) -> None:
        assert self.core is not None
        core = self.core
        while True:
            await self._kick.wait()
            self._kick.clear()
            while core.has_ready():
                rd = core.ready()
                await self._handle(core, rd)

    async def _handle(self, core: RaftCore, rd: Ready) -> None:
        if rd.configuration is not None:
            self._update_addresses(rd.configuration)
        # A leader whose term and vote are already durable may replicate while its own fsync runs
        # (Raft thesis §10.2.1): the core counts the leader's copy toward a majority only once
        # ``advance`` reports it durable. Everyone else persists first, then answers (§5.2, §5.3).
        send_first = (self._role is Role.LEADER and rd.snapshot is None and rd.soft_state is None
                      and (rd.hard_state is None or (rd.hard_state.term, rd.hard_state.vote) == self._durable_term_vote))
        if send_first:
            self._send(rd)
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            await asyncio.to_thread(self.storage.save, rd.hard_state, rd.entries, rd.snapshot)
            if rd.hard_state is not None:
                self._durable_term_vote = (rd.hard_state.term, rd.hard_state.vote)
        if rd.compaction is not None:
            c = rd.compaction
            await asyncio.to_thread(self.storage.compact, c.snapshot, c.through_index, c.through_term)
        if not send_first:
            self._send(rd)
        if rd.snapshot is not None:
            self.store.restore(rd.snapshot.data)
            self.applied_index = self.last_snapshot_index = rd.snapshot.meta.index
            self._fail_proposals_through(rd.snapshot.meta.index)
        self.store.defer_notify = True
        for entry in rd.committed:
            result: Any = None
            if entry.kind is EntryKind.NORMAL:
                try:
                    command = msgpack.unpackb(entry.data, raw=False, strict_map_key=False)
                    result = self.store.apply(entry.index, command)
                except Exception as err:  # a command that cannot even be decoded is skipped on every server alike
                    log.error("entry %d could not be applied: %s", entry.index, err)
                    result = ConsensusError(f"entry {entry.index} could not be applied: {err}")
            self.applied_index = entry.index
            pending = self._proposals.pop(entry.index, None)
            if pending is not None:
                term, fut = pending
                if not fut.done():
                    if term == entry.term:
                        fut.set_result(result)
                    else:
                        fut.set_exception(LeadershipLost())
        self.store.defer_notify = False
        self.store.flush_notify()  # after the proposers' futures: their replies go out first
        for rs in rd.read_states:
            read = self._reads.pop(rs.ctx, None)
            if read is not None and not read.done():
                read.set_result(rs.index)
        self._wake_applied()
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.role, rd.soft_state.leader_id)
        core.advance(rd)
        if self.applied_index - self.last_snapshot_index >= self.snapshot_threshold:
            core.compact(self.applied_index, self.store.snapshot())
            self.last_snapshot_index = self.applied_index

    def _send(self, rd: Ready) -> None:
        for msg in rd.messages:
            addr = self._addresses.get(msg.dst)
            if addr:
                self.transport.send(addr, msg)

    def _on_soft_state(self, role: Role, leader_id: str | None) -> None:
        was_leader = self._role is Role.LEADER
        leader_changed = leader_id != self._leader_id
        self._role, self._leader_id = role, leader_id
        if leader_id is not None:
            for fut in self._leader_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._leader_waiters.clear()
        if was_leader and role is not Role.LEADER:
            log.warning("lost leadership (now %s, leader %s)", role.value, leader_id or "unknown")
            self._fail_all(LeadershipLost())
        elif role is Role.LEADER and not was_leader:
            log.info("cluster leadership acquired (term %d)", self.core.term if self.core else 0)
        if leader_changed or was_leader != (role is Role.LEADER):
            if leader_id is not None and leader_id != self.id:
                log.info("new leader elected: %s at %s", leader_id, self._leader_address(leader_id) or "?")
            self.on_leader_change(leader_id, role is Role.LEADER)

    def _update_addresses(self, conf: Configuration) -> None:
        self._configured = {s.id: s.address for s in conf.servers if s.id != self.id}
        self._refresh_addresses()

    def set_peer_address(self, server_id: str, address: str) -> None:
        """A server was seen at ``address`` (discovery/gossip). Servers are known by node id, so a
        server that came back on a new address is dialled there even before the configuration says so."""
        if server_id == self.id or self._address_overrides.get(server_id) == address:
            return
        self._address_overrides[server_id] = address
        self._refresh_addresses()

    def _refresh_addresses(self) -> None:
        # Servers seen by discovery count even before they are in our configuration: a server that
        # is joining has an empty configuration and must still be able to answer the leader.
        new = {**self._configured, **self._address_overrides}
        for sid, addr in self._addresses.items():
            if sid not in new or new[sid] != addr:
                self.transport.forget(addr)
        self._addresses = new

    def _fail_all(self, err: Exception) -> None:
        for _, fut in self._proposals.values():
            if not fut.done():
                fut.set_exception(err)
        self._proposals.clear()
        for rfut in self._reads.values():
            if not rfut.done():
                rfut.set_exception(err)
        self._reads.clear()

    def _fail_proposals_through(self, index: int) -> None:
        for i in [i for i in self._proposals if i <= index]:
            _, fut = self._proposals.pop(i)
            if not fut.done():
                fut.set_exception(LeadershipLost())

    def _wake_applied(self) -> None:
        if not self._applied_waiters:
            return
        keep = []
        for idx, fut in self._applied_waiters:
            if idx <= self.applied_index:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((idx, fut))
        self._applied_waiters = keep

    async def wait_applied(self, index: int, timeout_s: float = RPC_HOLD_TIMEOUT_S) -> None:
        if index <= self.applied_index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise ConsensusError(f"timed out waiting to apply index {index}") from None

    async def wait_leader(self, timeout_s: float = RPC_HOLD_TIMEOUT_S) -> str:
        """The leader's id, waiting up to ``timeout_s`` for one (Consul holds RPCs during elections)."""
        if self._leader_id is not None:
            return self._leader_id
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise NoLeader() from None
        if self._leader_id is None:
            raise NoLeader()
        return self._leader_id

    # --------------------------------------------------------------- writes

    async def apply(self, command: Command) -> Any:
        deadline = time.monotonic() + RPC_HOLD_TIMEOUT_S
        while True:
            if self._role is Role.LEADER:
                try:
                    return await self._apply_local(command)
                except (NotLeader, ProposalDropped):
                    pass
            else:
                leader = await self.wait_leader(max(0.1, deadline - time.monotonic()))
                addr = self._leader_address(leader)
                if leader != self.id and addr:
                    try:
                        wire = await self.transport.call(addr, "apply", command,
                                                         timeout_s=max(0.5, deadline - time.monotonic()))
                        return result_from_wire(wire)
                    except NotSent:
                        pass  # never reached the leader: safe to retry
                    except RPCError as err:
                        # Retry only what provably did not take effect. A write that was sent and then
                        # lost its answer may have been committed: retrying it could apply it twice.
                        if "not the leader" not in str(err):
                            raise ConsensusError(f"write forwarded to the leader at {addr} failed: {err}") from None
            if time.monotonic() >= deadline:
                raise NoLeader()
            await asyncio.sleep(0.05)

    async def _apply_local(self, command: Command) -> Any:
        assert self.core is not None
        data = msgpack.packb(command, use_bin_type=True)
        index = self.core.propose(data)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[index] = (self.core.term, fut)
        self._kick.set()
        return await fut

    # ---------------------------------------------------------------- reads

    async def read_barrier(self, mode: str) -> None:
        if mode == "stale":
            return
        index = await self._read_index(consistent=(mode == "consistent"))
        await self.wait_applied(index)

    async def _read_index(self, consistent: bool) -> int:
        assert self.core is not None
        if self._role is Role.LEADER:
            if not consistent:
                try:
                    return self.core.lease_read_index()
                except (LeaseExpired, NotLeader):
                    pass
            ctx = next(self._read_ids)
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._reads[ctx] = fut
            try:
                self.core.read_index(ctx)
            except NotLeader:
                self._reads.pop(ctx, None)
                raise NoLeader() from None
            self._kick.set()
            try:
                return await asyncio.wait_for(fut, RPC_HOLD_TIMEOUT_S)
            except TimeoutError:
                self._reads.pop(ctx, None)
                raise NoLeader() from None
        leader = await self.wait_leader()
        addr = self._leader_address(leader)
        if not addr:
            raise NoLeader()
        try:
            return int(await self.transport.call(addr, "read_index", {"consistent": consistent}))
        except RPCError as err:
            raise NoLeader() if "not the leader" in str(err) else ConsensusError(str(err)) from None

    # ------------------------------------------------------------------ RPC

    async def _rpc(self, method: str, body: Any) -> Any:
        if method == "apply":
            if self._role is not Role.LEADER:
                raise ConsensusError("node is not the leader")
            return result_to_wire(await self._apply_local(body))
        if method == "read_index":
            if self._role is not Role.LEADER:
                raise ConsensusError("node is not the leader")
            return await self._read_index(consistent=bool(body.get("consistent")))
        if method == "add_server":
            return await self.change_membership(ConfigChangeOp.ADD_VOTER, str(body["id"]), str(body["address"]))
        if method == "remove_server":
            return await self.change_membership(ConfigChangeOp.REMOVE_SERVER, str(body["id"]))
        if method == "status":
            return self.status_dict()
        handler = self.rpc_handlers.get(method)
        if handler is not None:
            result = handler(body)
            return await result if asyncio.iscoroutine(result) else result
        raise ConsensusError(f"unknown RPC method {method!r}")

    # ------------------------------------------------------------ membership

    async def change_membership(self, op: ConfigChangeOp, server_id: str, address: str = "") -> int:
        """On the leader: one-server configuration change (thesis §4.1); returns once committed.

        On a follower the request is forwarded to the leader. Retries briefly while a previous change
        is still committing or the new leader's noop has not committed yet.
        """
        deadline = time.monotonic() + RPC_HOLD_TIMEOUT_S
        while True:
            if self._role is Role.LEADER:
                assert self.core is not None
                try:
                    index = self.core.propose_config_change(ConfigChange(op, server_id, address))
                except ConfigChangeError as err:
                    msg = str(err)
                    if ("not committed" in msg or "retry" in msg) and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                        continue
                    if "already in the configuration" in msg or "is not in the configuration" in msg:
                        return self.applied_index
                    raise ConsensusError(msg) from None
                fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._proposals[index] = (self.core.term, fut)
                self._kick.set()
                await fut
                return index
            leader = await self.wait_leader(max(0.1, deadline - time.monotonic()))
            addr = self._leader_address(leader)
            if leader == self.id or not addr:
                raise NoLeader()
            method = "remove_server" if op is ConfigChangeOp.REMOVE_SERVER else "add_server"
            try:
                return int(await self.transport.call(addr, method, {"id": server_id, "address": address}))
            except RPCError as err:
                if time.monotonic() >= deadline:
                    raise ConsensusError(str(err)) from None
                await asyncio.sleep(0.1)

    async def transfer_leadership(self, timeout_s: float = 5.0, target: str | None = None) -> str | None:
        """Hand leadership to ``target`` or the most up-to-date voter (thesis §3.10); returns the new leader."""
        if self._role is not Role.LEADER or self.core is None:
            return self._leader_id
        status = self.core.status()
        voters = [s.id for s in status.latest_configuration.servers
                  if s.id != self.id and status.latest_configuration.is_voter(s.id)]
        if not voters:
            return None
        if target is None:
            target = max(voters, key=lambda v: status.match_index.get(v, 0))
        try:
            self.core.transfer_leadership(target)
        except (LeadershipTransferError, NotLeader) as err:
            log.warning("leadership transfer to %s refused: %s", target, err)
            return None
        self._kick.set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._role is not Role.LEADER and self._leader_id not in (None, self.id):
                return self._leader_id
            await asyncio.sleep(0.02)
        return None

    # ---------------------------------------------------------------- status

    def peer_address(self, server_id: str) -> str:
        """Where ``server_id`` is dialled now (discovery's address wins over the configuration's)."""
        return self.address if server_id == self.id else self._addresses.get(server_id, "")

    def _leader_address(self, leader_id: str | None) -> str:
        if leader_id is None:
            return ""
        if leader_id == self.id:
            return self.address
        return self._addresses.get(leader_id, "")

    def is_leader(self) -> bool:
        return self._role is Role.LEADER

    def leader_id(self) -> str | None:
        return self._leader_id

    def leader_address(self) -> str:
        return self._leader_address(self._leader_id)

    def known_leader(self) -> bool:
        return self._leader_id is not None

    def last_contact_ms(self) -> int:
        if self.core is None or self._role is Role.LEADER:
            return 0
        ticks = self.core.status().ticks_since_leader_contact
        return 0 if ticks is None else int(ticks * self.tick_s * 1000)

    def current_configuration(self) -> Configuration:
        assert self.core is not None
        return self.core.status().latest_configuration

    def peers(self) -> list[str]:
        conf = self.current_configuration()
        return [s.address for s in conf.servers if conf.is_voter(s.id)]

    def configuration(self) -> dict[str, Any]:
        assert self.core is not None
        st = self.core.status()
        conf = st.latest_configuration
        names = {n.id: n.node for n in self.store.nodes.values() if n.id}
        return {
            "Servers": [{
                "ID": s.id, "Node": names.get(s.id, self.name if s.id == self.id else "(unknown)"),
                "Address": s.address, "Leader": s.id == st.leader_id, "Voter": conf.is_voter(s.id),
                "ProtocolVersion": "3",
            } for s in conf.servers],
            "Index": st.latest_configuration_index,
        }

    def status_dict(self) -> dict[str, Any]:
        assert self.core is not None
        st = self.core.status()
        return {"state": st.state, "term": st.term, "commit_index": st.commit_index,
                "applied_index": self.applied_index, "last_log_index": st.last_log_index,
                "last_log_term": st.last_log_term, "leader_id": st.leader_id,
                "leader_addr": self.leader_address(), "has_state": self.has_state(),
                "match_index": dict(st.match_index)}

    def stats(self) -> dict[str, str]:
        assert self.core is not None
        st = self.core.status()
        conf = st.latest_configuration
        if self._role is Role.LEADER:
            last_contact = "0"
        elif st.ticks_since_leader_contact is None:
            last_contact = "never"
        else:
            last_contact = format_duration(st.ticks_since_leader_contact * self.tick_s)
        servers = " ".join(
            f"{{Suffrage:{'Voter' if conf.is_voter(s.id) else 'Nonvoter'} ID:{s.id} Address:{s.address}}}"
            for s in conf.servers)
        return {
            "applied_index": str(self.applied_index), "commit_index": str(st.commit_index),
            "fsm_pending": str(max(0, st.commit_index - self.applied_index)), "last_contact": last_contact,
            "last_log_index": str(st.last_log_index), "last_log_term": str(st.last_log_term),
            "last_snapshot_index": str(st.last_snapshot_index), "last_snapshot_term": str(st.last_snapshot_term),
            "latest_configuration": f"[{servers}]",
            "latest_configuration_index": str(st.latest_configuration_index), "num_peers": str(st.num_peers),
            "protocol_version": "3", "protocol_version_max": "3", "protocol_version_min": "0",
            "snapshot_version_max": "1", "snapshot_version_min": "0", "state": st.state, "term": str(st.term),
        }


def single_server_configuration(node_id: str, address: str) -> Configuration:
    return Configuration.of([Server(id=node_id, address=address)])
