"""An in-process Raft network for deterministic simulation (the shape of etcd's ``network``).

A :class:`Network` holds one :class:`SimNode` per server id: a ``RaftCore`` over a ``MemoryStorage``
plus a toy state machine (the list of applied payloads). Nothing runs by itself: a test moves time
(``tick``), moves messages (``deliver``/``stabilize``), and processes each node's ``Ready`` exactly as
the real driver will (persist, then send, then apply, then ``advance``). Faults are explicit: links
can be cut or made lossy, nodes can crash (losing everything not yet persisted) and restart from
their storage. All randomness comes from one seed; every action is appended to ``trace`` so a
failing run can be replayed and read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

import msgpack

from agent.raft import (
    Configuration,
    EntryKind,
    MemoryStorage,
    Message,
    RaftConfig,
    RaftCore,
    ReadState,
    Role,
    Server,
    Suffrage,
    bootstrap,
)

from .invariants import InvariantChecker

FAST = RaftConfig(
    election_ticks=10, heartbeat_ticks=1, lease_ticks=0, trailing_entries=4, snapshot_retry_ticks=20
)


class StateMachine:
    """The simplest FSM that still catches divergence: the ordered list of applied payloads."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, bytes]] = []  # (index, term, data) of NORMAL entries
        self.last_index = 0

    def snapshot(self) -> bytes:
        return msgpack.packb([[i, t, d] for i, t, d in self.items], use_bin_type=True)  # type: ignore[no-any-return]

    def restore(self, data: bytes, index: int) -> None:
        self.items = [(i, t, d) for i, t, d in msgpack.unpackb(data, raw=False)]
        self.last_index = index

    @property
    def payloads(self) -> list[bytes]:
        return [d for _, _, d in self.items]


class SimNode:
    def __init__(self, node_id: str, net: Network) -> None:
        self.id = node_id
        self.net = net
        self.storage = MemoryStorage()
        self.fsm = StateMachine()
        self.core: RaftCore | None = None
        self.incarnation = 0
        self.read_states: list[ReadState] = []
        self.soft_changes = 0

    @property
    def up(self) -> bool:
        return self.core is not None

    def start(self) -> None:
        self.incarnation += 1
        rng = random.Random(f"{self.net.seed}:{self.id}:{self.incarnation}")
        self.core = RaftCore(self.id, self.storage, rng, self.net.config)
        self.fsm = StateMachine()
        snap = self.storage.snapshot
        if snap is not None:
            self.fsm.restore(snap.data, snap.meta.index)
        self.net.checker.on_restart(self.id, self.fsm.last_index)
        self.read_states = []

    def crash(self) -> None:
        self.core = None

    def process_ready(self) -> bool:
        """Handle every pending Ready the way the driver must (see ``agent.raft.core.Ready``)."""
        core = self.core
        if core is None:
            return False
        did = False
        while core.has_ready():
            did = True
            rd = core.ready()
            # 1. persist (one "fsync"), 2. compaction, 3. only then send.
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            if rd.compaction is not None:
                c = rd.compaction
                self.storage.compact(c.snapshot, c.through_index, c.through_term)
            self.net.send(rd.messages)
            # 4. restore, then apply in order.
            if rd.snapshot is not None:
                self.fsm.restore(rd.snapshot.data, rd.snapshot.meta.index)
                self.net.checker.on_restore(
                    self.id, rd.snapshot.meta.index, rd.snapshot.meta.term, self.fsm.items
                )
            for e in rd.committed:
                self.net.checker.on_apply(core, e)
                if e.kind is EntryKind.NORMAL:
                    self.fsm.items.append((e.index, e.term, e.data))
                self.fsm.last_index = e.index
                self.net.on_applied(self, e.index, e.term, e.data)
            self.read_states.extend(rd.read_states)
            if rd.soft_state is not None:
                self.soft_changes += 1
            core.advance(rd)
        return did


