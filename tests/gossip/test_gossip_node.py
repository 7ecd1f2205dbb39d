"""GossipNode on real loopback UDP/TCP: joins, failure detection, leave, tags, user events,
encryption and key rotation, garbage input, snapshots, and a multi-process SIGKILL test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.gossip.config import GossipConfig
from agent.gossip.core import MemberEvent, MemberEventKind, MemberStatus, UserEventReceived
from agent.gossip.errors import LocalProtocolError
from agent.gossip.keyring import Keyring, generate_key
from agent.gossip.node import (
    GossipNode,
    RetryJoinError,
    format_address,
    parse_address,
    read_rejoin_addresses,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = GossipConfig.fast(leave_propagate_delay_s=0.3, broadcast_timeout_s=2.0, tcp_timeout_s=1.0)


@dataclass
class Peer:
    node: GossipNode
    member_events: list[MemberEvent] = field(default_factory=list)
    user_events: list[UserEventReceived] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return format_address(*self.node.address)

    def status(self, name: str) -> MemberStatus | None:
        m = self.node.member(name)
        return None if m is None else m.status

    def alive_names(self) -> set[str]:
        return {m.name for m in self.node.members() if m.status is MemberStatus.ALIVE}

    def events_about(self, name: str) -> list[MemberEventKind]:
        return [e.kind for e in self.member_events if e.member.name == name]


class Cluster:
    def __init__(self) -> None:
        self.peers: list[Peer] = []

    async def add(self, name: str, config: GossipConfig = FAST, *, bind: tuple[str, int] = ("127.0.0.1", 0),
                  **kwargs: Any) -> Peer:
        holder: list[Peer] = []
        node = GossipNode(
            config, name, bind,
            on_member_event=lambda e: holder[0].member_events.append(e),
            on_user_event=lambda e: holder[0].user_events.append(e),
            rng=random.Random(len(self.peers) + 1), **kwargs,
        )
        peer = Peer(node)
        holder.append(peer)
        await node.start()
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for p in self.peers:
            await p.node.close()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.close()


async def wait_for(pred: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> float:
    """Poll ``pred`` every 20 ms; the seconds it took, or AssertionError after ``timeout_s``."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def converged(peers: list[Peer]) -> Callable[[], bool]:
    names = {p.node.name for p in peers}
    return lambda: all(p.alive_names() == names for p in peers)


async def build(cluster: Cluster, n: int, config: GossipConfig = FAST, **kwargs: Any) -> list[Peer]:
    """n nodes that all join through the first one; waits for convergence."""
    peers = [await cluster.add(f"n{i}", config, **kwargs) for i in range(n)]
    joined = await asyncio.gather(*(p.node.join([peers[0].addr]) for p in peers[1:]))
    assert joined == [1] * (n - 1)
    await wait_for(converged(peers), 10.0, f"{n} nodes to converge")
    return peers


