"""The linearizability checker (tests/linearizability.py) on hand-written and generated histories.

Table tests: linearizable histories pass, the classic violations fail with an explanation naming the
culprit. Property tests: a correct in-memory register driven by random real-time interleavings
(with crashed clients) always checks as linearizable; registers with planted bugs (stale reads, a
compare-and-set against a stale value) are caught; the search agrees with brute force over all
orders on small histories, and with a direct search of the definition on medium ones. No sleeps,
no processes.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.linearizability import INITIAL, UNKNOWN, Operation, State, check, step

Op = Operation
N = None  # never returned


def w(p: int, call: float, ret: float | None, v: Hashable, key: str = "x", out: Any = True,
      index: int | None = None) -> Operation:
    return Op(p, call, ret, "write", key, v, out if ret is not None else UNKNOWN, index)


def r(p: int, call: float, ret: float | None, out: Hashable, key: str = "x", index: int | None = None) -> Operation:
    return Op(p, call, ret, "read", key, None, out if ret is not None else UNKNOWN, index)


def cas(p: int, call: float, ret: float | None, expected: Hashable, new: Hashable, out: Any = None,
        key: str = "x") -> Operation:
    return Op(p, call, ret, "cas", key, (expected, new), out if ret is not None else UNKNOWN)


def cas_i(p: int, call: float, ret: float, index: int, new: Hashable, out: bool, key: str = "x") -> Operation:
    return Op(p, call, ret, "cas-index", key, (index, new), out)


def d(p: int, call: float, ret: float | None, key: str = "x") -> Operation:
    return Op(p, call, ret, "delete", key, None, True if ret is not None else UNKNOWN)


LINEARIZABLE: dict[str, list[Operation]] = {
    "empty": [],
    "read of a missing key": [r(1, 0, 1, None)],
    "sequential write then read": [w(1, 0, 1, "a"), r(2, 2, 3, "a")],
    "read concurrent with a write sees the old value": [w(1, 0, 1, "a"), w(1, 2, 5, "b"), r(2, 3, 4, "a")],
    "read concurrent with a write sees the new value": [w(1, 0, 1, "a"), w(1, 2, 5, "b"), r(2, 3, 4, "b")],
    "new value then old value, writes reordered": [
        w(1, 0, 10, "a"), w(2, 0, 10, "b"), r(3, 1, 2, "b"), r(3, 3, 4, "a")],
    "a timed-out write takes effect much later": [
        w(1, 0, N, "a"), r(2, 1, 2, None), r(2, 50, 51, None), r(2, 60, 61, "a")],
    "a timed-out write never takes effect": [w(1, 0, N, "a"), r(2, 1, 2, None), w(2, 3, 4, "b"), r(2, 5, 6, "b")],
    "a timed-out cas whose effect is seen": [
        w(1, 0, 1, "a"), cas(2, 2, N, "a", "b"), r(3, 10, 11, "b")],
    "a failed cas: a concurrent write got there first": [
        w(1, 0, 1, "a"), w(2, 2, 5, "b"), cas(3, 3, 6, "a", "c", False), r(3, 7, 8, "b")],
    "delete, then create with cas on None": [
        w(1, 0, 1, "a"), d(1, 2, 3), r(2, 4, 5, None), cas(2, 6, 7, None, "b", True), r(1, 8, 9, "b")],
    "equal timestamps count as concurrent": [w(1, 0, 1, "a"), w(1, 1, 2, "b"), r(2, 1, 1, "a")],
    "several keys, each linearizable": [
        w(1, 0, 1, "a", key="x"), w(2, 0, 1, "b", key="y"), r(3, 2, 3, "a", key="x"), r(3, 4, 5, "b", key="y")],
    "consul ModifyIndex: cas against the index a read returned": [
        w(1, 0, 1, "a"), r(2, 2, 3, "a", index=7), cas_i(2, 4, 5, 7, "b", True), r(1, 6, 7, "b", index=9),
        cas_i(1, 8, 9, 7, "c", False), cas_i(1, 10, 11, 0, "d", False)],
}

NOT_LINEARIZABLE: dict[str, tuple[list[Operation], str]] = {
    "stale read after a completed write": (
        [w(1, 0, 1, "a"), w(1, 2, 3, "b"), r(2, 4, 5, "a")], "read() -> 'a'"),
    "two readers see the writes in opposite orders": (
        [w(1, 0, 10, "a"), w(2, 0, 10, "b"),
         r(3, 1, 2, "a"), r(3, 3, 4, "b"),
         r(4, 1, 2, "b"), r(4, 3, 4, "a")], "read()"),
    "IRIW across two keys, real-time ordered reads": (
        [w(1, 0, 10, 1, key="x"), w(2, 0, 10, 1, key="y"),
         r(3, 1, 2, 1, key="x"), r(3, 3, 4, None, key="y"),
         r(4, 5, 6, 1, key="y"), r(4, 7, 8, None, key="x")], "read() -> None"),
    "a cas succeeds twice against one value (sequential)": (
        [w(1, 0, 1, "a"), cas(1, 2, 3, "a", "b", True), cas(2, 4, 5, "a", "c", True)], "cas(('a', 'c'))"),
    "a cas succeeds twice against one value (concurrent)": (
        [w(1, 0, 1, "a"), cas(2, 2, 5, "a", "b", True), cas(3, 2, 5, "a", "c", True)], "cas"),
    "a read returns a value nobody wrote": ([w(1, 0, 1, "a"), r(2, 2, 3, "zzz")], "'zzz'"),
    "a timed-out write seen before it was called": ([r(2, 0, 1, "a"), w(1, 2, N, "a")], "read() -> 'a'"),
    "a deleted value read back after the delete returned": (
        [w(1, 0, 1, "a"), d(1, 2, 3), r(2, 4, 5, "a")], "read() -> 'a'"),
    "a cas fails although nothing changed the value": (
        [w(1, 0, 1, "a"), cas(2, 2, 3, "a", "b", False), r(1, 4, 5, "a")], "cas(('a', 'b')) -> False"),
    "consul: one write observed with two ModifyIndexes (applied twice)": (
        [w(1, 0, 1, "a"), r(2, 2, 3, "a", index=5), r(2, 4, 5, "a", index=8)], "applied more than once"),
    # Seen on a ctk cluster (tests/cluster/test_linearizable_history.py): a cas forwarded by a
    # follower while the leader was SIGKILLed answered false, yet its value is read back.
    "consul: a cas answers false but took effect": (
        [cas_i(48, 0.0, 0.01, 0, "p48-822", True), r(48, 0.02, 0.03, "p48-822", index=2226),
         cas_i(48, 0.03, 0.91, 2226, "p48-825", False), cas_i(54, 0.55, 0.91, 2226, "p54-827", False),
         r(54, 0.91, 0.92, "p48-825", index=2233)], "cas"),
    "consul: ModifyIndex goes backwards across writes": (
        [w(1, 0, 1, "a"), r(2, 2, 3, "a", index=9), w(1, 4, 5, "b"), r(2, 6, 7, "b", index=4)], "write('b')"),
}


@pytest.mark.parametrize("name", LINEARIZABLE)
def test_linearizable_histories_pass(name: str) -> None:
    ok, why = check(LINEARIZABLE[name])
    assert ok is True, why


@pytest.mark.parametrize("name", NOT_LINEARIZABLE)
def test_violations_fail_with_an_explanation(name: str) -> None:
    history, culprit = NOT_LINEARIZABLE[name]
    ok, why = check(history)
    assert ok is False, why
    assert culprit in why, why
    # The minimal sub-history is itself a counterexample.
    if "failing sub-history" in why:
        assert "longest linearization" in why


def test_explanation_is_minimal() -> None:
    noise = [r(9, t, t + 0.5, "a") for t in range(2, 40)]
    history = [w(1, 0, 1, "a"), *noise, w(1, 50, 51, "b"), r(2, 60, 61, "a"), r(2, 70, 71, "b")]
    ok, why = check(history)
    assert ok is False
    sub = why.split("failing sub-history")[1].split("longest")[0]
    assert sub.count("read()") == 1 and "write('b')" in sub and "'a'" in sub, why


def test_budget_exhausted_reports_unknown() -> None:
    # 16 concurrent writes, then a read of a value nobody wrote: the search must try every subset.
    history = [w(i, 0, 10, f"v{i}") for i in range(16)] + [r(99, 11, 12, "nope")]
    ok, why = check(history, max_steps=10_000)
    assert ok is None and "unknown" in why
    ok, why = check(history, timeout_s=0.0)
    assert ok is None and "unknown" in why


def test_step_model() -> None:
    ok, s = step(INITIAL, w(1, 0, 1, "a", index=3))
    assert ok and s == ("a", 3, 3)
    assert step(s, r(1, 0, 1, "a", index=3))[0]
    assert not step(s, r(1, 0, 1, "a", index=4))[0]
    assert not step(s, w(1, 0, 1, "b", index=2))[0]  # indexes grow along the linearization
    assert step(s, cas(1, 0, 1, "a", "b", True))[1][0] == "b"
    assert step(s, cas(1, 0, N, "x", "b", None))[1] == s  # an unknown cas that cannot apply: no-op
    assert step(s, d(1, 0, 1))[1][0] is None


# ---------------------------------------------------------------------------------- generated histories


def simulate(rnd: random.Random, *, procs: int = 4, n_ops: int = 40, keys: Sequence[str] = ("x", "y"),
             crash_p: float = 0.05, bug: str = "") -> list[Operation]:
    """Clients on an in-memory register with random real-time interleavings of call/apply/return.

    Each op takes effect atomically at its ``apply`` event, between its call and its return: the
    history is linearizable by construction. A crashed op may or may not apply and never returns
    (its process is replaced, as Jepsen does). ``bug``: ``stale`` reads sometimes return the previous
    value; ``stale-cas`` compares against the previous value.
    """
    store: dict[str, Hashable] = {}
    past: dict[str, list[Hashable]] = defaultdict(lambda: [None])
    pids = itertools.count()
    slot_pid = [next(pids) for _ in range(procs)]
    pending: dict[int, dict[str, Any]] = {}
    history: list[Operation] = []
    values = itertools.count()
    t, started = 0.0, 0

    def apply(p: dict[str, Any]) -> Any:
        kind, key, arg = p["kind"], p["key"], p["arg"]
        if kind == "read":
            if bug == "stale" and len(past[key]) >= 2 and rnd.random() < 0.5:
                return past[key][-2]
            return store.get(key)
        if kind == "write":
            store[key] = arg
            past[key].append(arg)
            return True
        if kind == "delete":
            store.pop(key, None)
            past[key].append(None)
            return True
        expected, new = arg
        current = past[key][-2] if bug == "stale-cas" and len(past[key]) >= 2 else store.get(key)
        if current == expected:
            store[key] = new
            past[key].append(new)
            return True
        return False

    while started < n_ops or pending:
        t += rnd.choice((0.0, 1.0, 1.0, 1.0))
        s = rnd.randrange(procs) if started < n_ops else rnd.choice(list(pending))
        p = pending.get(s)
        if p is None:
            key = rnd.choice(keys)
            kind = rnd.choices(("read", "write", "cas", "delete"), (4, 3, 3, 1))[0]
            arg: Any = None
            if kind == "write":
                arg = f"v{next(values)}"
            elif kind == "cas":
                arg = (rnd.choice(past[key][-3:]), f"v{next(values)}")
            pending[s] = {"kind": kind, "key": key, "arg": arg, "call": t, "applied": False}
            started += 1
        elif not p["applied"]:
            if rnd.random() < crash_p:
                if rnd.random() < 0.5:
                    apply(p)
                history.append(Op(slot_pid[s], p["call"], None, p["kind"], p["key"], p["arg"], UNKNOWN))
                slot_pid[s] = next(pids)
                del pending[s]
            else:
                p["out"], p["applied"] = apply(p), True
        else:
            history.append(Op(slot_pid[s], p["call"], t, p["kind"], p["key"], p["arg"], p["out"]))
            del pending[s]
    return history


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rnd=st.randoms(use_true_random=False), procs=st.integers(1, 6), n_ops=st.integers(0, 60),
       crash_p=st.sampled_from([0.0, 0.05, 0.2]))
def test_correct_register_is_always_linearizable(rnd: random.Random, procs: int, n_ops: int, crash_p: float) -> None:
    history = simulate(rnd, procs=procs, n_ops=n_ops, crash_p=crash_p)
    ok, why = check(history, timeout_s=30)
    assert ok is True, why


@pytest.mark.parametrize("bug", ["stale", "stale-cas"])
def test_broken_register_is_caught(bug: str) -> None:
    caught = []
    for seed in range(60):
        history = simulate(random.Random(seed), procs=4, n_ops=40, bug=bug)
        ok, why = check(history, timeout_s=30)
        assert ok is not None, why
        if ok is False:
            caught.append(why)
    assert len(caught) >= 10, f"{bug}: caught on only {len(caught)} of 60 seeds"
    assert all("failing sub-history" in why for why in caught)


def _brute_force(history: Sequence[Operation]) -> bool:
    """Linearizable iff some order respecting real time (a.ret < b.call => a first) satisfies the model."""
    ops = [o for o in history if not (o.op == "read" and o.unknown)]
    for perm in itertools.permutations(ops):
        if any(b.end < a.call for i, a in enumerate(perm) for b in perm[i + 1:]):
            continue
        states: dict[str, State] = {}
        ok = True
        for o in perm:
            good, states[o.key] = step(states.get(o.key, INITIAL), o)
            if not good:
                ok = False
                break
        if ok:
            return True
    return False


@settings(max_examples=150, deadline=None)
@given(rnd=st.randoms(use_true_random=False), bug=st.sampled_from(["", "stale", "stale-cas"]),
       n_ops=st.integers(1, 7), crash_p=st.sampled_from([0.0, 0.3]))
def test_search_agrees_with_brute_force(rnd: random.Random, bug: str, n_ops: int, crash_p: float) -> None:
    history = simulate(rnd, procs=3, n_ops=n_ops, keys=("x",), crash_p=crash_p, bug=bug)
    ok, why = check(history)
    assert ok is _brute_force(history), why


def _reference(history: Sequence[Operation]) -> bool:
    """The definition, searched directly: per key, some op whose call is not after every pending
    op's return goes next; memoized on (done set, state); done when every known op is."""
    ops = [o for o in history if not (o.op == "read" and o.unknown)]
    return all(_reference_key([o for o in ops if o.key == key]) for key in {o.key for o in ops})


