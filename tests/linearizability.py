"""A linearizability checker for key-value histories, in the style of Knossos and Porcupine.

**History.** A list of :class:`Operation`: process id, call time, return time, operation, key, input,
output. An operation whose outcome is uncertain (timed out, errored, its client crashed) has output
:data:`UNKNOWN` and no return time: it may take effect at any moment after its call, or never.

**Model.** Each key is a register holding ``(value, modify index)``; a missing key holds ``None``:

* ``read``   -> output: the value (``None`` = missing); ``index`` = the ModifyIndex the read saw;
* ``write``  input ``v`` -> ``True`` (the value is now ``v``); ``False`` = it did nothing;
* ``cas``    input ``(expected, new)`` -> ``True`` iff the value was ``expected`` (then it is ``new``);
* ``cas-index`` input ``(modify_index, new)`` -> Consul's ``?cas=<index>`` (``0`` = only if missing);
* ``delete`` -> ``True`` (the key is missing).

Consul's ModifyIndex is handled by :func:`resolve_indexes` before the search: with unique written
values (the test clients guarantee it) every index names one value and every value one index, so a
``cas-index`` becomes a ``cas`` on the value read together with that index. A value seen with two
indexes (one write applied twice) or an index seen with two values is reported as a violation. The
model also checks that the indexes of successive writes increase (they are Raft log positions).

**Algorithm.** Linearizability is compositional (Herlihy & Wing 1990), so the history is split per
key (Porcupine's P-compositionality) and each key is checked alone with the Wing & Gong (1993) search
as improved by Lowe (2017) and implemented by Porcupine: call/return events in time order in a
doubly linked list; repeatedly try to linearize a pending call whose model step accepts its output,
lifting it (and its return) out of the list; when the first remaining event is a return, that op
cannot be delayed any more: backtrack. Lowe's memoization of ``(linearized-set bitmask, model
state)`` prunes configurations already explored. Unknown operations have no return: they are
optional candidates from their call on, and the search succeeds once every *known* operation is
linearized (unknown ones left over never took effect). A configuration with fewer unknown ops
linearized (same known set, same state) can do everything one with more can, so the cache also
prunes dominated configurations; without that, every never-returned op doubles the work.

**Budget.** A step and wall-clock budget; when it runs out the answer is ``ok=None`` ("unknown"),
never a hang. A violation is explained by a small failing sub-history: cut after the op the search
could not place (ops called later are dropped, ops still running at the cut become unknown), drop
the reads it does not need, bisect for the shortest failing prefix. Each step only weakens the
history, so the small one failing proves the original fails. The explanation shows its tail, the
longest order the search found (Porcupine's partial linearization) and the operation it could not
place.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple

__all__ = ["INITIAL", "UNKNOWN", "Operation", "Result", "State", "check", "resolve_indexes", "step"]


class _Unknown:
    """The output of an operation whose effect is uncertain."""

    def __repr__(self) -> str:
        return "unknown"


UNKNOWN: Final = _Unknown()
INF: Final = math.inf

State = tuple[Hashable, int | None, int]
"""Model state of one key: (value or None, ModifyIndex of that value if known, highest index so far)."""

INITIAL: Final[State] = (None, None, 0)


@dataclass(frozen=True)
class Operation:
    """One client operation. ``ret=None`` or ``output=UNKNOWN``: never returned (uncertain effect)."""

    process: int | str
    call: float
    ret: float | None
    op: str
    key: str = ""
    input: Any = None
    output: Any = UNKNOWN
    index: int | None = None
    note: str = ""

    @property
    def unknown(self) -> bool:
        return self.ret is None or self.output is UNKNOWN

    @property
    def end(self) -> float:
        return INF if self.unknown else float(self.ret)  # type: ignore[arg-type]

    def weakened(self) -> Operation:
        """The same call with an uncertain outcome: allows every behaviour the original allows."""
        return replace(self, ret=None, output=UNKNOWN, index=None, note=(self.note + " (cut: running)").strip())

    def describe(self, t0: float = 0.0) -> str:
        span = f"{self.call - t0:8.3f}..{'   (never)' if self.unknown else f'{self.end - t0:8.3f}'}"
        arg = "" if self.input is None else repr(self.input)
        out = "unknown" if self.unknown else repr(self.output)
        idx = "" if self.index is None else f" @{self.index}" if self.op == "read" else f" (read back @{self.index})"
        note = f"  [{self.note}]" if self.note else ""
        return f"[{span}] p{self.process} {self.op}({arg}) -> {out}{idx}{note}"


class Result(NamedTuple):
    """``ok``: True (linearizable), False (a violation, explained), None (budget ran out: unknown)."""

    ok: bool | None
    explanation: str


def step(state: State, op: Operation) -> tuple[bool, State]:
    """The sequential specification: may ``op`` (with its recorded output) run in ``state``? -> next state."""
    value, idx, floor = state

    def install(v: Hashable) -> tuple[bool, State]:
        if op.index is not None:  # Raft log positions: a later write has a larger ModifyIndex
            return (op.index > floor, (v, op.index, op.index))
        return True, (v, None, floor)

    if op.op == "read":
        if op.output is UNKNOWN:
            return True, state
        if op.output != value:
            return False, state
        if op.index is None:
            return True, state
        return (op.index == idx if idx is not None else op.index > floor), state
    if op.op == "write":
        if op.output is False:
            return True, state
        return install(op.input)
    if op.op == "delete":
        if op.output is False:
            return True, state
        return True, (None, None, floor)
    if op.op == "cas":
        expected, new = op.input
        match = value == expected
        if op.output is UNKNOWN:
            return install(new) if match else (True, state)
        if op.output is True:
            return install(new) if match else (False, state)
        return (not match), state
    raise ValueError(f"unknown operation {op.op!r}")


# ---------------------------------------------------------------------------------- ModifyIndex


def resolve_indexes(ops: Sequence[Operation]) -> tuple[list[Operation], str]:
    """One key's history with Consul's ModifyIndex turned into values (see the module docstring).

    Returns the rewritten history and, if the indexes themselves are inconsistent, why.
    """
    index_of: dict[Hashable, set[int]] = defaultdict(set)
    value_of: dict[int, set[Hashable]] = defaultdict(set)
    witness: dict[tuple[Hashable, int], Operation] = {}
    for o in ops:
        if o.op == "read" and not o.unknown and o.index is not None and o.output is not None:
            index_of[o.output].add(o.index)
            value_of[o.index].add(o.output)
            witness.setdefault((o.output, o.index), o)
    t0 = min((o.call for o in ops), default=0.0)
    for v, idxs in index_of.items():
        if len(idxs) > 1:
            seen = "\n".join("  " + witness[(v, i)].describe(t0) for i in sorted(idxs))
            writers = [o for o in ops if o.op in ("write", "cas", "cas-index") and _new_value(o) == v]
            wrote = "\n".join("  " + o.describe(t0) for o in writers)
            return [], (f"value {v!r} was read with {len(idxs)} different ModifyIndexes {sorted(idxs)}, "
                        f"but it was written by {len(writers)} operation(s): applied more than once.\n"
                        f"reads:\n{seen}\nwrites:\n{wrote}")
    for i, vals in value_of.items():
        if len(vals) > 1:
            seen = "\n".join("  " + witness[(v, i)].describe(t0) for v in vals)
            return [], f"ModifyIndex {i} was read with different values {sorted(map(repr, vals))}:\n{seen}"
    writers_of: dict[Hashable, int] = defaultdict(int)
    for o in ops:
        if o.op in ("write", "cas", "cas-index"):
            writers_of[_new_value(o)] += 1
    out: list[Operation] = []
    for o in ops:
        if o.op == "cas-index":
            expected_index, new = o.input
            if expected_index == 0:
                expected: Hashable = None
            elif expected_index in value_of:
                [expected] = value_of[expected_index]
            else:
                raise ValueError(f"cas against ModifyIndex {expected_index}, which no read returned: {o}")
            o = replace(o, op="cas", input=(expected, new), note=(o.note + f" cas-index={expected_index}").strip())
        if o.op in ("write", "cas") and o.index is None:
            v = _new_value(o)
            if writers_of[v] == 1 and len(index_of.get(v, ())) == 1:
                [i] = index_of[v]
                o = replace(o, index=i)
        out.append(o)
    return out, ""


def _new_value(o: Operation) -> Hashable:
    new: Hashable = o.input[1] if o.op in ("cas", "cas-index") else o.input
    return new


# ---------------------------------------------------------------------------------- the search


class _Entry:
    __slots__ = ("id", "is_call", "op", "optional", "bit", "match", "prev", "next")

    def __init__(self, id_: int, is_call: bool, op: Operation | None) -> None:
        self.id = id_
        self.is_call = is_call
        self.op = op
        self.optional = op is not None and op.unknown
        self.bit = 0
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


class _OutOfBudget(Exception):
    pass


@dataclass
class _Budget:
    deadline: float
    steps_left: int

    def spend(self, n: int) -> None:
        self.steps_left -= n
        if self.steps_left < 0 or time.monotonic() > self.deadline:
            raise _OutOfBudget()


@dataclass
class _Single:
    ok: bool
    longest: list[int]
    longest_state: State
    blocked: int | None


def _build(ops: Sequence[Operation]) -> _Entry:
    """The doubly linked list of call/return events in time order; known and unknown ops get
    separate bit numbers (two bitmasks)."""
    events: list[tuple[float, int, int, _Entry]] = []
    n_known = n_unknown = 0
    for i, o in enumerate(ops):
        call, ret = _Entry(i, True, o), _Entry(i, False, None)
        call.match = ret
        if o.unknown:
            call.bit, n_unknown = 1 << n_unknown, n_unknown + 1
        else:
            call.bit, n_known = 1 << n_known, n_known + 1
        events.append((o.call, 0, i, call))  # at equal times calls come first: treated as concurrent
        events.append((o.end, 1, i, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(-1, False, None)
    prev = head
    for *_, e in events:
        prev.next, e.prev = e, prev
        prev = e
    return head


def _check_single(ops: Sequence[Operation], budget: _Budget) -> _Single:
    """Wing & Gong / Lowe depth-first search with Porcupine's cache of (linearized set, state).

    The pending calls before the first pending return are the candidates; linearizing one lifts it
    (and its return) out of the list; when none fits, backtrack. A configuration is (known ops
    linearized, unknown ops linearized, model state). Unknown ops are optional (they may never take
    effect), so a configuration with *fewer* unknown ops linearized, the same known set and state
    can do everything this one can: the cache prunes configurations dominated by one already entered
    (equal included), and each scan tries the known candidates first, then the unknown ones.
    Success: every known op is linearized (the unknowns left over never took effect). Without the
    dominance rule every never-returned op spanning the history doubles the work.
    """
    head = _build(ops)
    known_left = sum(not o.unknown for o in ops)
    state: State = INITIAL
    kbits = ubits = 0
    cache: dict[tuple[int, State], list[int]] = {}
    model = step
    stack: list[tuple[_Entry, bool, State, int, int, Any]] = []
    trail: Any = None  # the linearized ids as a cons list (id, rest): O(1) to remember the longest
    longest: Any = None
    depth = best = 0
    longest_state = state
    blocked: int | None = None
    entry = head.next
    optional_pass = False  # first pass over the candidates: known ops; second pass: unknown ones
    n = 0
    while known_left:
        n += 1
        if not n & 4095:
            budget.spend(4096)
        assert entry is not None  # the last entries are returns of unknown ops: never reached
        if not entry.is_call:
            if not optional_pass:
                optional_pass, entry = True, head.next
                continue
            # Every candidate tried: the op returning here cannot be placed. Backtrack.
            if depth == best and blocked is None:
                blocked = entry.id
            if not stack:
                budget.spend(n & 4095)
                return _Single(False, _unwind(longest), longest_state, blocked)
            top, optional_pass, state, kbits, ubits, trail = stack.pop()
            if not top.optional:
                known_left += 1
                depth -= 1
            m = top.match  # unlift
            mp, mn = m.prev, m.next  # type: ignore[union-attr]
            mp.next = m  # type: ignore[union-attr]
            if mn is not None:
                mn.prev = m
            prev, nxt = top.prev, top.next
            prev.next = top  # type: ignore[union-attr]
            if nxt is not None:
                nxt.prev = top
            entry = nxt
            continue
        e, entry = entry, entry.next
        if e.optional is not optional_pass:
            continue
        ok, new_state = model(state, e.op)  # type: ignore[arg-type]
        if not ok:
            continue
        if optional_pass:
            nk, nu = kbits, ubits | e.bit
        else:
            nk, nu = kbits | e.bit, ubits
        key = (nk, new_state)
        masks = cache.get(key)
        if masks is None:
            cache[key] = [nu]
        else:
            dominated = False
            for mask in masks:
                if not mask & ~nu:  # entered before with a subset of these unknowns done
                    dominated = True
                    break
            if dominated:
                continue
            masks.append(nu)
        stack.append((e, optional_pass, state, kbits, ubits, trail))
        state, kbits, ubits, trail = new_state, nk, nu, (e.id, trail)
        if not optional_pass:
            known_left -= 1
            depth += 1
            if depth > best:
                best, longest, longest_state, blocked = depth, trail, state, None
        prev, nxt, m = e.prev, e.next, e.match  # lift the call and its return out of the list
        prev.next = nxt  # type: ignore[union-attr]
        if nxt is not None:
            nxt.prev = prev
        mp, mn = m.prev, m.next  # type: ignore[union-attr]
        mp.next = mn  # type: ignore[union-attr]
        if mn is not None:
            mn.prev = mp
        entry, optional_pass = head.next, False
    budget.spend(n & 4095)
    return _Single(True, _unwind(trail), state, None)


def _unwind(cons: Any) -> list[int]:
    out: list[int] = []
    while cons is not None:
        out.append(cons[0])
        cons = cons[1]
    return out[::-1]


# ---------------------------------------------------------------------------------- explanation


def _truncate(ops: Sequence[Operation], cut: float) -> list[Operation]:
    """Ops called at or before ``cut``; those not returned by then become unknown (a weaker history).

    In any linearization of the full history, ops called after ``cut`` come after every op that
    returned by ``cut``, so dropping them only changes what unknown ops see: the prefix stays valid.
    """
    out = [o if o.unknown or o.end <= cut else o.weakened() for o in ops if o.call <= cut]
    return [o for o in out if not (o.op == "read" and o.unknown)]


def _fails(ops: Sequence[Operation], budget: _Budget) -> bool:
    return not _check_single(ops, budget).ok


def _drop_reads(ops: list[Operation], budget: _Budget, culprit: Operation | None) -> list[Operation]:
    """Remove the reads the violation does not need (a read never changes the state).

    First all of them but the culprit, which usually suffices; else delta debugging (Zeller): drop
    groups of reads, halving the group size down to single reads.
    """
    kept = list(ops)
    others = [o for o in kept if o.op != "read" or o is culprit]
    if culprit is not None and _fails(others, budget):
        return others
    chunk = sum(o.op == "read" for o in kept)
    while chunk >= 1:
        reads = [o for o in kept if o.op == "read"]
        for start in range(0, len(reads), chunk):
            group = {id(o) for o in reads[start:start + chunk]}
            trial = [o for o in kept if id(o) not in group]
            if _fails(trial, budget):
                kept = trial
        chunk //= 2
    return kept


def _minimise(ops: list[Operation], culprit: Operation | None, budget: _Budget) -> list[Operation]:
    """A small failing sub-history; anytime: when the budget runs out, the smallest found so far.

    Cut after the culprit's return, drop the reads not needed (the expensive part of a failing
    search), then bisect for the shortest failing prefix (failing is monotone in the cut).
    """
    best = sorted(ops, key=lambda o: o.call)
    try:
        if culprit is not None and not culprit.unknown:
            trial = _truncate(best, culprit.end)
            if _fails(trial, budget):
                best = trial
        blocked = _check_single(best, budget).blocked
        best = _drop_reads(best, budget, best[blocked] if blocked is not None else None)
        cuts = sorted({o.call for o in best} | {o.end for o in best if not o.unknown})
        lo, hi = 0, len(cuts) - 1  # cutting at the last event keeps all of ``best``
        while lo < hi:
            mid = (lo + hi) // 2
            trial = _truncate(best, cuts[mid])
            if _fails(trial, budget):
                hi, best = mid, trial
            else:
                lo = mid + 1
    except _OutOfBudget:
        pass
    return best


def _explain(key: str, ops: list[Operation], single: _Single, budget: _Budget, tail: int = 20) -> str:
    t0 = min(o.call for o in ops)
    lines = [f"key {key!r}: not linearizable ({len(ops)} operations on this key; times in s from t={t0:.3f})"]
    small = _minimise(ops, ops[single.blocked] if single.blocked is not None else None, budget)
    if len(small) < len(ops):
        try:
            mini = _check_single(small, _Budget(max(budget.deadline, time.monotonic() + 10), budget.steps_left))
            assert not mini.ok, "minimisation must keep the history failing"
            single, ops = mini, small
        except _OutOfBudget:
            small = ops
    shown = sorted(small, key=lambda o: o.call)
    lines.append(f"failing sub-history: {len(small)} ops (it fails, so the whole history does)"
                 + (f"; its last {tail}:" if len(small) > tail else ":"))
    lines += ["  " + o.describe(t0) for o in shown[-tail:]]
    seq = [ops[i] for i in single.longest]
    lines.append(f"longest linearization found: {len(seq)} ops, ending with value {single.longest_state[0]!r}:")
    lines += ["  " + o.describe(t0) for o in seq[-6:]]
    if single.blocked is not None:
        culprit = ops[single.blocked]
        lines.append("then no order of the pending operations explains: " + culprit.describe(t0))
        if culprit.op == "read" and culprit.output is not None:
            writers = [o for o in ops if o.op in ("write", "cas") and _new_value(o) == culprit.output]
            lines += ["  (its value was written by: " + o.describe(t0).strip() + ")" for o in writers]
    for o in shown:
        if o.op == "cas" and o.output is False and o.index is not None:
            lines.append(f"note: {o.describe(t0).strip()} answered False, yet a read saw its value")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- entry point


def check(history: Iterable[Operation], *, timeout_s: float = 60.0, max_steps: int = 20_000_000) -> Result:
    """Is ``history`` linearizable? Checked per key; bounded by ``timeout_s`` and ``max_steps``.

    Unknown reads are dropped (they constrain nothing). The first violating key is explained.
    """
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for o in history:
        if o.op == "read" and o.unknown:
            continue
        if o.unknown and (o.output is not UNKNOWN or o.ret is not None):
            o = replace(o, ret=None, output=UNKNOWN)
        by_key[o.key].append(o)
    deadline = time.monotonic() + timeout_s
    prepared: dict[str, list[Operation]] = {}
    for key in sorted(by_key):
        ops, why = resolve_indexes(by_key[key])
        if why:
            return Result(False, f"key {key!r}: {why}")
        prepared[key] = ops
    # Two passes: every key with a small step budget first, so a cheap violation on one key is
    # not stuck behind an expensive search on another; then the rest with the whole budget.
    pending = list(prepared)
    for steps in (min(max_steps, 200_000), max_steps):
        gave_up: list[str] = []
        for key in pending:
            try:
                single = _check_single(prepared[key], _Budget(deadline, steps))
            except _OutOfBudget:
                gave_up.append(key)
                continue
            if not single.ok:
                explain_budget = _Budget(time.monotonic() + max(5.0, timeout_s / 2), 50 * max_steps)
                return Result(False, _explain(key, prepared[key], single, explain_budget))
        pending = gave_up
        if not pending or time.monotonic() > deadline:
            break
    if pending:
        return Result(None, f"unknown: budget exhausted on key(s) {pending}")
    return Result(True, f"linearizable ({sum(map(len, by_key.values()))} operations, {len(by_key)} keys)")
