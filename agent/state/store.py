"""The state store: catalog, health, KV, sessions and events, changed only by :meth:`Store.apply`.

This is the replicated state machine. ``apply(index, command)`` is deterministic: the same log gives
the same state on every server (Raft §5.3). It is pure and synchronous — no clocks (the proposer's
``now`` travels in the command), no I/O — and it is the one place state changes, so ``snapshot()`` /
``restore()`` capture everything, indexes included.

Indexes follow Consul (``api-docs/features/blocking.mdx``): every record keeps CreateIndex/ModifyIndex;
every table keeps the index of its last change, and so does every service name (``service:<name>``),
so that a blocking query on one service is not woken by changes to another. KV deletes leave
tombstones, so the index of a prefix never goes backwards when keys under it are deleted (until the
tombstones are reaped, as in Consul).

Reads return ``(index, value)``; the index is never 0 (Consul rewrites 0 to 1).
"""

from __future__ import annotations

import bisect
import copy
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from .commands import Command
from .structs import (
    CRITICAL,
    PASSING,
    HealthCheck,
    KVEntry,
    Node,
    ServiceInstance,
    Session,
    UserEvent,
    from_record,
    to_record,
)
from .watch import WatchHub

__all__ = ["Store", "CommandError", "MAX_EVENTS"]

MAX_EVENTS = 256  # Consul keeps the last 256 user events per agent
SNAPSHOT_VERSION = 1


class CommandError(Exception):
    """A command that cannot be applied; the state is left exactly as it was.

    Returned (not raised) by :meth:`Store.apply`, because a rejected command is still a committed
    log entry: every server must reject it the same way. ``status`` is the HTTP status it maps to.
    """

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class _TxnAbort(Exception):
    def __init__(self, op_index: int, what: str) -> None:
        super().__init__(what)
        self.op_index = op_index
        self.what = what


