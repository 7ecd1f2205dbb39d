"""The ``ctk template`` loop: data changes → quiescence → render → guard → stage/check/swap → reload.

What it promises an operator (user-asks.md §4, consul-template's pain points):

* **Never a broken or suspicious file.** A render is written only when ``complete`` (no missing
  data); ``guard_output`` refuses empty output (``allow_empty = false``) and fewer than
  ``min_instances`` instances; ``write_output`` runs ``check`` on the staged file (or in place
  with ``check_mode = "after_swap"``) and leaves the old file when it fails. The same rejected
  bytes are not re-checked on every pass (backoff 10s doubling to 10 min), so a churning
  dependency cannot turn a bad template into a check/reload storm.
* **Never exits because something failed.** Render errors, failed checks, failed commands and
  an unreachable agent are each one log line and an entry in the status file; the daemon keeps
  the last good file and carries on. Only SIGINT/SIGTERM stop it (exit 0).
* **One reload per pass.** Commands run after every template of the pass is written, and a
  command shared by several templates runs once (config order), with ``command_timeout``. If
  it fails, every file it covered is put back (:func:`~templates.writer.rollback`) and the
  command is run again so the service is on the restored config; the new content is retried
  later (backoff) or when it changes.
* **Quiescence** (``wait min:max``, global or per template): the first render is immediate;
  afterwards a change to a template's dependencies renders it ``min`` after the last change of
  a burst, and never later than ``max`` after the first. Only the templates whose dependencies
  changed are re-rendered (consul-template re-renders all, ct#168/#171), and an unrelated
  update does not extend a template's timer.
* **Live.** Template source edits are picked up (watchfiles) — a new source that does not parse
  is logged and the running version kept; SIGHUP re-reads the configuration (a bad one is
  logged and the running one kept; the watcher and its data survive, so no re-fetch storm).
* **Observable.** One log line per event; ``status_file`` (JSON, replaced atomically on every
  event) shows per template the last render and write, what it is waiting on, the last error,
  and the number of open long-polls.

``-once`` renders everything once (fetching each dependency once, no long-polls), writes, runs
the commands and returns 0 — or 1 if any template could not be rendered, was refused, failed its
check or its command. A template waiting on a key that does not exist is reported as such at
once instead of hanging (ct#870, #1844); an unreachable agent is given ``once_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from .config import Config, ConfigError, TemplateConfig, WaitConfig
from .dependencies import Dependency, FileDep, KVGetDep, KVListDep
from .errors import TemplateError, TemplateSyntaxError, WriteError
from .functions import MISSING
from .render import RenderResult, Template
from .watcher import Watcher, WatchEvent, base_url
from .writer import (
    CommandResult,
    WriteOptions,
    WriteResult,
    count_service_instances,
    guard_output,
    rollback,
    run_command_async,
    write_output,
)

__all__ = ["Runner", "Quiescence", "TemplateState", "WatcherLike", "load_template"]

log = logging.getLogger("ctk.template")

_REJECT_BACKOFF_BASE_S = 10.0
_REJECT_BACKOFF_MAX_S = 600.0


class WatcherLike(Protocol):
    """What the runner needs from :class:`~templates.watcher.Watcher` (tests pass a fake)."""

    changed: asyncio.Event
    on_change: Callable[[], None] | None
    on_event: Callable[[WatchEvent], None] | None

    def get(self, dep: Dependency) -> Any: ...
    def answered(self, dep: Dependency) -> bool: ...
    def error_of(self, dep: Dependency) -> str | None: ...
    def watch(self, deps: Iterable[Dependency]) -> None: ...
    def take_changes(self) -> set[Dependency]: ...
    def status(self) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...
    @property
    def open_polls(self) -> int: ...


class Quiescence:
    """``wait {min, max}`` for one template; pure (times are passed in), so tests need no clock.

    ``tick(now)`` on every relevant change: fire ``min`` after the last tick, but never later
    than ``max`` after the first tick of the burst.
    """

    def __init__(self, wait: WaitConfig) -> None:
        self.min_s = wait.min_s
        self.max_s = wait.max_s
        self.deadline: float | None = None
        self.fire_at: float | None = None

    def tick(self, now: float) -> float:
        """Record a change at ``now``; returns when the render is due."""
        if self.deadline is None:
            self.deadline = now + self.max_s
        self.fire_at = min(now + self.min_s, self.deadline)
        return self.fire_at

    def due(self, now: float) -> bool:
        """A burst is pending and its time has come."""
        return self.fire_at is not None and now >= self.fire_at

    def reset(self) -> None:
        """The render happened; the next change starts a new burst."""
        self.deadline = None
        self.fire_at = None


@dataclass
class _Rejection:
    text: str
    until: float
    attempts: int
    reason: str


@dataclass
class TemplateState:
    """Runtime state of one template (what the status file reports)."""

    cfg: TemplateConfig
    template: Template | None
    source_text: str | None
    quiescence: Quiescence | None
    deps: frozenset[Dependency] = frozenset()
    dirty: bool = True
    source_changed: bool = False
    completed_once: bool = False
    last_render: float | None = None
    last_write: float | None = None
    last_action: str | None = None
    waiting_on: list[str] = field(default_factory=list)
    missing: frozenset[Dependency] = frozenset()
    last_error: str | None = None
    last_error_at: float | None = None
    rejected: _Rejection | None = None
    retry_at: float | None = None
    printed: str | None = None
    final: RenderResult | None = None  # -once: the complete render to install
    stuck: bool = False  # -once: waiting on data that is known to be absent

    @property
    def label(self) -> str:
        return self.cfg.label()

    def error(self, message: str, level: int = logging.ERROR) -> None:
        """Record and log a failure (one line); repeated identical failures log at debug."""
        lvl = level if message != self.last_error else logging.DEBUG
        self.last_error = message
        self.last_error_at = time.time()
        log.log(lvl, "template %s: %s", self.label, message)

    def clear_error(self) -> None:
        self.last_error = None
        self.last_error_at = None


def load_template(cfg: TemplateConfig) -> tuple[Template, str]:
    """Read and compile a template's source; ``ConfigError`` (one line) if it cannot."""
    where = cfg.origin or cfg.label()
    if cfg.contents is not None:
        text = cfg.contents
    else:
        assert cfg.source is not None
        try:
            text = Path(cfg.source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            sep = ": " if where.startswith("-template") else "."
            reason = getattr(e, "strerror", None) or e
            raise ConfigError(f"{where}{sep}source: cannot read {cfg.source}: {reason}") from None
    try:
        tmpl = Template(
            text,
            syntax=cfg.syntax,
            name=os.path.basename(cfg.source) if cfg.source else "contents",
            path=cfg.source,
            delims=cfg.delims(),
            error_on_missing_key=cfg.error_on_missing_key,
            function_denylist=cfg.function_denylist,
            sandbox_path=cfg.sandbox_path,
        )
    except (TemplateSyntaxError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"{where}: {cfg.source or 'contents'}: {msg}") from None
    return tmpl, text


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def _tail(output: str, lines: int = 3) -> str:
    """The last meaningful lines of a command's output, on one line."""
    kept = [ln.strip() for ln in output.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


def _now() -> float:
    return asyncio.get_running_loop().time()


class Runner:
    """Runs a :class:`~templates.config.Config` until stopped (or once, with ``config.once``).

    ``reload_config`` re-reads the configuration on SIGHUP (the CLI passes a closure over its
    flags); ``watcher`` injects a data source (tests); ``stdout`` receives ``-dry`` output.
    Raises :class:`ConfigError` from the constructor if a template does not parse.
    """

    def __init__(
        self,
        config: Config,
        *,
        reload_config: Callable[[], Config] | None = None,
        watcher: WatcherLike | None = None,
        stdout: IO[str] | None = None,
        json_lines: bool = False,
        dry_to_report: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._reload_config = reload_config
        self._injected_watcher = watcher
        self.watcher: WatcherLike | None = watcher
        self.stdout = stdout or sys.stdout
        self.json_lines = json_lines
        self.dry_to_report = dry_to_report
        self.report: dict[str, Any] | None = None
        self._clock = clock
        self.states = self._build_states(config)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stopping = False
        self._reload_requested = False
        self._source_task: asyncio.Task[None] | None = None
        self._source_stop: asyncio.Event | None = None
        self.started = time.time()
        self.pass_count = 0
        self._pass_done = asyncio.Event()
        self.commands: dict[str, dict[str, Any]] = {}
        self.command_runs: list[str] = []  # every command run, in order (tests, report)
        self._main_task: asyncio.Task[int] | None = None

    # ---------------------------------------------------------------- setup

    def _build_states(self, config: Config) -> list[TemplateState]:
        states = []
        for cfg in config.templates:
            tmpl, text = load_template(cfg)
            wait = None if config.once else config.wait_for(cfg)
            states.append(TemplateState(cfg, tmpl, text, Quiescence(wait) if wait else None))
        return states

    def _make_watcher(self, config: Config) -> WatcherLike:
        return Watcher(
            config.consul_address,
            config.token,
            wait_s=config.block_query_wait_s,
            max_stale_s=config.max_stale_s,
            once=config.once,
        )

    def _attach(self, watcher: WatcherLike) -> None:
        watcher.on_change = self._wake.set
        watcher.on_event = self._on_watch_event

    @property
    def child_env(self) -> dict[str, str]:
        """What commands and checks get on top of ctk's environment (as consul-template does)."""
        env: dict[str, str] = {}
        addr = self.config.consul_address or os.environ.get("CONSUL_HTTP_ADDR")
        if addr:
            env["CONSUL_HTTP_ADDR"] = addr
        if self.config.token:
            env["CONSUL_HTTP_TOKEN"] = self.config.token
        return env

    def _now(self) -> float:
        return self._clock() if self._clock is not None else _now()

    # ---------------------------------------------------------------- control

    def stop(self) -> None:
        """Stop after the current pass (a second call cancels right away)."""
        if self._stopping and self._main_task is not None:
            self._main_task.cancel()
        self._stopping = True
        self._wake.set()

    def request_reload(self) -> None:
        """Re-read the configuration at the next opportunity (SIGHUP)."""
        self._reload_requested = True
        self._wake.set()

    def poke(self) -> None:
        """Wake the loop (tests with a fake clock)."""
        self._wake.set()

    async def wait_for_pass(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``pass_count >= count`` (tests)."""
        async with asyncio.timeout(timeout_s):
            while self.pass_count < count:
                self._pass_done.clear()
                await self._pass_done.wait()

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Until the loop has handled every wake-up and is waiting again (tests)."""
        async with asyncio.timeout(timeout_s):
            while True:
                await self._idle.wait()
                await asyncio.sleep(0)
                if self._idle.is_set() and not self._wake.is_set():
                    return

    @property
    def open_polls(self) -> int:
        """Long-polls currently open against Consul."""
        return self.watcher.open_polls if self.watcher is not None else 0

    async def run(self, *, install_signals: bool = False) -> int:
        """Run until stopped (daemon) or until done (``config.once``); returns the exit code."""
        self._main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            if not self.config.once:
                loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        if self.watcher is None:
            self.watcher = self._make_watcher(self.config)
        self._attach(self.watcher)
        self._write_pid()
        for w in self.config.warnings:
            log.warning("%s", w)
        try:
            if self.config.once:
                return await self._run_once()
            return await self._run_daemon()
        except asyncio.CancelledError:
            log.info("stopped")
            return 0
        finally:
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    with contextlib.suppress(Exception):
                        loop.remove_signal_handler(sig)
            await self._stop_source_watch()
            if self.watcher is not None:
                await self.watcher.close()
            self._write_status(final=True)
            self._remove_pid()

    def _on_stop_signal(self, sig: int) -> None:
        log.info("received %s: stopping", signal.Signals(sig).name)
        self.stop()

    def _on_hup(self) -> None:
        log.info("received SIGHUP: reloading the configuration")
        self.request_reload()

    # ---------------------------------------------------------------- daemon

    async def _run_daemon(self) -> int:
        assert self.watcher is not None
        log.info(
            "ctk template: %d template(s), consul %s, wait %s, max_stale %gs",
            len(self.states),
            base_url(self.config.consul_address),
            self.config.wait.describe() if self.config.wait and self.config.wait.enabled else "off",
            self.config.max_stale_s,
        )
        self._start_source_watch()
        self._write_status()
        while not self._stopping:
            self._wake.clear()
            if self._reload_requested:
                self._reload_requested = False
                await self._reload()
            now = self._now()
            self._apply_source_changes()
            changes = self.watcher.take_changes()
            for st in self.states:
                if changes and st.deps & changes:
                    if st.quiescence is not None and st.completed_once:
                        fire = st.quiescence.tick(now)
                        log.debug("template %s: change; render in %.2fs", st.label, fire - now)
                    else:
                        st.dirty = True
                if st.quiescence is not None and st.quiescence.due(now):
                    st.quiescence.reset()
                    st.dirty = True
                if st.retry_at is not None and now >= st.retry_at:
                    st.retry_at = None
                    st.dirty = True
            todo = [st for st in self.states if st.dirty]
            if todo:
                await self._pass(todo)
            if self._stopping:
                break
            await self._sleep(self._next_deadline())
        log.info("stopping: closing %d long-poll(s)", self.open_polls)
        return 0

    def _next_deadline(self) -> float | None:
        times = []
        for st in self.states:
            if st.quiescence is not None and st.quiescence.fire_at is not None:
                times.append(st.quiescence.fire_at)
            if st.retry_at is not None:
                times.append(st.retry_at)
        return min(times) if times else None

    async def _sleep(self, deadline: float | None) -> None:
        if self._wake.is_set():
            return
        timeout = None if deadline is None else max(0.0, deadline - self._now())
        self._idle.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            self._idle.clear()

    async def _reload(self) -> None:
        if self._reload_config is None:
            log.warning("reload requested but there is no configuration to re-read")
            return
        try:
            new = await asyncio.to_thread(self._reload_config)
            if self.config.once != new.once or self.config.dry != new.dry:
                new = _replace_config(new, once=self.config.once, dry=self.config.dry)
            states = self._build_states(new)
        except ConfigError as e:
            log.error("reload failed, keeping the running configuration: %s", e)
            self._write_status()
            return
        old = self.config
        self.config = new
        watcher_changed = (
            old.consul_address != new.consul_address
            or old.token != new.token
            or old.block_query_wait_s != new.block_query_wait_s
            or old.max_stale_s != new.max_stale_s
        )
        if watcher_changed and self._injected_watcher is None:
            assert self.watcher is not None
            await self.watcher.close()
            self.watcher = self._make_watcher(new)
            self._attach(self.watcher)
        self.states = states
        for w in new.warnings:
            log.warning("%s", w)
        await self._stop_source_watch()
        self._start_source_watch()
        log.info("configuration reloaded: %d template(s)", len(states))
        self._write_status()

    # ---------------------------------------------------------------- source edits

    def _start_source_watch(self) -> None:
        sources = {os.path.realpath(st.cfg.source) for st in self.states if st.cfg.source}
        if not sources:
            return
        self._source_stop = asyncio.Event()
        self._source_task = asyncio.get_running_loop().create_task(
            self._watch_sources(sources, self._source_stop), name="template sources"
        )

    async def _stop_source_watch(self) -> None:
        if self._source_stop is not None:
            self._source_stop.set()
        if self._source_task is not None:
            self._source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._source_task
        self._source_task = None
        self._source_stop = None

    async def _watch_sources(self, sources: set[str], stop: asyncio.Event) -> None:
        import watchfiles

        dirs = sorted({os.path.dirname(p) for p in sources})

        def wanted(_: Any, path: str) -> bool:
            return os.path.realpath(path) in sources

        try:
            async for changes in watchfiles.awatch(
                *dirs, watch_filter=wanted, stop_event=stop, debounce=100, step=20, recursive=False
            ):
                touched = {os.path.realpath(p) for _, p in changes}
                for st in self.states:
                    if st.cfg.source and os.path.realpath(st.cfg.source) in touched:
                        st.source_changed = True
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # inotify limits and the like: say so, keep running
            log.warning("cannot watch template sources for edits (%s); use SIGHUP to reload them", e)

    def _apply_source_changes(self) -> None:
        for st in self.states:
            if not st.source_changed:
                continue
            st.source_changed = False
            try:
                tmpl, text = load_template(st.cfg)
            except ConfigError as e:
                st.error(f"edited source rejected, keeping the previous version: {e}")
                self._write_status()
                continue
            if text == st.source_text:
                continue
            st.template, st.source_text = tmpl, text
            st.rejected = None
            st.retry_at = None
            st.dirty = True
            if st.quiescence is not None:
                st.quiescence.reset()
            log.info("template %s: source %s changed; re-rendering", st.label, st.cfg.source)

    # ---------------------------------------------------------------- events

    def _on_watch_event(self, event: WatchEvent) -> None:
        self._write_status()

    # ---------------------------------------------------------------- one pass

    def _render(self, st: TemplateState) -> RenderResult | None:
        """Render ``st``; ``None`` if it failed or is incomplete (state updated either way)."""
        assert self.watcher is not None
        st.dirty = False
        if st.template is None:
            return None
        try:
            res = st.template.render(self.watcher)
        except TemplateError as e:
            used: frozenset[Dependency] = getattr(e, "dependencies", frozenset())
            missing: frozenset[Dependency] = getattr(e, "missing", frozenset())
            st.deps = st.deps | used  # keep watching what it read, so new data retries it
            message = " ".join(str(e).split())
            if missing:  # most likely caused by the missing data (the empty first pass)
                st.missing = missing
                st.stuck = all(self.watcher.answered(d) for d in missing)
                st.waiting_on = [self._describe_missing(d) for d in sorted(missing)]
                st.last_action = "waiting"
                log.debug(
                    "template %s: render failed while waiting on %s: %s",
                    st.label,
                    ", ".join(st.waiting_on),
                    message,
                )
                if st.stuck:
                    st.error(f"render failed: {message}", logging.WARNING)
                return None
            st.last_action = "render_failed"
            st.error("render failed, keeping the current file: " + message)
            return None
        except Exception as e:  # a bug in a function must not take the daemon down
            st.last_action = "render_failed"
            st.error(f"render failed ({type(e).__name__}), keeping the current file: {e}")
            return None
        st.deps = res.dependencies
        st.missing = res.missing
        st.last_render = time.time()
        if not res.complete:
            waiting = [self._describe_missing(d) for d in sorted(res.missing)]
            st.stuck = all(self.watcher.answered(d) for d in res.missing)
            if waiting != st.waiting_on:
                # the first fetch of a new dependency is routine; absent data or errors are news
                news = any(self.watcher.answered(d) or self.watcher.error_of(d) for d in res.missing)
                log.log(
                    logging.INFO if news else logging.DEBUG,
                    "template %s: waiting on %s",
                    st.label,
                    ", ".join(waiting),
                )
            st.waiting_on = waiting
            st.last_action = "waiting"
            return None
        st.waiting_on = []
        st.stuck = False
        st.completed_once = True
        return res

    def _describe_missing(self, dep: Dependency) -> str:
        assert self.watcher is not None
        value = self.watcher.get(dep)
        if value is MISSING:
            err = self.watcher.error_of(dep)
            if isinstance(dep, FileDep):
                return f"{dep.name()} ({err})" if err else dep.name()
            return f"{dep.name()} (consul: {err})" if err else dep.name()
        if isinstance(dep, KVGetDep) and value is None:
            return f"{dep.name()} (key does not exist)"
        if isinstance(dep, KVListDep) and not value:
            return f"{dep.name()} (empty prefix)"
        return dep.name()

    def _sync_watches(self) -> None:
        assert self.watcher is not None
        wanted: set[Dependency] = set()
        for st in self.states:
            wanted |= st.deps
        self.watcher.watch(wanted)

    async def _pass(self, todo: list[TemplateState]) -> None:
        """Render ``todo``, install what is complete, then run the commands once each."""
        rendered: list[tuple[TemplateState, RenderResult]] = []
        for st in todo:
            res = self._render(st)
            if res is not None:
                rendered.append((st, res))
        self._sync_watches()
        written: list[tuple[TemplateState, WriteResult, str]] = []
        for st, res in rendered:
            if self.config.dry:
                self._print_dry(st, res.text)
                continue
            wr = await self._install(st, res)
            if wr is not None and wr.changed:
                written.append((st, wr, res.text))
        await self._run_commands(written)
        self.pass_count += 1
        self._pass_done.set()
        self._write_status()

    def _print_dry(self, st: TemplateState, text: str) -> None:
        if text == st.printed:
            return
        st.printed = text
        st.last_action = "dry"
        if self.dry_to_report:
            return
        if self.json_lines:
            self.stdout.write(
                json.dumps({"destination": st.cfg.destination, "source": st.cfg.source, "text": text}) + "\n"
            )
        else:
            self.stdout.write(f"> {st.cfg.destination or st.label}\n{text}")
            if text and not text.endswith("\n"):
                self.stdout.write("\n")
        self.stdout.flush()

    def _write_options(self, cfg: TemplateConfig) -> WriteOptions:
        return WriteOptions(
            perms=cfg.perms,
            user=cfg.user,
            group=cfg.group,
            backup=cfg.backup,
            create_dest_dirs=cfg.create_dest_dirs,
            check=cfg.check,
            check_mode=cfg.check_mode,
            command_timeout_s=cfg.command_timeout_s,
            env=self.child_env,
        )

    def _reject(self, st: TemplateState, text: str, reason: str) -> None:
        prev = st.rejected
        attempts = prev.attempts + 1 if prev is not None and prev.text == text else 1
        backoff = min(_REJECT_BACKOFF_MAX_S, _REJECT_BACKOFF_BASE_S * 2 ** (attempts - 1))
        st.rejected = _Rejection(text, self._now() + backoff, attempts, reason)

    async def _install(self, st: TemplateState, res: RenderResult) -> WriteResult | None:
        assert self.watcher is not None
        cfg = st.cfg
        text = res.text
        instances = count_service_instances(res.dependencies, self.watcher) if cfg.min_instances else None
        refusal = guard_output(
            text, instances=instances, min_instances=cfg.min_instances, allow_empty=cfg.allow_empty
        )
        if refusal is not None:
            st.last_action = "refused"
            st.error(f"refused to install: {refusal}; keeping the current file", logging.WARNING)
            return None
        rej = st.rejected
        if rej is not None and rej.text == text and self._now() < rej.until:
            log.debug(
                "template %s: same output as the one rejected (%s); not retried yet", st.label, rej.reason
            )
            return None
        try:
            wr = await asyncio.to_thread(write_output, cfg.destination, text, self._write_options(cfg))
        except WriteError as e:
            st.last_action = "write_failed"
            st.error(f"cannot write: {e}")
            return None
        if wr.action == "unchanged":
            if st.last_action not in ("unchanged", "written"):
                log.info("template %s: %s is up to date", st.label, cfg.destination)
            st.last_action = "unchanged"
            st.rejected = None
            st.clear_error()
            return wr
        if wr.action == "written":
            st.last_action = "written"
            st.last_write = time.time()
            st.rejected = None
            st.clear_error()
            checked = f", check passed in {wr.check.duration_s:.2f}s" if wr.check is not None else ""
            log.info(
                "template %s: wrote %s (%d bytes%s)", st.label, wr.destination, len(text.encode()), checked
            )
            return wr
        assert wr.check is not None
        what = "check failed" if wr.action == "check_failed" else "check failed after the swap"
        kept = (
            "the current file was not touched"
            if wr.action == "check_failed"
            else "the previous file is restored"
        )
        st.last_action = wr.action
        st.error(f"{what} ({wr.check.describe()}): {_tail(wr.check.output) or 'no output'}; {kept}")
        self._reject(st, text, what)
        return wr

    async def _run_commands(self, written: list[tuple[TemplateState, WriteResult, str]]) -> None:
        groups: dict[str, list[tuple[TemplateState, WriteResult, str]]] = {}
        for item in written:
            cmd = item[0].cfg.command
            if cmd:
                groups.setdefault(cmd, []).append(item)
        for cmd, members in groups.items():
            timeout = max(st.cfg.command_timeout_s for st, _, _ in members)
            labels = ", ".join(st.label for st, _, _ in members)
            result = await self._run_command(cmd, timeout)
            if result.ok:
                log.info("command %r ok in %.2fs (for %s)", cmd, result.duration_s, labels)
                continue
            restored = []
            for st, wr, text in members:
                try:
                    await asyncio.to_thread(rollback, wr)
                except WriteError as e:
                    st.error(f"command failed and the previous file could not be restored: {e}")
                    continue
                restored.append(st)
                st.last_action = "rolled_back"
                self._reject(st, text, "reload command failed")
                assert st.rejected is not None
                st.retry_at = st.rejected.until
                st.error(
                    f"command {cmd!r} failed ({result.describe()}): {_tail(result.output) or 'no output'}; "
                    f"previous file restored, new content retried in {st.rejected.until - self._now():.0f}s "
                    "or when it changes"
                )
            if restored:
                again = await self._run_command(cmd, timeout)
                if again.ok:
                    log.info("command %r re-run after restoring %d file(s): ok", cmd, len(restored))
                else:
                    log.error(
                        "command %r re-run after restoring %d file(s) failed too (%s): %s",
                        cmd,
                        len(restored),
                        again.describe(),
                        _tail(again.output) or "no output",
                    )

    async def _run_command(self, cmd: str, timeout_s: float) -> CommandResult:
        result = await run_command_async(cmd, timeout_s=timeout_s, env=self.child_env)
        self.command_runs.append(cmd)
        self.commands[cmd] = {
            "last_run": _iso(time.time()),
            "ok": result.ok,
            "result": "ok" if result.ok else result.describe(),
            "duration_s": round(result.duration_s, 3),
            "output": _tail(result.output, 5),
        }
        return result

    # ---------------------------------------------------------------- once

    async def _run_once(self) -> int:
        assert self.watcher is not None
        deadline = self._now() + self.config.once_timeout_s
        while not self._stopping:
            self._wake.clear()
            self.watcher.take_changes()
            for st in self.states:
                if st.final is None:
                    res = self._render(st)
                    if res is not None:
                        st.final = res
            self._sync_watches()
            pending = [st for st in self.states if st.final is None and st.last_action != "render_failed"]
            if not pending or all(st.stuck for st in pending):
                break
            remaining = deadline - self._now()
            if remaining <= 0:
                break
            await self._sleep(self._now() + remaining)
        if self._stopping:
            log.warning("interrupted before every template was rendered; nothing written")
            self.report = self.status()
            self.report["ok"] = False
            return 1
        for st in self.states:
            if st.final is None and st.last_action == "waiting":
                why = (
                    "blocked on data that does not exist"
                    if st.stuck
                    else (f"timed out after {self.config.once_timeout_s:g}s")
                )
                st.error(f"not rendered: {why}; waiting on {', '.join(st.waiting_on)}")
        written: list[tuple[TemplateState, WriteResult, str]] = []
        ok = all(st.final is not None for st in self.states)
        for st in self.states:
            if st.final is None:
                continue
            if self.config.dry:
                self._print_dry(st, st.final.text)
                continue
            wr = await self._install(st, st.final)
            if wr is None or wr.action not in ("written", "unchanged"):
                ok = False
            elif wr.changed:
                written.append((st, wr, st.final.text))
        await self._run_commands(written)
        if any(st.last_action == "rolled_back" for st in self.states):
            ok = False
        self.pass_count += 1
        self._pass_done.set()
        self.report = self.status()
        self.report["ok"] = ok
        return 0 if ok else 1

    # ---------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """The status file's content (also the ``-once --json`` report)."""
        watcher = self.watcher
        deps = watcher.status() if watcher is not None else []
        return {
            "pid": os.getpid(),
            "updated": _iso(time.time()),
            "started": _iso(self.started),
            "mode": "once" if self.config.once else "daemon",
            "dry": self.config.dry,
            "consul": base_url(self.config.consul_address),
            "open_long_polls": self.open_polls,
            "watched_dependencies": len(deps),
            "failing_dependencies": sum(1 for d in deps if d.get("failing")),
            "templates": [
                {
                    "source": st.cfg.source,
                    "destination": st.cfg.destination,
                    "command": st.cfg.command,
                    "last_render": _iso(st.last_render),
                    "last_write": _iso(st.last_write),
                    "last_action": st.last_action,
                    "waiting_on": [self._describe_missing(d) for d in sorted(st.missing)]
                    if self.watcher is not None
                    else st.waiting_on,
                    "last_error": st.last_error,
                    "last_error_at": _iso(st.last_error_at),
                    "dependencies": sorted(d.name() for d in st.deps),
                    **({"text": st.printed} if self.config.dry else {}),
                    "quiescence": (
                        {
                            "min_s": st.quiescence.min_s,
                            "max_s": st.quiescence.max_s,
                            "pending": st.quiescence.fire_at is not None,
                        }
                        if st.quiescence is not None
                        else None
                    ),
                }
                for st in self.states
            ],
            "dependencies": deps,
            "commands": self.commands,
        }

    def _write_status(self, final: bool = False) -> None:
        path = self.config.status_file
        if not path:
            return
        data = self.status()
        if final:
            data["stopped"] = _iso(time.time())
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, target)
        except OSError as e:
            log.warning("cannot write the status file %s: %s", path, e.strerror or e)

    def _write_pid(self) -> None:
        if self.config.pid_file:
            try:
                Path(self.config.pid_file).write_text(f"{os.getpid()}\n")
            except OSError as e:
                log.warning("cannot write the pid file %s: %s", self.config.pid_file, e.strerror or e)

    def _remove_pid(self) -> None:
        if self.config.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(self.config.pid_file)


def _replace_config(cfg: Config, **changes: Any) -> Config:
    from dataclasses import replace

    return replace(cfg, **changes)
