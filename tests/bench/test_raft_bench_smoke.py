"""Smoke run of ``bench/raft_bench.py --quick --only ctk``: it starts a 3-server cluster, prints its
sections, stops cleanly.

No timed assertions: the figures are for people to read (DESIGN.md: speed is measured in bench/,
never as timed tests).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.agentproc import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "bench" / "raft_bench.py"


@pytest.mark.timeout(300)
def test_quick_ctk_run_prints_every_section() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "ctk"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith("raft_bench:")
    assert "ctk : 3 durable servers" in out and "election timeout" in out
    assert "== KV PUT throughput" in out
    assert "== Leader failover" in out
    for clients, where in ((1, "all members"), (16, "all members"), (64, "all members"), (64, "leader only")):
        line = next(ln for ln in out.splitlines() if ln.startswith("KV PUT") and f"clients={clients} " in ln
                    and where in ln)
        assert "ctk=" in line
    assert "PUT latency p50/p99 ms" in out
    assert "failover ctk" in out and "round 2:" in out
    assert "load average" in out
    assert "etcd=" not in out  # --only ctk
