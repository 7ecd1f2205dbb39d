"""GossipCore behaviour: SWIM failure detection, Lifeguard, serf's leave/reap/events, over InMemoryNetwork.

Every test is deterministic (seeded) and runs in simulated time; nothing sleeps.
"""

from __future__ import annotations

import ast
import pathlib
import random

import pytest

from agent.gossip import (
    DecodeError,
    EncodeError,
    FakeClock,
    GossipConfig,
    GossipCore,
    InMemoryNetwork,
    LeaveComplete,
    LocalProtocolError,
    Member,
    MemberEvent,
    MemberEventKind,
    MemberStatus,
    SendPacket,
    UnknownMember,
    UserEventReceived,
)
from agent.gossip.messages import Ack, Alive, Dead, Ping, Suspect, decode, encode

GOSSIP_DIR = pathlib.Path(__file__).resolve().parents[2] / "agent" / "gossip"
FAST = GossipConfig.fast()


def cluster(n: int, config: GossipConfig = FAST, seed: int = 1, loss: float = 0.0) -> tuple[InMemoryNetwork, list[GossipCore]]:
    """n nodes that all joined node 0 and converged."""
    net = InMemoryNetwork(seed=seed, loss=loss)
    cores = net.add_nodes(n, config)
    for core in cores[1:]:
        net.join(core.address, [cores[0].address])
    assert net.run_until_true(net.converged, timeout_s=30, check_every_s=config.probe_interval_s)
    return net, cores


def events(net: InMemoryNetwork, core: GossipCore, kind: MemberEventKind, about: str | None = None) -> list[MemberEvent]:
    return [
        e for e in net.events[core.address]
        if isinstance(e, MemberEvent) and e.kind is kind and (about is None or e.member.name == about)
    ]


def everyone_sees(cores: list[GossipCore], name: str, status: MemberStatus | None) -> bool:
    return all(c.status_of(name) is status for c in cores if c.name != name)


# --- purity ------------------------------------------------------------------------------------

FORBIDDEN = {"asyncio", "socket", "time", "os", "threading", "select", "selectors", "pickle", "subprocess"}
IO_MODULES = {"node.py", "__main__.py", "keyring.py"}
"""The I/O side (DESIGN.md's driver contract): the asyncio driver, its demo runner, and the keyring
with its file. They may do I/O (never pickle); everything else in the package must stay sans-IO."""


@pytest.mark.parametrize("path", sorted(GOSSIP_DIR.glob("*.py")), ids=lambda p: p.name)
def test_gossip_modules_are_sans_io(path: pathlib.Path) -> None:
    """DESIGN.md: protocol cores never import asyncio, socket or time; randomness is injected."""
    forbidden = {"pickle"} if path.name in IO_MODULES else FORBIDDEN
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & forbidden, path.name
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in forbidden, path.name
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random":
            assert node.attr == "Random", f"{path.name} uses the global random.{node.attr}"


# --- membership basics -------------------------------------------------------------------------

def test_join_converges_and_reports_join_events() -> None:
    net, cores = cluster(8)
    for core in cores:
        joined = {e.member.name for e in events(net, core, MemberEventKind.JOIN)}
        assert joined == {c.name for c in cores}  # serf reports the local member too
        assert all(m.status is MemberStatus.ALIVE and m.status_code == 1 for m in core.members())


def test_member_status_codes_follow_consul() -> None:
    """/v1/agent/members Status: 1 alive, 2 leaving, 3 left, 4 failed (suspect still shows alive)."""
    codes = {s: Member("n", "a", 1, {}, s, 1).status_code for s in MemberStatus}
    assert codes == {
        MemberStatus.ALIVE: 1, MemberStatus.SUSPECT: 1, MemberStatus.LEAVING: 2,
        MemberStatus.LEFT: 3, MemberStatus.FAILED: 4,
    }
    assert Member("n", "a", 1, {}, MemberStatus.SUSPECT, 1).consul_status == "alive"


