"""Focused RaftCore behaviour, one scenario per test, each citing the paper or thesis section it checks.

"§5.x" is the Raft paper (Ongaro & Ousterhout 2014); "thesis §x.y" is Ongaro's dissertation. Every
scenario runs on the simulated :class:`~tests.raft.sim.Network`, so the invariant checker also runs
after every step of every test here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from agent.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfigChange,
    ConfigChangeError,
    ConfigChangeOp,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    LeadershipTransferError,
    LeaseExpired,
    MemoryStorage,
    Message,
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RaftCore,
    RequestVote,
    RequestVoteResponse,
    Role,
    Server,
    TimeoutNow,
    bootstrap,
)

from .sim import FAST, Network

E = FAST.election_ticks


def other(net: Network, *exclude: str) -> str:
    return next(i for i in net.nodes if i not in exclude)


def ops(change: str, server: str) -> ConfigChange:
    return ConfigChange(ConfigChangeOp(change), server, f"{server}:8300")


def recorder(into: list[Message]) -> Callable[[Message], bool]:
    """A network hook that records every message sent and drops none."""

    def hook(m: Message) -> bool:
        into.append(m)
        return True

    return hook


def snapshots(sent: list[Message]) -> list[InstallSnapshot]:
    return [m for m in sent if isinstance(m, InstallSnapshot)]


# ---- elections (§5.2) -------------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False], ids=["prevote", "no-prevote"])
@pytest.mark.parametrize(
    ("size", "down", "elects"),
    [(3, 0, True), (3, 1, True), (5, 2, True), (3, 2, False), (5, 3, False)],
)
def test_leader_election_needs_a_majority(size: int, down: int, elects: bool, pre_vote: bool) -> None:
    """§5.2: a candidate wins with votes from a majority of the full cluster, and only then.
    Thesis §9.6: with PreVote, failed elections do not inflate terms."""
    net = Network(size, seed=size * 10 + down, config=replace(FAST, pre_vote=pre_vote))
    for nid in list(net.nodes)[:down]:
        net.crash(nid)
    net.tick_all(6 * E)
    lead = net.leader()
    if elects:
        assert lead is not None
        others = [n for n in net.live() if n.id != lead]
        assert all(n.core is not None and n.core.role is Role.FOLLOWER for n in others)
        assert all(n.core is not None and n.core.leader_id == lead for n in others)
    else:
        assert lead is None
        terms = {n.core.term for n in net.live() if n.core is not None}
        if pre_vote:
            assert terms == {1}, "PreVote: no term bump without a reachable majority"
        else:
            assert max(terms) > 1


def test_single_server_cluster_elects_itself_and_commits_alone() -> None:
    """§5.2 with one voter: the election and every commit need only the server itself."""
    net = Network(1)
    lead = net.tick_until_leader()
    assert lead == "n1"
    idx = net.propose("n1", b"a")
    net.stabilize()
    assert net.core("n1").commit_index == idx
    assert net.applied("n1") == [b"a"]


def _lone(nid: str = "n1", config: RaftConfig = FAST) -> tuple[RaftCore, MemoryStorage]:
    """One core of a bootstrapped n1-n3 cluster, driven by hand-written messages."""
    storage = MemoryStorage()
    bootstrap(storage, Configuration(tuple(Server(i, f"{i}:8300") for i in ("n1", "n2", "n3"))))
    return RaftCore(nid, storage, random.Random(0), config), storage


def _drain(core: RaftCore, storage: MemoryStorage) -> list[Message]:
    """Process Readys like the driver; return the messages sent."""
    sent: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        sent.extend(rd.messages)
        core.advance(rd)
    return sent


def test_vote_is_persisted_before_the_reply_and_survives_restart() -> None:
    """§5.2 / Figure 2: votedFor is persistent state; at most one vote per term, even across a crash."""
    core, storage = _lone("n1")
    core.step(RequestVote(term=5, src="n2", dst="n1", last_log_index=1, last_log_term=1))
    rd = core.ready()
    assert rd.hard_state == HardState(term=5, vote="n2", commit=0)
    assert rd.messages == (RequestVoteResponse(term=5, src="n1", dst="n2", granted=True),)
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    core.advance(rd)
    restarted = RaftCore("n1", storage, random.Random(1), FAST)
    restarted.step(RequestVote(term=5, src="n3", dst="n1", last_log_index=9, last_log_term=1))
    (reply,) = _drain(restarted, storage)
    assert isinstance(reply, RequestVoteResponse) and not reply.granted


def test_voter_refuses_candidate_with_less_up_to_date_log() -> None:
    """§5.4.1: deny the vote if the candidate's log is less up-to-date (last term, then length).
    (CheckQuorum off: otherwise n1 would ignore votes while it still hears from its leader.)"""
    core, storage = _lone("n1", replace(FAST, check_quorum=False))
    core.step(
        AppendEntries(
            term=2,
            src="n2",
            dst="n1",
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(2, 2, EntryKind.NOOP),),
            leader_commit=1,
        )
    )
    _drain(core, storage)
    for term, (last_index, last_term, granted) in enumerate([(5, 1, False), (1, 2, False), (2, 2, True)], 10):
        core.step(
            RequestVote(term=term, src="n3", dst="n1", last_log_index=last_index, last_log_term=last_term)
        )
        reply = _drain(core, storage)[-1]
        assert isinstance(reply, RequestVoteResponse) and reply.granted is granted, (last_index, last_term)


# ---- log replication (§5.3, §5.4) ----------------------------------------------------------------


def test_log_repair_after_leader_change_discards_uncommitted_tail() -> None:
    """§5.3: the new leader forces followers' logs to match its own; entries the old leader wrote
    alone (never committed) are overwritten, committed ones never are (§5.4)."""
    net = Network(3, seed=3, config=replace(FAST, check_quorum=False))
    old = net.tick_until_leader()
    net.propose(old, b"committed")
    net.stabilize()
    net.isolate(old)
    for i in range(3):
        net.propose(old, b"lost%d" % i)
    net.stabilize()
    assert net.core(old).log.last_index == 6
    new = None
    for _ in range(10 * E):
        net.tick_all()
        new = next((n for n in net.nodes if n != old and net.core(n).role is Role.LEADER), None)
        if new:
            break
    assert new is not None
    net.propose(new, b"kept1")
    net.propose(new, b"kept2")
    net.stabilize()
    net.heal()
    net.tick_all(3)
    assert net.core(old).role is Role.FOLLOWER
    for nid in net.nodes:
        assert net.applied(nid) == [b"committed", b"kept1", b"kept2"]
    logs = {nid: [(e.index, e.term) for e in net.core(nid).log.slice(1, 100)] for nid in net.nodes}
    assert logs[old] == logs[new]


def test_fast_backtracking_skips_a_divergent_term_per_round_trip() -> None:
    """§5.3 (the optimisation at the end of the section): a rejection names the follower's conflicting
    term, so a follower holding fifty stale entries is repaired by a leader with sixty newer ones in
    one or two round trips, instead of one round trip per entry (Figure 7's follower (d)/(f) case)."""
    net = Network(
        3, seed=4, config=replace(FAST, check_quorum=False, pre_vote=False, max_entries_per_msg=100)
    )
    old = net.tick_until_leader()
    net.isolate(old)
    for i in range(50):
        net.propose(old, b"stale%d" % i)  # term 2, never committed
    net.stabilize()
    while (mid := next((n for n in net.nodes if n != old and net.core(n).role is Role.LEADER), None)) is None:
        net.tick_all()
    for i in range(60):
        net.propose(mid, b"new%d" % i)  # a later term, committed with the third server
    net.stabilize()
    third = other(net, old, mid)
    net.heal()
    net.isolate(mid)
    rejections: list[AppendEntriesResponse] = []

    def count(m: Message) -> bool:
        if isinstance(m, AppendEntriesResponse) and m.src == old and m.dst == third and not m.success:
            rejections.append(m)
        return True

    net.hook = count
    while net.core(third).role is not Role.LEADER:
        net.tick_all()
    net.tick_all(2)
    assert net.core(third).log.last_index > 60
    assert net.applied(old) == net.applied(third) and len(net.applied(old)) == 60
    assert 1 <= len(rejections) <= 2


def test_follower_commit_is_capped_at_the_last_new_entry() -> None:
    """Figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of last new entry). A
    follower must not commit its own stale entries past what this message proved matches."""
    core, storage = _lone("n1")
    stale = (Entry(2, 2, EntryKind.NORMAL, b"a"), Entry(3, 2, EntryKind.NORMAL, b"stale"))
    core.step(
        AppendEntries(
            term=2, src="n2", dst="n1", prev_log_index=1, prev_log_term=1, entries=stale, leader_commit=1
        )
    )
    _drain(core, storage)
    # A leader of term 3 whose log is [1:1, 2:2, 3:3] sends only entry 2 with commit 3.
    core.step(
        AppendEntries(
            term=3, src="n3", dst="n1", prev_log_index=1, prev_log_term=1, entries=stale[:1], leader_commit=3
        )
    )
    assert core.commit_index == 2


def test_leader_commits_older_term_entries_only_through_a_current_term_entry() -> None:
    """§5.4.2 / Figure 8: an entry from an earlier term that sits on a majority is not committed by
    counting replicas; it commits only once an entry of the leader's own term is on a majority."""
    cfg = replace(FAST, check_quorum=False, pre_vote=False, max_entries_per_msg=1)
    net = Network(3, seed=5, config=cfg)
    lead = net.tick_until_leader()
    net.isolate(lead)
    old_index = net.propose(lead, b"old-term")
    net.stabilize()
    assert net.core(lead).commit_index == old_index - 1
    net.restart(lead)  # it keeps the entry (persisted) but no longer leads
    net.heal()
    acked: set[str] = set()

    def hold_back_current_term(m: Message) -> bool:
        if isinstance(m, AppendEntriesResponse) and m.success and m.index >= old_index:
            acked.add(m.src)
        if isinstance(m, AppendEntries) and m.dst in acked and any(e.index > old_index for e in m.entries):
            return False
        return True

    net.hook = hold_back_current_term
    net.core(lead).campaign()  # its log is the most up-to-date, so it wins the next term
    net.stabilize()
    core = net.core(lead)
    assert core.role is Role.LEADER and core.term > 2
    net.tick_all(3)
    assert acked == {n for n in net.nodes if n != lead}, "the old-term entry is on every server"
    assert core.commit_index < old_index, "replica counting must not commit an entry of an older term"
    net.hook = None
    net.tick_all(2)
    assert core.commit_index == old_index + 1
    assert all(net.applied(n) == [b"old-term"] for n in net.nodes)


def test_pipelining_keeps_the_inflight_window_bounded() -> None:
    """Thesis §10.2.2 (pipelining): a leader sends ahead without waiting for acknowledgements, but
    never more than ``max_inflight_msgs`` messages to one follower."""
    net = Network(3, seed=6, config=replace(FAST, max_entries_per_msg=2, max_inflight_msgs=3))
    lead = net.tick_until_leader()
    for i in range(40):
        net.propose(lead, b"%d" % i)
    net.process(lead)
    per_follower: dict[str, int] = {}
    for m in net.in_flight:
        if isinstance(m, AppendEntries):
            per_follower[m.dst] = per_follower.get(m.dst, 0) + 1
    assert per_follower and all(n == 3 for n in per_follower.values())
    net.stabilize()
    assert all(len(net.applied(n)) == 40 for n in net.nodes)


def test_crash_loses_unpersisted_entries_and_keeps_persisted_ones() -> None:
    """Figure 2 (persistent state) and the Ready contract: what was not saved before a crash is gone,
    and nothing unsaved was ever acknowledged, so losing it is safe."""
    net = Network(1)
    net.tick_until_leader()
    net.propose("n1", b"saved")
    net.stabilize()
    net.propose("n1", b"unsaved")  # appended in memory, its Ready not processed
    net.crash("n1")
    net.restart("n1")
    net.tick_until_leader()
    assert net.applied("n1") == [b"saved"]
    assert [e.data for e in net.core("n1").log.slice(1, 10) if e.kind is EntryKind.NORMAL] == [b"saved"]


# ---- PreVote and CheckQuorum (thesis §9.6, §6.2, §4.2.3) ---------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False], ids=["prevote", "no-prevote"])
def test_prevote_stops_a_rejoining_partitioned_node_from_disrupting(pre_vote: bool) -> None:
    """Thesis §9.6: a node cut off from the cluster keeps timing out. Without PreVote it bumps its
    term each time and, on rejoining, forces the leader to step down; with PreVote its term never
    moves, because a majority still hears from the leader and refuses the pre-vote."""
    net = Network(3, seed=7, config=replace(FAST, pre_vote=pre_vote, check_quorum=False))
    lead = net.tick_until_leader()
    term = net.core(lead).term
    loner = other(net, lead)
    net.isolate(loner)
    net.tick_all(10 * E)
    net.heal()
    net.tick_all(3 * E)
    if pre_vote:
        assert net.core(loner).term == term
        assert net.leader() == lead and net.core(lead).term == term
    else:
        assert net.core(net.leader() or lead).term > term, "without PreVote the rejoin forces a new election"


def test_prevote_refused_while_voters_still_hear_from_a_leader() -> None:
    """Thesis §9.6 with §4.2.3's rule: under an asymmetric cut (n3 cannot hear the leader, n2 can),
    n3's log is as up-to-date as anyone's, so only "I heard from a leader within the election
    timeout" stops n2 from granting the pre-vote and letting n3 depose a healthy leader."""
    net = Network(3, seed=29, config=replace(FAST, check_quorum=False))
    lead = net.tick_until_leader()
    term = net.core(lead).term
    loner = other(net, lead)
    net.cut(lead, loner)
    net.tick_all(10 * E)
    assert net.leader() == lead and net.core(lead).term == term
    assert net.core(loner).term == term


def test_check_quorum_leader_steps_down_when_cut_off_from_majority() -> None:
    """Thesis §6.2: a leader that hears from no majority for an election timeout steps down, so
    clients stuck with it fail over instead of hanging."""
    net = Network(3, seed=8)
    lead = net.tick_until_leader()
    net.isolate(lead)
    net.tick_all(2 * E)
    assert net.core(lead).role is Role.FOLLOWER
    net.heal()
    new = net.tick_until_leader()
    assert net.core(new).term > 2


def test_without_check_quorum_a_cut_off_leader_lingers() -> None:
    """The contrast case for thesis §6.2: nothing makes an isolated leader step down."""
    net = Network(3, seed=8, config=replace(FAST, check_quorum=False))
    lead = net.tick_until_leader()
    net.isolate(lead)
    net.tick_all(5 * E)
    assert net.core(lead).role is Role.LEADER


def test_removed_server_that_missed_its_removal_cannot_disrupt() -> None:
    """Thesis §4.2.3: a server removed while cut off never hears of it and keeps campaigning. With
    CheckQuorum, servers that hear from a live leader ignore its RequestVotes (even without PreVote)
    instead of bumping their term and deposing the leader."""
    net = Network(4, seed=9, config=replace(FAST, pre_vote=False))
    lead = net.tick_until_leader()
    gone = other(net, lead)
    net.isolate(gone)
    net.core(lead).propose_config_change(ops("remove_server", gone))
    net.stabilize()
    assert not net.core(lead).status().latest_configuration.ids & {gone}
    term = net.core(lead).term
    net.heal()
    net.tick_all(6 * E)
    assert net.core(gone).term > term, "the removed server kept campaigning"
    assert net.leader() == lead and net.core(lead).term == term


# ---- membership changes (thesis §4.1-§4.2) ---------------------------------------------------------


def test_add_nonvoter_then_promote_to_voter() -> None:
    """Thesis §4.2.1: a new server joins without a vote, catches up, then becomes a voter; while a
    nonvoter it receives the log but never counts towards commitment."""
    net = Network(["n1", "n2", "n3", "n4"], seed=10, voters=["n1", "n2", "n3"])
    lead = net.tick_until_leader()
    assert net.core("n4").status().latest_configuration.ids == frozenset()
    net.propose(lead, b"before")
    net.stabilize()
    net.core(lead).propose_config_change(ops("add_nonvoter", "n4"))
    net.stabilize()
    assert net.applied("n4") == [b"before"]
    assert net.core(lead).status().num_peers == 2
    net.crash("n4")
    net.propose(lead, b"without-n4")
    net.stabilize()
    assert net.applied(lead)[-1] == b"without-n4"
    net.restart("n4")
    net.core(lead).propose_config_change(ops("add_voter", "n4"))
    net.stabilize()
    st = net.core(lead).status()
    assert st.latest_configuration.voters == {"n1", "n2", "n3", "n4"} and st.num_peers == 3
    assert net.applied("n4") == net.applied(lead)


def test_one_config_change_at_a_time_and_only_after_the_noop_commits() -> None:
    """Thesis §4.1: a leader starts a change only once the previous one committed; and (Ongaro's
    2015 raft-dev fix) only once an entry of its own term committed."""
    net = Network(["n1", "n2", "n3", "n4", "n5"], seed=11, voters=["n1", "n2", "n3"])
    lead = net.tick_until_leader()
    core = net.core(lead)
    core.propose_config_change(ops("add_voter", "n4"))
    with pytest.raises(ConfigChangeError, match="not committed"):
        core.propose_config_change(ops("add_voter", "n5"))
    net.stabilize()
    core.propose_config_change(ops("add_voter", "n5"))
    net.stabilize()
    with pytest.raises(ConfigChangeError):
        core.propose_config_change(ops("add_voter", "n5"))  # no-op change
    with pytest.raises(NotLeader):
        net.core(other(net, lead)).propose_config_change(ops("remove_server", "n5"))
    # A brand-new leader refuses until its noop is committed.
    net2 = Network(3, seed=12)
    while (l2 := net2.leader()) is None:
        net2.process_all()
        if net2.in_flight:
            net2.deliver()
        else:
            net2.tick_all(1, stabilize=False)
    with pytest.raises(ConfigChangeError, match="its term"):
        net2.core(l2).propose_config_change(ops("remove_server", other(net2, l2)))


def test_removed_follower_stops_campaigning() -> None:
    """Thesis §4.2.2: a server not in its latest configuration is not a voter and never starts an
    election, however long it goes without hearing from a leader."""
    net = Network(3, seed=13)
    lead = net.tick_until_leader()
    gone = other(net, lead)
    net.core(lead).propose_config_change(ops("remove_server", gone))
    net.stabilize()
    assert not net.core(gone).status().latest_configuration.ids & {gone}
    term = net.core(gone).term
    net.tick_all(10 * E)
    assert net.core(gone).role is Role.FOLLOWER and net.core(gone).term == term
    net.propose(lead, b"after")
    net.stabilize()
    assert net.applied(lead) == [b"after"] and net.applied(gone) == []


def test_removing_the_leader_hands_over_after_the_change_commits() -> None:
    """Thesis §4.2.2: a leader removing itself manages the cluster (without counting itself) until
    the new configuration commits, then steps down; ctk hands off with TimeoutNow at once."""
    net = Network(3, seed=14)
    lead = net.tick_until_leader()
    idx = net.core(lead).propose_config_change(ops("remove_server", lead))
    assert net.core(lead).role is Role.LEADER
    net.stabilize()
    assert net.core(lead).role is Role.FOLLOWER and net.core(lead).commit_index >= idx
    new = net.leader()
    assert new is not None and new != lead, "TimeoutNow elected a successor without waiting"
    net.propose(new, b"x")
    net.tick_all(10 * E)
    assert net.leader() == new
    assert net.core(lead).term < net.core(new).term or net.core(lead).role is Role.FOLLOWER
    assert all(net.applied(n) == [b"x"] for n in net.nodes if n != lead)


@pytest.mark.parametrize("remove", ["follower", "leader"])
def test_two_server_cluster_minus_one_graceful_removal_is_a_working_single_server(remove: str) -> None:
    """Thesis §4.1 with two servers: a graceful removal (the departing server acks the change) leaves
    a one-voter cluster that elects itself and commits alone, the leave-vs-fail case in Consul's
    2-server issues (consul#3504)."""
    net = Network(2, seed=15)
    lead = net.tick_until_leader()
    follower = other(net, lead)
    gone = lead if remove == "leader" else follower
    stays = follower if remove == "leader" else lead
    net.core(lead).propose_config_change(ops("remove_server", gone))
    net.stabilize()
    net.crash(gone)  # it left: shut it down for good
    net.tick_all(3 * E)
    assert net.leader() == stays
    st = net.core(stays).status()
    assert st.latest_configuration.voters == {stays} and st.num_peers == 0
    idx = net.propose(stays, b"alone")
    net.stabilize()
    assert net.core(stays).commit_index == idx and net.applied(stays) == [b"alone"]


def test_new_server_added_after_compaction_catches_up_from_a_snapshot() -> None:
    """§7 + thesis §4.2.1: a server joining after the log was compacted receives InstallSnapshot."""
    net = Network(["n1", "n2", "n3", "n4"], seed=16, voters=["n1", "n2", "n3"])
    lead = net.tick_until_leader()
    for i in range(20):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    core = net.core(lead)
    core.compact(core.status().applied_index, net.nodes[lead].fsm.snapshot())
    sent: list[Message] = []
    net.hook = recorder(sent)
    core.propose_config_change(ops("add_voter", "n4"))
    net.stabilize()
    assert [m.dst for m in snapshots(sent)] == ["n4"]
    assert net.applied("n4") == net.applied(lead) and len(net.applied("n4")) == 20


# ---- leadership transfer (thesis §3.10) --------------------------------------------------------------


def test_transfer_leadership_catches_the_target_up_then_sends_timeout_now() -> None:
    """Thesis §3.10: the leader stops accepting proposals, brings the target's log up to date, then
    sends TimeoutNow; the target wins the next term at once (no election timeout)."""
    net = Network(3, seed=17)
    lead = net.tick_until_leader()
    target = other(net, lead)
    net.cut(lead, target)
    for i in range(5):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    term = net.core(lead).term
    sent: list[Message] = []
    net.hook = recorder(sent)
    net.core(lead).transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        net.core(lead).propose(b"during")
    net.heal()
    net.tick_all(1)
    assert net.leader() == target and net.core(target).term == term + 1
    timeout_now = [m for m in sent if isinstance(m, TimeoutNow)]
    assert len(timeout_now) == 1
    # The target was caught up before TimeoutNow went out.
    first_tn = sent.index(timeout_now[0])
    acks = [
        m for m in sent[:first_tn] if isinstance(m, AppendEntriesResponse) and m.src == target and m.success
    ]
    assert acks and acks[-1].index == net.core(lead).log.last_index - 1  # the new leader's noop follows
    assert net.applied(target) == [b"%d" % i for i in range(5)]


def test_transfer_to_an_unreachable_target_aborts_after_an_election_timeout() -> None:
    """Thesis §3.10: if the transfer does not complete within an election timeout, the leader
    resumes accepting client requests."""
    net = Network(3, seed=18)
    lead = net.tick_until_leader()
    target = other(net, lead)
    net.crash(target)
    net.core(lead).transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        net.core(lead).propose(b"x")
    with pytest.raises(LeadershipTransferError):
        net.core(lead).transfer_leadership("nobody")
    net.tick_all(E)
    assert net.leader() == lead
    net.propose(lead, b"x")


def test_transfer_to_a_target_that_needs_a_snapshot() -> None:
    """Thesis §3.10 + §7: catching the target up may take an InstallSnapshot; its acknowledgement
    completes the catch-up and triggers TimeoutNow like an AppendEntries acknowledgement would."""
    net = Network(3, seed=31)
    lead = net.tick_until_leader()
    target = other(net, lead)
    net.crash(target)
    for i in range(10):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    core = net.core(lead)
    core.compact(core.status().applied_index, net.nodes[lead].fsm.snapshot())
    core.transfer_leadership(target)
    sent: list[Message] = []
    net.hook = recorder(sent)
    net.restart(target)
    net.tick_all(2)
    assert snapshots(sent) and any(isinstance(m, TimeoutNow) for m in sent)
    assert net.leader() == target and net.applied(target) == net.applied(lead)


# ---- snapshots (§7) ---------------------------------------------------------------------------------


def test_follower_behind_the_compaction_point_gets_install_snapshot() -> None:
    """§7: when the leader has discarded the entries a follower needs, it sends its snapshot; the
    follower replaces its state with it and continues from the snapshot's index."""
    net = Network(3, seed=19)
    lead = net.tick_until_leader()
    lagger = other(net, lead)
    net.crash(lagger)
    for i in range(30):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    core = net.core(lead)
    core.compact(core.status().applied_index, net.nodes[lead].fsm.snapshot())
    net.stabilize()
    st = core.status()
    assert st.last_snapshot_index == st.applied_index and st.first_log_index > 2
    sent: list[Message] = []
    net.hook = recorder(sent)
    net.restart(lagger)
    net.tick_all(2)
    assert len(snapshots(sent)) == 1
    assert net.applied(lagger) == net.applied(lead)
    lst = net.core(lagger).status()
    assert lst.last_snapshot_index == st.last_snapshot_index
    net.propose(lead, b"after")
    net.stabilize()
    assert net.applied(lagger)[-1] == b"after"


def test_lost_install_snapshot_is_retried() -> None:
    """§7 over a lossy network: if the InstallSnapshot (or its reply) is lost, the leader probes the
    follower again after ``snapshot_retry_ticks`` and sends a fresh snapshot."""
    net = Network(3, seed=30)
    lead = net.tick_until_leader()
    lagger = other(net, lead)
    net.crash(lagger)
    for i in range(10):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    core = net.core(lead)
    core.compact(core.status().applied_index, net.nodes[lead].fsm.snapshot())
    dropped: list[Message] = []

    def drop_first_snapshot(m: Message) -> bool:
        if isinstance(m, InstallSnapshot) and not dropped:
            dropped.append(m)
            return False
        return True

    net.hook = drop_first_snapshot
    net.restart(lagger)
    net.tick_all(2)
    assert dropped and net.applied(lagger) == []
    net.tick_all(FAST.snapshot_retry_ticks + 2)
    assert net.applied(lagger) == net.applied(lead)


def test_follower_within_the_trailing_entries_catches_up_from_the_log() -> None:
    """Consul's raft_trailing_logs: entries kept behind a snapshot spare a slightly slow follower
    the full snapshot transfer."""
    net = Network(3, seed=20, config=replace(FAST, trailing_entries=10))
    lead = net.tick_until_leader()
    lagger = other(net, lead)
    net.crash(lagger)
    for i in range(5):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    core = net.core(lead)
    core.compact(core.status().applied_index, net.nodes[lead].fsm.snapshot())
    sent: list[Message] = []
    net.hook = recorder(sent)
    net.restart(lagger)
    net.tick_all(2)
    assert snapshots(sent) == [] and net.applied(lagger) == net.applied(lead)


def test_restart_after_compaction_restores_snapshot_and_replays_the_rest() -> None:
    """§7: on restart a server loads its latest snapshot and replays only later committed entries."""
    net = Network(3, seed=21)
    lead = net.tick_until_leader()
    for i in range(10):
        net.propose(lead, b"%d" % i)
    net.stabilize()
    f = other(net, lead)
    fc = net.core(f)
    fc.compact(fc.status().applied_index - 2, _snapshot_at(net, f, 2))
    net.stabilize()
    net.restart(f)
    net.tick_all(2)
    assert net.applied(f) == net.applied(lead)


def _snapshot_at(net: Network, nid: str, behind: int) -> bytes:
    """The FSM as it was ``behind`` entries ago (a snapshot need not be at the latest index)."""
    from .sim import StateMachine

    fsm = StateMachine()
    fsm.items = net.nodes[nid].fsm.items[:-behind]
    return fsm.snapshot()


# ---- reads (thesis §6.4) -----------------------------------------------------------------------------


def test_read_index_is_confirmed_by_a_quorum_heartbeat_round() -> None:
    """Thesis §6.4: record the commit index, confirm leadership with a heartbeat round, then serve."""
    net = Network(3, seed=22)
    lead = net.tick_until_leader()
    net.propose(lead, b"w")
    net.stabilize()
    core = net.core(lead)
    core.read_index(7)
    net.process(lead)
    assert net.nodes[lead].read_states == []
    net.stabilize()
    (rs,) = net.nodes[lead].read_states
    assert rs.ctx == 7 and rs.index == core.commit_index
    with pytest.raises(NotLeader) as info:
        net.core(other(net, lead)).read_index(8)
    assert info.value.leader_id == lead


def test_read_index_on_a_deposed_leader_never_confirms() -> None:
    """Thesis §6.4: the heartbeat round is what stops a leader that lost its majority from serving
    stale data (CheckQuorum off, so it keeps believing it leads)."""
    net = Network(3, seed=23, config=replace(FAST, check_quorum=False))
    old = net.tick_until_leader()
    net.isolate(old)
    while (new := next((n for n in net.nodes if n != old and net.core(n).role is Role.LEADER), None)) is None:
        net.tick_all()
    net.propose(new, b"newer")
    net.stabilize()
    net.core(old).read_index(1)
    net.tick_all(5 * E)
    assert net.core(old).role is Role.LEADER and net.nodes[old].read_states == []


def test_read_index_on_a_new_leader_waits_for_its_noop_to_commit() -> None:
    """Thesis §6.4 step 1: a new leader does not know the commit index until its noop commits."""
    net = Network(3, seed=24)
    lead = net.tick_until_leader()
    net.propose(lead, b"w")
    net.stabilize()
    net.crash(lead)
    net.tick_all(E, stabilize=False)
    while (new := net.leader()) is None or new == lead:
        if net.in_flight:
            net.deliver()
        else:
            net.tick_all(1, stabilize=False)
        net.process_all()
    core = net.core(new)
    assert core.commit_index < core.log.last_index, "noop not yet committed"
    core.read_index(1)
    net.stabilize()
    (rs,) = net.nodes[new].read_states
    assert rs.index == core.log.last_index  # covers the noop, hence "w"


def test_lease_read_valid_after_quorum_ack_and_expires_without_one() -> None:
    """Thesis §6.4.1: the lease runs for lease_ticks from the *send* time of the last heartbeat a
    quorum acknowledged; without acks it lapses; a transfer revokes it."""
    cfg = replace(FAST, lease_ticks=4)
    net = Network(3, seed=25, config=cfg)
    lead = net.tick_until_leader()
    net.tick_all(1)
    core = net.core(lead)
    assert core.lease_read_index() == core.commit_index
    with pytest.raises(NotLeader):
        net.core(other(net, lead)).lease_read_index()
    net.isolate(lead)
    for _ in range(cfg.lease_ticks - 1):
        net.tick_all(1)
        core.lease_read_index()
    net.tick_all(1)
    with pytest.raises(LeaseExpired):
        core.lease_read_index()
    net.heal()
    net.tick_all(1)
    core.lease_read_index()
    core.transfer_leadership(other(net, lead))
    with pytest.raises(LeaseExpired):
        core.lease_read_index()


def test_lease_reads_disabled_by_config_and_trivial_for_one_voter() -> None:
    net = Network(3, seed=26, config=replace(FAST, lease_ticks=0))
    lead = net.tick_until_leader()
    with pytest.raises(LeaseExpired):
        net.core(lead).lease_read_index()
    solo = Network(1, config=replace(FAST, lease_ticks=3))
    solo.tick_until_leader()
    assert solo.core("n1").lease_read_index() == solo.core("n1").commit_index


@pytest.mark.parametrize("seed", range(8))
def test_lease_expires_before_a_successor_can_be_elected(seed: int) -> None:
    """Thesis §6.4.1: with equal clock rates, a cut-off leader's lease lapses before any other server
    can win an election, because the majority that acked it refuses votes for an election timeout."""
    net = Network(3, seed=100 + seed, config=replace(FAST, lease_ticks=5))
    lead = net.tick_until_leader()
    net.tick_all(seed % 4)
    net.isolate(lead)
    core = net.core(lead)
    for _ in range(6 * E):
        net.tick_all(1)
        successor = next((n for n in net.nodes if n != lead and net.core(n).role is Role.LEADER), None)
        if successor is not None and core.role is Role.LEADER:
            with pytest.raises(LeaseExpired):
                core.lease_read_index()
    assert net.leader() != lead


def test_restarted_follower_does_not_vote_while_a_lease_may_be_live() -> None:
    """Thesis §6.4.1: a follower that acked the leader's heartbeat and then restarted has forgotten
    that; if it voted at once, a successor could be elected inside the old leader's lease. ctk makes
    a (re)started server treat the first election timeout as a live leader's."""
    net = Network(3, seed=27, config=replace(FAST, lease_ticks=5))
    lead = net.tick_until_leader()
    follower, rival = [n for n in net.nodes if n != lead]
    net.cut(lead, rival)
    net.tick_all(2 * E)  # the rival hears only the follower, which still follows the leader
    assert net.leader() == lead
    net.tick_all(1)
    lease_index = net.core(lead).lease_read_index()
    net.restart(follower)
    net.core(rival).campaign()
    net.stabilize()
    assert net.core(rival).role is not Role.LEADER
    assert net.core(lead).lease_read_index() == lease_index


# ---- status ------------------------------------------------------------------------------------------


def test_status_reports_what_consul_raft_stats_need() -> None:
    net = Network(3, seed=28)
    lead = net.tick_until_leader()
    net.propose(lead, b"a")
    net.stabilize()
    st = net.core(lead).status()
    assert (st.state, st.leader_id, st.num_peers) == ("Leader", lead, 2)
    assert st.commit_index == st.applied_index == st.last_log_index == 3
    assert st.last_log_term == st.term and st.ticks_since_leader_contact == 0
    assert st.match_index == {n: 3 for n in net.nodes if n != lead}
    assert set(st.replication_state.values()) == {"replicate"}
    assert st.latest_configuration.voters == set(net.nodes) and st.latest_configuration_index == 1
    f = net.core(other(net, lead)).status()
    assert (f.state, f.leader_id, f.match_index) == ("Follower", lead, {})
    assert f.ticks_since_leader_contact == 0
    net.isolate(lead)
    net.tick(other(net, lead), 3)
    assert net.core(other(net, lead)).status().ticks_since_leader_contact == 3
