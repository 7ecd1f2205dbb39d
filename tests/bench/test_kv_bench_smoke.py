"""Smoke run of ``bench/kv_bench.py --quick --only ctk``: it starts, prints its sections, stops cleanly.

No timed assertions: the figures are for people to read (DESIGN.md: speed is measured in bench/,
never as timed tests).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.agentproc import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "bench" / "kv_bench.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "ctk", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_quick_ctk_run_prints_every_section() -> None:
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "== KV throughput" in out
    assert "== Blocking-query fan-out" in out
    for op in ("PUT", "GET"):
        for clients in (1, 64):
            line = next(ln for ln in out.splitlines() if ln.startswith(f"KV {op}") and f"clients={clients} " in ln)
            assert "ctk(dev)=" in line and "ctk(durable)=" in line
    assert "fan-out N=50 " in out and "fan-out N=200 " in out
    assert "etcd=" not in out  # --only ctk


@pytest.mark.timeout(300)
def test_quick_json_is_strict_json() -> None:
    proc = _run("--json", "--no-throughput", "--fan-n", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert {r["target"] for r in data["fanout"]} == {"ctk(dev)", "ctk(durable)"}
    assert all(r["n"] == 20 for r in data["fanout"])
