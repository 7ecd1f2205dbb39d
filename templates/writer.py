"""The safe write path: never install a config that fails its check.

consul-template renames the new file over the old one and only then runs the command, so a bad
render (an empty upstream, a typo in KV data) is live before anyone can object
(consul-template#329, #1060, #727). ctk does what confd does, and more:

1. compare bytes with the destination — identical ⇒ nothing is written, nothing runs;
2. stage a temp file **in the destination's directory** (same filesystem ⇒ atomic rename),
   fsync, set mode (explicit ``perms``, else the current file's, else 0644) and owner;
3. run the ``check`` command on the staged file (``nginx -t -c {staged}``); failure ⇒ the
   staged file is removed, the destination is untouched, the check's output is returned;
4. optionally keep the previous file as ``dest.bak`` (hard link, atomically replaced);
5. ``rename`` over the destination and fsync the directory.

``check_mode="after_swap"`` is for fragments that can only be checked in place (a file under
``conf.d/`` that ``nginx -t`` reads through the main config): swap, check, and put the previous
bytes back if the check fails. :func:`rollback` does the same after a failed *reload* command.

Commands run as ``/bin/sh -c`` in their own process group with a timeout (default 30s); on
timeout the whole group gets SIGKILL, so a hung ``reload`` cannot leave children behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import secrets
import shlex
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .dependencies import Dependency, HealthServiceDep
from .errors import WriteError

__all__ = [
    "CommandResult",
    "PreviousFile",
    "WriteOptions",
    "WriteResult",
    "write_output",
    "rollback",
    "run_command",
    "run_command_async",
    "render_command",
    "guard_output",
    "count_service_instances",
    "DEFAULT_COMMAND_TIMEOUT_S",
    "DEFAULT_MODE",
]

DEFAULT_COMMAND_TIMEOUT_S = 30.0
DEFAULT_MODE = 0o644
_MAX_OUTPUT = 64 * 1024
_KILL_GRACE_S = 5.0


# --------------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True)
class CommandResult:
    """What a check or reload command did; ``output`` is stdout+stderr (last 64 KiB)."""

    command: str
    returncode: int | None
    output: str
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Exited 0 within the timeout."""
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """``exit status 1`` / ``timed out after 30s`` / ``killed by signal 9``, for logs."""
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f}s (process group killed)"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


def _decode(out: bytes) -> str:
    if len(out) > _MAX_OUTPUT:
        out = out[-_MAX_OUTPUT:]
    return out.decode("utf-8", "replace")