# --- pure helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1", ("10.0.0.1", 8301)),
    ("10.0.0.1:8311", ("10.0.0.1", 8311)),
    ("node.example", ("node.example", 8301)),
    ("[::1]:8302", ("::1", 8302)),
    ("[::1]", ("::1", 8301)),
    ("::1", ("::1", 8301)),
    ("fe80::1", ("fe80::1", 8301)),
    (" 127.0.0.1 ", ("127.0.0.1", 8301)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "  ", "host:0", "host:70000", "host:abc", "[::1", "[]:1", "[::1]x", ":8301"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_parse_address_bind_port_zero() -> None:
    assert parse_address("127.0.0.1:0", allow_any_port=True) == ("127.0.0.1", 0)
    assert format_address("::1", 1) == "[::1]:1" and format_address("1.2.3.4", 5) == "1.2.3.4:5"


# --- single node / pairs ------------------------------------------------------------------------------


async def test_binds_udp_and_tcp_on_one_port(cluster: Cluster) -> None:
    p = await cluster.add("solo")
    host, port = p.node.address
    assert host == "127.0.0.1" and port > 0 and p.node.bind == (host, port)
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # both taken by the node
        s = socket.socket(socket.AF_INET, kind)
        with pytest.raises(OSError), s:
            s.bind((host, port))
    assert [m.name for m in p.node.members()] == ["solo"]
    assert p.events_about("solo") == [MemberEventKind.JOIN]
    with pytest.raises(LocalProtocolError):
        await p.node.start()


async def test_port_in_use_is_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        node = GossipNode(FAST, "x", ("127.0.0.1", s.getsockname()[1]))
        with pytest.raises(OSError):
            await node.start()
    await node.close()


async def test_wildcard_bind_needs_advertise(cluster: Cluster) -> None:
    node = GossipNode(FAST, "x", ("0.0.0.0", 0))
    with pytest.raises(ValueError, match="advertise"):
        await node.start()
    await node.close()
    p = await cluster.add("y", bind=("0.0.0.0", 0), advertise=("127.0.0.1", 0))
    assert p.node.address == ("127.0.0.1", p.node.bind[1])


async def test_commands_need_a_running_node() -> None:
    node = GossipNode(FAST, "x", ("127.0.0.1", 0))
    with pytest.raises(LocalProtocolError):
        await node.join(["127.0.0.1:1"])
    await node.start()
    await node.close()
    with pytest.raises(LocalProtocolError):
        node.user_event("e")
    await node.close()  # idempotent


async def test_join_failures_and_retry_join_exhaustion(cluster: Cluster) -> None:
    p = await cluster.add("a", GossipConfig.fast(tcp_timeout_s=0.5))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    assert await p.node.join([dead]) == 0
    assert await p.node.join(["bad:port:x:"]) == 0  # unparsable: skipped, logged
    assert p.node.stats.stream_failures == 1
    start = time.monotonic()
    with pytest.raises(RetryJoinError, match="max join retry exhausted after 3 attempt"):
        await p.node.retry_join([dead], interval_s=0.05, max_attempts=3)
    assert time.monotonic() - start < 3.0
    q = await cluster.add("b")
    assert await p.node.retry_join([dead, q.addr], interval_s=0.05, max_attempts=1) == 1


async def test_join_by_hostname_resolves(cluster: Cluster) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b")
    assert await b.node.join([f"localhost:{a.node.address[1]}"]) >= 1
    await wait_for(converged([a, b]), 5.0, "a and b to converge")


async def test_garbage_udp_and_tcp_is_counted_never_fatal(cluster: Cluster) -> None:
    a = await cluster.add("a")
    host, port = a.node.address
    rnd = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (1, 3, 10, 100, 1400):
            s.sendto(bytes(rnd.randrange(256) for _ in range(size)), (host, port))
        s.sendto(b"\x01\x00\x01\x00\x03\x93\x01\x02", (host, port))  # right header, bad part
    await wait_for(lambda: a.node.stats.decode_errors == 6, 5.0, "6 bad packets counted")
    assert a.node.stats.packets_in == 6

    async def raw_tcp(data: bytes, read: bool = True) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        await writer.drain()
        got = await asyncio.wait_for(reader.read(), 3.0) if read else b""
        writer.close()
        return got

    assert await raw_tcp(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""  # length prefix out of range
    assert await raw_tcp(struct.pack(">I", 0)) == b""
    assert await raw_tcp(struct.pack(">I", 12) + b"not a frame!") == b""  # decodes to garbage
    await raw_tcp(struct.pack(">I", 100) + b"short", read=False)  # truncated, peer hangs up
    await wait_for(lambda: a.node.stats.decode_errors == 9, 5.0, "3 bad frames counted")
    await wait_for(lambda: a.node.stats.inbound_stream_errors == 1, 5.0, "truncated frame counted")
    # a stalled client is cut off after tcp_timeout_s
    _, writer = await asyncio.open_connection(host, port)
    await wait_for(lambda: a.node.stats.inbound_stream_errors == 2, 5.0, "stalled stream timed out")
    writer.close()
    # still a working member
    b = await cluster.add("b")
    assert await b.node.join([a.addr]) == 1
    await wait_for(converged([a, b]), 5.0, "a and b to converge")
    assert a.node.stats.streams_in == 1 and a.node.core_stats.bad_packets == 6


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_join(cluster: Cluster) -> None:
    a = await cluster.add("a", bind=("::1", 0))
    b = await cluster.add("b", bind=("::1", 0))
    assert a.addr.startswith("[::1]:")
    assert await b.node.join([a.addr]) == 1
    await wait_for(converged([a, b]), 5.0, "a and b to converge over IPv6")


async def test_failing_callback_is_counted_not_fatal(cluster: Cluster) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("callback bug")

    a = GossipNode(FAST, "a", ("127.0.0.1", 0), on_member_event=boom, on_user_event=boom)
    await a.start()
    try:
        b = await cluster.add("b")
        assert await b.node.join([format_address(*a.address)]) == 1
        a.user_event("ping")
        await wait_for(lambda: b.user_events != [] and b.alive_names() == {"a", "b"}, 5.0, "gossip despite callbacks")
        assert a.stats.callback_errors >= 3  # own join, b's join, the user event
    finally:
        await a.close()


async def test_leave_alone_completes_at_once(cluster: Cluster) -> None:
    p = await cluster.add("solo")
    start = time.monotonic()
    assert await p.node.leave() is True
    assert time.monotonic() - start < 0.5
    assert p.node.local_member().status is MemberStatus.LEFT


async def test_timer_catches_up_after_a_stall(cluster: Cluster) -> None:
    peers = await build(cluster, 3)
    probes = [p.node.core_stats.probes for p in peers]
    time.sleep(0.8)  # the whole event loop stalls, as under a long GC pause or SIGSTOP
    await asyncio.sleep(1.0)
    assert all(p.node.core_stats.probes > n + 3 for p, n in zip(peers, probes, strict=True))
    await wait_for(converged(peers), 5.0, "the cluster to settle after the stall")
    for p in peers:
        assert MemberEventKind.FAILED not in [e.kind for e in p.member_events]


async def test_datagrams_queued_during_a_stall_are_read_before_the_catch_up_tick(cluster: Cluster) -> None:
    p = await cluster.add("a")
    core = p.node.core
    packets_at_tick: list[int] = []
    real_tick = core.tick

    def tick(now_s: float) -> None:
        packets_at_tick.append(p.node.stats.packets_in)
        real_tick(now_s)

    core.tick = tick  # type: ignore[method-assign]
    await asyncio.sleep(0.3)
    before = len(packets_at_tick)
    assert before > 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        time.sleep(0.3)  # stall past the next deadline while datagrams queue up
        for _ in range(5):
            s.sendto(b"\x01garbage", p.node.address)
        time.sleep(0.05)
    await asyncio.sleep(0.3)
    assert packets_at_tick[before] == 5  # all five seen before the first tick after the stall
    assert p.node.stats.decode_errors == 5


async def test_snapshot_rejoin_rules(cluster: Cluster, tmp_path: Path) -> None:
    snap = tmp_path / "serf" / "local.snapshot"
    b = await cluster.add("b")
    a = GossipNode(FAST, "a", ("127.0.0.1", 0), snapshot_path=snap)
    await a.start()
    assert a.rejoin_addresses() == []
    assert await a.join([b.addr]) == 1
    await wait_for(lambda: b.addr in read_rejoin_addresses(snap, local_name="a"), 5.0, "b in the snapshot")
    assert stat.S_IMODE(snap.stat().st_mode) == 0o600
    await a.close()  # a crash: no leave recorded, so a restart rejoins b
    assert read_rejoin_addresses(snap) == [b.addr]

    a2 = GossipNode(FAST, "a", ("127.0.0.1", 0), snapshot_path=snap)
    await a2.start()
    assert a2.rejoin_addresses() == [b.addr]
    assert await a2.join(a2.rejoin_addresses()) == 1
    assert await a2.leave() is True
    await a2.close()
    assert read_rejoin_addresses(snap) == []  # left: no automatic rejoin ...
    assert read_rejoin_addresses(snap, rejoin_after_leave=True) == [b.addr]  # ... unless -rejoin

    a3 = GossipNode(FAST, "a", ("127.0.0.1", 0), snapshot_path=snap)
    await a3.start()
    assert a3.rejoin_addresses() == []
    await a3.close()
    a4 = GossipNode(FAST, "a", ("127.0.0.1", 0), snapshot_path=snap, rejoin_after_leave=True)
    await a4.start()
    assert a4.rejoin_addresses() == []  # a3's start compacted the leave away, as serf does
    await a4.close()


async def test_snapshot_forgets_failed_members(tmp_path: Path, cluster: Cluster) -> None:
    snap = tmp_path / "local.snapshot"
    a = await cluster.add("a", snapshot_path=snap)
    b = await cluster.add("b")
    c = await cluster.add("c")
    assert await a.node.join([b.addr, c.addr]) == 2
    await wait_for(converged([a, b, c]), 5.0, "convergence")
    await c.node.close()
    await wait_for(lambda: a.status("c") is MemberStatus.FAILED, 10.0, "c failed")
    assert read_rejoin_addresses(snap) == [b.addr]
    snap.write_text(snap.read_text() + "not json\n[1]\n{\"alive\": 3}\n")  # junk lines are skipped
    assert read_rejoin_addresses(snap) == [b.addr]


# --- clusters (slow) ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_five_nodes_converge_detect_kill_and_leave(cluster: Cluster) -> None:
    peers = await build(cluster, 5)
    for p in peers:
        assert p.node.stats.decode_errors == 0 and p.node.stats.decrypt_failures == 0
    # "kill": sockets closed abruptly, no leave
    victim = peers[4]
    await victim.node.close()
    rest = peers[:4]
    took = await wait_for(lambda: all(p.status("n4") is MemberStatus.FAILED for p in rest), 15.0, "n4 failed")
    assert took < 10.0
    for p in rest:
        assert p.events_about("n4")[-1] is MemberEventKind.FAILED
    # graceful leave: left, never failed
    assert await peers[3].node.leave() is True
    await peers[3].node.close()
    await wait_for(lambda: all(p.status("n3") is MemberStatus.LEFT for p in peers[:3]), 10.0, "n3 left")
    await asyncio.sleep(1.0)  # longer than a suspicion timeout: still left
    for p in peers[:3]:
        assert p.status("n3") is MemberStatus.LEFT
        assert p.events_about("n3") == [MemberEventKind.JOIN, MemberEventKind.LEAVE]
        assert p.alive_names() == {"n0", "n1", "n2"}


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_distinct_loopback_addresses_with_one_port(cluster: Cluster) -> None:
    """Consul's layout: every agent on port P of its own IP; ``host`` alone means our own port."""
    rnd = random.Random(os.getpid())
    for _ in range(20):
        port = rnd.randrange(20000, 60000)
        base = rnd.randrange(1, 250)
        try:
            peers = [await cluster.add(f"ip{i}", bind=(f"127.0.{base}.{i + 1}", port)) for i in range(4)]
            break
        except OSError:
            await cluster.close()
            cluster.peers.clear()
    else:
        pytest.skip("no free port on the 127.0.x.y addresses")
    assert [p.node.address for p in peers] == [(f"127.0.{base}.{i + 1}", port) for i in range(4)]
    assert await asyncio.gather(*(p.node.join([f"127.0.{base}.1"]) for p in peers[1:])) == [1, 1, 1]
    await wait_for(converged(peers), 10.0, "convergence")
    await peers[2].node.close()
    await wait_for(lambda: all(p.status("ip2") is MemberStatus.FAILED for p in (peers[0], peers[1], peers[3])),
                   15.0, "ip2 failed")


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_tags_and_user_events_propagate(cluster: Cluster) -> None:
    peers = await build(cluster, 5)
    peers[2].node.set_tags({"role": "node", "dc": "dc1"})
    await wait_for(lambda: all(p.node.member("n2").tags == {"role": "node", "dc": "dc1"}  # type: ignore[union-attr]
                               for p in peers), 10.0, "tags to propagate")
    for p in peers:
        assert MemberEventKind.UPDATE in p.events_about("n2")
    ltime = peers[1].node.user_event("deploy", b"v42")
    await wait_for(lambda: all(p.user_events for p in peers), 10.0, "the user event everywhere")
    await asyncio.sleep(1.0)  # every retransmission and relay has happened: still exactly once
    for p in peers:
        assert [(e.name, e.payload, e.ltime) for e in p.user_events] == [("deploy", b"v42", ltime)]
        assert p.node.event_ltime > ltime


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_encrypted_cluster_rejects_wrong_key(cluster: Cluster) -> None:
    key, wrong = generate_key(), generate_key()
    peers = [await cluster.add(f"n{i}", seal=Keyring(key)) for i in range(4)]
    assert await asyncio.gather(*(p.node.join([peers[0].addr]) for p in peers[1:])) == [1, 1, 1]
    await wait_for(converged(peers), 10.0, "encrypted cluster converges")
    assert all(p.node.encrypted for p in peers)
    # a node with the wrong key cannot join: the seed cannot open its push/pull
    outsider = await cluster.add("outsider", seal=Keyring(wrong))
    assert await outsider.node.join([peers[0].addr]) == 0
    assert peers[0].node.stats.decrypt_failures == 1
    # a node that can read the cluster (it holds the key as a secondary) but seals with the wrong
    # primary learns everyone, then gossips at them: every packet is counted, none parsed.
    spy = await cluster.add("spy", seal=Keyring(wrong, [key]))
    assert await peers[1].node.join([spy.addr]) == 0  # spy's reply is sealed with the wrong key
    await wait_for(lambda: len(spy.node.members()) == 5, 5.0, "the spy to learn the members")
    await wait_for(lambda: sum(p.node.stats.decrypt_failures for p in peers) >= 20, 10.0,
                   "the spy's packets to be counted")
    for p in peers:
        assert {m.name for m in p.node.members()} == {"n0", "n1", "n2", "n3"}
        assert p.node.stats.decode_errors == 0
        assert p.node.core_stats.bad_packets + p.node.core_stats.bad_streams == p.node.stats.decrypt_failures
    assert all(p.alive_names() == {"n0", "n1", "n2", "n3"} for p in peers)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_key_rotation_keeps_the_cluster_converged(cluster: Cluster) -> None:
    old, new = generate_key(), generate_key()
    rings = [Keyring(old) for _ in range(4)]
    peers = [await cluster.add(f"n{i}", seal=rings[i]) for i in range(4)]
    assert await asyncio.gather(*(p.node.join([peers[0].addr]) for p in peers[1:])) == [1, 1, 1]
    await wait_for(converged(peers), 10.0, "convergence")
    # consul keyring -install, then -use, then -remove: one node at a time, with gossip between
    for op in (Keyring.install, Keyring.use, Keyring.remove):
        for ring in rings:
            op(ring, old if op is Keyring.remove else new)
            await asyncio.sleep(0.3)
            assert converged(peers)()
    assert all(r.list_keys() == [new] for r in rings)
    await asyncio.sleep(1.0)
    assert converged(peers)()
    for p in peers:
        assert p.node.stats.decrypt_failures == 0
        assert MemberEventKind.FAILED not in [e.kind for e in p.member_events]
    late = await cluster.add("late", seal=Keyring(new))
    assert await late.node.join([peers[3].addr]) == 1
    stale = await cluster.add("stale", seal=Keyring(old))
    assert await stale.node.join([peers[3].addr]) == 0
    await wait_for(converged([*peers, late]), 10.0, "the late node to converge")


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_multi_process_sigkill_is_detected(tmp_path: Path) -> None:
    """Real processes (``python -m agent.gossip``); one is SIGKILLed, the others mark it failed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs: dict[str, asyncio.subprocess.Process] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    readers: list[asyncio.Task[None]] = []

    async def read(name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            with contextlib.suppress(ValueError):
                events[name].append(json.loads(line))

    async def spawn(name: str, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.gossip", "--name", name, "--preset", "fast", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=str(tmp_path),
        )
        procs[name], events[name] = proc, []
        readers.append(asyncio.create_task(read(name, proc)))
        await wait_for(lambda: any(e["ev"] == "ready" for e in events[name]), 20.0, f"{name} ready")
        return str(next(e["addr"] for e in events[name] if e["ev"] == "ready"))

    def sees(name: str, node: str, status: str) -> bool:
        return any(e["ev"] == "member" and e["node"] == node and e["status"] == status for e in events[name])

    names = ["p0", "p1", "p2", "p3"]
    try:
        seed = await spawn("p0")
        for name in names[1:]:
            await spawn(name, "--join", seed)
        await wait_for(lambda: all(sees(a, b, "alive") for a in names for b in names), 20.0, "4 processes converge")
        victim = procs["p3"]
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await victim.wait()
        await wait_for(lambda: all(sees(n, "p3", "failed") for n in names[:3]), 20.0, "p3 failed everywhere")
        detect = [next(e["t"] for e in events[n] if e.get("node") == "p3" and e["status"] == "failed") - killed_at
                  for n in names[:3]]
        assert max(detect) < 10.0
        # graceful leave of another process: the rest see it left, not failed
        os.kill(procs["p2"].pid, signal.SIGTERM)
        assert await asyncio.wait_for(procs["p2"].wait(), 15.0) == 0
        await wait_for(lambda: all(sees(n, "p2", "left") for n in names[:2]), 10.0, "p2 left")
        assert not any(sees(n, "p2", "failed") for n in names[:2])
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_retry_max_exhausted_exits_1(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.gossip", "--name", "x", "--join", dead, "--retry-max", "2",
        "--retry-interval", "0.1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30.0)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 1
    assert b"max join retry exhausted" in out
