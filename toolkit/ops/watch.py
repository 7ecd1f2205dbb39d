"""``consul watch`` semantics: a blocking-query loop that runs a handler when a data view changes.

Layered like the agent's protocols so the rules are testable without a network or a clock:

* :class:`WatchSpec` — the watch flags (``-type key -key k``, ...) → endpoint and query parameters,
  rejecting flags that do not apply, as Consul's ``watch.Parse`` does.
* :class:`WatchCore` — sans-IO: hand it each answer (status, ``X-Consul-Index``, body) or error and
  it returns a :class:`Decision` (fire the handler with this data or not, what to log, how long to
  wait) and the next :class:`Request`. No sockets, no sleeps, no clock: ``now`` is an argument.
* :func:`run_watch` — the thin driver: request → core → handler → sleep, over :mod:`toolkit.client`.
* :func:`run_handler` — runs the handler as ``consul watch`` does: ``$SHELL -c "<args>"`` (or the
  args directly with ``-shell=false``), the data as JSON on stdin, ``CONSUL_INDEX`` in the environment.

The rules :class:`WatchCore` applies (Consul's ``api/watch/plan.go`` and the blocking-query docs):

1. The first successful answer fires — the handler sees the current state at start (for a ``key``
   that does not exist: JSON ``null``, which is what Consul's handler gets too).
2. An answer whose index equals the last one is a spurious wake-up (the wait expired): nothing fires.
3. The index moved but the data is equal (deep ``==``): nothing fires either. A put with the *same*
   value still fires for ``key``/``keyprefix``, because ``ModifyIndex`` is part of the data (Consul
   behaves the same way).
4. An index that went backwards (snapshot restore, rebuilt cluster) makes the next read
   non-blocking (index 0), so the loop is never stuck waiting for an index the agent won't reach.
5. ``event`` watches: the index is a hash of the newest event's ID, not a counter, so it is only
   compared for equality; the handler gets the events whose IDs it has not been given before.
6. Errors back off 1 s doubling to 30 s, with one log line each; the next read is non-blocking and
   the last data is kept, so reconnecting to an unchanged agent fires nothing. Before the first
   answer, an unreachable agent or a 4xx (bad filter, ACL denied) is fatal instead — Consul's CLI
   checks the agent up front for the same reason: a typo should fail, not retry forever.
7. A token bucket (burst 5, 10 requests/s) caps the loop in case something between ctk and the
   agent strips ``X-Consul-Index`` and every "blocking" read returns at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from toolkit.client import ConsulError, Response, kv_path

__all__ = ["TYPES", "WatchError", "WatchSpec", "Request", "Decision", "WatchCore", "run_watch",
           "run_handler", "handler_input", "parse_bool"]

TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")
CHECK_STATES = ("any", "passing", "warning", "critical")
WAIT_S = 300.0  # Consul's default_query_time; the agent caps it at max_query_time anyway
_SLACK_S = 10.0  # client timeout on top of wait + wait/16 (the server's jitter)
_EVENTS_REMEMBERED = 1024  # the agent keeps its last 256 events; IDs older than this cannot reappear


class WatchError(Exception):
    """A watch that cannot run (bad flags, unreachable agent at start, a 4xx): one line for the user."""


def parse_bool(value: str) -> bool:
    """Go's ``strconv.ParseBool``, which Consul uses for ``-passingonly`` and ``-shell``."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid syntax: {value!r}")


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    params: dict[str, str | list[str]]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """What to watch: Consul's watch type plus the endpoint and query that implement it."""

    type: str
    path: str
    params: dict[str, str | list[str]] = field(default_factory=dict)

    @property
    def is_event(self) -> bool:
        return self.type == "event"

    @property
    def is_kv(self) -> bool:
        return self.type in ("key", "keyprefix")

    @classmethod
    def parse(cls, type: str, *, key: str = "", prefix: str = "", service: str = "",
              tag: Sequence[str] = (), passingonly: bool | None = None, state: str = "", name: str = "",
              datacenter: str = "", stale: bool = False, filter: str = "") -> WatchSpec:
        """Build the spec, or raise :class:`WatchError` naming the flag that is missing or misplaced."""
        if not type:
            raise WatchError("Watch type must be specified (-type: one of " + ", ".join(TYPES) + ")")
        if type not in TYPES:
            raise WatchError(f"Unsupported watch type: {type} (one of {', '.join(TYPES)})")
        given = {"key": bool(key), "prefix": bool(prefix), "service": bool(service), "tag": bool(tag),
                 "passingonly": passingonly is not None, "state": bool(state), "name": bool(name),
                 "filter": bool(filter), "stale": stale}
        allowed = {
            "key": {"key", "stale"},
            "keyprefix": {"prefix", "stale"},
            "services": {"stale", "filter"},
            "nodes": {"stale", "filter"},
            "service": {"service", "tag", "passingonly", "stale", "filter"},
            "checks": {"service", "state", "tag", "stale", "filter"},
            "event": {"name"},
        }[type]
        misplaced = sorted(f"-{flag}" for flag, on in given.items() if on and flag not in allowed)
        if misplaced:
            raise WatchError(f"{', '.join(misplaced)} cannot be used with -type {type}")
        params: dict[str, str | list[str]] = {}
        if datacenter:
            params["dc"] = datacenter
        if stale:
            params["stale"] = ""
        if filter:
            params["filter"] = filter
        if type == "key":
            if not key:
                raise WatchError("Must specify a single key to watch (-key)")
            return cls(type, _kv_path("-key", key), params)
        if type == "keyprefix":
            if not prefix:
                raise WatchError("Must specify a single prefix to watch (-prefix)")
            return cls(type, _kv_path("-prefix", prefix), {**params, "recurse": ""})
        if type == "services":
            return cls(type, "/v1/catalog/services", params)
        if type == "nodes":
            return cls(type, "/v1/catalog/nodes", params)
        if type == "service":
            if not service:
                raise WatchError("Must specify a single service to watch (-service)")
            if tag:
                params["tag"] = list(tag)
            if passingonly:
                params["passing"] = "1"
            return cls(type, f"/v1/health/service/{quote(service, safe='')}", params)
        if type == "checks":
            if service and state:
                raise WatchError("Cannot specify service and state (-service, -state)")
            if service:
                if tag:
                    raise WatchError("-tag applies to -state checks watches, not -service")
                return cls(type, f"/v1/health/checks/{quote(service, safe='')}", params)
            state = state or "any"
            if state not in CHECK_STATES:
                raise WatchError(f"-state must be one of {', '.join(CHECK_STATES)}, not {state!r}")
            if tag:
                params["tag"] = list(tag)
            return cls(type, f"/v1/health/state/{state}", params)
        if name:
            params["name"] = name
        return cls(type, "/v1/event/list", params)