def _child_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    if env is None:
        return None
    merged = dict(os.environ)
    merged.update(env)
    return merged


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_command(
    command: str,
    *,
    timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """Run ``/bin/sh -c command`` in a new process group; SIGKILL the group on timeout.

    ``env`` is merged over the current environment; ``timeout_s <= 0`` means no limit (unlike
    consul-template, where 0 means "fire and forget": ctk always wants the exit status).
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_child_env(env),
            cwd=cwd,
        )
    except OSError as e:
        return CommandResult(command, None, f"cannot start /bin/sh: {e}", False, 0.0)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout_s if timeout_s > 0 else None)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        try:
            out, _ = proc.communicate(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipe
            proc.kill()
            out = b""
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_KILL_GRACE_S)
    finally:
        if proc.poll() is None:
            _kill_group(proc.pid)
            proc.wait()
    duration = time.monotonic() - start
    return CommandResult(command, None if timed_out else proc.returncode, _decode(out), timed_out, duration)


async def run_command_async(
    command: str,
    *,
    timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """:func:`run_command` for the asyncio runner (does not block the event loop)."""
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_child_env(env),
            cwd=cwd,
        )
    except OSError as e:
        return CommandResult(command, None, f"cannot start /bin/sh: {e}", False, 0.0)
    assert proc.stdout is not None
    stdout = proc.stdout

    async def collect() -> bytes:
        data = await stdout.read()
        await proc.wait()
        return data

    task = asyncio.ensure_future(collect())
    timed_out = False
    try:
        out = await asyncio.wait_for(asyncio.shield(task), timeout_s if timeout_s > 0 else None)
    except TimeoutError:
        timed_out = True
        _kill_group(proc.pid)
        try:
            out = await asyncio.wait_for(task, _KILL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            out = b""
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), _KILL_GRACE_S)
    duration = time.monotonic() - start
    return CommandResult(command, None if timed_out else proc.returncode, _decode(out), timed_out, duration)


_PLACEHOLDERS = ("{staged}", "{src}", "{{.src}}", "{dest}")


def render_command(
    command: str, *, staged: str | os.PathLike[str], destination: str | os.PathLike[str]
) -> str:
    """Substitute ``{staged}`` (alias ``{src}``, confd's ``{{.src}}``) and ``{dest}``, shell-quoted.

    Only these exact placeholders are replaced, so ``${VAR}`` or awk's ``{print}`` survive.
    """
    staged_q = shlex.quote(os.fspath(staged))
    out = command
    for ph in ("{{.src}}", "{staged}", "{src}"):
        out = out.replace(ph, staged_q)
    return out.replace("{dest}", shlex.quote(os.fspath(destination)))


# --------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class WriteOptions:
    """Per-template write settings (consul-template's names where they exist)."""

    perms: int | None = None
    """Mode for the file; ``None`` keeps the current mode (0644 for a new file)."""
    user: str | int | None = None
    group: str | int | None = None
    backup: bool = False
    """Keep the replaced file as ``<dest>.bak`` (one generation)."""
    create_dest_dirs: bool = True
    check: str | None = None
    """Command validating the new content; ``{staged}`` is the file to check."""
    check_mode: Literal["staged", "after_swap"] = "staged"
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class PreviousFile:
    """The destination as it was before a write (what :func:`rollback` puts back)."""

    content: bytes
    mode: int
    uid: int
    gid: int


WriteAction = Literal["unchanged", "written", "check_failed", "restored", "rolled_back"]


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_output` did.

    * ``unchanged``: same bytes on disk; nothing written, no command should run.
    * ``written``: new content is live; run the reload command.
    * ``check_failed``: the staged file failed its check; the destination was not touched.
    * ``restored``: (``after_swap``) the check failed in place and the previous file is back.
    * ``rolled_back``: returned by :func:`rollback`.
    """

    destination: Path
    action: WriteAction
    check: CommandResult | None = None
    backup_path: Path | None = None
    previous: PreviousFile | None = None
    attributes_changed: bool = False
    staged_path: Path | None = field(default=None, compare=False)

    @property
    def changed(self) -> bool:
        """The destination now holds new content."""
        return self.action == "written"


def _resolve_uid(user: str | int | None) -> int | None:
    if user is None or user == "":
        return None
    if isinstance(user, int) or str(user).isdigit():
        return int(user)
    try:
        return pwd.getpwnam(str(user)).pw_uid
    except KeyError:
        raise WriteError(f"unknown user {user!r}") from None


def _resolve_gid(group: str | int | None) -> int | None:
    if group is None or group == "":
        return None
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise WriteError(f"unknown group {group!r}") from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage(
    directory: Path,
    basename: str,
    content: bytes,
    mode: int,
    uid: int | None,
    gid: int | None,
    owner_required: bool = False,
) -> Path:
    """Write ``content`` to a new temp file next to the destination; returns its path.

    Keeping the previous owner is best effort (a non-root ctk cannot chown); an explicitly
    configured ``user``/``group`` that cannot be applied is an error.
    """
    fd, tmp = tempfile.mkstemp(prefix=".ctk-", suffix="." + basename, dir=directory)
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
            if uid is not None or gid is not None:
                try:
                    os.fchown(fh.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
                except PermissionError:
                    if owner_required:
                        raise
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def _make_backup(dest: Path) -> Path:
    """Hard-link the current destination to ``dest.bak`` (atomically replacing the old one)."""
    bak = dest.with_name(dest.name + ".bak")
    for _ in range(10):
        tmp = dest.with_name(f".ctk-bak-{secrets.token_hex(4)}.{dest.name}")
        try:
            os.link(dest, tmp)
        except FileExistsError:
            continue
        except OSError:  # filesystems without hard links: copy instead
            import shutil

            shutil.copy2(dest, tmp)
        os.replace(tmp, bak)
        return bak
    raise WriteError(f"cannot create a backup of {dest}")


def _put_back(dest: Path, previous: PreviousFile | None) -> None:
    """Atomically restore ``previous`` at ``dest`` (or remove ``dest`` if it did not exist)."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        _fsync_dir(dest.parent)
        return
    staged = _stage(dest.parent, dest.name, previous.content, previous.mode, None, None)
    with contextlib.suppress(PermissionError):
        os.chown(staged, previous.uid, previous.gid)
    os.replace(staged, dest)
    _fsync_dir(dest.parent)


def write_output(
    destination: str | os.PathLike[str], content: str | bytes, options: WriteOptions | None = None
) -> WriteResult:
    """Install ``content`` at ``destination`` only if it differs and passes its check.

    Raises :class:`~templates.errors.WriteError` for I/O problems (missing directory with
    ``create_dest_dirs=False``, permission denied, destination is a directory).
    """
    opts = options or WriteOptions()
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    dest = Path(os.path.realpath(os.fspath(destination)))  # follow symlinks: write the target
    uid = _resolve_uid(opts.user)
    gid = _resolve_gid(opts.group)

    previous: PreviousFile | None = None
    try:
        st = os.stat(dest)
        if stat.S_ISDIR(st.st_mode):
            raise WriteError(f"{dest}: is a directory")
        previous = PreviousFile(dest.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    except FileNotFoundError:
        previous = None
    except PermissionError as e:
        raise WriteError(f"cannot read {dest}: {e.strerror}") from None

    mode = opts.perms if opts.perms is not None else (previous.mode if previous else DEFAULT_MODE)
    want_uid = uid if uid is not None else (previous.uid if previous else None)
    want_gid = gid if gid is not None else (previous.gid if previous else None)

    if previous is not None and previous.content == data:
        changed_attrs = False
        try:
            if opts.perms is not None and previous.mode != opts.perms:
                os.chmod(dest, opts.perms)
                changed_attrs = True
            if (uid is not None and uid != previous.uid) or (gid is not None and gid != previous.gid):
                os.chown(dest, -1 if uid is None else uid, -1 if gid is None else gid)
                changed_attrs = True
        except OSError as e:
            raise WriteError(f"cannot set mode/owner of {dest}: {e.strerror}") from None
        return WriteResult(dest, "unchanged", attributes_changed=changed_attrs)

    directory = dest.parent
    if not directory.is_dir():
        if not opts.create_dest_dirs:
            raise WriteError(f"{dest}: parent directory is missing")
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError(f"cannot create {directory}: {e.strerror}") from None

    try:
        staged = _stage(
            directory,
            dest.name,
            data,
            mode,
            want_uid,
            want_gid,
            owner_required=uid is not None or gid is not None,
        )
    except OSError as e:
        raise WriteError(f"cannot stage {dest}: {e.strerror or e}") from None

    check: CommandResult | None = None
    backup_path: Path | None = None
    try:
        if opts.check and opts.check_mode == "staged":
            check = run_command(
                render_command(opts.check, staged=staged, destination=dest),
                timeout_s=opts.command_timeout_s,
                env=opts.env,
                cwd=directory,
            )
            if not check.ok:
                return WriteResult(dest, "check_failed", check=check, previous=previous)
        backup_path = _make_backup(dest) if (opts.backup and previous is not None) else None
        os.replace(staged, dest)
        _fsync_dir(directory)
    except OSError as e:
        raise WriteError(f"cannot install {dest}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()

    if opts.check and opts.check_mode == "after_swap":
        check = run_command(
            render_command(opts.check, staged=dest, destination=dest),
            timeout_s=opts.command_timeout_s,
            env=opts.env,
            cwd=directory,
        )
        if not check.ok:
            try:
                _put_back(dest, previous)
            except OSError as e:
                raise WriteError(
                    f"check failed and {dest} could not be restored: {e.strerror or e}"
                ) from None
            return WriteResult(dest, "restored", check=check, backup_path=backup_path, previous=previous)
        return WriteResult(dest, "written", check=check, backup_path=backup_path, previous=previous)
    return WriteResult(dest, "written", check=check, backup_path=backup_path, previous=previous)


def rollback(result: WriteResult) -> WriteResult:
    """Undo a ``written`` result (e.g. the reload command failed): put the previous file back.

    A destination that did not exist before is removed. Anything but ``written`` is returned
    unchanged.
    """
    if result.action != "written":
        return result
    try:
        _put_back(result.destination, result.previous)
    except OSError as e:
        raise WriteError(f"cannot roll back {result.destination}: {e.strerror or e}") from None
    return WriteResult(
        result.destination, "rolled_back", previous=result.previous, backup_path=result.backup_path
    )


# --------------------------------------------------------------------------------------------
# Guards (the runner decides; these compute the verdict)


def count_service_instances(dependencies: Iterable[Dependency], source: Any) -> int:
    """Total instances across the ``service``/``connect`` dependencies of a render."""
    total = 0
    for dep in dependencies:
        if isinstance(dep, HealthServiceDep):
            value = source.get(dep)
            if isinstance(value, list):
                total += len(value)
    return total


def guard_output(
    text: str,
    *,
    instances: int | None = None,
    min_instances: int = 0,
    allow_empty: bool = True,
) -> str | None:
    """Why this render must not be installed, or ``None`` if it may be.

    ``allow_empty=False`` refuses blank output (Consul answered with nothing after a leader
    change, consul-template#21/#727); ``min_instances`` refuses fewer service instances than
    the floor (the ``minimum N`` guard consul-template rejected in PR#426).
    """
    if not allow_empty and text.strip() == "":
        return "rendered output is empty (allow_empty = false)"
    if min_instances > 0 and instances is not None and instances < min_instances:
        return f"only {instances} service instance(s), below min_instances = {min_instances}"
    return None