def test_killed_member_is_marked_failed_by_everyone() -> None:
    net, cores = cluster(10)
    victim = cores[4]
    net.kill(victim.address)
    live = [c for c in cores if c is not victim]
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.FAILED), 10, 0.05)
    for core in live:
        assert [e.member.status_code for e in events(net, core, MemberEventKind.FAILED)] == [4]
        assert core.member(victim.name) == core.member(victim.name)  # snapshot, stable
    assert all(c.health_score == 0 for c in live)  # helpers nacked: nobody blamed itself


# --- refutation (SWIM §4.2) ---------------------------------------------------------------------

@pytest.mark.parametrize("accusation", ["suspect", "dead"])
def test_accused_node_refutes_with_higher_incarnation(accusation: str) -> None:
    net, cores = cluster(5)
    a, b = cores[0], cores[1]
    before = a.incarnation
    msg = Suspect(before, a.name, b.name) if accusation == "suspect" else Dead(before, a.name, b.name)
    net.call(a.address, lambda core, now: core.receive_packet(now, b.address, encode([msg])))
    assert a.incarnation == before + 1
    assert a.stats.refutes == 1
    assert a.health_score == 1  # Lifeguard: being suspected hints that we are the slow one
    net.run_for(2.0)
    for core in cores[1:]:
        seen = core.member(a.name)
        assert seen is not None and seen.status is MemberStatus.ALIVE and seen.incarnation == before + 1
    assert not any(events(net, c, MemberEventKind.FAILED) for c in cores)


def test_stale_accusation_is_ignored() -> None:
    net, cores = cluster(3)
    a, b = cores[0], cores[1]
    a.set_tags(net.clock.now(), {"v": "2"})  # incarnation 2
    net.call(a.address, lambda core, now: core.receive_packet(now, b.address, encode([Suspect(1, a.name, b.name)])))
    assert a.stats.refutes == 0 and a.incarnation == 2


def test_suspected_node_refutes_before_it_is_declared_dead() -> None:
    """A false suspicion (accuser's packets got lost) must not kill a healthy node."""
    net, cores = cluster(6)
    a, b = cores[0], cores[1]
    # b alone accuses a; everyone hears it, a refutes, nobody declares a dead.
    net.call(b.address, lambda core, now: core.receive_packet(now, cores[2].address, encode([Suspect(a.incarnation, a.name, cores[2].name)])))
    net.run_for(5.0)
    assert everyone_sees(cores, a.name, MemberStatus.ALIVE)
    assert a.stats.refutes >= 1
    assert not any(events(net, c, MemberEventKind.FAILED) for c in cores)


# --- Lifeguard suspicion timer driven through the core ------------------------------------------

class Responder:
    """Drives one core by hand and acks every ping it sends, so its own probes never fail."""

    def __init__(self, config: GossipConfig, members: int) -> None:
        self.core = GossipCore(config, "me", ("10.0.0.1", 8301), rng=random.Random(3), now_s=0.0)
        self.now_s = 0.0
        self.failed_at: dict[str, float] = {}
        alives = [Alive(1, f"m{i}", f"10.0.1.{i}", 8301, {}) for i in range(members)]
        self.core.receive_packet(0.0, ("10.0.1.0", 8301), encode(alives))
        self._drain()

    def inject(self, msg: Suspect) -> None:
        self.core.receive_packet(self.now_s, ("10.0.1.0", 8301), encode([msg]))
        self._drain()

    def advance_to(self, t_s: float, step_s: float = 0.05) -> None:
        while self.now_s < t_s:
            self.now_s = min(t_s, self.now_s + step_s)
            self.core.tick(self.now_s)
            self._drain()

    def _drain(self) -> None:
        for out in self.core.take_outputs():
            if isinstance(out, SendPacket):
                acks = [Ack(m.seq_no) for m in decode(out.data) if isinstance(m, Ping)]
                if acks:
                    self.core.receive_packet(self.now_s, out.addr, encode(acks))
            elif isinstance(out, MemberEvent) and out.kind is MemberEventKind.FAILED:
                self.failed_at[out.member.name] = self.now_s


