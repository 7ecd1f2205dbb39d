"""RaftCore: the Raft consensus algorithm as a pure, synchronous state machine.

The core owns no socket, disk, clock, thread or global random. It is driven through five inputs:

* ``tick()``: one unit of logical time (the driver calls it every ``tick_s`` seconds);
* ``step(msg)``: a message that arrived from a peer;
* ``propose(data)`` / ``propose_config_change(change)`` / ``transfer_leadership(id)`` /
  ``read_index(ctx)`` / ``lease_read_index()``: client requests, on the leader;
* ``compact(index, data)``: the FSM took a snapshot;
* ``advance(ready)``: the driver finished handling a ``Ready``.

and one output, :meth:`RaftCore.ready`, a :class:`Ready` batch saying what to persist, send and apply.
Same state plus same inputs give the same outputs, so a five-node cluster with partitions and
crashes is simulated in-process in milliseconds (``tests/raft``).

Roles swap behaviour the etcd way: ``_become_follower``/``_candidate``/``_leader`` set ``_step_role``
and ``_tick_role``. Section numbers cite the Raft paper (Ongaro & Ousterhout, 2014, "§5.x") and
Ongaro's thesis (2014, "thesis §x.y"): PreVote is thesis §9.6, CheckQuorum §6.2, leadership
transfer §3.10, ReadIndex and leases §6.4, single-server membership changes §4.1-§4.2.

The driver's loop, in full::

    while running:
        handle one event: core.tick() | core.step(msg) | core.propose(data) | ...
        while core.has_ready():            # advance() can make more work (a commit, say)
            rd = core.ready()
            storage.save(rd.hard_state, rd.entries, rd.snapshot)      # fsync: group commit here
            if rd.compaction: storage.compact(...)                    # may be deferred
            send(rd.messages)                                         # only after save() returned
            if rd.snapshot: fsm.restore(rd.snapshot.data)
            for e in rd.committed: fsm.apply(e) if e.kind is NORMAL   # resolve futures by (index, term)
            for r in rd.read_states: serve read r.ctx once applied >= r.index
            core.advance(rd)
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .config import RaftConfig
from .errors import (
    CompactedError,
    ConfigChangeError,
    LeadershipTransferError,
    LeaseExpired,
    NotLeader,
    ProposalDropped,
    RaftError,
    SafetyViolation,
)
from .log import RaftLog
from .messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Server,
    Snapshot,
    SnapshotMeta,
    Suffrage,
    TimeoutNow,
)
from .progress import Progress, ProgressState
from .quorum import VoteResult, majority, quorum_index, vote_result
from .storage import Storage

__all__ = [
    "RandomLike",
    "Role",
    "SoftState",
    "ReadState",
    "Compaction",
    "Ready",
    "ConfigChangeOp",
    "ConfigChange",
    "RaftStatus",
    "RaftCore",
]


class RandomLike(Protocol):
    """The only randomness the core uses (election timeouts); ``random.Random(seed)`` fits."""

    def randrange(self, start: int, stop: int, /) -> int: ...


class Role(enum.Enum):
    FOLLOWER = "Follower"
    PRE_CANDIDATE = "PreCandidate"
    CANDIDATE = "Candidate"
    LEADER = "Leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes: logs, metrics, Consul's ``leader`` stats."""

    role: Role
    leader_id: str | None


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex request confirmed (thesis §6.4): serve read ``ctx`` once the FSM has applied
    ``index``; the answer is then linearizable."""

    ctx: int
    index: int


@dataclass(frozen=True, slots=True)
class Compaction:
    """A local snapshot to store, and the log prefix it lets storage drop."""

    snapshot: Snapshot
    through_index: int
    through_term: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver. **Handle the fields in this order**, then call ``advance``:

    1. ``hard_state``, ``snapshot``, ``entries``: persist them with one ``Storage.save`` call and wait
       until it is durable. ``snapshot`` (received from the leader) replaces the whole log; then
       ``entries`` are appended, replacing any stored tail from ``entries[0].index`` on. Persisting
       term and vote first is what stops a server voting twice in a term across a crash (§5.2), and
       persisting entries first is what makes an acknowledgement a promise (§5.3).
    2. ``compaction``: ``Storage.compact``. Off the latency path; may lag behind later Readys.
    3. ``messages``: send, only *after* step 1 is durable. Any order, any connection; the core
       tolerates loss, duplication and reordering. One exception (thesis §10.2.1): a leader whose
       term and vote are already durable may send before its own entries are, because the core counts
       the leader's copy toward a majority only after ``advance`` reports it stable.
    4. ``snapshot``: restore the FSM from it (discard its state first), *then* apply ``committed``
       in order. Only ``EntryKind.NORMAL`` entries go to the FSM; CONFIG and NOOP entries are there
       so the driver can track membership and resolve futures. A proposal made at ``(index, term)``
       succeeded iff an entry with that index *and* term is applied; an entry at that index with
       another term means it was lost.
    5. ``read_states``: each read may be answered once the FSM has applied ``index``.
    6. ``soft_state``/``configuration``: informational. When ``soft_state`` shows this node is no
       longer leader, fail every pending proposal and read with "leadership lost".
    7. ``RaftCore.advance(ready)``.

    ``step``/``tick``/``propose`` may be called between ``ready()`` and ``advance()`` (e.g. while an
    fsync is in flight); ``ready()`` itself may not be called again until ``advance``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    compaction: Compaction | None = None
    messages: tuple[Message, ...] = ()
    committed: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    #: The latest configuration, when it changed (or on the first Ready): the transport's address book.
    configuration: Configuration | None = None
    #: Whether step 1 needs an fsync. False when only ``hard_state.commit`` changed: the commit index
    #: is a hint that can always be re-learned, so losing it costs nothing (etcd's MustSync).
    must_sync: bool = False


class ConfigChangeOp(enum.Enum):
    ADD_VOTER = "add_voter"  # add, or promote a nonvoter
    ADD_NONVOTER = "add_nonvoter"  # add as a nonvoter (an existing voter is an error: use DEMOTE_VOTER)
    DEMOTE_VOTER = "demote_voter"
    REMOVE_SERVER = "remove_server"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One server in or out (thesis §4.1: single-server changes never allow two disjoint majorities)."""

    op: ConfigChangeOp
    server_id: str
    address: str = ""

    def apply_to(self, conf: Configuration) -> Configuration:
        """The configuration after this change; raises :class:`ConfigChangeError` if it is a no-op or invalid."""
        if not self.server_id:
            raise ConfigChangeError("server id must not be empty")
        existing = conf.get(self.server_id)
        if self.op is ConfigChangeOp.REMOVE_SERVER:
            if existing is None:
                raise ConfigChangeError(f"server {self.server_id!r} is not in the configuration")
            servers = [s for s in conf.servers if s.id != self.server_id]
        elif self.op is ConfigChangeOp.DEMOTE_VOTER:
            if existing is None or existing.suffrage is not Suffrage.VOTER:
                raise ConfigChangeError(f"server {self.server_id!r} is not a voter")
            servers = [
                Server(s.id, s.address, Suffrage.NONVOTER) if s.id == self.server_id else s
                for s in conf.servers
            ]
        else:
            suffrage = Suffrage.VOTER if self.op is ConfigChangeOp.ADD_VOTER else Suffrage.NONVOTER
            if existing is not None and existing.suffrage is Suffrage.VOTER and suffrage is Suffrage.NONVOTER:
                raise ConfigChangeError(f"server {self.server_id!r} is a voter; use DEMOTE_VOTER")
            address = self.address or (existing.address if existing else "")
            new = Server(self.server_id, address, suffrage)
            if existing == new:
                raise ConfigChangeError(
                    f"server {self.server_id!r} is already in the configuration as {suffrage.value}"
                )
            if existing is None:
                servers = [*conf.servers, new]
            else:
                servers = [new if s.id == self.server_id else s for s in conf.servers]
        result = Configuration(tuple(servers))
        if not result.voters:
            raise ConfigChangeError("the configuration would have no voters")
        return result


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """What Consul's ``raft`` stats section and ``operator raft list-peers`` need, from the core's view."""

    id: str
    state: str  # "Follower" | "Candidate" | "Leader" (hashicorp names; PreCandidate shows as Candidate)
    role: Role
    term: int
    vote: str | None
    leader_id: str | None
    commit_index: int
    applied_index: int
    first_log_index: int
    last_log_index: int
    last_log_term: int
    last_snapshot_index: int
    last_snapshot_term: int
    latest_configuration: Configuration
    latest_configuration_index: int
    num_peers: int  # other voters; 0 if this server is not a voter
    #: Ticks since the last message from a leader (0 on the leader; None if never heard from one).
    ticks_since_leader_contact: int | None
    #: Leader only: per-follower match index and replication state.
    match_index: Mapping[str, int] = field(default_factory=dict)
    replication_state: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _PendingRead:
    ctx: int
    index: int
    seq: int


