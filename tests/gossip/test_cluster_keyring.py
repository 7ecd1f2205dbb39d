"""ClusterKeyring's pure parts: validation, fingerprints in tags, and Consul's -list counts."""

from __future__ import annotations

import msgpack
import pytest

from agent.cluster_keyring import KEYRING_TAG, ClusterKeyring, NotEncrypted, fingerprint, keyring_tag
from agent.gossip.core import Member, MemberStatus
from agent.gossip.keyring import Keyring, KeyringError, decode_key, generate_key

K1, K2, K3 = generate_key(), generate_key(), generate_key()


class Members:
    """The two things ClusterKeyring reads from the gossip node."""

    running = True

    def __init__(self, members: list[Member]) -> None:
        self._members = members

    def members(self) -> list[Member]:
        return self._members


def member(name: str, *keys: str, status: MemberStatus = MemberStatus.ALIVE) -> Member:
    tags = {KEYRING_TAG: ",".join(fingerprint(k) for k in keys)} if keys else {}
    return Member(name, "127.0.0.1", 8301, tags, status, 1)


def test_fingerprint_is_short_stable_and_not_the_key() -> None:
    assert fingerprint(K1) == fingerprint(decode_key(K1)) and len(fingerprint(K1)) == 8
    assert fingerprint(K1) != fingerprint(K2)
    assert fingerprint(K1) not in K1
    assert keyring_tag(None) == {}
    assert keyring_tag(Keyring(K1, [K2])) == {KEYRING_TAG: f"{fingerprint(K1)},{fingerprint(K2)}"}


def test_list_counts_members_per_key_and_primary() -> None:
    ring = Keyring(K1, [K2])
    gossip = Members([member("a", K1, K2), member("b", K2, K1), member("c", K1),
                      member("gone", K3, status=MemberStatus.FAILED), member("old"), member("x", K3)])
    [pool] = ClusterKeyring(ring, gossip, lambda: None).list("dc1")  # type: ignore[arg-type]
    assert pool["NumNodes"] == 5  # failed members are not counted
    assert pool["Keys"] == {K1: 3, K2: 2}
    assert pool["PrimaryKeys"] == {K1: 2, K2: 1}
    assert set(pool["Messages"]) == {"old", "x"}  # no keyring advertised; a key this agent does not hold


def test_checks_before_anything_is_sent() -> None:
    kr = ClusterKeyring(Keyring(K1), None, lambda: None)
    with pytest.raises(KeyringError, match="base64"):
        kr.check("install", "nope!")
    with pytest.raises(KeyringError, match="install it first"):
        kr.check("use", K2)
    with pytest.raises(KeyringError, match="primary"):
        kr.check("remove", K1)
    assert kr.check("install", K2) == K2
    with pytest.raises(NotEncrypted):
        ClusterKeyring(None, None, lambda: None).check("install", K2)


async def test_change_without_gossip_applies_locally_and_retags() -> None:
    ring = Keyring(K1)
    retagged: list[int] = []
    kr = ClusterKeyring(ring, None, lambda: retagged.append(1))
    result = await kr.change("install", K2)
    assert result["NumErrs"] == 0 and ring.list_keys() == [K1, K2] and retagged


def test_handle_applies_events_and_drops_garbage() -> None:
    ring = Keyring(K1)
    kr = ClusterKeyring(ring, None, lambda: None)
    kr.handle(msgpack.packb(["install", decode_key(K2)], use_bin_type=True))
    kr.handle(msgpack.packb(["use", decode_key(K2)], use_bin_type=True))
    assert ring.primary_key == K2
    for junk in (b"\xc1", msgpack.packb(["format", decode_key(K3)]), msgpack.packb(["install", "text"]),
                 msgpack.packb(["remove", decode_key(K2)])):  # removing the primary is refused, not applied
        kr.handle(junk)
    assert ring.list_keys() == [K2, K1]