@pytest.mark.parametrize(
    ("confirm_at_s", "expect_failed_after_s"),
    [
        ([], 24.99),  # no confirmation: the full max = 6 × min
        ([1.0], 11.85),  # one of k=2: log(2)/log(3) of the way down
        ([1.0, 2.0], 4.165),  # k confirmations: the minimum, 4 × log10(11) × 1 s
    ],
)
def test_suspicion_timeout_shrinks_with_independent_confirmations(
    confirm_at_s: list[float], expect_failed_after_s: float
) -> None:
    """Lifeguard §IV-C in the core: LAN timings, 11 members, suspicion_mult 4 → k = 2."""
    r = Responder(GossipConfig.lan(), members=10)
    r.advance_to(100.0)
    r.inject(Suspect(1, "m5", "m1"))
    for i, t in enumerate(confirm_at_s):
        r.advance_to(100.0 + t)
        r.inject(Suspect(1, "m5", f"m{2 + i}"))
        r.inject(Suspect(1, "m5", f"m{2 + i}"))  # a repeat is not a new confirmation
    r.advance_to(140.0)
    assert r.failed_at.keys() == {"m5"}
    assert r.failed_at["m5"] - 100.0 == pytest.approx(expect_failed_after_s, abs=0.06)


# --- indirect probes (SWIM ping-req) and nacks (Lifeguard) ---------------------------------------

@pytest.mark.parametrize("indirect_checks", [3, 0])
def test_indirect_probe_saves_a_node_whose_direct_path_is_lossy(indirect_checks: int) -> None:
    config = GossipConfig.fast(indirect_checks=indirect_checks)
    net, cores = cluster(6, config)
    a, b = cores[0], cores[1]
    net.set_link_loss(a.address, b.address, 1.0)  # the a <-> b UDP path is dead, all others fine
    failures_before = a.stats.probe_failures
    net.run_for(20.0)  # ~40 probes of b by a
    if indirect_checks:
        assert a.stats.indirect_probes > 0
        assert a.stats.probe_failures == failures_before  # every probe of b was answered via a helper
        assert b.stats.refutes == 0
        assert everyone_sees(cores, b.name, MemberStatus.ALIVE)
        assert not any(events(net, c, MemberEventKind.FAILED) for c in cores)
    else:  # control: without helpers a keeps accusing b, which has to keep refuting (flapping)
        assert a.stats.probe_failures > failures_before
        assert b.stats.refutes > 0


def test_lossy_node_raises_its_own_health_score_not_others() -> None:
    """Lifeguard §IV-A: missing nacks blame the prober's own network."""
    net, cores = cluster(8)
    bad = cores[0]
    for other in cores[1:]:
        net.set_link_loss(bad.address, other.address, 0.6, both_ways=False)  # bad's outbound is lossy
    scores: list[int] = []
    for _ in range(100):
        net.run_for(0.1)
        scores.append(bad.health_score)
    assert max(scores) >= 2
    assert max(c.health_score for c in cores[1:]) <= 1


# --- leave, reap, force-leave -----------------------------------------------------------------

def test_graceful_leave_makes_member_left_not_failed() -> None:
    config = GossipConfig.fast(tombstone_timeout_s=20.0, reap_interval_s=1.0)
    net, cores = cluster(6, config)
    leaver = cores[3]
    net.leave(leaver.address)
    assert leaver.local_member().status is MemberStatus.LEAVING
    assert leaver.local_member().status_code == 2
    assert net.run_until_true(lambda: any(isinstance(e, LeaveComplete) for e in net.events[leaver.address]), 10, 0.05)
    assert [e for e in net.events[leaver.address] if isinstance(e, LeaveComplete)] == [LeaveComplete(timed_out=False)]
    with pytest.raises(LocalProtocolError):
        leaver.set_tags(net.clock.now(), {"too": "late"})
    leaver.shutdown()
    net.kill(leaver.address)
    others = [c for c in cores if c is not leaver]
    assert everyone_sees(others, leaver.name, MemberStatus.LEFT)
    for core in others:
        assert len(events(net, core, MemberEventKind.LEAVE, leaver.name)) == 1
        assert not events(net, core, MemberEventKind.FAILED)
        m = core.member(leaver.name)
        assert m is not None and m.status_code == 3 and m.consul_status == "left"
    net.run_for(25.0)  # past the tombstone timeout: reaped
    for core in others:
        assert core.member(leaver.name) is None
        assert len(events(net, core, MemberEventKind.REAP, leaver.name)) == 1