def _kv_path(flag: str, key: str) -> str:
    try:
        return kv_path(key.lstrip("/"))
    except ValueError as err:
        raise WatchError(f"{flag} {err}") from None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one answer. ``fire``: run the handler with ``data`` and ``CONSUL_INDEX=index``.

    ``message`` is one line for stderr (``None``: stay quiet); ``fatal`` means stop with that message;
    ``delay_s`` is how long to wait before the next request (backoff or rate limit).
    """

    fire: bool = False
    data: Any = None
    index: int = 0
    delay_s: float = 0.0
    message: str | None = None
    fatal: bool = False


class WatchCore:
    """The watch's state machine: answers in, :class:`Decision` out (see the module docstring's rules).

    Single-threaded and pure: the driver calls :meth:`request`, performs it, then exactly one of
    :meth:`on_response` / :meth:`on_error`, and acts on the decision before asking for the next request.
    """

    def __init__(self, spec: WatchSpec, *, wait_s: float = WAIT_S, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 30.0, rate_per_s: float = 10.0, burst: int = 5) -> None:
        self.spec = spec
        self.wait_s = wait_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.next_index = 0  # ?index= for the next request; 0 = answer at once
        self.last_index: int | None = None  # index of the last good answer
        self.last_data: Any = None
        self.fired = False
        self.failures = 0
        self._seen_ids: dict[str, None] = {}  # event IDs already handed to the handler (ordered set)
        self._tokens = float(burst)
        self._refilled_at: float | None = None

    def request(self) -> Request:
        params = dict(self.spec.params)
        timeout_s = _SLACK_S
        if self.next_index:
            params["index"] = str(self.next_index)
            params["wait"] = f"{int(self.wait_s * 1000)}ms"
            timeout_s += self.wait_s * (1 + 1 / 16)
        return Request(self.spec.path, params, timeout_s)

    def on_error(self, message: str, status: int = 0) -> Decision:
        """A request that failed: ``status`` 0 for no HTTP answer, else the HTTP status."""
        if not self.fired and (status == 0 or 400 <= status < 500):
            return Decision(message=message, fatal=True)
        self.failures += 1
        self.next_index = 0  # a restarted agent's index may have restarted low
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(self.failures - 1, 30))
        return Decision(delay_s=delay, message=f"watch: {message}; retrying in {delay:g}s")

    def on_response(self, status: int, index: int, body: bytes, now: float) -> Decision:
        """One HTTP answer. ``now`` is any monotonic clock reading (seconds), for the rate limit."""
        if status == 404 and self.spec.is_kv:
            data: Any = None  # a missing key / empty prefix is data: Consul hands the handler null
        elif status == 200:
            try:
                data = json.loads(body) if body.strip() else None
            except ValueError:
                return self.on_error("the agent's answer is not JSON", status)
            if self.spec.type == "key" and isinstance(data, list):
                data = data[0] if data else None  # GET /v1/kv/k is a one-element list; Consul passes the pair
        else:
            text = body.decode(errors="replace").strip()
            return self.on_error(f"Unexpected response code: {status} ({text})" if text
                                 else f"Unexpected response code: {status}", status)
        recovered = self.failures > 0
        self.failures = 0
        delay = self._take_token(now)
        message = "watch: agent answering again" if recovered else None
        if self.spec.is_event:
            return self._on_events(index, data, delay, message)
        return self._on_data(index, data, delay, message)

    def _on_data(self, index: int, data: Any, delay: float, message: str | None) -> Decision:
        previous = self.last_index
        if previous is not None and index < previous:
            self.next_index = 0  # went backwards: re-read without blocking, then resume from there
        else:
            self.next_index = max(index, 1)
        if previous is not None and index == previous:
            return Decision(delay_s=delay, message=message)  # spurious wake-up (wait expired)
        self.last_index = index
        if self.fired and data == self.last_data:
            return Decision(delay_s=delay, message=message)  # woke up, but this view did not change
        self.last_data = data
        self.fired = True
        return Decision(fire=True, data=data, index=index, delay_s=delay, message=message)

    def _on_events(self, index: int, data: Any, delay: float, message: str | None) -> Decision:
        # The event-list index is a hash (XOR of the newest event ID's halves): equality is all it means.
        self.next_index = max(index, 1)
        if self.last_index is not None and index == self.last_index:
            return Decision(delay_s=delay, message=message)
        self.last_index = index
        events = [e for e in (data or []) if isinstance(e, dict)]
        new = [e for e in events if str(e.get("ID", "")) not in self._seen_ids]
        for e in new:
            self._seen_ids[str(e.get("ID", ""))] = None
        while len(self._seen_ids) > _EVENTS_REMEMBERED:
            del self._seen_ids[next(iter(self._seen_ids))]
        if self.fired and not new:
            return Decision(delay_s=delay, message=message)  # another name's event moved the index
        self.fired = True
        self.last_data = new
        return Decision(fire=True, data=new, index=index, delay_s=delay, message=message)

    def _take_token(self, now: float) -> float:
        """Token bucket: returns how long to wait before the next request (0 while under the rate)."""
        if self._refilled_at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._refilled_at) * self.rate_per_s)
        self._refilled_at = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate_per_s


class Requester(Protocol):
    """The slice of :class:`toolkit.client.ConsulClient` the driver uses (tests pass a fake)."""

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = ...,
                ok: tuple[int, ...] = ..., timeout_s: float | None = ...) -> Response: ...


def run_watch(core: WatchCore, client: Requester, on_change: Callable[[int, Any], bool], *,
              log: Callable[[str], None], sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Loop until ``on_change(index, data)`` returns False; raises :class:`WatchError` when fatal.

    Stopping on a signal is the caller's business: KeyboardInterrupt (or whatever its SIGTERM handler
    raises) propagates out of the blocking request or the sleep.
    """
    while True:
        req = core.request()
        try:
            r = client.request("GET", req.path, params=req.params, ok=(200, 404), timeout_s=req.timeout_s)
        except ConsulError as err:
            decision = core.on_error(str(err), err.status)
        else:
            decision = core.on_response(r.status, r.index, r.body, clock())
        if decision.message:
            if decision.fatal:
                raise WatchError(decision.message)
            log(decision.message)
        if decision.fire and not on_change(decision.index, decision.data):
            return
        if decision.delay_s > 0:
            sleep(decision.delay_s)


def handler_input(data: Any) -> bytes:
    """The handler's stdin: compact JSON plus a newline, as Go's ``json.Encoder`` writes it."""
    return (json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def run_handler(args: Sequence[str], data: Any, index: int, *, shell: bool = True,
                stop_grace_s: float = 5.0) -> int:
    """Run the handler once and return its exit status; raises :class:`WatchError` if it cannot start.

    With ``shell`` the args are joined with spaces and run by ``$SHELL -c`` (``/bin/sh`` when unset),
    as ``consul watch`` does. The handler shares ctk's stdout and stderr. If ctk is interrupted while
    the handler runs, the handler gets SIGTERM (then SIGKILL after ``stop_grace_s``), not an orphaning.
    """
    argv = [os.environ.get("SHELL") or "/bin/sh", "-c", " ".join(args)] if shell else list(args)
    env = {**os.environ, "CONSUL_INDEX": str(index)}
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env)
    except OSError as err:
        raise WatchError(f"Error starting handler {argv[0]!r}: {err.strerror or err}") from None
    try:
        proc.communicate(handler_input(data))  # a handler that never reads stdin is fine (no EPIPE)
    except BaseException:
        proc.terminate()
        try:
            proc.wait(stop_grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return proc.returncode