class Store:
    def __init__(self, hub: WatchHub | None = None) -> None:
        self.hub = hub or WatchHub()
        self._reset()

    def _reset(self) -> None:
        self.last_index = 0
        self.index: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}
        self.services: dict[str, dict[str, ServiceInstance]] = {}
        self.checks: dict[str, dict[str, HealthCheck]] = {}
        self.kv: dict[str, KVEntry] = {}
        self._kv_keys: list[str] = []
        self.tombstones: dict[str, int] = {}
        self.sessions: dict[str, Session] = {}
        self.lock_delay_until: dict[str, float] = {}
        self.events: deque[UserEvent] = deque(maxlen=MAX_EVENTS)
        self._undo: list[Callable[[], None]] | None = None
        self._topics: set[str] = set()
        self._keys: set[str] = set()
        self.defer_notify = False
        self._pending_topics: set[str] = set()
        self._pending_keys: set[str] = set()
        #: Bumped whenever indexes may stop identifying content (restore, tombstone reap): response caches
        #: keyed by (query, index) must include it.
        self.epoch = getattr(self, "epoch", 0) + 1

    # ------------------------------------------------------------------ apply

    def apply(self, index: int, command: Command) -> Any:
        """Apply one committed command at ``index``; returns its result or a :class:`CommandError`."""
        if index <= self.last_index:
            raise ValueError(f"apply out of order: index {index} after {self.last_index}")
        self.last_index = index
        op = command.get("op")
        handler = _HANDLERS.get(op)  # type: ignore[arg-type]
        self._topics = set()
        self._keys = set()
        try:
            if handler is None:
                return CommandError(f"unknown command {op!r}")
            self._undo = []
            try:
                result = handler(self, index, command)
            except CommandError as err:
                self._rollback()
                return err
            self._undo = None
            return result
        finally:
            self._undo = None
            topics, keys = self._topics, self._keys
            self._topics, self._keys = set(), set()
            if self.defer_notify:
                self._pending_topics |= topics
                self._pending_keys |= keys
            elif topics or keys:
                self.hub.notify(topics, keys)

    def flush_notify(self) -> None:
        """Wake the watchers of everything applied while ``defer_notify`` was set.

        Drivers apply a batch with notifications deferred, answer the proposers, then flush: a writer's
        reply is then never queued behind thousands of blocking queries it just woke.
        """
        topics, keys = self._pending_topics, self._pending_keys
        self._pending_topics, self._pending_keys = set(), set()
        if topics or keys:
            self.hub.notify(topics, keys)

    def _rollback(self) -> None:
        undo = self._undo or []
        self._undo = None
        for action in reversed(undo):
            action()

    def _record_undo(self, action: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(action)

    # ---------------------------------------------------------- primitives
    # Every mutation goes through these, so a failed transaction can be undone.

    def _bump(self, name: str, index: int) -> None:
        old = self.index.get(name)
        self.index[name] = index
        self._topics.add(name)

        def undo() -> None:
            if old is None:
                self.index.pop(name, None)
            else:
                self.index[name] = old

        self._record_undo(undo)

    def _put_node(self, node: Node, index: int) -> None:
        old = self.nodes.get(node.node)
        self.nodes[node.node] = node
        self._bump("nodes", index)
        self._topics.add("node:" + node.node)
        self._bump_services_of_node(node.node, index)
        self._record_undo(lambda: self._restore(self.nodes, node.node, old))

    def _del_node(self, name: str, index: int) -> None:
        old = self.nodes.pop(name)
        self._bump("nodes", index)
        self._topics.add("node:" + name)
        self._record_undo(lambda: self._restore(self.nodes, name, old))

    def _put_service(self, svc: ServiceInstance, index: int) -> None:
        table = self.services.setdefault(svc.node, {})
        old = table.get(svc.id)
        table[svc.id] = svc
        self._bump("services", index)
        self._bump("service:" + svc.service, index)
        if old is not None and old.service != svc.service:
            self._bump("service:" + old.service, index)
        self._topics.add("node:" + svc.node)
        self._record_undo(lambda: self._restore(self.services.setdefault(svc.node, {}), svc.id, old))

    def _del_service(self, node: str, service_id: str, index: int) -> None:
        table = self.services[node]
        old = table.pop(service_id)
        self._bump("services", index)
        self._bump("service:" + old.service, index)
        self._topics.add("node:" + node)
        self._record_undo(lambda: self._restore(self.services.setdefault(node, {}), service_id, old))

    def _put_check(self, check: HealthCheck, index: int) -> None:
        table = self.checks.setdefault(check.node, {})
        old = table.get(check.check_id)
        table[check.check_id] = check
        self._touch_check(check, index)
        self._record_undo(lambda: self._restore(self.checks.setdefault(check.node, {}), check.check_id, old))

    def _del_check(self, node: str, check_id: str, index: int) -> None:
        table = self.checks[node]
        old = table.pop(check_id)
        self._touch_check(old, index)
        self._record_undo(lambda: self._restore(self.checks.setdefault(node, {}), check_id, old))

    def _touch_check(self, check: HealthCheck, index: int) -> None:
        self._bump("checks", index)
        self._topics.add("node:" + check.node)
        if check.service_id:
            svc = self.services.get(check.node, {}).get(check.service_id)
            if svc is not None:
                self._bump("service:" + svc.service, index)
        else:
            # A node-level check changes the health of every service on the node.
            self._bump_services_of_node(check.node, index)

    def _bump_services_of_node(self, node: str, index: int) -> None:
        for name in {s.service for s in self.services.get(node, {}).values()}:
            self._bump("service:" + name, index)

    @staticmethod
    def _restore(table: dict[str, Any], key: str, old: Any) -> None:
        if old is None:
            table.pop(key, None)
        else:
            table[key] = old

    def _put_kv(self, entry: KVEntry, index: int) -> None:
        old = self.kv.get(entry.key)
        old_tomb = self.tombstones.pop(entry.key, None)
        if old is None:
            bisect.insort(self._kv_keys, entry.key)
        self.kv[entry.key] = entry
        self._bump("kvs", index)
        self._keys.add(entry.key)

        def undo() -> None:
            if old is None:
                del self.kv[entry.key]
                i = bisect.bisect_left(self._kv_keys, entry.key)
                del self._kv_keys[i]
            else:
                self.kv[entry.key] = old
            if old_tomb is not None:
                self.tombstones[entry.key] = old_tomb

        self._record_undo(undo)

    def _del_kv(self, key: str, index: int) -> None:
        old = self.kv.pop(key)
        i = bisect.bisect_left(self._kv_keys, key)
        del self._kv_keys[i]
        old_tomb = self.tombstones.get(key)
        self.tombstones[key] = index
        self._bump("kvs", index)
        self._bump("tombstones", index)
        self._keys.add(key)

        def undo() -> None:
            self.kv[key] = old
            bisect.insort(self._kv_keys, key)
            if old_tomb is None:
                self.tombstones.pop(key, None)
            else:
                self.tombstones[key] = old_tomb

        self._record_undo(undo)

    def _put_session(self, sess: Session, index: int) -> None:
        old = self.sessions.get(sess.id)
        self.sessions[sess.id] = sess
        self._bump("sessions", index)
        self._record_undo(lambda: self._restore(self.sessions, sess.id, old))

    def _del_session(self, session_id: str, index: int) -> None:
        old = self.sessions.pop(session_id)
        self._bump("sessions", index)
        self._record_undo(lambda: self._restore(self.sessions, session_id, old))

    def _set_lock_delay(self, key: str, until: float) -> None:
        old = self.lock_delay_until.get(key)
        self.lock_delay_until[key] = until
        self._record_undo(lambda: self._restore(self.lock_delay_until, key, old))

    # ------------------------------------------------------------- catalog

    def _apply_register(self, index: int, cmd: Command) -> bool:
        self._register(index, cmd["node"], cmd.get("service"), cmd.get("checks") or [],
                       bool(cmd.get("skip_node_update")), float(cmd.get("now") or 0.0))
        return True

    def _register(
        self,
        index: int,
        node_rec: dict[str, Any],
        service_rec: dict[str, Any] | None,
        check_recs: Iterable[dict[str, Any]],
        skip_node_update: bool,
        now: float,
    ) -> None:
        name = node_rec.get("node") or ""
        if not name:
            raise CommandError("Must provide node", 400)
        existing = self.nodes.get(name)
        if existing is None or not skip_node_update:
            if not node_rec.get("address"):
                if existing is None:
                    raise CommandError("Must provide address", 400)
            node = from_record(Node, {"address": "", **node_rec})
            if existing is not None and not node.address:
                node.address = existing.address
            if existing is not None and node.id == "":
                node.id = existing.id
            if existing is None or _differs(existing, node):
                node.create_index = existing.create_index if existing else index
                node.modify_index = index
                self._put_node(node, index)
        if service_rec:
            svc = from_record(ServiceInstance, {"id": "", "service": "", **service_rec, "node": name})
            if not svc.service:
                raise CommandError("Must provide service name", 400)
            if not svc.id:
                svc.id = svc.service
            old = self.services.get(name, {}).get(svc.id)
            if old is None or _differs(old, svc):
                svc.create_index = old.create_index if old else index
                svc.modify_index = index
                self._put_service(svc, index)
                # Service checks carry the service's name and tags; keep them in step.
                for chk in list(self.checks.get(name, {}).values()):
                    if chk.service_id == svc.id and (chk.service_name, chk.service_tags) != (svc.service, svc.tags):
                        updated = copy.copy(chk)
                        updated.service_name, updated.service_tags = svc.service, list(svc.tags)
                        updated.modify_index = index
                        self._put_check(updated, index)
        for rec in check_recs:
            self._ensure_check(index, name, rec, now)

    def _ensure_check(self, index: int, node: str, rec: dict[str, Any], now: float) -> None:
        chk = from_record(HealthCheck, {"check_id": "", "name": "", **rec, "node": node})
        if not chk.check_id:
            chk.check_id = chk.name
        if not chk.check_id:
            raise CommandError("Missing check ID", 400)
        if not chk.status:
            chk.status = CRITICAL
        if chk.status not in ("passing", "warning", "critical"):
            raise CommandError(f"Invalid check status: '{chk.status}'", 400)
        if chk.service_id:
            svc = self.services.get(node, {}).get(chk.service_id)
            if svc is None:
                raise CommandError(f"Unknown service ID '{chk.service_id}' for check ID '{chk.check_id}'", 400)
            chk.service_name, chk.service_tags = svc.service, list(svc.tags)
        else:
            chk.service_name, chk.service_tags = "", []
        old = self.checks.get(node, {}).get(chk.check_id)
        if old is not None and not _differs(old, chk):
            return
        chk.create_index = old.create_index if old else index
        chk.modify_index = index
        self._put_check(chk, index)
        if chk.status == CRITICAL and (old is None or old.status != CRITICAL):
            self._invalidate_sessions_for_check(index, node, chk.check_id, now)

    def _apply_deregister(self, index: int, cmd: Command) -> bool:
        node = cmd.get("node") or ""
        if not node:
            raise CommandError("Must provide node", 400)
        now = float(cmd.get("now") or 0.0)
        service_id = cmd.get("service_id") or ""
        check_id = cmd.get("check_id") or ""
        if service_id:
            self._delete_service(index, node, service_id, now)
        elif check_id:
            if check_id in self.checks.get(node, {}):
                self._del_check(node, check_id, index)
                self._invalidate_sessions_for_check(index, node, check_id, now)
        else:
            self._delete_node(index, node, now)
        return True

    def _delete_service(self, index: int, node: str, service_id: str, now: float) -> None:
        if service_id not in self.services.get(node, {}):
            return
        for chk in [c for c in self.checks.get(node, {}).values() if c.service_id == service_id]:
            self._del_check(node, chk.check_id, index)
            self._invalidate_sessions_for_check(index, node, chk.check_id, now)
        self._del_service(node, service_id, index)

    def _delete_node(self, index: int, node: str, now: float) -> None:
        if node not in self.nodes:
            return
        for sid in list(self.services.get(node, {})):
            self._delete_service(index, node, sid, now)
        for cid in list(self.checks.get(node, {})):
            self._del_check(node, cid, index)
        for sess in [s for s in self.sessions.values() if s.node == node]:
            self._invalidate_session(index, sess.id, now)
        self._del_node(node, index)

    # ------------------------------------------------------------------ KV

    def _apply_kv(self, index: int, cmd: Command) -> Any:
        ok, _ = self._kv_op(index, cmd, float(cmd.get("now") or 0.0))
        return ok

    def _kv_op(self, index: int, op: dict[str, Any], now: float) -> tuple[bool, KVEntry | None]:
        """Run one KV verb; returns (ok, entry for the result list). Raises CommandError on misuse."""
        verb = op.get("verb") or "set"
        key = op.get("key") or ""
        value = op.get("value")
        flags = int(op.get("flags") or 0)
        want = int(op.get("index") or 0)
        session = op.get("session") or ""
        current = self.kv.get(key)
        if verb in ("set", "cas", "lock", "unlock") and not key:
            raise CommandError("Missing key name", 400)
        if verb == "set":
            return True, self._kv_write(index, key, value, flags, current)
        if verb == "cas":
            if (want == 0 and current is not None) or (want != 0 and (current is None or current.modify_index != want)):
                return False, None
            return True, self._kv_write(index, key, value, flags, current)
        if verb == "lock":
            if session not in self.sessions:
                raise CommandError(f"invalid session \"{session}\"", 500)
            if current is not None and current.session and current.session != session:
                return False, None
            if current is None or current.session != session:
                if self.lock_delay_until.get(key, 0.0) > now:
                    return False, None
            entry = self._kv_write(index, key, value, flags, current)
            if current is None or current.session != session:
                entry.lock_index = (current.lock_index if current else 0) + 1
            entry.session = session
            return True, entry
        if verb == "unlock":
            if current is None or current.session != session:
                return False, None
            entry = self._kv_write(index, key, value, flags, current)
            entry.session = ""
            return True, entry
        if verb == "delete":
            if current is not None:
                self._del_kv(key, index)
            return True, None
        if verb == "delete-cas":
            if current is None or current.modify_index != want:
                return False, None
            self._del_kv(key, index)
            return True, None
        if verb == "delete-tree":
            for k in self._prefix_keys(key):
                self._del_kv(k, index)
            return True, None
        raise CommandError(f"unknown KV verb {verb!r}", 400)

    def _kv_write(self, index: int, key: str, value: bytes | None, flags: int, current: KVEntry | None) -> KVEntry:
        entry = KVEntry(
            key=key,
            value=value,
            flags=flags,
            lock_index=current.lock_index if current else 0,
            session=current.session if current else "",
            create_index=current.create_index if current else index,
            modify_index=index,
        )
        self._put_kv(entry, index)
        return entry

    def _prefix_keys(self, prefix: str) -> list[str]:
        i = bisect.bisect_left(self._kv_keys, prefix)
        out: list[str] = []
        keys = self._kv_keys
        while i < len(keys) and keys[i].startswith(prefix):
            out.append(keys[i])
            i += 1
        return out

    # ------------------------------------------------------------- sessions

    def _apply_session_create(self, index: int, cmd: Command) -> str:
        sess = from_record(Session, cmd["session"])
        if sess.node not in self.nodes:
            raise CommandError(f"Missing node registration for node '{sess.node}'", 500)
        node_checks = self.checks.get(sess.node, {})
        for cid in sess.node_checks:
            chk = node_checks.get(cid)
            if chk is None:
                raise CommandError(f"Missing check '{cid}' registration", 500)
            if chk.status == CRITICAL:
                raise CommandError(f"Check '{cid}' is in critical state", 500)
        for sc in sess.service_checks:
            cid = sc.get("ID", "")
            chk = node_checks.get(cid)
            if chk is None:
                raise CommandError(f"Missing check '{cid}' registration", 500)
            if chk.status == CRITICAL:
                raise CommandError(f"Check '{cid}' is in critical state", 500)
        if sess.behavior not in ("release", "delete"):
            raise CommandError(f"Invalid Behavior setting '{sess.behavior}'", 400)
        sess.create_index = sess.modify_index = index
        self._put_session(sess, index)
        return sess.id

    def _apply_session_destroy(self, index: int, cmd: Command) -> bool:
        sid = cmd.get("id") or ""
        if sid in self.sessions:
            self._invalidate_session(index, sid, float(cmd.get("now") or 0.0))
        return True

    def _invalidate_session(self, index: int, session_id: str, now: float) -> None:
        """Destroy a session: release (or delete) its locks and start their lock-delay (session.mdx)."""
        sess = self.sessions.get(session_id)
        if sess is None:
            return
        delay_s = sess.lock_delay_ns / 1e9
        for key in [k for k, e in self.kv.items() if e.session == session_id]:
            entry = self.kv[key]
            if sess.behavior == "delete":
                self._del_kv(key, index)
            else:
                released = copy.copy(entry)
                released.session = ""
                released.modify_index = index
                self._put_kv(released, index)
            if delay_s > 0:
                self._set_lock_delay(key, now + delay_s)
        self._del_session(session_id, index)

    def _invalidate_sessions_for_check(self, index: int, node: str, check_id: str, now: float) -> None:
        for sess in list(self.sessions.values()):
            if sess.node != node:
                continue
            if check_id in sess.node_checks or any(sc.get("ID") == check_id for sc in sess.service_checks):
                self._invalidate_session(index, sess.id, now)

    # ----------------------------------------------------------------- txn

    def _apply_txn(self, index: int, cmd: Command) -> dict[str, Any]:
        now = float(cmd.get("now") or 0.0)
        results: list[dict[str, Any]] = []
        try:
            for i, op in enumerate(cmd.get("ops") or []):
                try:
                    results.extend(self._txn_op(index, op, now))
                except CommandError as err:
                    raise _TxnAbort(i, str(err)) from err
        except _TxnAbort as abort:
            self._rollback()
            return {"results": [], "errors": [{"OpIndex": abort.op_index, "What": abort.what}]}
        return {"results": results, "errors": []}

    def _txn_op(self, index: int, op: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if "kv" in op:
            return self._txn_kv(index, op["kv"], now)
        if "node" in op:
            return self._txn_node(index, op["node"], now)
        if "service" in op:
            return self._txn_service(index, op["service"], now)
        if "check" in op:
            return self._txn_check(index, op["check"], now)
        raise CommandError("unknown operation type", 400)

    def _txn_kv(self, index: int, op: dict[str, Any], now: float) -> list[dict[str, Any]]:
        verb = op.get("verb", "")
        key = op.get("key", "")
        current = self.kv.get(key)
        if verb == "get":
            if current is None:
                raise CommandError(f'key "{key}" doesn\'t exist')
            return [{"kv": current, "with_value": True}]
        if verb == "get-or-empty":
            return [{"kv": current, "with_value": True}] if current is not None else []
        if verb == "get-tree":
            return [{"kv": self.kv[k], "with_value": True} for k in self._prefix_keys(key)]
        if verb == "check-index":
            if current is None:
                raise CommandError(f'key "{key}" doesn\'t exist')
            if current.modify_index != int(op.get("index") or 0):
                raise CommandError(f'current modify index {current.modify_index} != {int(op.get("index") or 0)}')
            return [{"kv": current, "with_value": False}]
        if verb == "check-session":
            if current is None:
                raise CommandError(f'key "{key}" doesn\'t exist')
            if current.session != (op.get("session") or ""):
                raise CommandError(f'current session {current.session!r} != {op.get("session")!r}')
            return [{"kv": current, "with_value": False}]
        if verb == "check-not-exists":
            if current is not None:
                raise CommandError(f'key "{key}" exists')
            return []
        if verb in ("set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree"):
            ok, entry = self._kv_op(index, op, now)
            if not ok:
                if verb in ("cas", "delete-cas"):
                    action = "set" if verb == "cas" else "delete"
                    raise CommandError(f'failed to {action} key "{key}", index is stale')
                if verb == "lock":
                    raise CommandError(f'failed to lock key "{key}", lock is already held')
                raise CommandError(f'failed to unlock key "{key}", lock isn\'t held, or is held by another session')
            return [{"kv": entry, "with_value": False}] if entry is not None else []
        raise CommandError(f"unknown KV verb \"{verb}\"", 400)

    def _txn_node(self, index: int, op: dict[str, Any], now: float) -> list[dict[str, Any]]:
        verb = op.get("verb", "")
        rec = op.get("node") or {}
        name = rec.get("node", "")
        current = self.nodes.get(name)
        if verb == "get":
            if current is None:
                raise CommandError(f'node "{name}" doesn\'t exist')
            return [{"node": current}]
        if verb in ("set", "cas"):
            if verb == "cas" and (current is None or current.modify_index != int(rec.get("modify_index") or 0)):
                raise CommandError(f'failed to set node "{name}", index is stale')
            self._register(index, rec, None, [], False, now)
            return [{"node": self.nodes[name]}]
        if verb in ("delete", "delete-cas"):
            if verb == "delete-cas" and (current is None or current.modify_index != int(rec.get("modify_index") or 0)):
                raise CommandError(f'failed to delete node "{name}", index is stale')
            self._delete_node(index, name, now)
            return []
        raise CommandError(f'unknown Node verb "{verb}"', 400)

    def _txn_service(self, index: int, op: dict[str, Any], now: float) -> list[dict[str, Any]]:
        verb = op.get("verb", "")
        node = op.get("node", "")
        rec = op.get("service") or {}
        sid = rec.get("id") or rec.get("service") or ""
        current = self.services.get(node, {}).get(sid)
        if verb == "get":
            if current is None:
                raise CommandError(f'service "{sid}" on node "{node}" doesn\'t exist')
            return [{"service": current}]
        if node not in self.nodes:
            raise CommandError(f'node "{node}" doesn\'t exist')
        if verb in ("set", "cas"):
            if verb == "cas" and (current is None or current.modify_index != int(rec.get("modify_index") or 0)):
                raise CommandError(f'failed to set service "{sid}" on node "{node}", index is stale')
            self._register(index, {"node": node}, rec, [], True, now)
            return [{"service": self.services[node][sid]}]
        if verb in ("delete", "delete-cas"):
            if verb == "delete-cas" and (current is None or current.modify_index != int(rec.get("modify_index") or 0)):
                raise CommandError(f'failed to delete service "{sid}" on node "{node}", index is stale')
            self._delete_service(index, node, sid, now)
            return []
        raise CommandError(f'unknown Service verb "{verb}"', 400)

    def _txn_check(self, index: int, op: dict[str, Any], now: float) -> list[dict[str, Any]]:
        verb = op.get("verb", "")
        rec = op.get("check") or {}
        node, cid = rec.get("node", ""), rec.get("check_id", "")
        current = self.checks.get(node, {}).get(cid)
        if verb == "get":
            if current is None:
                raise CommandError(f'check "{cid}" on node "{node}" doesn\'t exist')
            return [{"check": current}]
        if node not in self.nodes:
            raise CommandError(f'node "{node}" doesn\'t exist')
        if verb in ("set", "cas"):
            if verb == "cas" and (current is None or current.modify_index != int(rec.get("modify_index") or 0)):
                raise CommandError(f'failed to set check "{cid}" on node "{node}", index is stale')
            self._ensure_check(index, node, rec, now)
            return [{"check": self.checks[node][rec.get("check_id") or rec.get("name", "")]}]
        if verb in ("delete", "delete-cas"):
            if verb == "delete-cas" and (current is None or current.modify_index != int(rec.get("modify_index") or 0)):
                raise CommandError(f'failed to delete check "{cid}" on node "{node}", index is stale')
            if current is not None:
                self._del_check(node, cid, index)
            return []
        raise CommandError(f'unknown Check verb "{verb}"', 400)

    def txn_read(self, op: dict[str, Any]) -> list[dict[str, Any]]:
        """One read-only KV transaction op (get, get-tree, check-*), answered without the log."""
        if op.get("verb") not in _TXN_READ_VERBS:
            raise CommandError(f"{op.get('verb')!r} is not a read operation", 400)
        return self._txn_kv(self.last_index, op, 0.0)

    # --------------------------------------------------------- events, misc

    def _apply_event(self, index: int, cmd: Command) -> bool:
        ev = from_record(UserEvent, cmd["event"])
        self.events.append(ev)
        self._bump("events", index)
        return True

    def _apply_restore(self, index: int, cmd: Command) -> bool:
        """A user snapshot restore, replicated as one command so every server restores the same bytes.

        Every table index moves to this command's index, so no blocking client sees its index go
        backwards (Consul lets them go backwards here and asks clients to cope; moving forward is kinder).
        """
        blob = cmd.get("state")
        if not isinstance(blob, bytes):
            raise CommandError("restore: missing state", 400)
        probe = Store()
        try:
            probe.restore(blob)
        except Exception as err:
            raise CommandError(f"restore: not a ctk state snapshot: {err}", 400) from None
        self.restore(blob)
        self.last_index = index
        for name in list(self.index):
            self.index[name] = index
        for name in ("nodes", "services", "checks", "kvs", "tombstones", "sessions", "events"):
            self.index[name] = index
        self.hub.notify(everything=True)
        return True

    def _apply_tombstone_reap(self, index: int, cmd: Command) -> int:
        upto = int(cmd.get("index") or 0)
        reaped = [k for k, i in self.tombstones.items() if i <= upto]
        for k in reaped:
            del self.tombstones[k]
        if reaped:
            self.epoch += 1
        return len(reaped)

    # ---------------------------------------------------------------- reads

    @staticmethod
    def _nz(index: int) -> int:
        return index if index > 0 else 1

    def table_index(self, *names: str) -> int:
        return self._nz(max((self.index.get(n, 0) for n in names), default=0))

    def service_index(self, name: str) -> int:
        idx = self.index.get("service:" + name)
        return self._nz(idx) if idx is not None else self.table_index("services", "nodes", "checks")

    def all_nodes(self) -> tuple[int, list[Node]]:
        return self.table_index("nodes"), [self.nodes[n] for n in sorted(self.nodes)]

    def service_names(self) -> tuple[int, dict[str, list[str]]]:
        out: dict[str, set[str]] = {}
        for node in sorted(self.services):
            for svc in self.services[node].values():
                out.setdefault(svc.service, set()).update(svc.tags)
        return self.table_index("services"), {k: sorted(v) for k, v in sorted(out.items())}

    def service_nodes(self, name: str, tags: Iterable[str] = ()) -> tuple[int, list[tuple[Node, ServiceInstance]]]:
        wanted = [t.lower() for t in tags]
        out: list[tuple[Node, ServiceInstance]] = []
        for node_name in sorted(self.services):
            node = self.nodes.get(node_name)
            if node is None:
                continue
            for svc in self.services[node_name].values():
                if svc.service != name:
                    continue
                if wanted:
                    have = {t.lower() for t in svc.tags}
                    if not all(t in have for t in wanted):
                        continue
                out.append((node, svc))
        return self.service_index(name), out

    def checks_of_node(self, node: str) -> list[HealthCheck]:
        table = self.checks.get(node, {})
        return [table[c] for c in sorted(table)]

    def health_service(
        self, name: str, tags: Iterable[str] = (), passing_only: bool = False
    ) -> tuple[int, list[tuple[Node, ServiceInstance, list[HealthCheck]]]]:
        index, pairs = self.service_nodes(name, tags)
        out: list[tuple[Node, ServiceInstance, list[HealthCheck]]] = []
        for node, svc in pairs:
            checks = [c for c in self.checks_of_node(node.node) if c.service_id in ("", svc.id)]
            if passing_only and any(c.status != PASSING for c in checks):
                continue
            out.append((node, svc, checks))
        return index, out

    def node_services(self, node: str) -> tuple[int, Node | None, list[ServiceInstance]]:
        n = self.nodes.get(node)
        table = self.services.get(node, {})
        svcs = [table[s] for s in sorted(table)] if n is not None else []
        return self.table_index("nodes", "services"), n, svcs

    def node_checks(self, node: str) -> tuple[int, list[HealthCheck]]:
        return self.table_index("nodes", "checks"), self.checks_of_node(node)

    def service_checks(self, name: str) -> tuple[int, list[HealthCheck]]:
        out: list[HealthCheck] = []
        for node in sorted(self.checks):
            for cid in sorted(self.checks[node]):
                chk = self.checks[node][cid]
                if chk.service_id and chk.service_name == name:
                    out.append(chk)
        return self.service_index(name), out

    def checks_in_state(self, state: str) -> tuple[int, list[HealthCheck]]:
        out: list[HealthCheck] = []
        for node in sorted(self.checks):
            for cid in sorted(self.checks[node]):
                chk = self.checks[node][cid]
                if state == "any" or chk.status == state:
                    out.append(chk)
        return self.table_index("checks"), out

    def kv_get(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self.kv.get(key)
        if entry is not None:
            return self._nz(entry.modify_index), entry
        tomb = self.tombstones.get(key)
        if tomb is not None:
            return self._nz(tomb), None
        return self.table_index("kvs", "tombstones"), None

    def kv_list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        entries = [self.kv[k] for k in self._prefix_keys(prefix)]
        return self._prefix_index(prefix, entries), entries

    def kv_keys(self, prefix: str, separator: str = "") -> tuple[int, list[str]]:
        entries = [self.kv[k] for k in self._prefix_keys(prefix)]
        keys: list[str] = []
        for e in entries:
            if separator:
                rest = e.key[len(prefix):]
                cut = rest.find(separator)
                if cut >= 0:
                    k = prefix + rest[: cut + len(separator)]
                    if not keys or keys[-1] != k:
                        keys.append(k)
                    continue
            keys.append(e.key)
        return self._prefix_index(prefix, entries), keys

    def _prefix_index(self, prefix: str, entries: list[KVEntry]) -> int:
        idx = max((e.modify_index for e in entries), default=0)
        for k, t in self.tombstones.items():
            if t > idx and k.startswith(prefix):
                idx = t
        if idx == 0:
            return self.table_index("kvs", "tombstones")
        return idx

    def session_get(self, session_id: str) -> tuple[int, Session | None]:
        return self.table_index("sessions"), self.sessions.get(session_id)

    def session_list(self, node: str | None = None) -> tuple[int, list[Session]]:
        items = [s for s in self.sessions.values() if node is None or s.node == node]
        items.sort(key=lambda s: s.create_index)
        return self.table_index("sessions"), items

    def event_list(self, name: str = "") -> list[UserEvent]:
        return [e for e in self.events if not name or e.name == name]

    # ----------------------------------------------------- snapshot/restore

    def snapshot(self) -> bytes:
        """The whole state, indexes included, as msgpack bytes (a Raft snapshot's payload)."""
        data = {
            "version": SNAPSHOT_VERSION,
            "last_index": self.last_index,
            "index": self.index,
            "nodes": [to_record(n) for n in self.nodes.values()],
            "services": [to_record(s) for t in self.services.values() for s in t.values()],
            "checks": [to_record(c) for t in self.checks.values() for c in t.values()],
            "kv": [to_record(e) for e in self.kv.values()],
            "tombstones": self.tombstones,
            "sessions": [to_record(s) for s in self.sessions.values()],
            "lock_delay_until": self.lock_delay_until,
            "events": [to_record(e) for e in self.events],
        }
        return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]

    def restore(self, blob: bytes) -> None:
        """Replace the whole state with a snapshot; wakes every watcher (indexes may move)."""
        data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
            raise ValueError("not a ctk state snapshot (unknown version)")
        self._reset()
        self.last_index = int(data["last_index"])
        self.index = {str(k): int(v) for k, v in data["index"].items()}
        for rec in data["nodes"]:
            n = from_record(Node, rec)
            self.nodes[n.node] = n
        for rec in data["services"]:
            s = from_record(ServiceInstance, rec)
            self.services.setdefault(s.node, {})[s.id] = s
        for rec in data["checks"]:
            c = from_record(HealthCheck, rec)
            self.checks.setdefault(c.node, {})[c.check_id] = c
        for rec in data["kv"]:
            e = from_record(KVEntry, rec)
            self.kv[e.key] = e
        self._kv_keys = sorted(self.kv)
        self.tombstones = {str(k): int(v) for k, v in data["tombstones"].items()}
        for rec in data["sessions"]:
            s2 = from_record(Session, rec)
            self.sessions[s2.id] = s2
        self.lock_delay_until = {str(k): float(v) for k, v in data.get("lock_delay_until", {}).items()}
        for rec in data.get("events", []):
            self.events.append(from_record(UserEvent, rec))
        self.hub.notify(everything=True)


def _differs(old: Any, new: Any) -> bool:
    """True when two records differ in anything but their indexes (idempotent writes keep indexes)."""
    a = to_record(old)
    b = to_record(new)
    for k in ("create_index", "modify_index"):
        a.pop(k, None)
        b.pop(k, None)
    return a != b


_TXN_READ_VERBS = frozenset({"get", "get-or-empty", "get-tree", "check-index", "check-session", "check-not-exists"})

_HANDLERS: dict[str, Callable[[Store, int, Command], Any]] = {
    "register": Store._apply_register,
    "deregister": Store._apply_deregister,
    "kv": Store._apply_kv,
    "txn": Store._apply_txn,
    "session_create": Store._apply_session_create,
    "session_destroy": Store._apply_session_destroy,
    "event": Store._apply_event,
    "tombstone_reap": Store._apply_tombstone_reap,
    "restore": Store._apply_restore,
}