def test_leave_of_a_lone_node_completes_at_once() -> None:
    net = InMemoryNetwork(seed=2)
    core = net.add_node()
    net.leave(core.address)
    assert net.events[core.address][-1] == LeaveComplete(timed_out=False)
    assert core.local_member().status is MemberStatus.LEFT


def test_failed_member_is_reaped_after_reconnect_timeout() -> None:
    config = GossipConfig.fast(reconnect_timeout_s=8.0, reap_interval_s=0.5)
    net, cores = cluster(5, config)
    victim = cores[2]
    net.kill(victim.address)
    live = [c for c in cores if c is not victim]
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.FAILED), 10, 0.05)
    failed_at = net.clock.now()
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, None), 20, 0.1)
    assert net.clock.now() - failed_at == pytest.approx(8.0, abs=1.5)
    for core in live:
        assert [e.member.name for e in events(net, core, MemberEventKind.REAP)] == [victim.name]
        assert core.count(MemberStatus.FAILED) == 0 and core.num_members() == 4


@pytest.mark.parametrize("prune", [False, True])
def test_force_leave_moves_failed_member_to_left(prune: bool) -> None:
    net, cores = cluster(5)
    victim = cores[4]
    net.kill(victim.address)
    live = cores[:4]
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.FAILED), 10, 0.05)
    net.call(live[0].address, lambda core, now: core.force_leave(now, victim.name, prune=prune))
    want = None if prune else MemberStatus.LEFT
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, want), 5, 0.05)
    for core in live:
        assert len(events(net, core, MemberEventKind.LEAVE, victim.name)) == 1
        assert len(events(net, core, MemberEventKind.REAP, victim.name)) == (1 if prune else 0)


def test_force_leave_of_a_live_member_is_refuted() -> None:
    """consul-api.md §7.3: if the node is actually alive it will rejoin/refute."""
    net, cores = cluster(4)
    net.call(cores[0].address, lambda core, now: core.force_leave(now, cores[1].name))
    net.run_for(3.0)
    assert everyone_sees(cores, cores[1].name, MemberStatus.ALIVE)
    assert cores[1].stats.refutes >= 1


def test_force_leave_rejects_unknown_and_self() -> None:
    net, cores = cluster(2)
    with pytest.raises(UnknownMember):
        cores[0].force_leave(net.clock.now(), "nope")
    with pytest.raises(LocalProtocolError):
        cores[0].force_leave(net.clock.now(), cores[0].name)


# --- restarts and name conflicts ------------------------------------------------------------------

def test_restarted_node_rejoins_above_its_old_incarnation() -> None:
    net, cores = cluster(5)
    victim = cores[1]
    old_incarnation = victim.incarnation
    net.kill(victim.address)
    live = [c for c in cores if c is not victim]
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.FAILED), 10, 0.05)
    # same name and address, fresh process: incarnation starts at 1 again
    reborn = GossipCore(FAST, victim.name, victim.address, rng=random.Random(9), now_s=net.clock.now())
    net.restart(reborn)
    net.join(reborn.address, [cores[0].address])
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.ALIVE), 10, 0.05)
    assert reborn.incarnation > old_incarnation  # it refuted its own death
    assert all(len(events(net, c, MemberEventKind.JOIN, victim.name)) == 2 for c in live)


def test_same_name_at_another_address_is_refused_while_the_owner_lives() -> None:
    net, cores = cluster(3)
    a = cores[0]
    impostor = Alive(5, cores[1].name, "10.9.9.9", 8301, {})
    net.call(a.address, lambda core, now: core.receive_packet(now, ("10.9.9.9", 8301), encode([impostor])))
    seen = a.member(cores[1].name)
    assert seen is not None and seen.addr == cores[1].address[0]
    assert a.stats.name_conflicts == 1


