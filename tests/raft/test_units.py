"""Pure pieces of the raft package: quorum maths, config validation, membership changes, the log,
MemoryStorage, and the sans-IO rule itself."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

import agent.raft
from agent.raft import (
    CompactedError,
    ConfigChange,
    ConfigChangeError,
    ConfigChangeOp,
    ConfigError,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    RaftConfig,
    RaftError,
    RaftLog,
    SafetyViolation,
    Server,
    Snapshot,
    SnapshotMeta,
    StorageError,
    Suffrage,
    bootstrap,
)
from agent.raft.progress import Progress, ProgressState
from agent.raft.quorum import VoteResult, quorum_index, vote_result

# ---- quorum ---------------------------------------------------------------------------------------


def _naive_quorum_index(voters: list[str], values: dict[str, int]) -> int:
    """The definition, by brute force: the largest v that a majority has reached."""
    candidates = {0, *values.values()}
    return max(v for v in candidates if sum(values.get(x, 0) >= v for x in voters) > len(voters) / 2)


def test_quorum_index_matches_the_naive_definition() -> None:
    """Like etcd's quorum quick test: compare against an obviously-correct version."""
    rng = random.Random(0)
    for _ in range(3000):
        voters = [f"v{i}" for i in range(rng.randint(1, 7))]
        values = {v: rng.randint(0, 10) for v in voters if rng.random() < 0.9}
        values["nonvoter"] = 99
        assert quorum_index(voters, values) == _naive_quorum_index(voters, values)
    assert quorum_index([], {"a": 5}) == 0


@pytest.mark.parametrize(
    ("n", "granted", "rejected", "result"),
    [
        (1, 1, 0, VoteResult.WON),
        (3, 2, 0, VoteResult.WON),
        (3, 1, 1, VoteResult.PENDING),
        (3, 1, 2, VoteResult.LOST),
        (4, 2, 1, VoteResult.PENDING),
        (4, 2, 2, VoteResult.LOST),
        (5, 3, 2, VoteResult.WON),
        (0, 0, 0, VoteResult.LOST),
    ],
)
def test_vote_result(n: int, granted: int, rejected: int, result: VoteResult) -> None:
    voters = [f"v{i}" for i in range(n)]
    votes = {v: True for v in voters[:granted]} | {v: False for v in voters[granted : granted + rejected]}
    votes["outsider"] = True
    assert vote_result(voters, votes) is result


# ---- config ---------------------------------------------------------------------------------------


def test_default_config_is_valid_and_matches_consul_timing() -> None:
    cfg = RaftConfig()
    assert cfg.election_ticks == 10 and cfg.heartbeat_ticks == 1 and cfg.lease_ticks == 5
    assert cfg.max_entries_per_msg == 64 and cfg.trailing_entries == 10240


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heartbeat_ticks": 0}, "heartbeat_ticks"),
        ({"election_ticks": 3, "heartbeat_ticks": 3, "lease_ticks": 1}, "greater than heartbeat_ticks"),
        ({"lease_ticks": 10}, "lease_ticks"),
        ({"lease_ticks": -1}, "lease_ticks"),
        ({"check_quorum": False}, "requires check_quorum"),
        ({"max_entries_per_msg": 0}, "max_entries_per_msg"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs"),
        ({"trailing_entries": -1}, "trailing_entries"),
        ({"snapshot_retry_ticks": 5}, "snapshot_retry_ticks"),
    ],
)
def test_config_validation(kwargs: dict[str, int | bool], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RaftConfig(**kwargs)  # type: ignore[arg-type]


# ---- membership changes ---------------------------------------------------------------------------

BASE = Configuration((Server("a", "a:1"), Server("b", "b:1"), Server("c", "c:1", Suffrage.NONVOTER)))


@pytest.mark.parametrize(
    ("op", "sid", "voters", "ids"),
    [
        (ConfigChangeOp.ADD_VOTER, "d", {"a", "b", "d"}, {"a", "b", "c", "d"}),
        (ConfigChangeOp.ADD_VOTER, "c", {"a", "b", "c"}, {"a", "b", "c"}),  # promote
        (ConfigChangeOp.ADD_NONVOTER, "d", {"a", "b"}, {"a", "b", "c", "d"}),
        (ConfigChangeOp.DEMOTE_VOTER, "b", {"a"}, {"a", "b", "c"}),
        (ConfigChangeOp.REMOVE_SERVER, "a", {"b"}, {"b", "c"}),
        (ConfigChangeOp.REMOVE_SERVER, "c", {"a", "b"}, {"a", "b"}),
    ],
)
def test_config_change_apply(op: ConfigChangeOp, sid: str, voters: set[str], ids: set[str]) -> None:
    conf = ConfigChange(op, sid, f"{sid}:1").apply_to(BASE)
    assert conf.voters == voters and conf.ids == ids


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (ConfigChange(ConfigChangeOp.REMOVE_SERVER, "zz"), "not in the configuration"),
        (ConfigChange(ConfigChangeOp.DEMOTE_VOTER, "c"), "not a voter"),
        (ConfigChange(ConfigChangeOp.ADD_NONVOTER, "a"), "use DEMOTE_VOTER"),
        (ConfigChange(ConfigChangeOp.ADD_VOTER, "a", "a:1"), "already"),
        (ConfigChange(ConfigChangeOp.ADD_VOTER, ""), "empty"),
    ],
)
def test_config_change_rejects_invalid(change: ConfigChange, match: str) -> None:
    with pytest.raises(ConfigChangeError, match=match):
        change.apply_to(BASE)


