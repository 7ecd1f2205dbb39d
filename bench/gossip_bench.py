#!/usr/bin/env python3
"""Gossip failure detection on loopback: SIGKILL one agent, time until every other marks it failed.

Starts N real gossip processes (``python -m agent.gossip``, one free 127.0.0.1 port each, UDP + TCP),
all joining through the first one, waits until every process lists every member alive, lets the
cluster settle, SIGKILLs one random non-seed member and reads each survivor's ``failed`` event.
Times are CLOCK_MONOTONIC (one system-wide clock, so this script and the agents agree). Runs the
LAN defaults (Consul's ``gossip_lan``: 1 s probes, suspicion_mult 4) and the fast preset (``-dev``:
100 ms probes, suspicion_mult 3) for 5 and 20 agents. Every process it starts is stopped by PID
(also on Ctrl-C / SIGTERM; children get PR_SET_PDEATHSIG so a SIGKILLed script leaks nothing).

    .venv/bin/python bench/gossip_bench.py [--quick] [--sizes 5,20] [--presets lan,fast]
                                           [--trials N] [--settle S] [--json]

Printed per (preset, n): median first / all detection over the trials (with min-max), the
theoretical floor (Lifeguard's minimum suspicion timeout, mult × max(1, log10 n) × probe
interval, reached once mult − 2 independent members confirm), and false "failed" events for
members that were never killed: after the kill (``false``, should be 0) and before it (``flaps``:
while the interpreters start, a 2-CPU machine can starve one long enough to be suspected; the member
refutes and is alive again before the measurement starts).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.gossip.config import GossipConfig  # noqa: E402

PRESETS = {"lan": GossipConfig.lan(), "fast": GossipConfig.fast()}
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """Child pre-exec: get SIGTERM if this script dies without cleaning up (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Agent:
    name: str
    proc: subprocess.Popen[bytes]
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    addr: str = ""

    def reader(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events)

    def statuses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ev in self.snapshot():
            if ev.get("ev") == "member":
                out[ev["node"]] = ev["status"]
        return out


def spawn(name: str, preset: str, join: str | None) -> Agent:
    cmd = [sys.executable, "-m", "agent.gossip", "--name", name, "--preset", preset, "--bind", "127.0.0.1:0"]
    if join:
        cmd += ["--join", join, "--retry-interval", "0.5", "--retry-max", "20"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=str(ROOT),
                            preexec_fn=_die_with_parent)
    _LIVE[proc.pid] = proc
    agent = Agent(name, proc)
    threading.Thread(target=agent.reader, daemon=True, name=f"read-{name}").start()
    return agent


def wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.02)


def stop_all() -> None:
    """SIGKILL every process this script started, by PID, and reap it."""
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        _LIVE.pop(pid, None)


@dataclass
class Trial:
    first_s: float
    all_s: float
    false_failed: int
    """"failed" events about live members after the kill."""
    startup_flaps: int
    """... and before it (while 20 interpreters start on a small machine), since refuted."""
    converge_s: float


def trial(preset: str, n: int, settle_s: float, rng: random.Random) -> Trial:
    cfg = PRESETS[preset]
    detect_budget = 30 * cfg.probe_interval_s * max(1.0, math.log10(n)) * cfg.suspicion_mult + 10
    try:
        start = time.monotonic()
        seed = spawn("b0", preset, None)
        wait(lambda: any(e.get("ev") == "ready" for e in seed.snapshot()), 30, "the seed to start")
        seed.addr = next(e["addr"] for e in seed.snapshot() if e.get("ev") == "ready")
        agents = [seed] + [spawn(f"b{i}", preset, seed.addr) for i in range(1, n)]
        names = {a.name for a in agents}

        def converged() -> bool:
            for a in agents:
                st = a.statuses()
                if set(st) != names or any(v != "alive" for v in st.values()):
                    return False
            return True

        wait(converged, 60 + 2 * n, f"{n} agents to converge")
        converge_s = time.monotonic() - start
        time.sleep(settle_s)
        victim = rng.choice(agents[1:])
        survivors = [a for a in agents if a is not victim]
        killed_at = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)

        def failed_at(a: Agent) -> float | None:
            for ev in a.snapshot():
                if ev.get("ev") == "member" and ev["node"] == victim.name and ev["status"] == "failed":
                    return float(ev["t"])
            return None

        wait(lambda: all(failed_at(a) is not None for a in survivors), detect_budget,
             f"every survivor to mark {victim.name} failed")
        times = [t - killed_at for a in survivors if (t := failed_at(a)) is not None]
        false = [float(ev["t"]) for a in survivors for ev in a.snapshot()
                 if ev.get("ev") == "member" and ev["status"] == "failed" and ev["node"] != victim.name]
        return Trial(min(times), max(times), sum(t >= killed_at for t in false), sum(t < killed_at for t in false),
                     converge_s)
    finally:
        stop_all()


def floor_s(cfg: GossipConfig, n: int) -> float:
    return cfg.suspicion_mult * max(1.0, math.log10(n)) * cfg.probe_interval_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one trial each")
    p.add_argument("--sizes", default="5,20")
    p.add_argument("--presets", default="lan,fast")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--settle", type=float, default=None, help="seconds between convergence and the kill")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    trials = 1 if args.quick else args.trials
    sizes = [int(s) for s in args.sizes.split(",")]
    presets = args.presets.split(",")
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results: list[dict[str, Any]] = []
    log(f"# gossip failure detection, loopback, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    try:
        for preset in presets:
            cfg = PRESETS[preset]
            settle = args.settle if args.settle is not None else 3 * cfg.probe_interval_s
            for n in sizes:
                runs: list[Trial] = []
                for i in range(trials):
                    t = trial(preset, n, settle, rng)
                    log(f"  {preset} n={n} trial {i + 1}: first {t.first_s:.2f}s all {t.all_s:.2f}s "
                        f"(converged in {t.converge_s:.1f}s, false failed {t.false_failed}, "
                        f"startup flaps {t.startup_flaps})")
                    runs.append(t)
                results.append({
                    "preset": preset, "n": n, "trials": trials,
                    "first_s": statistics.median(r.first_s for r in runs),
                    "all_s": statistics.median(r.all_s for r in runs),
                    "all_min_s": min(r.all_s for r in runs), "all_max_s": max(r.all_s for r in runs),
                    "floor_s": floor_s(cfg, n),
                    "false_failed": sum(r.false_failed for r in runs),
                    "startup_flaps": sum(r.startup_flaps for r in runs),
                    "probe_interval_s": cfg.probe_interval_s, "suspicion_mult": cfg.suspicion_mult,
                })
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'preset':<6} {'n':>3} {'trials':>6} {'first (med)':>12} {'all (med)':>10} {'all min-max':>13} "
          f"{'floor':>7} {'false':>5} {'flaps':>5}")
    for r in results:
        span = f"{r['all_min_s']:.2f}-{r['all_max_s']:.2f}s"
        print(f"{r['preset']:<6} {r['n']:>3} {r['trials']:>6} {r['first_s']:>11.2f}s {r['all_s']:>9.2f}s "
              f"{span:>13} {r['floor_s']:>6.2f}s {r['false_failed']:>5} {r['startup_flaps']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