def test_dead_members_name_can_be_reclaimed_after_dead_node_reclaim() -> None:
    config = GossipConfig.fast(dead_node_reclaim_s=2.0)
    net, cores = cluster(4, config)
    victim = cores[3]
    net.kill(victim.address)
    live = cores[:3]
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.FAILED), 10, 0.05)
    net.run_for(2.5)
    rebuilt = GossipCore(config, victim.name, ("10.7.7.7", 8301), rng=random.Random(5), now_s=net.clock.now())
    net.add(rebuilt)
    net.join(rebuilt.address, [cores[0].address])
    assert net.run_until_true(lambda: everyone_sees(live, victim.name, MemberStatus.ALIVE), 10, 0.05)
    assert all(c.member(victim.name).addr == "10.7.7.7" for c in live)  # type: ignore[union-attr]


# --- tags and user events ---------------------------------------------------------------------------

def test_tag_update_reaches_everyone_as_an_update_event() -> None:
    net, cores = cluster(6)
    net.call(cores[2].address, lambda core, now: core.set_tags(now, {"role": "consul", "dc": "dc1"}))
    net.run_for(2.0)
    for core in cores:
        m = core.member(cores[2].name)
        assert m is not None and dict(m.tags) == {"role": "consul", "dc": "dc1"}
        assert len(events(net, core, MemberEventKind.UPDATE, cores[2].name)) == 1
    with pytest.raises(EncodeError):
        cores[0].set_tags(net.clock.now(), {"k": "v" * 600})


def test_user_event_is_delivered_exactly_once_to_every_member() -> None:
    net, cores = cluster(20, loss=0.05)
    net.user_event(cores[3].address, "deploy", b"v1")
    net.user_event(cores[7].address, "deploy", b"v2")  # same name, other payload: a second event
    net.user_event(cores[7].address, "restart")
    net.run_for(5.0)
    for core in cores:
        got = sorted((e.name, e.payload) for e in net.events[core.address] if isinstance(e, UserEventReceived))
        assert got == [("deploy", b"v1"), ("deploy", b"v2"), ("restart", b"")]
    ltimes = {e.ltime for c in cores for e in net.events[c.address] if isinstance(e, UserEventReceived)}
    assert len(ltimes) >= 2  # Lamport times advance across events
    with pytest.raises(EncodeError):
        cores[0].user_event(net.clock.now(), "big", b"x" * 600)


def test_joiner_does_not_replay_old_user_events() -> None:
    """serf: a node joining later ignores events older than its join (no replay)."""
    net, cores = cluster(4)
    net.user_event(cores[0].address, "old")
    net.run_for(2.0)
    late = net.add_node(config=FAST)
    net.join(late.address, [cores[1].address])
    net.run_for(2.0)
    net.user_event(cores[2].address, "new")
    net.run_for(2.0)
    assert [e.name for e in net.events[late.address] if isinstance(e, UserEventReceived)] == ["new"]


# --- partitions -----------------------------------------------------------------------------------

def test_partition_then_heal_reconverges() -> None:
    config = GossipConfig.fast(reconnect_interval_s=1.0)
    net, cores = cluster(6, config)
    left, right = cores[:3], cores[3:]
    net.partition([c.address for c in left], [c.address for c in right])
    assert net.run_until_true(
        lambda: all(everyone_sees(left, c.name, MemberStatus.FAILED) for c in right)
        and all(everyone_sees(right, c.name, MemberStatus.FAILED) for c in left),
        20, 0.1,
    )
    net.heal()
    assert net.run_until_true(net.converged, 60, 0.1)


# --- garbage and the encryption seam -----------------------------------------------------------

def test_garbage_packet_raises_and_changes_nothing() -> None:
    net, cores = cluster(3)
    a = cores[0]
    before = (a.members(), a.incarnation)
    with pytest.raises(DecodeError):
        a.receive_packet(net.clock.now(), ("1.2.3.4", 1), b"\x01\x00\x01\x00\x05garbage")
    with pytest.raises(DecodeError):
        a.handle_stream(net.clock.now(), ("1.2.3.4", 1), b"\x01junk")
    assert (a.members(), a.incarnation) == before
    assert a.take_outputs() == []
    assert a.stats.bad_packets == 1 and a.stats.bad_streams == 1