class RaftCore:
    """One Raft server. Not thread-safe: one owner (the driver task) calls everything."""

    def __init__(
        self, server_id: str, storage: Storage, rng: RandomLike, config: RaftConfig | None = None
    ) -> None:
        """Build a server from whatever ``storage`` holds: this is both first start and restart.

        On restart the driver restores its FSM from ``storage``'s snapshot (if any) before the first
        ``ready()``; the core then replays committed entries after the snapshot index.
        """
        if not server_id:
            raise RaftError("server id must not be empty")
        self.id = server_id
        self._cfg = config if config is not None else RaftConfig()
        self._rng = rng
        state = storage.load()
        self._log = RaftLog.from_state(state)
        self._snapshot: Snapshot | None = state.snapshot
        snap_index = state.snapshot.meta.index if state.snapshot is not None else 0
        hs = state.hard_state
        self._term = hs.term
        self._vote = hs.vote
        self._commit = min(max(hs.commit, snap_index, self._log.offset), self._log.last_index)
        self._applied = snap_index
        self._applying = snap_index  # highest index handed to the driver in a Ready

        # Output buffers and what the last Ready reported.
        self._outbox: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_snapshot: Snapshot | None = None
        self._pending_compaction: Compaction | None = None
        self._outstanding: Ready | None = None
        self._prev_hard_state = hs
        self._prev_soft_state = SoftState(Role.FOLLOWER, None)
        self._prev_configuration: tuple[int, Configuration] | None = None

        # Volatile state.
        self._role = Role.FOLLOWER
        self._leader_id: str | None = None
        self._ticks = 0  # ticks since this core was built; the local clock for leases
        self._leader_contact_tick: int | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._cfg.election_ticks
        self._votes: dict[str, bool] = {}
        # Leader state.
        self._progress: dict[str, Progress] = {}
        self._needs_broadcast = False
        self._transferee: str | None = None
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._lease_revoked = False
        self._seq = 0  # heartbeat sequence number (ReadIndex / lease), monotonic for the core's life
        self._seq_pending = False  # a seq was allocated for reads but not broadcast yet
        self._seq_sent: deque[tuple[int, int]] = deque()  # (seq, tick it was allocated), ascending
        self._reads: deque[_PendingRead] = deque()
        self._reads_awaiting_commit: list[int] = []

        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self._become_follower(self._term, None)

    # ==== inputs ==================================================================================

    def tick(self) -> None:
        """Advance logical time by one tick.

        The number of ticks must follow a monotonic clock: after the driver stalls (GC pause,
        suspended VM), call ``tick()`` once per missed interval before anything else. Leader leases
        assume the leader's ticks run no slower than real time.
        """
        self._ticks += 1
        self._tick_role()

    def campaign(self) -> None:
        """Start an election now (with PreVote if configured), as if the election timer had fired."""
        if self._role is not Role.LEADER:
            self._campaign(pre=self._cfg.pre_vote)

    def step(self, msg: Message) -> None:
        """Handle one message from a peer. Misrouted messages (``dst`` is not us) are dropped."""
        if msg.dst != self.id or msg.src == self.id:
            return
        if msg.term > self._term:
            if isinstance(msg, RequestVote):
                if not msg.pre_vote:
                    if self._cfg.check_quorum and not msg.transfer and self._heard_from_leader_recently():
                        # Thesis §4.2.3: a live leader's followers neither bump their term nor vote
                        # for a server that lost contact (e.g. one just removed from the cluster).
                        return
                    self._become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote:
                if not msg.granted:
                    # A rejection carries the voter's own term: we are behind it.
                    self._become_follower(msg.term, None)
                # A granted pre-vote carries the term we *would* use; nothing changes yet (§9.6).
            else:
                leader = msg.src if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot) else None
                self._become_follower(msg.term, leader)
        elif msg.term < self._term:
            self._reply_stale(msg)
            return
        if isinstance(msg, RequestVote):
            self._handle_vote_request(msg)
        else:
            self._step_role(msg)

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a NORMAL entry on the leader; returns its index (the term is ``status().term``).

        Raises :class:`NotLeader` (with a leader hint) or :class:`ProposalDropped` during a
        leadership transfer. Acceptance is not commitment: watch ``Ready.committed``.
        """
        self._check_can_propose()
        return self._append_new(EntryKind.NORMAL, data)

    def propose_config_change(self, change: ConfigChange) -> int:
        """Append a CONFIG entry changing one server (thesis §4.1); returns its index.

        Allowed only once the previous configuration entry is committed and the leader has committed
        an entry of its own term (the noop). The second rule is the fix Ongaro posted to raft-dev in
        2015 for single-server changes across leader changes. A server takes a new configuration into
        use when it appends it, not when it commits; a leader that removes itself keeps leading
        (without counting itself) until the change commits, then steps down (§4.2.2).
        """
        self._check_can_propose()
        if not self._committed_in_current_term():
            raise ConfigChangeError("the leader has not committed an entry in its term yet; retry shortly")
        conf_index, conf = self._log.latest_configuration()
        if conf_index > self._commit:
            raise ConfigChangeError(f"configuration change at index {conf_index} is not committed yet")
        new_conf = change.apply_to(conf)
        index = self._append_new(EntryKind.CONFIG, new_conf.encode())
        if self._role is Role.LEADER:
            self._sync_progress()
        return index

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to ``target`` (thesis §3.10): stop taking proposals, bring the target's
        log up to date, then send it TimeoutNow so it campaigns at once. Aborted if not done within an
        election timeout. Success shows up as a ``soft_state`` change."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_id)
        if target == self.id:
            return
        if not self._log.latest_configuration()[1].is_voter(target):
            raise LeadershipTransferError(f"{target!r} is not a voter in the current configuration")
        if self._transferee == target:
            return
        self._transferee = target
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        pr = self._progress[target]
        if pr.match == self._log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def read_index(self, ctx: int) -> None:
        """Start a linearizable read (thesis §6.4; Consul's ``?consistent``).

        The leader records its commit index, then confirms it is still leader with a quorum
        heartbeat round; the answer arrives as ``ReadState(ctx, index)`` in a later ``Ready``. A new
        leader first waits for its noop to commit, so the index covers every earlier write.
        """
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_id)
        if not self._committed_in_current_term():
            self._reads_awaiting_commit.append(ctx)
            return
        self._start_read(ctx)

    def lease_read_index(self) -> int:
        """The index a read may be served at without a quorum round, if the leader lease holds.

        For Consul's default consistency mode (thesis §6.4.1): valid while a quorum acknowledged a
        heartbeat sent less than ``lease_ticks`` ago. It relies on followers refusing votes for an
        election timeout after hearing from the leader, and on bounded clock drift. Raises
        :class:`NotLeader` or :class:`LeaseExpired` (then use :meth:`read_index`).
        """
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_id)
        if self._cfg.lease_ticks == 0:
            raise LeaseExpired("lease reads are disabled (lease_ticks = 0)")
        if self._lease_revoked or self._transferee is not None:
            raise LeaseExpired("leadership transfer in progress")
        if not self._committed_in_current_term():
            raise LeaseExpired("the leader has not committed an entry in its term yet")
        voters = self._log.latest_configuration()[1].voters
        if voters == {self.id}:
            return self._commit
        sent_at = self._quorum_seq_sent_tick()
        if sent_at is None or self._ticks - sent_at >= self._cfg.lease_ticks:
            raise LeaseExpired("no quorum acknowledged a heartbeat within the lease")
        return self._commit

    def compact(self, index: int, data: bytes) -> None:
        """Record that the FSM snapshotted its state as of ``index`` (<= applied) into ``data`` (§7).

        The log keeps ``trailing_entries`` entries behind the snapshot so a slightly slow follower
        can catch up without a full InstallSnapshot; the rest is dropped now in memory and later in
        storage (``Ready.compaction``).
        """
        if index > self._applied:
            raise RaftError(f"cannot snapshot at {index}: only applied through {self._applied}")
        if self._snapshot is not None and index <= self._snapshot.meta.index:
            return
        term = self._log.term_at(index)
        if term is None:
            raise CompactedError(f"entry {index} is no longer in the log")
        conf_index, conf = self._log.configuration_at(index)
        snap = Snapshot(SnapshotMeta(index, term, conf, conf_index), data)
        self._snapshot = snap
        through = max(self._log.offset, index - self._cfg.trailing_entries)
        through_term = self._log.term_at(through)
        assert through_term is not None
        self._log.compact(through)
        self._pending_compaction = Compaction(snap, through, through_term)

    # ==== outputs =================================================================================

    def has_ready(self) -> bool:
        """Whether ``ready()`` would return anything (always False while a Ready is outstanding)."""
        if self._outstanding is not None:
            return False
        self._flush()
        return bool(
            self._outbox
            or self._read_states
            or self._pending_snapshot is not None
            or self._pending_compaction is not None
            or self._log.stable_index < self._log.last_index
            or self._hard_state() != self._prev_hard_state
            or self._soft_state() != self._prev_soft_state
            or self._log.latest_configuration() != self._prev_configuration
            or min(self._commit, self._log.last_index) > self._applying
        )

    def ready(self) -> Ready:
        """Collect everything to persist, send and apply since the last Ready (see :class:`Ready`)."""
        if self._outstanding is not None:
            raise RaftError("ready() called again before advance() of the previous Ready")
        self._flush()
        hs = self._hard_state()
        ss = self._soft_state()
        conf = self._log.latest_configuration()
        hi = min(self._commit, self._log.last_index)
        committed: tuple[Entry, ...] = ()
        if hi > self._applying:
            committed = tuple(self._log.slice(self._applying + 1, hi + 1))
            self._applying = hi
        rd = Ready(
            soft_state=ss if ss != self._prev_soft_state else None,
            hard_state=hs if hs != self._prev_hard_state else None,
            snapshot=self._pending_snapshot,
            entries=tuple(self._log.unstable()),
            compaction=self._pending_compaction,
            messages=tuple(self._outbox),
            committed=committed,
            read_states=tuple(self._read_states),
            configuration=conf[1] if conf != self._prev_configuration else None,
            must_sync=bool(self._pending_snapshot is not None or self._log.unstable())
            or (hs.term, hs.vote) != (self._prev_hard_state.term, self._prev_hard_state.vote),
        )
        self._prev_hard_state, self._prev_soft_state, self._prev_configuration = hs, ss, conf
        self._outbox.clear()
        self._read_states.clear()
        self._pending_snapshot = None
        self._pending_compaction = None
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd``."""
        if rd is not self._outstanding:
            raise RaftError("advance() called with a Ready that is not the outstanding one")
        if rd.entries:
            last = rd.entries[-1]
            self._log.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            self._applied = max(self._applied, rd.snapshot.meta.index)
        if rd.committed:
            self._applied = max(self._applied, rd.committed[-1].index)
        self._outstanding = None
        # Our own entries just became durable: that may complete a majority (always, with one voter).
        if self._role is Role.LEADER and self._maybe_commit():
            self._broadcast_commit()

    def status(self) -> RaftStatus:
        conf_index, conf = self._log.latest_configuration()
        is_leader = self._role is Role.LEADER
        if is_leader:
            contact: int | None = 0
        elif self._leader_contact_tick is None:
            contact = None
        else:
            contact = self._ticks - self._leader_contact_tick
        snap = self._snapshot.meta if self._snapshot is not None else None
        return RaftStatus(
            id=self.id,
            state="Candidate" if self._role is Role.PRE_CANDIDATE else self._role.value,
            role=self._role,
            term=self._term,
            vote=self._vote,
            leader_id=self._leader_id,
            commit_index=self._commit,
            applied_index=self._applied,
            first_log_index=self._log.first_index,
            last_log_index=self._log.last_index,
            last_log_term=self._log.last_term,
            last_snapshot_index=snap.index if snap else 0,
            last_snapshot_term=snap.term if snap else 0,
            latest_configuration=conf,
            latest_configuration_index=conf_index,
            num_peers=len(conf.voters - {self.id}) if conf.is_voter(self.id) else 0,
            ticks_since_leader_contact=contact,
            match_index={pid: pr.match for pid, pr in sorted(self._progress.items())} if is_leader else {},
            replication_state={pid: pr.state.value for pid, pr in sorted(self._progress.items())}
            if is_leader
            else {},
        )

    # Read-only views for tests and the driver.
    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def log(self) -> RaftLog:
        """The in-memory log (read it; never mutate it)."""
        return self._log

    # ==== role transitions ========================================================================

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._role = Role.FOLLOWER
        self._leader_id = leader
        if leader is not None:
            self._leader_contact_tick = self._ticks
        self._step_role = self._step_follower
        self._tick_role = self._tick_election
        self._reset_election_timer()
        self._clear_leader_state()

    def _become_pre_candidate(self) -> None:
        # Thesis §9.6: term and vote stay untouched until a majority says we could win.
        self._role = Role.PRE_CANDIDATE
        self._leader_id = None
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self._reset_election_timer()
        self._clear_leader_state()
        self._votes = {}

    def _become_candidate(self) -> None:
        self._term += 1
        self._vote = self.id
        self._role = Role.CANDIDATE
        self._leader_id = None
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self._reset_election_timer()
        self._clear_leader_state()
        self._votes = {}

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader_id = self.id
        self._step_role = self._step_leader
        self._tick_role = self._tick_leader
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._clear_leader_state()
        self._sync_progress()
        # §8 / §5.4.2: a leader cannot know which earlier entries are committed until it commits an
        # entry of its own term, so it appends a noop at once. Reads and membership changes wait for it.
        self._append_new(EntryKind.NOOP, b"")

    def _clear_leader_state(self) -> None:
        self._progress = {}
        self._needs_broadcast = False
        self._transferee = None
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._lease_revoked = False
        self._seq_pending = False
        self._seq_sent.clear()
        self._reads.clear()
        self._reads_awaiting_commit.clear()

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        e = self._cfg.election_ticks
        self._randomized_timeout = self._rng.randrange(e, 2 * e)

    def _promotable(self) -> bool:
        """Only voters of the latest configuration campaign: a removed server goes quiet (§4.2.2)."""
        return self._log.latest_configuration()[1].is_voter(self.id)

    def _heard_from_leader_recently(self) -> bool:
        """Within an election timeout of a leader's last message (thesis §4.2.3, §9.6).

        With leases enabled a freshly (re)started server also counts as having heard from a leader:
        it may have acknowledged a heartbeat just before crashing, and voting at once could let a
        second leader rise while the first still serves lease reads.
        """
        if self._election_elapsed >= self._cfg.election_ticks:
            return False
        if self._leader_id is not None:
            return True
        return self._cfg.lease_ticks > 0 and self._ticks < self._cfg.election_ticks

    # ==== ticks ===================================================================================

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout and self._promotable():
            self._campaign(pre=self._cfg.pre_vote)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum:
                # Thesis §6.2: a leader cut off from a majority steps down instead of lingering.
                if not self._quorum_active():
                    self._become_follower(self._term, None)
                    return
                for pr in self._progress.values():
                    pr.recent_active = False
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_ticks:
                self._transferee = None  # §3.10: give up and resume normal operation
        for pr in self._progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self._cfg.snapshot_retry_ticks:
                    pr.pending_snapshot = 0  # assume it was lost; probe again from match
                    pr.become_probe()
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(new_seq=True)

    # ==== elections ===============================================================================

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if not self._promotable():
            return
        if pre:
            self._become_pre_candidate()
            vote_term = self._term + 1
        else:
            self._become_candidate()
            vote_term = self._term
        voters = self._log.latest_configuration()[1].voters
        self._votes[self.id] = True
        if vote_result(voters, self._votes) is VoteResult.WON:  # a single-voter cluster
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        for voter in sorted(voters - {self.id}):
            self._send(
                RequestVote(
                    term=vote_term,
                    src=self.id,
                    dst=voter,
                    last_log_index=self._log.last_index,
                    last_log_term=self._log.last_term,
                    pre_vote=pre,
                    transfer=transfer,
                )
            )

    def _handle_vote_request(self, m: RequestVote) -> None:
        if m.pre_vote and not m.transfer and self._heard_from_leader_recently():
            grant = False  # §9.6: no pre-vote while we have a live leader
        else:
            can_vote = (
                self._vote == m.src
                or (self._vote is None and self._leader_id is None)
                or (m.pre_vote and m.term > self._term)
            )
            # §5.4.1: only for a candidate whose log is at least as up-to-date as ours.
            grant = can_vote and self._log.is_up_to_date(m.last_log_index, m.last_log_term)
        if grant:
            if not m.pre_vote:
                self._vote = m.src
                self._election_elapsed = 0
            self._send(
                RequestVoteResponse(term=m.term, src=self.id, dst=m.src, granted=True, pre_vote=m.pre_vote)
            )
        else:
            self._send(
                RequestVoteResponse(
                    term=self._term, src=self.id, dst=m.src, granted=False, pre_vote=m.pre_vote
                )
            )

    def _reply_stale(self, m: Message) -> None:
        """A message from an older term: answer with our term so a deposed leader or stale candidate
        learns it (Figure 2, "if term < currentTerm: reply false"); drop stale responses."""
        if isinstance(m, AppendEntries):
            self._send(
                AppendEntriesResponse(
                    term=self._term, src=self.id, dst=m.src, success=False, index=m.prev_log_index
                )
            )
        elif isinstance(m, Heartbeat):
            self._send(HeartbeatResponse(term=self._term, src=self.id, dst=m.src, seq=m.seq))
        elif isinstance(m, InstallSnapshot):
            self._send(
                InstallSnapshotResponse(term=self._term, src=self.id, dst=m.src, success=False, index=0)
            )
        elif isinstance(m, RequestVote):
            self._send(
                RequestVoteResponse(
                    term=self._term, src=self.id, dst=m.src, granted=False, pre_vote=m.pre_vote
                )
            )

    # ==== per-role message handling ===============================================================

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self._leader_id = m.src
            self._leader_contact_tick = self._ticks
            self._election_elapsed = 0
            if isinstance(m, AppendEntries):
                self._handle_append(m)
            elif isinstance(m, Heartbeat):
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            # §3.10: the leader says our log is current; skip PreVote, and tell voters it is a transfer.
            if self._promotable():
                self._campaign(pre=False, transfer=True)

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            # §5.2: another server won this term.
            self._become_follower(self._term, m.src)
            self._step_follower(m)
        elif isinstance(m, RequestVoteResponse):
            pre = self._role is Role.PRE_CANDIDATE
            if m.pre_vote != pre:
                return
            if pre and m.granted and m.term != self._term + 1:
                return
            self._votes[m.src] = m.granted
            result = vote_result(self._log.latest_configuration()[1].voters, self._votes)
            if result is VoteResult.WON:
                if pre:
                    self._campaign(pre=False)
                else:
                    self._become_leader()
            elif result is VoteResult.LOST:
                self._become_follower(self._term, None)

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendEntriesResponse):
            self._handle_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            self._handle_heartbeat_response(m)
        elif isinstance(m, InstallSnapshotResponse):
            self._handle_snapshot_response(m)
        elif isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            raise SafetyViolation(
                f"{self.id}: leader of term {self._term} got {m.TYPE} from {m.src} in the same term"
            )

    # ---- follower side -------------------------------------------------------------------------

    def _handle_append(self, m: AppendEntries) -> None:
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev < self._commit:
            # Our log matches the leader's through our commit index (Leader Completeness, §5.4), so
            # skip the overlap; this also makes a reordered, older message harmless.
            skip = self._commit - prev
            if skip >= len(entries):
                self._send(
                    AppendEntriesResponse(
                        term=self._term, src=self.id, dst=m.src, success=True, index=self._commit
                    )
                )
                return
            prev, entries = self._commit, entries[skip:]
            known = self._log.term_at(prev)
            assert known is not None
            prev_term = known
        last_new = self._log.try_append(prev, prev_term, entries, self._commit)
        if last_new is None:
            hint = self._log.find_conflict_by_term(
                min(m.prev_log_index, self._log.last_index), m.prev_log_term
            )
            self._send(
                AppendEntriesResponse(
                    term=self._term,
                    src=self.id,
                    dst=m.src,
                    success=False,
                    index=m.prev_log_index,
                    hint_index=hint,
                    hint_term=self._log.term_at(hint) or 0,
                )
            )
            return
        # Figure 2: commitIndex = min(leaderCommit, index of last new entry).
        self._commit_to(min(m.leader_commit, last_new))
        self._send(
            AppendEntriesResponse(term=self._term, src=self.id, dst=m.src, success=True, index=last_new)
        )

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        self._commit_to(min(m.commit, self._log.last_index))
        self._send(HeartbeatResponse(term=self._term, src=self.id, dst=m.src, seq=m.seq))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        meta = m.snapshot.meta
        if meta.index <= self._commit:
            index = self._commit
        elif self._log.match_term(meta.index, meta.term):
            # §7: we already hold the snapshot's last entry; keep the log and fast-forward the commit.
            self._commit_to(meta.index)
            index = meta.index
        else:
            self._log.restore(meta)
            self._snapshot = m.snapshot
            self._pending_snapshot = m.snapshot
            self._pending_compaction = None  # superseded
            self._commit = meta.index
            self._applying = meta.index
            index = meta.index
        self._send(
            InstallSnapshotResponse(term=self._term, src=self.id, dst=m.src, success=True, index=index)
        )

    def _commit_to(self, index: int) -> None:
        if index > self._commit:
            self._commit = index

    # ---- leader side ---------------------------------------------------------------------------

    def _handle_append_response(self, m: AppendEntriesResponse) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if not m.success:
            # Fast backtracking (§5.3): jump past every entry that cannot match the follower's hint.
            guess = self._log.find_conflict_by_term(m.hint_index, m.hint_term) + 1 if m.hint_index else 1
            if pr.maybe_decrease(m.index, guess, self._log.last_index):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        updated = pr.maybe_update(m.index)
        if pr.state is ProgressState.PROBE and pr.match + 1 >= pr.next:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if updated and self._maybe_commit():
            self._broadcast_commit()
        if self._role is not Role.LEADER or m.src not in self._progress:
            return  # the commit made us step down (we were removed) or dropped this follower
        sent = False
        while self._send_append(m.src, allow_empty=False):
            sent = True
        if not sent:
            self._send_commit(m.src)  # it may be the last to ack: tell it what it helped commit
        self._maybe_finish_transfer(m.src)

    def _handle_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.acked_seq = max(pr.acked_seq, m.seq)
        # A heartbeat round trip also unsticks replication whose messages were lost.
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = False
        elif pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first()
        if pr.match < self._log.last_index:
            self._send_append(m.src)
        self._maybe_finish_transfer(m.src)
        self._advance_reads()
        if self._cfg.lease_ticks:
            self._quorum_seq_sent_tick()  # trims lease bookkeeping the quorum has moved past

    def _handle_snapshot_response(self, m: InstallSnapshotResponse) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if pr.state is not ProgressState.SNAPSHOT:
            if m.success and pr.maybe_update(m.index) and self._maybe_commit():
                self._broadcast_commit()
            return
        if m.success:
            updated = pr.maybe_update(m.index)
            pr.become_probe()
            if pr.match + 1 >= pr.next:
                pr.become_replicate()
            if updated and self._maybe_commit():
                self._broadcast_commit()
        else:
            pr.pending_snapshot = 0
            pr.become_probe()
        if self._role is Role.LEADER and m.src in self._progress:
            while self._send_append(m.src, allow_empty=False):
                pass
            self._maybe_finish_transfer(m.src)

    def _maybe_finish_transfer(self, peer: str) -> None:
        """§3.10: once the transfer target's log matches ours, tell it to campaign (once)."""
        if peer == self._transferee and not self._timeout_now_sent:
            if self._progress[peer].match == self._log.last_index:
                self._send_timeout_now(peer)

    def _maybe_commit(self) -> bool:
        """Advance the commit index to the highest index on a majority of voters, but only if that
        entry is from the current term (§5.4.2, Figure 8): older entries commit indirectly."""
        voters = self._log.latest_configuration()[1].voters
        match = {pid: pr.match for pid, pr in self._progress.items()}
        # The leader's own copy counts once it is durable, like anyone else's: "committed" must mean
        # "on stable storage of a majority", or a crash of a one-server cluster could lose an entry
        # after it was counted (it would never be applied, but the commit index would lie).
        match[self.id] = self._log.stable_index
        n = quorum_index(voters, match)
        if n <= self._commit or self._log.term_at(n) != self._term:
            return False
        self._commit = n
        if self._reads_awaiting_commit:
            waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
            for ctx in waiting:
                self._start_read(ctx)
        conf_index, conf = self._log.latest_configuration()
        if conf_index <= self._commit:
            self._sync_progress()
            if not conf.is_voter(self.id):
                self._step_down_after_removal(conf)
        return True

    def _step_down_after_removal(self, conf: Configuration) -> None:
        """§4.2.2: once the configuration without us commits, stop leading. Hand over to the most
        up-to-date voter at once instead of making the cluster wait out an election timeout."""
        candidates = [(pr.match, pid) for pid, pr in self._progress.items() if conf.is_voter(pid)]
        if candidates:
            match, best = max(candidates)
            if match == self._log.last_index:
                self._send_timeout_now(best)
        self._become_follower(self._term, None)

    def _sync_progress(self) -> None:
        """Track every server of the latest configuration, plus those of the committed one while a
        change is in flight, so a server being removed still learns of its removal."""
        targets = set(self._log.latest_configuration()[1].ids)
        targets |= self._log.configuration_at(self._commit)[1].ids
        targets.discard(self.id)
        for pid in list(self._progress):
            if pid not in targets:
                del self._progress[pid]
        for pid in sorted(targets - self._progress.keys()):
            self._progress[pid] = Progress(self._log.last_index + 1, self._cfg.max_inflight_msgs)
        if self._transferee is not None and self._transferee not in self._progress:
            self._transferee = None

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_id)
        if self._transferee is not None:
            raise ProposalDropped(f"leadership transfer to {self._transferee} in progress")

    def _append_new(self, kind: EntryKind, data: bytes) -> int:
        entry = Entry(index=self._log.last_index + 1, term=self._term, kind=kind, data=data)
        self._log.append([entry])
        self._needs_broadcast = True
        return entry.index

    def _committed_in_current_term(self) -> bool:
        return self._log.term_at(self._commit) == self._term

    # ---- sending -------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        self._outbox.append(m)

    def _flush(self) -> None:
        """Turn work batched since the last Ready into messages: one AppendEntries per follower for
        many proposals, one heartbeat round for many reads."""
        if self._role is not Role.LEADER:
            return
        if self._needs_broadcast:
            self._needs_broadcast = False
            for pid in list(self._progress):
                while self._send_append(pid, allow_empty=False):
                    pass
        if self._seq_pending:
            self._broadcast_heartbeat(new_seq=False)

    def _send_append(self, to: str, allow_empty: bool = True) -> bool:
        """Send the follower its next batch (or a snapshot, §7). Returns whether anything was sent.
        ``allow_empty=False`` skips an empty AppendEntries to a follower that is replicating."""
        pr = self._progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self._log.term_at(prev)
        if prev_term is None or prev < self._log.offset:
            return self._send_snapshot(to, pr)
        entries = self._log.entries_from(pr.next, self._cfg.max_entries_per_msg)
        if not entries and not allow_empty and pr.state is ProgressState.REPLICATE:
            return False  # a probe, though, is always worth sending: it finds where the logs diverge
        self._send(
            AppendEntries(
                term=self._term,
                src=self.id,
                dst=to,
                prev_log_index=prev,
                prev_log_term=prev_term,
                entries=tuple(entries),
                leader_commit=self._commit,
            )
        )
        pr.sent(entries[-1].index if entries else None)
        pr.sent_commit = max(pr.sent_commit, min(self._commit, prev + len(entries)))
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        snap = self._snapshot
        if snap is None:
            raise SafetyViolation(f"follower {to} needs compacted entries but there is no snapshot")
        self._send(InstallSnapshot(term=self._term, src=self.id, dst=to, snapshot=snap))
        pr.become_snapshot(snap.meta.index)
        return True

    def _broadcast_commit(self) -> None:
        """Tell followers about a new commit index: piggybacked on new entries where there are any,
        else a heartbeat (no log check, so it cannot be rejected by a follower still receiving)."""
        for pid in self._progress:
            if not self._send_append(pid, allow_empty=False):
                self._send_commit(pid)

    def _send_commit(self, to: str) -> None:
        pr = self._progress[to]
        commit = min(self._commit, pr.match)
        if commit > pr.sent_commit:
            pr.sent_commit = commit
            self._send(Heartbeat(term=self._term, src=self.id, dst=to, commit=commit, seq=self._seq))

    def _broadcast_heartbeat(self, new_seq: bool) -> None:
        if new_seq:
            self._new_seq()
        self._seq_pending = False
        for pid, pr in self._progress.items():
            commit = min(self._commit, pr.match)
            pr.sent_commit = max(pr.sent_commit, commit)
            self._send(Heartbeat(term=self._term, src=self.id, dst=pid, commit=commit, seq=self._seq))

    def _send_timeout_now(self, to: str) -> None:
        # From here on another server may win an election without waiting for our lease to lapse.
        self._lease_revoked = True
        self._timeout_now_sent = True
        self._send(TimeoutNow(term=self._term, src=self.id, dst=to))

    # ---- reads ---------------------------------------------------------------------------------

    def _new_seq(self) -> None:
        self._seq += 1
        if self._cfg.lease_ticks:
            self._seq_sent.append((self._seq, self._ticks))

    def _start_read(self, ctx: int) -> None:
        if not self._seq_pending:
            self._new_seq()
            self._seq_pending = True  # broadcast at the next flush: reads in one batch share a round
        self._reads.append(_PendingRead(ctx, self._commit, self._seq))
        self._advance_reads()

    def _quorum_seq(self) -> int:
        acked = {pid: pr.acked_seq for pid, pr in self._progress.items()}
        acked[self.id] = self._seq
        return quorum_index(self._log.latest_configuration()[1].voters, acked)

    def _advance_reads(self) -> None:
        if not self._reads:
            return
        confirmed = self._quorum_seq()
        while self._reads and self._reads[0].seq <= confirmed:
            r = self._reads.popleft()
            self._read_states.append(ReadState(r.ctx, r.index))

    def _quorum_seq_sent_tick(self) -> int | None:
        """When the newest heartbeat a quorum has acknowledged was allocated (its lease start)."""
        confirmed = self._quorum_seq()
        while len(self._seq_sent) >= 2 and self._seq_sent[1][0] <= confirmed:
            self._seq_sent.popleft()
        if self._seq_sent and self._seq_sent[0][0] <= confirmed:
            return self._seq_sent[0][1]
        return None

    def _quorum_active(self) -> bool:
        voters = self._log.latest_configuration()[1].voters
        active = {pid for pid, pr in self._progress.items() if pr.recent_active} | {self.id}
        return len(voters & active) >= majority(len(voters))

    # ---- ready helpers -------------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(term=self._term, vote=self._vote, commit=self._commit)

    def _soft_state(self) -> SoftState:
        return SoftState(self._role, self._leader_id)