def _reference_key(ops: Sequence[Operation]) -> bool:
    known = frozenset(i for i, o in enumerate(ops) if not o.unknown)
    failed: set[tuple[frozenset[int], State]] = set()

    def search(done: frozenset[int], state: State) -> bool:
        if known <= done:
            return True
        if (done, state) in failed:
            return False
        rest = [i for i in range(len(ops)) if i not in done]
        horizon = min(ops[i].end for i in rest)
        for i in rest:
            if ops[i].call <= horizon:
                ok, after = step(state, ops[i])
                if ok and search(done | {i}, after):
                    return True
        failed.add((done, state))
        return False

    return search(frozenset(), INITIAL)


@settings(max_examples=150, deadline=None)
@given(rnd=st.randoms(use_true_random=False), bug=st.sampled_from(["", "stale", "stale-cas"]),
       procs=st.integers(2, 6), n_ops=st.integers(5, 25), crash_p=st.sampled_from([0.0, 0.1, 0.3]))
def test_search_agrees_with_reference_search(rnd: random.Random, bug: str, procs: int, n_ops: int,
                                             crash_p: float) -> None:
    history = simulate(rnd, procs=procs, n_ops=n_ops, keys=("x", "y"), crash_p=crash_p, bug=bug)
    ok, why = check(history)
    assert ok is _reference(history), why

