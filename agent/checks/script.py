"""Script checks (``docs/discovery/checks.mdx``, "Script checks"), with process hygiene.

``args`` is executed directly (no shell); the legacy ``script`` string runs via ``/bin/sh -c``. Exit 0 →
passing, 1 → warning, anything else (other codes, death by signal, failure to start) → critical.
stdout and stderr share one pipe read into a tail buffer, so a 10 MB flood costs 4 KiB.

What Consul users were bitten by (consul#1508, #3457, #3565, #3597, PR#3567) and how this module avoids it:

- every run gets its own session and process group (``start_new_session``); on timeout the **whole
  group** is SIGKILLed, so grandchildren (``curl`` without a timeout, ``sleep``) die with the script;
- the group is also SIGKILLed when the script exits normally, so nothing it left in the background keeps
  running (or keeps the output pipe open);
- the kill is sent while the script's own process is still unreaped, so its PID — which is the group
  ID — cannot have been recycled for an unrelated process;
- the script is always reaped (no zombies), and grandchildren re-parented to the agent (when it runs as
  PID 1 in a container, or after ``enable_child_subreaper``) are reaped too; ``run()`` returns only once
  no member of the group is still running (SIGKILL delivery is asynchronous);
- a run never overlaps the previous one: the scheduler awaits ``run()`` to completion.

Processes that escape on purpose (``setsid``, double fork into a new session) are outside the group; the
output pipe is then abandoned after a short grace instead of waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from .output import TailBuffer, captured_output, timeout_output
from .probe import ProbeResult
from .spec import CheckSpec
from .thresholds import CRITICAL, PASSING, WARNING

__all__ = ["ScriptProbe", "enable_child_subreaper", "set_child_subreaper"]

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
_EXIT_AFTER_KILL_S = 5.0  # a SIGKILLed process is gone in ms unless stuck in uninterruptible I/O
_DRAIN_GRACE_S = 0.5  # how long to wait for EOF once every process in the group is dead
_PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper(enabled: bool) -> bool:
    """Make this process (un)collect orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    With it, grandchildren of a killed script are re-parented to the agent and reaped by ``ScriptProbe``
    at once, instead of relying on PID 1 (which, in many containers, never reaps). Process-wide: any
    other orphaned descendant of the agent is re-parented here too and stays a zombie unless someone
    reaps it — so it is opt-in. Returns False where unsupported.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1 if enabled else 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def enable_child_subreaper() -> bool:
    return set_child_subreaper(True)


def _spawn_error(argv: list[str], exc: OSError) -> str:
    # Go's os/exec wording, which is what Consul stores as the output.
    name = argv[0]
    if isinstance(exc, FileNotFoundError) and "/" not in name:
        return f'exec: "{name}": executable file not found in $PATH'
    text = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"fork/exec {name}: {text}"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # a member changed credentials (setuid): nothing more we can do
        log.warning("script check: cannot kill process group %d: %s", pgid, exc)


def _reap_group_now(pgid: int) -> bool:
    """Reap exited members of ``pgid`` that are our children. True when none are left to wait for."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def _group_running(pgid: int) -> bool:
    """True while a live (non-zombie) process of group ``pgid`` exists. Linux ``/proc`` scan; used only
    after a timeout kill, where SIGKILL delivery to grandchildren is asynchronous."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields after "(comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _settle_group(pgid: int, budget_s: float = 2.0) -> None:
    """After the group was SIGKILLed and its leader reaped: reap members that were re-parented to us
    (agent as PID 1 or subreaper) and wait until none is still running — SIGKILL delivery to other
    processes is asynchronous. Cheap in the common case: an empty group answers ESRCH at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while True:
        _reap_group_now(pgid)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        if not _group_running(pgid):
            # Only zombies left: reap those that are ours (some may have died since the reap above);
            # the rest belong to another reaper.
            _reap_group_now(pgid)
            return
        if loop.time() >= deadline:
            log.warning("script check: process group %d still has live members after SIGKILL", pgid)
            return
        await asyncio.sleep(0.01)


class _Watch:
    """Event-loop readiness for the output pipe and for the process exiting (without reaping it)."""

    def __init__(self, proc: subprocess.Popen[bytes], buf: TailBuffer) -> None:
        self.loop = asyncio.get_running_loop()
        self.proc = proc
        self.buf = buf
        self.exited = asyncio.Event()
        self.eof = asyncio.Event()
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.loop.add_reader(self.fd, self._on_output)
        self.pidfd = -1
        self._poller: asyncio.Task[None] | None = None
        try:
            self.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._poller = self.loop.create_task(self._poll_exit())
        else:
            self.loop.add_reader(self.pidfd, self._on_exit)

    def _on_output(self) -> None:
        try:
            data = os.read(self.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.buf.write(data)
            return
        self.loop.remove_reader(self.fd)
        self.eof.set()

    def _on_exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        self.exited.set()

    async def _poll_exit(self) -> None:
        # Without pidfd: observe the exit with WNOWAIT so the process stays unreaped (its PID reserved).
        while True:
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:
                info = None
                self.exited.set()
                return
            if info is not None:
                self.exited.set()
                return
            await asyncio.sleep(0.02)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.fd)
        if self.pidfd >= 0:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1
        if self._poller is not None:
            self._poller.cancel()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ScriptProbe:
    def __init__(self, spec: CheckSpec) -> None:
        if spec.kind != "script":
            raise ValueError("ScriptProbe needs a script check")
        self.spec = spec
        self.last_pid: int | None = None  # for tests and diagnostics

    async def run(self) -> ProbeResult:
        spec = self.spec
        argv = spec.command
        if not argv:
            return ProbeResult(CRITICAL, "exec: no command")
        buf = TailBuffer(spec.output_max_size)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return ProbeResult(CRITICAL, _spawn_error(argv, exc))
        self.last_pid = proc.pid
        pgid = proc.pid  # start_new_session: the script leads its own group
        watch = _Watch(proc, buf)
        reaped = False
        try:
            timed_out = False
            try:
                async with asyncio.timeout(spec.timeout_s):
                    await watch.exited.wait()
            except TimeoutError:
                timed_out = True
            # The leader has exited (unreaped) or overrun: either way nothing of its group may survive.
            _kill_group(pgid)
            if timed_out:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_EXIT_AFTER_KILL_S):
                        await watch.exited.wait()
            returncode = proc.wait() if watch.exited.is_set() else None
            reaped = returncode is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_GRACE_S):
                    await watch.eof.wait()
            await _settle_group(pgid)
            if timed_out:
                log.debug(
                    "script check %s timed out after %ss; process group killed", argv[0], spec.timeout_s
                )
                return ProbeResult(CRITICAL, timeout_output(spec.timeout_s, buf, spec.output_max_size))
            output = captured_output(buf, spec.output_max_size)
            if returncode == 0:
                return ProbeResult(PASSING, output)
            if returncode == 1:
                return ProbeResult(WARNING, output)
            return ProbeResult(CRITICAL, output)
        finally:
            watch.close()
            if not reaped:
                # Cancelled mid-run (check removed, agent stopping) or a process that would not die:
                # kill again and reap synchronously so no zombie is left behind.
                # Never block the loop for long: a SIGKILLed process is normally gone within ms; if it is
                # not, Popen's own cleanup reaps it on a later spawn.
                _kill_group(pgid)
                for _ in range(50):
                    if proc.poll() is not None:
                        break
                    time.sleep(0.002)
                else:
                    log.warning("script check: pid %d did not exit promptly after SIGKILL", proc.pid)
                if proc.returncode is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await _settle_group(pgid, budget_s=1.0)

    async def aclose(self) -> None:
        return None