def test_config_change_never_leaves_zero_voters() -> None:
    solo = Configuration((Server("a", "a:1"),))
    with pytest.raises(ConfigChangeError, match="no voters"):
        ConfigChange(ConfigChangeOp.REMOVE_SERVER, "a").apply_to(solo)


# ---- the log --------------------------------------------------------------------------------------


def _entries(first: int, terms: list[int]) -> list[Entry]:
    return [Entry(first + i, t, EntryKind.NORMAL, b"%d" % (first + i)) for i, t in enumerate(terms)]


def test_try_append_truncates_only_from_the_first_conflict() -> None:
    """§5.3 receiver rules 3-4: keep matching entries (a reordered old message must not truncate),
    replace from the first conflicting one."""
    log = RaftLog(entries=_entries(1, [1, 1, 2, 2]))
    assert log.try_append(0, 0, _entries(1, [1, 1]), commit=0) == 2
    assert log.last_index == 4, "an older, shorter message must not truncate"
    assert log.try_append(2, 1, _entries(3, [3]), commit=2) == 3
    assert [e.term for e in log.slice(1, 10)] == [1, 1, 3]
    assert log.try_append(5, 3, [], commit=2) is None
    with pytest.raises(SafetyViolation):
        log.try_append(0, 0, _entries(1, [9]), commit=1)


def test_find_conflict_by_term_and_up_to_date() -> None:
    log = RaftLog(entries=_entries(1, [1, 1, 2, 2, 4, 4]))
    assert log.find_conflict_by_term(6, 3) == 4
    assert log.find_conflict_by_term(6, 4) == 6
    assert log.find_conflict_by_term(99, 1) == 2
    assert log.find_conflict_by_term(6, 0) == 0
    assert log.is_up_to_date(6, 4) and log.is_up_to_date(1, 5)
    assert not log.is_up_to_date(5, 4) and not log.is_up_to_date(100, 3)


def test_compaction_keeps_offset_term_and_configuration_history() -> None:
    c1 = Configuration((Server("a", "x"),))
    c2 = Configuration((Server("a", "x"), Server("b", "y")))
    es = _entries(1, [1, 1]) + [Entry(3, 1, EntryKind.CONFIG, c1.encode())] + _entries(4, [2])
    es += [Entry(5, 2, EntryKind.CONFIG, c2.encode())] + _entries(6, [2])
    log = RaftLog(entries=es)
    assert log.latest_configuration() == (5, c2)
    assert log.configuration_at(4) == (3, c1)
    log.compact(4)
    assert (log.offset, log.offset_term, log.first_index) == (4, 2, 5)
    assert log.term_at(4) == 2 and log.term_at(3) is None
    assert log.configuration_at(4) == (3, c1) and log.latest_configuration() == (5, c2)
    with pytest.raises(CompactedError):
        log.slice(3, 6)
    assert log.try_append(4, 2, [Entry(5, 3, EntryKind.NORMAL, b"")], commit=4) == 5
    assert log.latest_configuration() == (3, c1), "truncating a CONFIG entry reverts membership (§4.1)"
    log.restore(SnapshotMeta(20, 5, c2, 18))
    assert (log.first_index, log.last_index, log.last_term) == (21, 20, 5)
    assert log.latest_configuration() == (18, c2)


