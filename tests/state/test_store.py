"""The state store as a deterministic state machine: indexes, KV semantics, sessions, txn, snapshots."""

from __future__ import annotations

import random

import pytest

from agent.state import commands
from agent.state.store import CommandError, Store
from agent.state.watch import WatchHub


class Log:
    """Feeds commands with consecutive indexes, as a Raft log would."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.index = self.store.last_index

    def __call__(self, cmd: dict) -> object:
        self.index += 1
        return self.store.apply(self.index, cmd)


def node(name: str = "n1", address: str = "10.0.0.1") -> dict:
    return {"node": name, "address": address}


def test_kv_set_get_and_indexes() -> None:
    log = Log()
    assert log(commands.kv("set", "a/b", value=b"1", flags=42)) is True
    idx, e = log.store.kv_get("a/b")
    assert e is not None and e.value == b"1" and e.flags == 42
    assert e.create_index == e.modify_index == idx == 1
    log(commands.kv("set", "a/b", value=b"2"))
    _, e = log.store.kv_get("a/b")
    assert e is not None and (e.create_index, e.modify_index) == (1, 2)


def test_kv_cas_semantics() -> None:
    log = Log()
    assert log(commands.kv("cas", "k", value=b"x", index=0)) is True  # create-only
    assert log(commands.kv("cas", "k", value=b"y", index=0)) is False  # exists now
    _, e = log.store.kv_get("k")
    assert e is not None
    assert log(commands.kv("cas", "k", value=b"z", index=e.modify_index + 7)) is False
    assert log(commands.kv("cas", "k", value=b"z", index=e.modify_index)) is True
    assert log.store.kv_get("k")[1].value == b"z"  # type: ignore[union-attr]


def test_delete_leaves_tombstone_so_prefix_index_never_goes_backwards() -> None:
    log = Log()
    log(commands.kv("set", "p/a", value=b"1"))
    log(commands.kv("set", "p/b", value=b"1"))
    before, _ = log.store.kv_list("p/")
    log(commands.kv("delete", "p/b"))
    after, entries = log.store.kv_list("p/")
    assert [e.key for e in entries] == ["p/a"]
    assert after > before
    idx_missing, e = log.store.kv_get("p/b")
    assert e is None and idx_missing == after
    # Reaping tombstones is the one thing allowed to move it back, as in Consul.
    log({"op": "tombstone_reap", "index": log.index})
    assert log.store.kv_list("p/")[0] < after


def test_keys_with_separator() -> None:
    log = Log()
    for k in ("web/a", "web/b/c", "web/b/d", "x"):
        log(commands.kv("set", k, value=b""))
    assert log.store.kv_keys("web/", "/")[1] == ["web/a", "web/b/"]
    assert log.store.kv_keys("", "/")[1] == ["web/", "x"]


def _session(log: Log, sid: str = "s1", behavior: str = "release", checks: list[str] | None = None) -> str:
    rec = {"id": sid, "node": "n1", "behavior": behavior, "lock_delay_ns": 15_000_000_000,
           "node_checks": checks if checks is not None else ["serfHealth"]}
    out = log(commands.session_create(rec, now=100.0))
    assert out == sid, out
    return sid


def _node_with_serf(log: Log, status: str = "passing") -> None:
    log(commands.register(node(), checks=[{"check_id": "serfHealth", "name": "Serf Health Status",
                                           "status": status}]))


def test_lock_acquire_release_and_lock_delay() -> None:
    log = Log()
    _node_with_serf(log)
    s1 = _session(log, "s1")
    s2 = _session(log, "s2")
    assert log(commands.kv("lock", "leader", value=b"me", session=s1, now=100.0)) is True
    assert log(commands.kv("lock", "leader", value=b"you", session=s2, now=100.0)) is False
    assert log(commands.kv("lock", "leader", value=b"me2", session=s1, now=100.0)) is True  # re-acquire
    e = log.store.kv["leader"]
    assert (e.session, e.lock_index, e.value) == (s1, 1, b"me2")
    # Invalidating the holder releases the lock and starts the 15 s lock-delay.
    log(commands.session_destroy(s1, now=101.0))
    assert log.store.kv["leader"].session == ""
    assert log(commands.kv("lock", "leader", session=s2, now=110.0)) is False
    assert log(commands.kv("lock", "leader", session=s2, now=117.0)) is True
    assert log.store.kv["leader"].lock_index == 2
    assert log(commands.kv("unlock", "leader", session="other")) is False
    assert log(commands.kv("unlock", "leader", session=s2)) is True


def test_critical_check_invalidates_session_and_delete_behavior_removes_keys() -> None:
    log = Log()
    _node_with_serf(log)
    sid = _session(log, "s1", behavior="delete")
    log(commands.kv("lock", "held", value=b"v", session=sid, now=100.0))
    log(commands.register(node(), checks=[{"check_id": "serfHealth", "name": "Serf Health Status",
                                           "status": "critical"}], now=100.0))
    assert "s1" not in log.store.sessions
    assert "held" not in log.store.kv


def test_session_refused_when_check_critical_or_missing() -> None:
    log = Log()
    _node_with_serf(log, "critical")
    err = log(commands.session_create({"id": "s", "node": "n1", "node_checks": ["serfHealth"]}))
    assert isinstance(err, CommandError) and "critical" in str(err)
    err = log(commands.session_create({"id": "s", "node": "ghost", "node_checks": []}))
    assert isinstance(err, CommandError)
    assert log.store.sessions == {}


def test_txn_is_all_or_nothing() -> None:
    log = Log()
    log(commands.kv("set", "a", value=b"1"))
    before = (dict(log.store.index), {k: v.value for k, v in log.store.kv.items()})
    ops = [
        {"kv": {"verb": "set", "key": "b", "value": b"2"}},
        {"kv": {"verb": "delete", "key": "a"}},
        {"kv": {"verb": "cas", "key": "c", "value": b"3", "index": 999}},  # fails
    ]
    result = log(commands.txn(ops))
    assert result["errors"] and result["errors"][0]["OpIndex"] == 2
    assert (dict(log.store.index), {k: v.value for k, v in log.store.kv.items()}) == before
    assert log.store.tombstones == {}
    ok = log(commands.txn(ops[:2]))
    assert ok["errors"] == [] and set(log.store.kv) == {"b"}


def test_service_index_is_per_service_and_node_checks_bump_services_on_node() -> None:
    log = Log()
    log(commands.register(node(), service={"id": "web1", "service": "web", "port": 80}))
    log(commands.register(node(), service={"id": "db1", "service": "db", "port": 5432}))
    web_idx = log.store.service_index("web")
    log(commands.register(node(), service={"id": "db1", "service": "db", "port": 5433}))
    assert log.store.service_index("web") == web_idx  # a change to db does not wake web's watchers
    log(commands.register(node(), checks=[{"check_id": "maint", "name": "m", "status": "critical"}]))
    assert log.store.service_index("web") > web_idx  # a node check changes every service's health
    _, healthy = log.store.health_service("web", passing_only=True)
    assert healthy == []


def test_idempotent_register_keeps_indexes() -> None:
    log = Log()
    log(commands.register(node(), service={"id": "web1", "service": "web", "port": 80}))
    idx = log.store.service_index("web")
    log(commands.register(node(), service={"id": "web1", "service": "web", "port": 80}))
    assert log.store.service_index("web") == idx


def test_deregister_node_removes_everything_and_invalidates_sessions() -> None:
    log = Log()
    _node_with_serf(log)
    log(commands.register(node(), service={"id": "web1", "service": "web"}))
    _session(log)
    log(commands.deregister("n1"))
    assert not log.store.nodes and not log.store.services.get("n1") and not log.store.sessions


def test_bad_commands_leave_state_untouched() -> None:
    log = Log()
    assert isinstance(log(commands.register({"node": "", "address": "x"})), CommandError)
    assert isinstance(log(commands.register({"node": "n", "address": ""})), CommandError)
    assert isinstance(log(commands.register(node(), checks=[{"check_id": "c", "name": "c", "service_id": "nope"}])),
                      CommandError)
    assert log.store.nodes == {}  # the node of the refused register was rolled back too
    assert isinstance(log({"op": "nonsense"}), CommandError)


def test_indexes_are_never_zero() -> None:
    s = Store()
    assert s.kv_get("x")[0] == 1 and s.all_nodes()[0] == 1 and s.service_index("web") == 1


def test_snapshot_restore_roundtrip_under_random_history() -> None:
    rng = random.Random(7)
    log = Log()
    _node_with_serf(log)
    _session(log)
    for i in range(300):
        key = f"k/{rng.randrange(40)}"
        verb = rng.choice(["set", "set", "delete", "cas", "lock"])
        log(commands.kv(verb, key, value=str(i).encode(), index=rng.randrange(5), session="s1", now=100.0))
    blob = log.store.snapshot()
    copy = Store()
    copy.restore(blob)
    assert copy.snapshot() == blob
    # Applying the same next command to both gives the same state (determinism).
    nxt = commands.kv("set", "k/new", value=b"v")
    log(nxt)
    copy.apply(log.index, nxt)
    assert copy.snapshot() == log.store.snapshot()


def test_watch_fires_for_key_prefix_and_topic_only() -> None:
    hub = WatchHub()
    log = Log(Store(hub))
    fired: list[str] = []
    hub.watch(lambda: fired.append("key"), kv_keys=["a/b"])
    hub.watch(lambda: fired.append("prefix"), kv_prefixes=["a/"])
    hub.watch(lambda: fired.append("other"), kv_prefixes=["z/"])
    hub.watch(lambda: fired.append("web"), topics=["service:web"])
    log(commands.kv("set", "a/b", value=b""))
    log(commands.register(node(), service={"id": "w", "service": "web"}))
    assert sorted(fired) == ["key", "prefix", "web"]
    assert hub.watcher_count() == 1  # fired watches unregister themselves


def test_apply_rejects_out_of_order_index() -> None:
    s = Store()
    s.apply(5, commands.kv("set", "a", value=b""))
    with pytest.raises(ValueError):
        s.apply(5, commands.kv("set", "a", value=b""))


def test_deferred_notifications_fire_on_flush_and_epoch_tracks_index_reuse() -> None:
    hub = WatchHub()
    log = Log(Store(hub))
    fired: list[str] = []
    hub.watch(lambda: fired.append("k"), kv_keys=["k"])
    log.store.defer_notify = True
    log(commands.kv("set", "k", value=b"1"))
    assert fired == []  # the driver answers the proposer first
    log.store.defer_notify = False
    log.store.flush_notify()
    assert fired == ["k"]
    epoch = log.store.epoch
    log(commands.kv("delete", "k"))
    log({"op": "tombstone_reap", "index": log.index})
    assert log.store.epoch > epoch  # a prefix index may now name different content: caches must not reuse it