class Network:
    def __init__(
        self,
        ids: Sequence[str] | int,
        *,
        seed: int = 0,
        config: RaftConfig = FAST,
        voters: Sequence[str] | None = None,
        nonvoters: Sequence[str] = (),
        check: bool = True,
    ) -> None:
        """Build a cluster. ``voters``/``nonvoters`` are bootstrapped (default: every id a voter);
        any other id starts empty, outside the configuration, waiting to be added."""
        if isinstance(ids, int):
            ids = [f"n{i}" for i in range(1, ids + 1)]
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config
        self.checker = InvariantChecker()
        self.check_enabled = check
        self.nodes: dict[str, SimNode] = {i: SimNode(i, self) for i in ids}
        self.in_flight: list[Message] = []
        self.blocked: set[tuple[str, str]] = set()
        self.loss: dict[tuple[str, str], float] = {}
        self.default_loss = 0.0
        self.duplicate_prob = 0.0
        #: Return False to drop a message at send time (etcd's msgHook).
        self.hook: Callable[[Message], bool] | None = None
        self.trace: list[str] = []
        self.delivered = 0
        #: (index, term) -> payload of proposals made through ``propose``; moved to ``acked`` when the
        #: proposer applies them (the moment a real driver answers the client "ok").
        self.pending: dict[str, dict[tuple[int, int], bytes]] = {i: {} for i in ids}
        self.acked: dict[int, tuple[int, bytes]] = {}
        members = list(ids) if voters is None else list(voters)
        conf = Configuration(
            tuple(Server(i, f"{i}:8300", Suffrage.VOTER) for i in members)
            + tuple(Server(i, f"{i}:8300", Suffrage.NONVOTER) for i in nonvoters)
        )
        for i in (*members, *nonvoters):
            bootstrap(self.nodes[i].storage, conf)
        for node in self.nodes.values():
            node.start()
        self.check()

    # -- plumbing ---------------------------------------------------------------------------------

    def core(self, node_id: str) -> RaftCore:
        core = self.nodes[node_id].core
        assert core is not None, f"{node_id} is down"
        return core

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def check(self) -> None:
        if self.check_enabled:
            self.checker.check(n.core for n in self.nodes.values() if n.core is not None)

    def send(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            if self.hook is not None and not self.hook(m):
                continue
            p = self.loss.get((m.src, m.dst), self.default_loss)
            if p and self.rng.random() < p:
                continue
            self.in_flight.append(m)
            if self.duplicate_prob and self.rng.random() < self.duplicate_prob:
                self.in_flight.append(m)

    def on_applied(self, node: SimNode, index: int, term: int, data: bytes) -> None:
        acked = self.acked.get(index)
        if acked is not None and acked != (term, data):
            raise AssertionError(
                f"{node.id} applied ({term}, {data!r}) at {index}, but {acked} was acknowledged"
            )
        mine = self.pending[node.id]
        if (index, term) in mine:
            self.acked[index] = (term, mine.pop((index, term)))

    # -- actions ------------------------------------------------------------------------------------

    def process(self, node_id: str) -> bool:
        did = self.nodes[node_id].process_ready()
        if did:
            self.check()
        return did

    def process_all(self) -> bool:
        did = False
        for nid in self.nodes:
            did = self.process(nid) or did
        return did

    def deliver(self, index: int = 0) -> Message | None:
        """Deliver the in-flight message at ``index`` (FIFO by default); drops it if its link is cut
        or its destination is down. The receiver's Ready is *not* processed."""
        m = self.in_flight.pop(index)
        node = self.nodes.get(m.dst)
        if node is None or node.core is None or (m.src, m.dst) in self.blocked:
            return None
        self.delivered += 1
        node.core.step(m)
        self.check()
        return m

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Process Readys and deliver messages until nothing moves (etcd's ``stabilize``)."""
        for _ in range(max_rounds):
            moved = self.process_all()
            if self.in_flight:
                while self.in_flight:
                    self.deliver()
                moved = True
            if not moved:
                return
        raise AssertionError(f"network did not stabilize within {max_rounds} rounds")

    def tick(self, node_id: str, n: int = 1) -> None:
        for _ in range(n):
            self.core(node_id).tick()
            self.check()

    def tick_all(self, n: int = 1, stabilize: bool = True) -> None:
        for _ in range(n):
            for node in self.live():
                assert node.core is not None
                node.core.tick()
            self.check()
            if stabilize:
                self.stabilize()

    def propose(self, node_id: str, data: bytes) -> int:
        core = self.core(node_id)
        index = core.propose(data)
        self.pending[node_id][(index, core.term)] = data
        self.check()
        return index

    def crash(self, node_id: str) -> None:
        """Stop a node; whatever it had not persisted (and messages it had not sent) is gone."""
        self.trace.append(f"crash {node_id}")
        self.nodes[node_id].crash()
        self.pending[node_id].clear()

    def restart(self, node_id: str) -> None:
        self.trace.append(f"restart {node_id}")
        node = self.nodes[node_id]
        node.crash()
        node.start()
        self.check()

    def isolate(self, node_id: str) -> None:
        self.partition([node_id], [i for i in self.nodes if i != node_id])

    def partition(self, *groups: Sequence[str]) -> None:
        """Cut every link between different groups (ids missing from all groups stay connected)."""
        self.trace.append(f"partition {[list(g) for g in groups]}")
        for a_i, a in enumerate(groups):
            for b in groups[a_i + 1 :]:
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))
                        self.blocked.add((y, x))

    def cut(self, a: str, b: str) -> None:
        self.blocked.update({(a, b), (b, a)})

    def heal(self) -> None:
        self.trace.append("heal")
        self.blocked.clear()
        self.loss.clear()

    def drop(self, src: str, dst: str, prob: float) -> None:
        self.loss[(src, dst)] = prob

    # -- queries ------------------------------------------------------------------------------------

    def leader(self) -> str | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, str] | None = None
        for n in self.live():
            assert n.core is not None
            if n.core.role is Role.LEADER and (best is None or n.core.term > best[0]):
                best = (n.core.term, n.id)
        return best[1] if best else None

    def tick_until_leader(self, max_ticks: int = 200) -> str:
        for _ in range(max_ticks):
            self.tick_all()
            lead = self.leader()
            if lead is not None:
                # Let the noop commit so the leader is ready for reads and membership changes.
                self.stabilize()
                return lead
        raise AssertionError(f"no leader after {max_ticks} ticks")

    def applied(self, node_id: str) -> list[bytes]:
        return self.nodes[node_id].fsm.payloads
