"""Smoke run of ``bench/template_bench.py --quick``: it starts an agent, prints every section, stops.

No timed assertions (figures are for people); it does check the one number that is a property,
not a speed: open long-polls equal the distinct dependencies.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.agentproc import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_quick_bench_prints_every_section() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "template_bench.py"), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=200)
    assert p.returncode == 0, p.stdout + p.stderr
    for heading in ("== render:", "== change → file", "== open blocking queries:"):
        assert heading in p.stdout
    assert "KV write → file, spaced 150ms" in p.stdout and "TTL flip → file, back-to-back" in p.stdout
    assert "long-polls == distinct dependencies: OK" in p.stdout
