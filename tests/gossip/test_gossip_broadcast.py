"""The transmit-limited broadcast queue."""

from __future__ import annotations

from agent.gossip.broadcast import BroadcastQueue


def drain(q: BroadcastQueue, n_members: int, limit_bytes: int = 10_000) -> list[list[bytes]]:
    rounds = []
    while len(q):
        rounds.append(q.get_broadcasts(n_members, limit_bytes))
    return rounds


def test_each_broadcast_is_sent_retransmit_limit_times() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(b"a", key="x")
    sent = [b for picked in drain(q, n_members=1) for b in picked]
    assert sent == [b"a"] * 4  # 4 × ceil(log10(2))


def test_limit_grows_with_cluster_size() -> None:
    counts = {}
    for n in (1, 10, 100, 1000):
        q = BroadcastQueue(retransmit_mult=4)
        q.queue(b"a")
        counts[n] = sum(len(p) for p in drain(q, n_members=n))
    assert counts == {1: 4, 10: 8, 100: 12, 1000: 16}


def test_newer_broadcast_about_the_same_member_invalidates_older() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(b"suspect-x", key="x")
    q.queue(b"other", key="y")
    q.get_broadcasts(1, 10_000)  # both sent once
    q.queue(b"alive-x", key="x")  # the refutation makes the suspicion moot
    assert len(q) == 2
    sent = [b for picked in drain(q, n_members=1) for b in picked]
    assert b"suspect-x" not in sent
    assert sent.count(b"alive-x") == 4 and sent.count(b"other") == 3


def test_fewest_transmits_first_then_newest() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(b"old")
    assert q.get_broadcasts(1, 3) == [b"old"]  # old now has 1 transmit
    q.queue(b"new1")
    q.queue(b"new2")
    assert q.get_broadcasts(1, 4) == [b"new2"]  # room for one: the newest unsent
    assert q.get_broadcasts(1, 4) == [b"new1"]  # unsent still beats sent-once
    # all three at one transmit now: each goes once before any goes a third time
    assert sorted(q.get_broadcasts(1, 4)[0] for _ in range(3)) == [b"new1", b"new2", b"old"]


def test_respects_byte_limit_and_item_overhead() -> None:
    q = BroadcastQueue(retransmit_mult=4, item_overhead_bytes=2)
    for i in range(10):
        q.queue(bytes([i]) * 10)
    picked = q.get_broadcasts(1, 50)
    assert len(picked) == 4  # 4 × (10 + 2) = 48 ≤ 50 < 60
    assert q.get_broadcasts(1, 5) == []  # nothing fits
    assert q.get_broadcasts(1, 0) == []


def test_smaller_entry_found_when_top_does_not_fit() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(b"s")
    q.get_broadcasts(1, 10)  # "s" moves to transmit level 1
    q.queue(b"L" * 100)  # level 0 top is too big for a small packet
    assert q.get_broadcasts(1, 10) == [b"s"]


def test_contains_tracks_keyed_broadcasts_until_done() -> None:
    q = BroadcastQueue(retransmit_mult=1)
    q.queue(b"leave", key="me")
    assert "me" in q and q.transmits("me") == 0
    q.get_broadcasts(1, 100)
    assert "me" not in q and q.transmits("me") is None and len(q) == 0


def test_prune_drops_most_transmitted_first() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue(b"a")
    q.queue(b"b")
    q.get_broadcasts(1000, 100)  # a, b at 1 transmit
    q.queue(b"c", key="c")
    assert q.prune(1) == 2
    assert len(q) == 1 and "c" in q
    assert q.prune(5) == 0
    q.clear()
    assert len(q) == 0 and q.get_broadcasts(10, 100) == []
