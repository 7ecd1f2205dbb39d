"""Jepsen-style: concurrent KV clients against a real ctk cluster under faults; the history must be linearizable.

Six client threads run a random mix of write / cas / delete / read (``?consistent`` and default
mode, recorded) on a few keys, reads round-robin over the servers, each operation timed with
``time.monotonic()``; a client whose request hangs (paused server) goes on as a new process, as
in Jepsen. Meanwhile a nemesis SIGKILLs the leader and restarts it, SIGKILLs a follower and
restarts it, and SIGSTOPs the leader until the others elect a new one, then SIGCONTs it (a pause:
to the rest of the cluster it is a partition; on resume it must not serve stale reads). Requests
that error or time out are recorded as unknown (they may take effect later, or never); a refused
connection never reached the server and is dropped. tests/linearizability.py checks the history.

Scenarios: writes sent to the leader under all three faults (3 and 5 servers); everything
round-robin, so follower writes are forwarded, under a follower kill and a leader pause; and writes
forwarded by followers while the leader is SIGKILLed again and again. That last one found a real bug
(a forwarded write retried after "connection lost" was applied twice); it is the regression test for
the fix (forwards are retried only when they provably never left the follower). Each run leaves
``history.jsonl`` in its tmp dir.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cluster.cluster import Cluster, Server
from tests.linearizability import UNKNOWN, Operation, check

pytestmark = pytest.mark.slow

KEYS = ("lin/a", "lin/b", "lin/c")
CLIENTS = 6
TIMEOUT = httpx.Timeout(8.0, connect=1.0)  # > the 7 s rpc_hold_timeout, so a 500 usually comes first
PATIENCE = 0.5  # a client waits this long for an answer before it goes on as a new process


class Recorder:
    """The shared history and the nemesis log, with times relative to the start of the run."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.t0 = time.monotonic()
        self.history: list[Operation] = []
        self.faults: list[tuple[float, str]] = []
        self.refused = 0
        self.leader: Server | None = None  # the nemesis's view of the leader (for writes_via="leader")
        self.forwarding: dict[int, float] = {}  # writes in flight on a follower (forwarded): id -> call time

    def await_forwarding(self, n: int = 2, age_s: float = 0.008, timeout_s: float = 1.0) -> None:
        """Wait (briefly) until ``n`` writes sent to followers have been in flight for ``age_s``: the
        leader has most likely received and replicated them but not answered yet."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.monotonic()
            if sum(now - t >= age_s for t in list(self.forwarding.values())) >= n:
                return
            time.sleep(0.001)

    def fault(self, what: str) -> None:
        self.faults.append((time.monotonic() - self.t0, what))


@dataclass(frozen=True)
class Workload:
    """What the clients do and what the nemesis does.

    ``writes_via``: ``any`` sends writes round-robin like reads (on a follower they are forwarded to
    the leader); ``leader`` sends them to the current leader; ``followers`` only to followers.
    ``mix``: weights of default read, consistent read, write, cas, delete. ``own_keys``: each client
    works on a key of its own (uncontended cas loops: every cas should succeed) instead of sharing
    three keys.
    """

    faults: tuple[str, ...]
    writes_via: str = "any"
    mix: tuple[int, int, int, int, int] = (3, 3, 3, 1, 1)
    own_keys: bool = False
    clients: int = CLIENTS

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f"lin/own{i}" for i in range(self.clients)) if self.own_keys else KEYS


class Client(threading.Thread):
    """A logical client: a random op on a random key, on the next server in turn.

    Each request runs on a worker thread; if it has not answered within ``PATIENCE`` (a paused or
    partitioned server), the client stops waiting and goes on as a new process, as Jepsen does: the
    old request stays open and is recorded whenever it completes (late, e.g. after SIGCONT), or as
    unknown if it errors or times out. So the cluster keeps taking writes while requests pile up on
    the paused server, and those are the ones that must not see stale data when it resumes.
    """

    def __init__(self, pid: int, cluster: Cluster, workload: Workload, rec: Recorder, stop: threading.Event,
                 seed: int, pool: ThreadPoolExecutor, http: httpx.Client) -> None:
        super().__init__(daemon=True, name=f"client-{pid}")
        self.pid, self.cluster, self.workload, self.rec, self.stop_flag = pid, cluster, workload, rec, stop
        self.pool, self.http = pool, http
        self.rnd = random.Random(seed)
        self.own_key = workload.keys[pid % len(workload.keys)]
        self.seen: dict[str, int] = {}  # the last ModifyIndex this client read per key (0: missing)
        self.values = itertools.count()
        self.just_read = self.cas_failed = ""  # the key of the last read / of the last failed cas

    def run(self) -> None:
        for i in itertools.count(self.pid):
            if self.stop_flag.is_set():
                break
            plan = self.plan(self.pid, i)
            fut = self.pool.submit(self.perform, self.pid, *plan)
            try:
                fut.result(timeout=PATIENCE)
            except FutureTimeout:
                self.pid += self.workload.clients  # a new process; the old one is still waiting for its answer

    def route(self, i: int, mutation: bool) -> Server:
        """Reads: round-robin over all servers. Writes: per ``writes_via`` (see :class:`Workload`)."""
        servers, leader = self.cluster.servers, self.rec.leader
        if mutation and leader is not None and self.workload.writes_via == "leader":
            return leader
        if mutation and leader is not None and self.workload.writes_via == "followers":
            servers = [s for s in servers if s is not leader]
        return servers[i % len(servers)]

    def plan(self, pid: int, i: int) -> tuple[str, str, object, str, Callable[[], httpx.Response], bool]:
        """The next op. Clients run cas loops: half the time a cas on the key just read (with its
        ModifyIndex), and after a failed cas mostly a read of that key; otherwise a random op."""
        if self.just_read and self.rnd.random() < 0.5:
            key, kind = self.just_read, "cas"
        elif self.cas_failed and self.rnd.random() < 0.8:
            key, kind = self.cas_failed, self.rnd.choice(("read", "read-consistent"))
        else:
            key = self.own_key if self.workload.own_keys else self.rnd.choice(KEYS)
            kind = self.rnd.choices(("read", "read-consistent", "write", "cas", "delete"), self.workload.mix)[0]
        self.just_read = self.cas_failed = ""
        s = self.route(i, mutation=not kind.startswith("read"))
        forwarded = not kind.startswith("read") and s is not self.rec.leader
        url = f"{s.url}/v1/kv/{key}"
        value = f"p{pid}-{next(self.values)}"
        if kind.startswith("read"):
            mode = "consistent" if kind == "read-consistent" else "default"
            params = {"consistent": ""} if mode == "consistent" else {}
            return "read", key, None, f"{mode} read via {s.name}", lambda: self.http.get(url, params=params), False
        if kind == "write":
            return "write", key, value, f"via {s.name}", lambda: self.http.put(url, content=value.encode()), forwarded
        if kind == "cas":
            index = self.seen.get(key, 0)
            return "cas-index", key, (index, value), f"via {s.name}", lambda: self.http.put(
                url, params={"cas": str(index)}, content=value.encode()), forwarded
        return "delete", key, None, f"via {s.name}", lambda: self.http.delete(url), forwarded

    def perform(self, pid: int, name: str, key: str, arg: object, note: str,
                request: Callable[[], httpx.Response], forwarded: bool) -> None:
        def record(ret: float | None, out: object, index: int | None, note: str) -> None:
            self.rec.history.append(Operation(pid, call, ret, name, key, arg, out, index, note))

        call = time.monotonic()
        token = id(record)
        if forwarded:
            self.rec.forwarding[token] = call
        try:
            r = request()
            ret = time.monotonic()
        except httpx.ConnectError:
            self.rec.refused += 1  # never reached the server: no effect, not part of the history
            time.sleep(0.02)
            return
        except httpx.HTTPError as err:
            record(None, UNKNOWN, None, f"{note} ({type(err).__name__})")
            return
        finally:
            self.rec.forwarding.pop(token, None)
        if name == "read" and r.status_code in (200, 404):
            entry = r.json()[0] if r.status_code == 200 else None
            index = int(entry["ModifyIndex"]) if entry else None
            record(ret, base64.b64decode(entry["Value"] or "").decode() if entry else None, index, note)
            if pid == self.pid:
                self.seen[key], self.just_read = index or 0, key
        elif name != "read" and r.status_code == 200:
            record(ret, r.json(), None, note)
            if name == "cas-index" and r.json() is False and pid == self.pid:
                self.cas_failed = key
        else:  # 500 (no leader, leadership lost while committing...): the outcome is uncertain
            record(None, UNKNOWN, None, f"{note} (HTTP {r.status_code})")


# ---------------------------------------------------------------------------------- nemesis


def _others(c: Cluster, s: Server) -> list[Server]:
    return [o for o in c.servers if o is not s]


def kill_leader(c: Cluster, rec: Recorder) -> None:
    leader = c.wait_leader()
    if rec.workload.writes_via != "leader":
        rec.await_forwarding(n=rec.workload.clients // 3)  # strike while writes are being forwarded
    rec.fault(f"SIGKILL leader {leader.name}")
    leader.kill()
    new = rec.leader = c.wait_leader(among=_others(c, leader), not_addr=leader.server_addr)
    rec.fault(f"new leader {new.name}")
    time.sleep(0.5)
    leader.start(c.join_args())
    rec.fault(f"restart {leader.name}")
    rec.leader = c.wait_leader(timeout_s=30)
    time.sleep(1.0)


def kill_follower(c: Cluster, rec: Recorder) -> None:
    leader = c.wait_leader()
    follower = next(s for s in c.servers if s is not leader)
    rec.fault(f"SIGKILL follower {follower.name}")
    follower.kill()
    time.sleep(2.5)
    follower.start(c.join_args())
    rec.fault(f"restart {follower.name}")
    rec.leader = c.wait_leader(timeout_s=30)
    time.sleep(1.5)


def pause_leader(c: Cluster, rec: Recorder) -> None:
    """SIGSTOP the leader until the others elect a new one; then SIGCONT: it must step down, not serve."""
    leader = c.wait_leader()
    assert leader.proc is not None
    rec.fault(f"SIGSTOP leader {leader.name}")
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        new = rec.leader = c.wait_leader(among=_others(c, leader), not_addr=leader.server_addr)
        rec.fault(f"new leader {new.name}")
        time.sleep(1.5)  # the new leader takes writes; requests keep piling up on the paused server
    finally:
        leader.proc.send_signal(signal.SIGCONT)
        rec.fault(f"SIGCONT {leader.name}")
    rec.leader = c.wait_leader(timeout_s=30)
    time.sleep(2.0)


NEMESES: dict[str, Callable[[Cluster, Recorder], None]] = {
    "kill-leader": kill_leader, "kill-follower": kill_follower, "pause-leader": pause_leader}


def run(c: Cluster, workload: Workload, seed: int) -> Recorder:
    rec = Recorder(workload)
    rec.leader = c.wait_leader()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=96, thread_name_prefix="request")
    http = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
    clients = [Client(i, c, workload, rec, stop, seed * 100 + i, pool, http) for i in range(workload.clients)]
    for t in clients:
        t.start()
    try:
        time.sleep(3.0)
        for f in workload.faults:
            NEMESES[f](c, rec)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in clients:
            t.join(15)
        pool.shutdown(wait=True)  # requests still open finish or time out (TIMEOUT)
        http.close()
    # A final consistent read of every key on every server ends the history.
    c.wait_leader(timeout_s=30)
    for s in c.servers:
        for key in workload.keys:
            call = time.monotonic()
            r = httpx.get(f"{s.url}/v1/kv/{key}", params={"consistent": ""}, timeout=TIMEOUT)
            ret = time.monotonic()
            if r.status_code not in (200, 404):
                continue  # e.g. a server still catching up: an unknown read tells nothing
            out, index = (None, None) if r.status_code == 404 else (
                base64.b64decode(r.json()[0]["Value"] or "").decode(), int(r.json()[0]["ModifyIndex"]))
            rec.history.append(Operation("final", call, ret, "read", key, None, out, index,
                                         f"final consistent read via {s.name}"))
    return rec


def dump(rec: Recorder, path: Path) -> None:
    """The history and the nemesis log, one line each, for a post-mortem."""
    with path.open("w") as f:
        for t, what in rec.faults:
            f.write(json.dumps({"fault": what, "t": round(t, 4)}) + "\n")
        for o in sorted(rec.history, key=lambda o: o.call):
            f.write(json.dumps({"p": o.process, "call": round(o.call - rec.t0, 4),
                                "ret": None if o.unknown else round(o.end - rec.t0, 4), "op": o.op, "key": o.key,
                                "in": o.input, "out": None if o.unknown else o.output, "unknown": o.unknown,
                                "index": o.index, "note": o.note}) + "\n")


def summary(rec: Recorder, elapsed: float) -> str:
    h = rec.history
    done = [o for o in h if not o.unknown]
    kinds = Counter(o.op + (":" + o.note.split()[0] if o.op == "read" else "") for o in done)
    faults = "; ".join(f"{t:.1f}s {what}" for t, what in rec.faults)
    return (f"{len(h)} ops ({len(done)} completed, {len(h) - len(done)} unknown, {rec.refused} refused) "
            f"in {elapsed:.1f}s; {dict(sorted(kinds.items()))}; faults: {faults}")


ALL_FAULTS = ("kill-leader", "kill-follower", "pause-leader")
@pytest.mark.parametrize(("n", "workload"), [
    # Writes go to the current leader: leader crash + restart, follower crash, leader pause.
    pytest.param(3, Workload(ALL_FAULTS, writes_via="leader"), id="3-servers-writes-to-leader"),
    pytest.param(5, Workload(ALL_FAULTS, writes_via="leader"), id="5-servers-writes-to-leader"),
    # Everything round-robin (follower writes are forwarded), no leader crash.
    pytest.param(3, Workload(("kill-follower", "pause-leader")), id="3-servers-round-robin"),
    # Writes forwarded by followers while the leader crashes: 12 clients in cas loops on keys of their
    # own (so a duplicated cas is always seen); the nemesis strikes while forwards are in flight. Before
    # the fix about 4 leader kills in 5 exposed a double apply; 6 kills miss it with odds ~1e-4.
    pytest.param(3, Workload(("kill-leader",) * 6, writes_via="followers", mix=(3, 3, 0, 3, 0), own_keys=True,
                             clients=12),
                 id="3-servers-writes-via-followers-leader-kills"),
])
def test_history_under_faults_is_linearizable(tmp_path: Path, n: int, workload: Workload) -> None:
    started = time.monotonic()
    try:
        with Cluster(tmp_path, n).start() as c:
            rec = run(c, workload, seed=n + len(workload.faults))
    except AssertionError as err:  # the cluster helpers assert (no leader...): not a verdict on the history
        pytest.fail(f"cluster trouble: {err}")
    elapsed = time.monotonic() - started
    dump(rec, tmp_path / "history.jsonl")
    t = time.monotonic()
    ok, why = check(rec.history, timeout_s=60)
    info = summary(rec, elapsed) + f"; checked in {time.monotonic() - t:.1f}s"
    print(info)
    if sum(not o.unknown for o in rec.history) < 300:
        pytest.fail(f"too little work done: {info}")
    if ok is None:
        pytest.fail(f"the checker ran out of budget: {why}\n{info}")
    assert ok is True, f"{info}\n{why}"
