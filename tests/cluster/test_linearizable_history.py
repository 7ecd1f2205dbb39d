"""Jepsen-style: concurrent KV clients against a real ctk cluster under faults; the history must be linearizable.

Six client threads run a random mix of write / cas / delete / read (``?consistent`` and default
mode, recorded) on a few keys, round-robin over the servers, each operation timed with
``time.monotonic()``. Meanwhile a nemesis SIGKILLs the leader and restarts it, SIGKILLs a follower
and restarts it, and SIGSTOPs the leader until the others elect a new one, then SIGCONTs it (a
pause: to the rest of the cluster it is a partition; on resume it must not serve stale reads).
Requests that error or time out are recorded as unknown (they may take effect later, or never); a
refused connection never reached the server and is dropped. tests/linearizability.py then checks
the whole history per key.
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

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.history: list[Operation] = []
        self.faults: list[tuple[float, str]] = []
        self.refused = 0

    def fault(self, what: str) -> None:
        self.faults.append((time.monotonic() - self.t0, what))


class Client(threading.Thread):
    """A logical client: a random op on a random key, on the next server in turn.

    Each request runs on a worker thread; if it has not answered within ``PATIENCE`` (a paused or
    partitioned server), the client stops waiting and goes on as a new process, as Jepsen does: the
    old request stays open and is recorded whenever it completes (late, e.g. after SIGCONT), or as
    unknown if it errors or times out. So the cluster keeps taking writes while requests pile up on
    the paused server, and those are the ones that must not see stale data when it resumes.
    """

    def __init__(self, pid: int, cluster: Cluster, rec: Recorder, stop: threading.Event, seed: int,
                 pool: ThreadPoolExecutor, http: httpx.Client) -> None:
        super().__init__(daemon=True, name=f"client-{pid}")
        self.pid, self.cluster, self.rec, self.stop_flag = pid, cluster, rec, stop
        self.pool, self.http = pool, http
        self.rnd = random.Random(seed)
        self.seen: dict[str, int] = {}  # the last ModifyIndex this client read per key (0: missing)
        self.values = itertools.count()
        self.just_read = ""

    def run(self) -> None:
        servers = self.cluster.servers
        for i in itertools.count(self.pid):
            if self.stop_flag.is_set():
                break
            plan = self.plan(self.pid, servers[i % len(servers)])
            fut = self.pool.submit(self.perform, self.pid, *plan)
            try:
                fut.result(timeout=PATIENCE)
            except FutureTimeout:
                self.pid += CLIENTS  # a new process; the old one is still waiting for its answer

    def plan(self, pid: int, s: Server) -> tuple[str, str, object, str, Callable[[], httpx.Response]]:
        """The next op: half the time a cas on the key just read (with its ModifyIndex), else random."""
        if self.just_read and self.rnd.random() < 0.5:
            key, kind = self.just_read, "cas"
        else:
            key = self.rnd.choice(KEYS)
            kind = self.rnd.choices(("read", "read-consistent", "write", "cas", "delete"), (3, 3, 3, 1, 1))[0]
        self.just_read = ""
        url = f"{s.url}/v1/kv/{key}"
        value = f"p{pid}-{next(self.values)}"
        if kind.startswith("read"):
            mode = "consistent" if kind == "read-consistent" else "default"
            params = {"consistent": ""} if mode == "consistent" else {}
            return "read", key, None, f"{mode} read via {s.name}", lambda: self.http.get(url, params=params)
        if kind == "write":
            return "write", key, value, f"via {s.name}", lambda: self.http.put(url, content=value.encode())
        if kind == "cas":
            index = self.seen.get(key, 0)
            return "cas-index", key, (index, value), f"via {s.name}", lambda: self.http.put(
                url, params={"cas": str(index)}, content=value.encode())
        return "delete", key, None, f"via {s.name}", lambda: self.http.delete(url)

    def perform(self, pid: int, name: str, key: str, arg: object, note: str,
                request: Callable[[], httpx.Response]) -> None:
        def record(ret: float | None, out: object, index: int | None, note: str) -> None:
            self.rec.history.append(Operation(pid, call, ret, name, key, arg, out, index, note))

        call = time.monotonic()
        try:
            r = request()
        except httpx.ConnectError:
            self.rec.refused += 1  # never reached the server: no effect, not part of the history
            time.sleep(0.02)
            return
        except httpx.HTTPError as err:
            record(None, UNKNOWN, None, f"{note} ({type(err).__name__})")
            return
        ret = time.monotonic()
        if name == "read" and r.status_code in (200, 404):
            entry = r.json()[0] if r.status_code == 200 else None
            index = int(entry["ModifyIndex"]) if entry else None
            record(ret, base64.b64decode(entry["Value"] or "").decode() if entry else None, index, note)
            if pid == self.pid:
                self.seen[key], self.just_read = index or 0, key
        elif name != "read" and r.status_code == 200:
            record(ret, r.json(), None, note)
        else:  # 500 (no leader, leadership lost while committing...): the outcome is uncertain
            record(None, UNKNOWN, None, f"{note} (HTTP {r.status_code})")


# ---------------------------------------------------------------------------------- nemesis


def _others(c: Cluster, s: Server) -> list[Server]:
    return [o for o in c.servers if o is not s]


def kill_leader(c: Cluster, rec: Recorder) -> None:
    leader = c.wait_leader()
    rec.fault(f"SIGKILL leader {leader.name}")
    leader.kill()
    new = c.wait_leader(among=_others(c, leader), not_addr=leader.server_addr)
    rec.fault(f"new leader {new.name}")
    time.sleep(0.5)
    leader.start(c.join_args())
    rec.fault(f"restart {leader.name}")
    c.wait_leader(timeout_s=30)
    time.sleep(1.0)


def kill_follower(c: Cluster, rec: Recorder) -> None:
    leader = c.wait_leader()
    follower = next(s for s in c.servers if s is not leader)
    rec.fault(f"SIGKILL follower {follower.name}")
    follower.kill()
    time.sleep(2.5)
    follower.start(c.join_args())
    rec.fault(f"restart {follower.name}")
    c.wait_leader(timeout_s=30)
    time.sleep(1.5)


def pause_leader(c: Cluster, rec: Recorder) -> None:
    """SIGSTOP the leader until the others elect a new one; then SIGCONT: it must step down, not serve."""
    leader = c.wait_leader()
    assert leader.proc is not None
    rec.fault(f"SIGSTOP leader {leader.name}")
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        new = c.wait_leader(among=_others(c, leader), not_addr=leader.server_addr)
        rec.fault(f"new leader {new.name}")
        time.sleep(1.5)  # the new leader takes writes; requests keep piling up on the paused server
    finally:
        leader.proc.send_signal(signal.SIGCONT)
        rec.fault(f"SIGCONT {leader.name}")
    c.wait_leader(timeout_s=30)
    time.sleep(2.0)


NEMESES: dict[str, Callable[[Cluster, Recorder], None]] = {
    "kill-leader": kill_leader, "kill-follower": kill_follower, "pause-leader": pause_leader}


def run(c: Cluster, faults: list[str], seed: int) -> Recorder:
    rec = Recorder()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=96, thread_name_prefix="request")
    http = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
    clients = [Client(i, c, rec, stop, seed * 100 + i, pool, http) for i in range(CLIENTS)]
    for t in clients:
        t.start()
    try:
        time.sleep(3.0)
        for f in faults:
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
        for key in KEYS:
            call = time.monotonic()
            r = httpx.get(f"{s.url}/v1/kv/{key}", params={"consistent": ""}, timeout=TIMEOUT)
            ret = time.monotonic()
            assert r.status_code in (200, 404), r.text
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


@pytest.mark.parametrize("n", [3, 5])
def test_history_under_kills_and_pauses_is_linearizable(tmp_path: Path, n: int) -> None:
    started = time.monotonic()
    with Cluster(tmp_path, n).start() as c:
        rec = run(c, ["kill-leader", "kill-follower", "pause-leader"], seed=n)
    elapsed = time.monotonic() - started
    dump(rec, tmp_path / "history.jsonl")
    t = time.monotonic()
    ok, why = check(rec.history, timeout_s=60)
    info = summary(rec, elapsed) + f"; checked in {time.monotonic() - t:.1f}s"
    print(info)
    assert ok is True, f"{info}\n{why}"
    assert sum(not o.unknown for o in rec.history) >= 300, info