def test_unstable_entries_and_stable_to() -> None:
    log = RaftLog(entries=_entries(1, [1]))
    log.append(_entries(2, [1, 1]))
    assert [e.index for e in log.unstable()] == [2, 3]
    log.stable_to(3, 1)
    assert log.unstable() == []
    log.stable_to(3, 9)  # wrong term: ignored
    assert log.stable_index == 3


def test_progress_probe_and_replicate_transitions() -> None:
    pr = Progress(next_index=10, max_inflight=2)
    assert pr.state is ProgressState.PROBE and not pr.is_paused()
    pr.sent(None)
    assert pr.is_paused()
    assert not pr.maybe_decrease(rejected=5, next_guess=3, last_index=9), "stale rejection"
    assert pr.maybe_decrease(rejected=9, next_guess=4, last_index=9) and pr.next == 4
    pr.maybe_update(3)
    pr.become_replicate()
    pr.sent(5)
    pr.sent(7)
    assert pr.next == 8 and pr.is_paused()
    pr.inflights.free_le(5)
    assert not pr.is_paused()


# ---- storage --------------------------------------------------------------------------------------


def test_memory_storage_contract() -> None:
    s = MemoryStorage()
    s.save(HardState(1, "a", 0), _entries(1, [1, 1, 1]))
    s.save(None, _entries(2, [2]))
    assert [e.term for e in s.entries] == [1, 2]
    with pytest.raises(StorageError, match="gap"):
        s.save(None, _entries(5, [2]))
    conf = Configuration((Server("a", "x"),))
    s.compact(Snapshot(SnapshotMeta(2, 2, conf), b"s"), 1, 1)
    st = s.load()
    assert (st.offset_index, st.offset_term, [e.index for e in st.entries]) == (1, 1, [2])
    with pytest.raises(StorageError, match="compaction offset"):
        s.save(None, _entries(1, [3]))
    s.save(None, [], Snapshot(SnapshotMeta(10, 3, conf), b"t"))
    st = s.load()
    assert (st.offset_index, st.entries, st.hard_state.vote) == (10, (), "a")


def test_bootstrap_refuses_twice_and_empty_configurations() -> None:
    s = MemoryStorage()
    with pytest.raises(StorageError, match="no voters"):
        bootstrap(s, Configuration())
    bootstrap(s, Configuration((Server("a", "x"),)))
    assert s.hard_state.term == 1 and s.entries[0].kind is EntryKind.CONFIG
    with pytest.raises(StorageError, match="already"):
        bootstrap(s, Configuration((Server("a", "x"),)))


def test_ready_must_be_advanced_before_the_next() -> None:
    from agent.raft import RaftCore

    s = MemoryStorage()
    bootstrap(s, Configuration((Server("a", "x"),)))
    core = RaftCore("a", s, random.Random(0), RaftConfig(lease_ticks=0, check_quorum=False))
    core.campaign()
    rd = core.ready()
    assert rd.must_sync and rd.hard_state is not None and rd.hard_state.vote == "a"
    with pytest.raises(RaftError):
        core.ready()
    assert not core.has_ready()
    s.save(rd.hard_state, rd.entries, rd.snapshot)
    core.advance(rd)
    rd2 = core.ready()  # the noop is durable now, so the single voter commits it
    assert [e.kind for e in rd2.committed] == [EntryKind.CONFIG, EntryKind.NOOP]
    assert not rd2.must_sync, "only the commit index changed"
    with pytest.raises(RaftError):
        core.advance(rd)


# ---- the sans-IO rule -----------------------------------------------------------------------------

PURE = ["core", "log", "messages", "storage", "progress", "quorum", "config", "errors"]
FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "selectors", "pickle", "subprocess"}


@pytest.mark.parametrize("module", PURE)
def test_core_modules_import_no_io_clock_or_randomness(module: str) -> None:
    """DESIGN.md: protocol cores are sans-IO. Randomness and time come in through arguments."""
    path = Path(agent.raft.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module}.py imports {sorted(imported & FORBIDDEN)}"


def test_every_public_name_is_exported() -> None:
    assert agent.raft.__all__ and all(hasattr(agent.raft, name) for name in agent.raft.__all__)
