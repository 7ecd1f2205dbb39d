"""The gossip keyring across the cluster: ``consul keyring -list|-install|-use|-remove``.

Consul runs keyring operations as serf queries: every member applies the change and answers. ctk
sends the change as an internal user event (``_ctk:keyring``; names starting with ``_`` are refused
from ``/v1/event/fire``, so no one can forge one over HTTP) and learns who applied it from gossip
tags: each member advertises short fingerprints of its installed keys, primary first (``kr`` tag).
An operation therefore reports which members have converged, and ``-list`` counts keys per member
exactly as Consul's does — without any member ever putting a key itself in its tags.

The change travels encrypted with the current primary key, so only members that already hold the
cluster's key can read the new one. Keyring operations are refused when gossip is not encrypted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack

from agent.gossip.core import Member, MemberStatus
from agent.gossip.keyring import Keyring, KeyringError, decode_key, encode_key
from agent.gossip.node import GossipNode

__all__ = ["ClusterKeyring", "KEYRING_EVENT", "KEYRING_TAG", "fingerprint", "keyring_tag", "NotEncrypted"]

log = logging.getLogger(__name__)

KEYRING_EVENT = "_ctk:keyring"
KEYRING_TAG = "kr"
OPS = ("install", "use", "remove")
CONVERGE_TIMEOUT_S = 10.0
POLL_S = 0.1


class NotEncrypted(KeyringError):
    def __init__(self) -> None:
        super().__init__("keyring operations need gossip encryption; this agent was started without -encrypt")


def fingerprint(key: str | bytes) -> str:
    """8 hex characters of SHA-256 of the raw key: enough to tell keys apart, useless to an attacker."""
    return hashlib.sha256(decode_key(key)).hexdigest()[:8]


def keyring_tag(ring: Keyring | None) -> dict[str, str]:
    """The member tag advertising ``ring`` (nothing when gossip is not encrypted)."""
    return {KEYRING_TAG: ",".join(fingerprint(k) for k in ring.list_keys())} if ring else {}


def _member_keys(m: Member) -> list[str]:
    tag = m.tags.get(KEYRING_TAG, "")
    return tag.split(",") if tag else []


def _converged(op: str, fp: str, keys: list[str]) -> bool:
    if op == "install":
        return fp in keys
    if op == "use":
        return bool(keys) and keys[0] == fp
    return fp not in keys


class ClusterKeyring:
    """``ring`` is the agent's gossip keyring (None: gossip is not encrypted); ``tags_changed`` is
    called after a local change so the agent re-gossips its tags."""

    def __init__(self, ring: Keyring | None, gossip: GossipNode | None, tags_changed: Callable[[], None]) -> None:
        self.ring = ring
        self.gossip = gossip
        self.tags_changed = tags_changed

    def tag(self) -> dict[str, str]:
        return keyring_tag(self.ring)

    def _live(self) -> list[Member]:
        if self.gossip is None or not self.gossip.running:
            return []
        return [m for m in self.gossip.members() if m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)]

    # --- -list -----------------------------------------------------------------------------------

    def list(self, datacenter: str) -> list[dict[str, Any]]:
        """Consul's keyring response for the LAN pool: per key, how many members hold it / use it.

        A key is shown by value only if this agent holds it; fingerprints this agent does not know
        (a member with a key installed elsewhere) are reported in ``Messages``."""
        if self.ring is None:
            raise NotEncrypted()
        members = self._live()
        known = {fingerprint(k): k for k in self.ring.list_keys()}
        keys: dict[str, int] = {}
        primary: dict[str, int] = {}
        messages: dict[str, str] = {}
        for m in members:
            fps = _member_keys(m)
            if not fps:
                messages[m.name] = "member does not advertise its keyring (not encrypted, or not ctk)"
            for i, fp in enumerate(fps):
                key = known.get(fp)
                if key is None:
                    messages[m.name] = f"holds a key this agent does not know (fingerprint {fp})"
                    continue
                keys[key] = keys.get(key, 0) + 1
                if i == 0:
                    primary[key] = primary.get(key, 0) + 1
        return [{"WAN": False, "Datacenter": datacenter, "Segment": "", "Partition": "", "Keys": keys,
                 "PrimaryKeys": primary, "NumNodes": len(members), "Messages": messages}]

    # --- -install / -use / -remove -------------------------------------------------------------

    def check(self, op: str, key: str) -> str:
        """Validate before anything is sent; returns the normalized base64 key."""
        if op not in OPS:
            raise KeyringError(f"unknown keyring operation {op!r}")
        if self.ring is None:
            raise NotEncrypted()
        normalized = encode_key(decode_key(key))  # KeyringError: "key must be 16, 24 or 32 bytes"
        if op == "use" and normalized not in self.ring:
            raise KeyringError("Requested key is not in the keyring; install it first (-install)")
        if op == "remove" and normalized == self.ring.primary_key:
            raise KeyringError("Removing the primary key is not allowed")
        return normalized

    async def change(self, op: str, key: str, timeout_s: float = CONVERGE_TIMEOUT_S) -> dict[str, Any]:
        """Apply ``op`` on every member; returns once all live members report it (or the timeout).

        The result has Consul's counters: NumNodes, NumResps (members that converged), NumErrs and
        Messages naming the members that did not."""
        normalized = self.check(op, key)
        if self.gossip is None or not self.gossip.running:
            self.apply(op, normalized)
            return {"NumNodes": 1, "NumResps": 1, "NumErrs": 0, "Messages": {}}
        payload: bytes = msgpack.packb([op, decode_key(normalized)], use_bin_type=True)
        self.gossip.user_event(KEYRING_EVENT, payload, coalesce=False)  # delivered here too: see handle()
        fp = fingerprint(normalized)
        deadline = time.monotonic() + timeout_s
        while True:
            members = self._live()
            behind = [m.name for m in members if not _converged(op, fp, _member_keys(m))]
            if not behind or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        return {"NumNodes": len(members), "NumResps": len(members) - len(behind), "NumErrs": len(behind),
                "Messages": {name: f"did not {op} the key within {timeout_s:.0f}s" for name in behind}}

    def apply(self, op: str, key: str) -> None:
        assert self.ring is not None
        getattr(self.ring, op)(key)
        log.info("keyring: %s of key %s applied", op, fingerprint(key))
        self.tags_changed()

    def handle(self, payload: bytes) -> None:
        """A keyring event from gossip (ours included). A bad one is logged and dropped."""
        if self.ring is None:
            return
        try:
            op, raw = msgpack.unpackb(payload, raw=False)
            if op not in OPS or not isinstance(raw, bytes):
                raise ValueError("malformed")
            self.apply(op, encode_key(raw))
        except (ValueError, TypeError, KeyringError, msgpack.UnpackException) as err:
            log.warning("keyring: ignoring a keyring event: %s", err)
