"""The transmit-limited broadcast queue (SWIM §4.1 "infection-style dissemination").

Membership changes are not sent on their own: they are queued here and piggybacked on packets the
node sends anyway (pings, acks, gossip rounds). Rules, as memberlist's TransmitLimitedQueue has them:

- each broadcast is sent at most ``retransmit_mult × ceil(log10(n + 1))`` times, n being the
  cluster size *when it is picked*, so the limit grows as the cluster does;
- the broadcasts sent fewest times go first, so a fresh rumour spreads before old ones repeat;
- a broadcast queued with the key of an older one replaces it: only the latest news about a member
  is worth bandwidth (an ``alive`` refutation makes the ``suspect`` it answers moot).

Cost matters here: in a 1,000-member cluster every member sends every join rumour 16 times, so
this queue handles millions of picks. Entries are pre-encoded bytes (encoded once, however often
sent), grouped by transmit count; a pick takes the newest entries of the lowest counts first and
costs O(picked + levels). Within one count, the most recently queued (or promoted) entry goes
first.
"""

from __future__ import annotations

from agent.gossip.util import retransmit_limit

__all__ = ["BroadcastQueue"]


class BroadcastQueue:
    """Queue of encoded broadcasts, drained a packet's worth at a time.

    Level t (a dict, in insertion order) holds the entries sent t times, keyed by a sequence id;
    ``popitem()`` takes the newest in O(1), an invalidated entry is deleted from its level in O(1),
    and promoting the entries just sent is one ``dict.update`` per level.
    """

    __slots__ = ("retransmit_mult", "item_overhead_bytes", "_levels", "_id_of_key", "_key_of_id", "_next_id", "_len")

    _MAX_MISSES = 4
    """Levels whose top entry did not fit before a pick stops looking for something smaller."""

    def __init__(self, retransmit_mult: int, item_overhead_bytes: int = 0) -> None:
        self.retransmit_mult = retransmit_mult
        self.item_overhead_bytes = item_overhead_bytes
        """Bytes each entry costs in a packet beyond its own length (its length field)."""
        self._levels: list[dict[int, bytes]] = []  # index = transmits so far
        self._id_of_key: dict[str, int] = {}
        self._key_of_id: dict[int, str] = {}
        self._next_id = 0
        self._len = 0

    def __len__(self) -> int:
        """Broadcasts still to be (re)sent."""
        return self._len

    def __contains__(self, key: object) -> bool:
        """True while a broadcast queued under ``key`` is still waiting to be (re)sent."""
        return key in self._id_of_key

    def queue(self, data: bytes, key: str | None = None) -> None:
        """Add an encoded message; with a key, first drop any older broadcast with that key."""
        entry_id = self._next_id
        self._next_id += 1
        if key is not None:
            old = self._id_of_key.get(key)
            if old is not None:
                del self._key_of_id[old]
                for level in self._levels:
                    if level.pop(old, None) is not None:
                        self._len -= 1
                        break
            self._id_of_key[key] = entry_id
            self._key_of_id[entry_id] = key
        if not self._levels:
            self._levels.append({})
        self._levels[0][entry_id] = data
        self._len += 1

    def transmits(self, key: str) -> int | None:
        """How often the broadcast under ``key`` has been sent (None if none is queued)."""
        entry_id = self._id_of_key.get(key)
        if entry_id is None:
            return None
        for t, level in enumerate(self._levels):
            if entry_id in level:
                return t
        return None  # pragma: no cover - a queued id is always in some level

    def get_broadcasts(self, n_members: int, limit_bytes: int) -> list[bytes]:
        """Take broadcasts whose total size (with ``item_overhead_bytes`` each) is at most
        ``limit_bytes``, counting a transmit for each.

        Entries that reach their retransmit limit are dropped. Returns [] when nothing fits.
        """
        if not self._len or limit_bytes <= 0:
            return []
        limit = max(1, retransmit_limit(self.retransmit_mult, n_members))
        levels = self._levels
        overhead = self.item_overhead_bytes
        out: list[bytes] = []
        promoted: list[tuple[int, dict[int, bytes]]] = []
        room = limit_bytes
        misses = 0
        for t, level in enumerate(levels):
            sent: dict[int, bytes] = {}
            while level:
                entry_id, data = level.popitem()
                size = len(data) + overhead
                if size > room:
                    level[entry_id] = data  # back on top, untouched
                    misses += 1
                    break
                room -= size
                out.append(data)
                sent[entry_id] = data
            if sent:
                if t + 1 < limit:
                    promoted.append((t + 1, sent))
                else:
                    self._retire(sent)
            if room <= overhead or misses >= self._MAX_MISSES:
                break
        # Promote after the scan so an entry is never picked twice for the same packet.
        for t, sent in promoted:
            while len(levels) <= t:
                levels.append({})
            levels[t].update(sent)
        # Entries at or above the limit (the cluster shrank since they were promoted) are finished.
        while len(levels) > limit:
            self._retire(levels.pop())
        while levels and not levels[-1]:
            levels.pop()
        return out

    def prune(self, max_retain: int) -> int:
        """Drop the most-transmitted entries, oldest first, until at most ``max_retain`` remain."""
        dropped = 0
        for level in reversed(self._levels):
            excess = self._len - max_retain
            if excess <= 0:
                break
            victims = dict(zip(list(level)[:excess], [b""] * excess, strict=False))
            for entry_id in victims:
                del level[entry_id]
            self._retire(victims)
            dropped += len(victims)
        return dropped

    def clear(self) -> None:
        """Forget everything queued."""
        self._levels.clear()
        self._id_of_key.clear()
        self._key_of_id.clear()
        self._len = 0

    def _retire(self, entries: dict[int, bytes]) -> None:
        """Forget entries already removed from their level."""
        self._len -= len(entries)
        if self._key_of_id:
            key_of_id, id_of_key = self._key_of_id, self._id_of_key
            for entry_id in entries:
                key = key_of_id.pop(entry_id, None)
                if key is not None:
                    del id_of_key[key]
