"""Change notification for blocking queries: "wake me when anything under X changes".

Sans-IO: a watcher is a plain callback. The asyncio layer (``agent/http/blocking.py``) turns a
callback into a future; the store calls :meth:`WatchHub.notify` once per applied command with the
topics and KV keys it touched.

Topics are strings naming a data view: a table (``"nodes"``, ``"services"``, ``"checks"``,
``"sessions"``, ``"events"``), one service name (``"service:web"``), one node (``"node:n1"``), one KV key
(exact match) or a KV prefix. A KV write to ``a/b/c`` wakes the exact watchers of ``a/b/c`` and the
prefix watchers of ``""``, ``"a"``, ``"a/"``, ``"a/b"``, ... — found with one dict lookup per prefix
length, so the cost of a write does not grow with the number of watchers that are not affected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["WatchHub", "Watch"]

Callback = Callable[[], None]


class Watch:
    """A registration; :meth:`cancel` is idempotent. Fires at most once."""

    __slots__ = ("_hub", "_callback", "_topics", "_keys", "_prefixes", "fired")

    def __init__(
        self,
        hub: WatchHub,
        callback: Callback,
        topics: tuple[str, ...],
        keys: tuple[str, ...],
        prefixes: tuple[str, ...],
    ) -> None:
        self._hub = hub
        self._callback = callback
        self._topics = topics
        self._keys = keys
        self._prefixes = prefixes
        self.fired = False

    def _fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        self.cancel()
        self._callback()

    def cancel(self) -> None:
        self._hub._remove(self)


class WatchHub:
    def __init__(self) -> None:
        self._topics: dict[str, set[Watch]] = {}
        self._keys: dict[str, set[Watch]] = {}
        self._prefixes: dict[str, set[Watch]] = {}
        self._max_prefix_len = 0

    def watch(
        self,
        callback: Callback,
        *,
        topics: Iterable[str] = (),
        kv_keys: Iterable[str] = (),
        kv_prefixes: Iterable[str] = (),
    ) -> Watch:
        w = Watch(self, callback, tuple(topics), tuple(kv_keys), tuple(kv_prefixes))
        for t in w._topics:
            self._topics.setdefault(t, set()).add(w)
        for k in w._keys:
            self._keys.setdefault(k, set()).add(w)
        for p in w._prefixes:
            self._prefixes.setdefault(p, set()).add(w)
            self._max_prefix_len = max(self._max_prefix_len, len(p))
        return w

    def _remove(self, w: Watch) -> None:
        for table, names in ((self._topics, w._topics), (self._keys, w._keys), (self._prefixes, w._prefixes)):
            for name in names:
                bucket = table.get(name)
                if bucket is not None:
                    bucket.discard(w)
                    if not bucket:
                        del table[name]

    def watcher_count(self) -> int:
        seen: set[Watch] = set()
        for table in (self._topics, self._keys, self._prefixes):
            for bucket in table.values():
                seen.update(bucket)
        return len(seen)

    def notify(self, topics: Iterable[str] = (), kv_keys: Iterable[str] = (), everything: bool = False) -> None:
        """Fire every watch affected by a change to ``topics`` and ``kv_keys``."""
        hit: set[Watch] = set()
        if everything:
            for table in (self._topics, self._keys, self._prefixes):
                for bucket in table.values():
                    hit.update(bucket)
        else:
            for t in topics:
                found = self._topics.get(t)
                if found:
                    hit.update(found)
            if self._keys or self._prefixes:
                for key in kv_keys:
                    exact = self._keys.get(key)
                    if exact:
                        hit.update(exact)
                    if self._prefixes:
                        for i in range(min(len(key), self._max_prefix_len) + 1):
                            under = self._prefixes.get(key[:i])
                            if under:
                                hit.update(under)
        for w in hit:
            w._fire()
