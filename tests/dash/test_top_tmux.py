"""``ctk top`` in a real terminal (tmux), against a real 3-server cluster: SIGKILL the leader and watch.

tmux runs on a private socket (``-L``) named for this test; the test kills exactly that server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agentproc import ROOT
from tests.cluster.cluster import Cluster

TMUX = shutil.which("tmux")
PROMPT = "ctk-test$ "

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux): "
                                                      "ctk top is tested in a real terminal")]


class Tmux:
    """One detached tmux session at a fixed size on a private server socket."""

    def __init__(self, width: int = 160, height: int = 50) -> None:
        self.socket = f"ctk-test-{uuid.uuid4().hex[:12]}"
        self.session = "top"
        self.width, self.height = width, height

    def _run(self, *args: str) -> str:
        assert TMUX is not None
        r = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {r.stderr}")
        return r.stdout

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}
        assert TMUX is not None
        shell = f"env PS1='{PROMPT}' TERM=xterm-256color bash --norc --noprofile"
        subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", self.session,
                        "-x", str(self.width), "-y", str(self.height), shell],
                       check=True, env=env, cwd=ROOT, timeout=10)

    def type(self, text: str) -> None:
        self._run("send-keys", "-t", self.session, "-l", text)

    def key(self, *keys: str) -> None:
        self._run("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", self.session)

    def wait(self, pred: Callable[[str], bool], what: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if pred(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"screen never showed {what} within {timeout_s}s; last screen:\n{text}")

    def kill(self) -> None:
        """End our session and our private server, and remove its socket file."""
        try:
            socket_path = self._run("display-message", "-p", "#{socket_path}").strip()
        except (RuntimeError, subprocess.TimeoutExpired):
            socket_path = ""
        for args in (("kill-session", "-t", self.session), ("kill-server",)):
            try:
                self._run(*args)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        if socket_path and Path(socket_path).name == self.socket:
            Path(socket_path).unlink(missing_ok=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    t.start()
    try:
        yield t
    finally:
        t.kill()


def _server_row(screen: str, address: str) -> str:
    return next((line for line in screen.splitlines() if address in line and ("leader" in line or "follower" in line
                                                                              or "unknown" in line)), "")


def test_top_follows_leader_kill_quorum_loss_and_agent_loss_then_quits_cleanly(tmp_path: Path, tmux: Tmux) -> None:
    with Cluster(tmp_path, 3) as c:
        c.start()
        old = c.wait_leader()
        watch = next(s for s in c.servers if s is not old)
        tmux.wait(lambda s: s.rstrip().endswith(PROMPT.strip()), "the shell prompt", 10)
        tmux.type(f"{sys.executable} -m toolkit.cli.main top --http-addr {watch.addr}; echo CTK-EXIT=$?")
        tmux.key("Enter")
        tmux.wait(lambda s: f"leader {old.name} ({old.server_addr})" in s and "q  quit" in s,
                  f"leader {old.name}")
        screen = tmux.screen()
        assert "Servers" in screen and "Timeline" in screen and "consul" in screen

        old.kill()  # SIGKILL the leader
        new = c.wait_leader(not_addr=old.server_addr)
        screen = tmux.wait(
            lambda s: (f"leader {new.name} ({new.server_addr})" in s and "leader changed:" in s
                       and any(w in _server_row(s, old.server_addr) for w in ("failed", "UNHEALTHY"))),
            f"new leader {new.name}, a 'leader changed' line and {old.name} failed")
        assert f"{old.name} → {new.name}" in screen  # the timeline names both, even across a leaderless gap
        row = _server_row(screen, old.server_addr)
        assert old.name in row and "failed" in row and "UNHEALTHY" in row, row
        assert "leader" in _server_row(screen, new.server_addr)

        tmux.key("3")  # the timeline view
        tmux.wait(lambda s: "Timeline — last" in s and "leader changed:" in s, "the timeline view")
        tmux.key("1")

        third = next(s for s in c.servers if s is not old and s is not watch)
        third.kill()  # quorum lost: the survivor steps down (CheckQuorum) and top shows a leaderless cluster
        tmux.wait(lambda s: "NONE (no cluster leader)" in s and "CRITICAL: no cluster leader" in s,
                  "a leaderless cluster")

        watch.kill()  # the agent top talks to goes away: top keeps running and says so
        tmux.wait(lambda s: f"agent {watch.addr} unreachable, retrying" in s, "agent unreachable")

        tmux.key("q")
        screen = tmux.wait(lambda s: "CTK-EXIT=0" in s, "top exiting with status 0", 15)
        lines = [line for line in screen.splitlines() if line.strip()]
        assert lines[-1].rstrip() == PROMPT.strip(), lines[-3:]  # the shell is back, the screen restored
        assert "╭" not in screen  # the alternate screen is gone