def test_misdirected_ping_is_not_acked() -> None:
    clock = FakeClock()
    core = GossipCore(FAST, "a", ("10.0.0.1", 8301), rng=random.Random(1), now_s=clock.now())
    core.take_outputs()
    core.receive_packet(clock.now(), ("10.0.0.2", 8301), encode([Ping(7, "someone-else")]))
    assert core.take_outputs() == [] and core.stats.misdirected_pings == 1
    core.receive_packet(clock.now(), ("10.0.0.2", 8301), encode([Ping(8, "a")]))
    (out,) = core.take_outputs()
    assert isinstance(out, SendPacket) and out.addr == ("10.0.0.2", 8301)
    assert Ack(8) in decode(out.data)


class XorSeal:
    """A stand-in for the AES-GCM keyring: a marker byte plus XOR. Not encryption."""

    overhead_bytes = 1

    def __init__(self, key: int) -> None:
        self.key = key

    def seal(self, data: bytes) -> bytes:
        return b"\xee" + bytes(b ^ self.key for b in data)

    def open(self, data: bytes) -> bytes:
        if not data.startswith(b"\xee"):
            raise DecodeError("not sealed")
        return bytes(b ^ self.key for b in data[1:])


def test_seal_hooks_wrap_packets_and_streams() -> None:
    net = InMemoryNetwork(seed=4)
    cores = []
    for i in range(4):
        core = GossipCore(FAST, f"s{i}", (f"10.1.0.{i}", 8301), rng=random.Random(i), now_s=0.0, seal=XorSeal(0x5A))
        net.add(core)
        cores.append(core)
    for core in cores[1:]:
        net.join(core.address, [cores[0].address])
    assert net.run_until_true(net.converged, 10, 0.1)
    outsider = net.add_node("plain", FAST)  # no key: cannot read the pool, nor the pool it
    net.join(outsider.address, [cores[0].address])
    net.run_for(2.0)
    assert outsider.num_members() == 1
    assert all(c.member("plain") is None for c in cores)
    assert net.stats.streams_failed >= 1


# --- the receive-side de-duplication never hides a rumour whose fate can still change -------------

def _lone_core(config: GossipConfig = FAST) -> GossipCore:
    core = GossipCore(config, "me", ("10.0.0.1", 8301), rng=random.Random(1), now_s=0.0)
    core.take_outputs()
    return core


def test_rumour_about_an_unknown_member_is_heard_again_once_it_is_known() -> None:
    core = _lone_core()
    suspect = encode([Suspect(1, "x", "y")])
    core.receive_packet(0.0, ("10.0.0.2", 8301), suspect)  # x unknown: ignored
    core.receive_packet(0.0, ("10.0.0.2", 8301), encode([Alive(1, "x", "10.0.0.3", 8301, {}), Alive(1, "y", "10.0.0.4", 8301, {})]))
    core.receive_packet(0.1, ("10.0.0.2", 8301), suspect)  # the very same bytes, now meaningful
    assert core.status_of("x") is MemberStatus.SUSPECT


def test_conflicting_alive_is_reconsidered_after_the_reclaim_time() -> None:
    core = _lone_core(GossipConfig.fast(dead_node_reclaim_s=1.0))
    core.receive_packet(0.0, ("10.0.0.2", 8301), encode([Alive(1, "x", "10.0.0.3", 8301, {})]))
    usurper = encode([Alive(1, "x", "10.0.0.9", 8301, {})])
    core.receive_packet(0.1, ("10.0.0.9", 8301), usurper)
    assert core.member("x").addr == "10.0.0.3"  # type: ignore[union-attr]
    core.receive_packet(0.2, ("10.0.0.2", 8301), encode([Dead(1, "x", "y")]))
    assert core.status_of("x") is MemberStatus.FAILED
    core.receive_packet(2.0, ("10.0.0.9", 8301), usurper)  # same bytes, now allowed
    assert core.member("x").addr == "10.0.0.9"  # type: ignore[union-attr]
    assert core.status_of("x") is MemberStatus.ALIVE
