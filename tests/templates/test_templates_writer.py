"""The safe write path: compare, stage, check, swap, back up, restore; commands with timeouts."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from templates.dependencies import parse_service
from templates.errors import WriteError
from templates.render import render
from templates.writer import (
    WriteOptions,
    count_service_instances,
    guard_output,
    render_command,
    rollback,
    run_command,
    run_command_async,
    write_output,
)

from .helpers import health_entry, source
from .test_templates_render import FIXTURE_TEXT


def mode_of(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".ctk-"))


# --------------------------------------------------------------------------------------------
# compare / stage / swap


def test_new_file_gets_0644_regardless_of_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        r = write_output(tmp_path / "a.conf", "hello\n")
    finally:
        os.umask(old)
    assert r.action == "written" and r.changed and r.previous is None
    assert (tmp_path / "a.conf").read_text() == "hello\n"
    assert mode_of(tmp_path / "a.conf") == 0o644
    assert leftovers(tmp_path) == []


def test_identical_bytes_write_nothing_and_skip_the_check(tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    marker = tmp_path / "check-ran"
    opts = WriteOptions(check=f"touch {marker}")
    assert write_output(dest, "same\n", opts).action == "written"
    marker.unlink()
    before = dest.stat()
    r = write_output(dest, b"same\n", opts)
    assert r.action == "unchanged" and not r.changed and r.check is None
    after = dest.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert not marker.exists()


def test_existing_mode_kept_and_perms_override(tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    dest.write_text("old")
    dest.chmod(0o640)
    write_output(dest, "new")
    assert mode_of(dest) == 0o640
    write_output(dest, "newer", WriteOptions(perms=0o600))
    assert mode_of(dest) == 0o600
    r = write_output(dest, "newer", WriteOptions(perms=0o644))  # same bytes, new mode
    assert r.action == "unchanged" and r.attributes_changed and mode_of(dest) == 0o644


def test_owner_preserved(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file another owner")
    dest = tmp_path / "a.conf"
    dest.write_text("old")
    os.chown(dest, 65534, 65534)
    write_output(dest, "new")
    st = dest.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    write_output(dest, "newer", WriteOptions(user=0, group="0"))
    assert (dest.stat().st_uid, dest.stat().st_gid) == (0, 0)


def test_backup_keeps_one_previous_generation(tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    opts = WriteOptions(backup=True)
    r = write_output(dest, "v1", opts)
    assert r.backup_path is None  # nothing to back up yet
    r = write_output(dest, "v2", opts)
    assert r.backup_path == tmp_path / "a.conf.bak"
    assert (tmp_path / "a.conf.bak").read_text() == "v1"
    write_output(dest, "v3", opts)
    assert (tmp_path / "a.conf.bak").read_text() == "v2" and dest.read_text() == "v3"
    assert leftovers(tmp_path) == []


def test_symlinked_destination_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "sites-available" / "site"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "site-link"
    link.symlink_to(target)
    r = write_output(link, "new")
    assert r.destination == target
    assert link.is_symlink() and target.read_text() == "new"


def test_destination_directories(tmp_path: Path) -> None:
    write_output(tmp_path / "x" / "y" / "a.conf", "ok")
    assert (tmp_path / "x" / "y" / "a.conf").read_text() == "ok"
    with pytest.raises(WriteError, match="parent directory is missing"):
        write_output(tmp_path / "nope" / "a.conf", "x", WriteOptions(create_dest_dirs=False))
    with pytest.raises(WriteError, match="is a directory"):
        write_output(tmp_path / "x", "x")


# --------------------------------------------------------------------------------------------
# checks


def test_failed_check_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    dest.write_text("good\n")
    dest.chmod(0o640)
    before = dest.stat()
    check = "grep -q good {staged} || { echo 'config test failed: no good line' >&2; exit 3; }"
    r = write_output(dest, "bad\n", WriteOptions(check=check))
    assert r.action == "check_failed" and not r.changed
    assert r.check is not None and r.check.returncode == 3 and not r.check.ok
    assert "config test failed: no good line" in r.check.output
    assert dest.read_text() == "good\n" and dest.stat().st_ino == before.st_ino and mode_of(dest) == 0o640
    assert leftovers(tmp_path) == []
    r = write_output(dest, "still good\n", WriteOptions(check=check))
    assert r.action == "written" and r.check is not None and r.check.ok


def test_check_sees_the_staged_file_with_the_final_mode(tmp_path: Path) -> None:
    d = tmp_path / "dir with space"
    dest = d / "a.conf"
    r = write_output(
        dest,
        "content",
        WriteOptions(perms=0o600, check='test "$(cat {staged})" = content && stat -c %a {src}'),
    )
    assert r.action == "written" and r.check is not None
    assert r.check.output.strip() == "600"


def test_check_after_swap_restores_previous_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "fragment.conf"
    dest.write_text("listen 80;\n")
    dest.chmod(0o600)
    check = "grep -q listen {dest} || { echo 'fragment broke the main config'; exit 1; }"
    r = write_output(dest, "garbage\n", WriteOptions(check=check, check_mode="after_swap"))
    assert r.action == "restored" and r.check is not None and "fragment broke" in r.check.output
    assert dest.read_text() == "listen 80;\n" and mode_of(dest) == 0o600
    r = write_output(dest, "listen 81;\n", WriteOptions(check=check, check_mode="after_swap"))
    assert r.action == "written" and dest.read_text() == "listen 81;\n"


def test_check_after_swap_removes_a_new_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "new.conf"
    r = write_output(dest, "x", WriteOptions(check="false", check_mode="after_swap"))
    assert r.action == "restored" and not dest.exists()


def test_rollback_after_failed_reload(tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    dest.write_text("v1")
    dest.chmod(0o640)
    r = write_output(dest, "v2")
    assert dest.read_text() == "v2"
    rb = rollback(r)
    assert rb.action == "rolled_back" and dest.read_text() == "v1" and mode_of(dest) == 0o640
    assert rollback(rb) is rb  # nothing to undo twice
    fresh = write_output(tmp_path / "b.conf", "x")
    rollback(fresh)
    assert not (tmp_path / "b.conf").exists()


def test_render_command_quotes_only_known_placeholders() -> None:
    cmd = render_command(
        "nginx -t -c {staged} && echo ${HOME} {dest} {{.src}} awk '{print}'",
        staged="/a b/c",
        destination="/d",
    )
    assert cmd == "nginx -t -c '/a b/c' && echo ${HOME} /d '/a b/c' awk '{print}'"


# --------------------------------------------------------------------------------------------
# commands


def test_run_command_captures_output_and_status(tmp_path: Path) -> None:
    r = run_command("echo out; echo err >&2; exit 7", env={"X": "1"})
    assert r.returncode == 7 and not r.ok and "out" in r.output and "err" in r.output
    assert r.describe() == "exit status 7"
    assert run_command('test "$CTK_X" = yes', env={"CTK_X": "yes"}).ok
    assert run_command("pwd", cwd=tmp_path).output.strip() == str(tmp_path)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    r = run_command(f"sleep 30 & echo $! > {pidfile}; echo started; wait", timeout_s=0.5)
    assert time.monotonic() - start < 10
    assert r.timed_out and r.returncode is None and not r.ok and "timed out" in r.describe()
    assert "started" in r.output
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_async_command_and_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        ok = await run_command_async("echo hi")
        assert ok.ok and ok.output == "hi\n"
        pidfile = tmp_path / "p"
        slow = await run_command_async(f"sleep 30 & echo $! > {pidfile}; wait", timeout_s=0.3)
        assert slow.timed_out
        child = int(pidfile.read_text())
        for _ in range(100):
            if not _alive(child):
                break
            await asyncio.sleep(0.05)
        assert not _alive(child)

    asyncio.run(main())


def test_check_timeout_counts_as_failure(tmp_path: Path) -> None:
    dest = tmp_path / "a.conf"
    dest.write_text("old")
    r = write_output(dest, "new", WriteOptions(check="sleep 10", command_timeout_s=0.3))
    assert r.action == "check_failed" and r.check is not None and r.check.timed_out
    assert dest.read_text() == "old"


# --------------------------------------------------------------------------------------------
# guards


def test_guards() -> None:
    assert guard_output("x") is None
    assert guard_output("  \n", allow_empty=False) == "rendered output is empty (allow_empty = false)"
    assert guard_output("x", instances=1, min_instances=2) is not None
    assert guard_output("x", instances=2, min_instances=2) is None
    src = source({parse_service("test"): [health_entry("n1", "10.0.0.1", 80, service="test")]})
    r = render(FIXTURE_TEXT, src)
    assert count_service_instances(r.dependencies, src) == 1


# --------------------------------------------------------------------------------------------
# real nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install -y nginx; `make debs` does it in CI)"
)

MAIN_CONF = """\
pid {tmp}/nginx.pid;
error_log stderr;
events {{ worker_connections 16; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{body}
    server {{
        listen 127.0.0.1:18080;
        location / {{ proxy_pass http://test-cluster; }}
    }}
}}
"""


def _upstream(instances: list[tuple[str, str, int]]) -> str:
    src = source({parse_service("test"): [health_entry(n, a, p, service="test") for n, a, p in instances]})
    r = render(FIXTURE_TEXT, src, path="test-upstream.ctmpl")
    assert r.complete
    return r.text


def _nginx_check(conf: str) -> str:
    return f"{NGINX} -t -q -e stderr -c {conf}"


@pytest.mark.slow
@needs_nginx
def test_nginx_rejects_the_empty_upstream_and_keeps_the_old_config(tmp_path: Path) -> None:
    dest = tmp_path / "nginx.conf"
    check = _nginx_check("{staged}")
    good = MAIN_CONF.format(
        tmp=tmp_path, body=_upstream([("n1", "10.0.0.1", 8080), ("n2", "10.0.0.2", 8080)])
    )
    r = write_output(dest, good, WriteOptions(check=check))
    assert r.action == "written", r.check.output if r.check else ""
    assert "server 10.0.0.1:8080;" in dest.read_text()

    # All instances gone: the fixture renders an upstream with no servers; nginx -t refuses it.
    empty = MAIN_CONF.format(tmp=tmp_path, body=_upstream([]))
    r = write_output(dest, empty, WriteOptions(check=check))
    assert r.action == "check_failed"
    assert r.check is not None and "no servers are inside upstream" in r.check.output
    assert dest.read_text() == good
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@needs_nginx
def test_nginx_fragment_checked_after_swap_is_restored(tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(MAIN_CONF.format(tmp=tmp_path, body=f"    include {conf_d}/*.conf;"))
    fragment = conf_d / "upstream.conf"
    opts = WriteOptions(check=_nginx_check(str(main)), check_mode="after_swap", backup=True)
    one = _upstream([("n1", "10.0.0.1", 8080)])
    r = write_output(fragment, one, opts)
    assert r.action == "written", r.check.output if r.check else ""

    r = write_output(fragment, _upstream([]), opts)
    assert r.action == "restored"
    assert r.check is not None and "no servers are inside upstream" in r.check.output
    assert fragment.read_text() == one
