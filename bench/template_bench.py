"""``ctk template`` figures: render cost, change-to-file latency, and how many long-polls it holds.

    .venv/bin/python bench/template_bench.py [--changes 50] [--templates 50] [--quick]

1. **Render** — ms per render of an upstream template over 1,000 instances (the numbers of
   ``bench/template_render.py``, whose bodies and templates are reused).
2. **Change → file** — a real ``ctk agent -dev`` and a real ``ctk template`` daemon (wait off):
   N times, write a KV key / flip a TTL check and time until the destination file holds the new
   content (CLOCK_MONOTONIC, file polled every 0.5 ms). p50/p99/max, for changes 150ms apart
   (independent events) and back-to-back (where the per-dependency rate limit shows).
3. **Long-polls** — M templates over 3 distinct dependencies, through a small proxy that counts
   the blocking requests the agent is serving; the count must equal the distinct dependencies
   (and the runner's own ``open_long_polls``).

Prints figures only; nothing here is a pass/fail test (tests/templates has a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
from aiohttp import web

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import template_render  # noqa: E402  (sibling script: same bodies and templates)

from templates.config import Config, TemplateConfig  # noqa: E402
from templates.dependencies import parse_service  # noqa: E402
from templates.functions import MemoryDataSource  # noqa: E402
from templates.render import Template  # noqa: E402
from templates.runner import Runner  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@contextlib.contextmanager
def agent_process(workdir: Path) -> Iterator[str]:
    """A real ``ctk agent -dev`` on a free 127.0.0.1 port; stopped by PID."""
    port = free_port()
    log = (workdir / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli.main", "agent", "-dev", "-node", "bench", "-client", "127.0.0.1",
         "-http-port", str(port), "-dns-port", "-1", "-log-level", "warn"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited: {(workdir / 'agent.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v1/status/leader", timeout=0.5).json():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # it waits for open long-polls; do not wait 60s for them
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------------------- 1. render


def bench_render(instances: int, rounds: int) -> None:
    print(f"\n== render: one template over {instances} instances ==")
    dep = parse_service("web")
    src = MemoryDataSource()
    src.set_response(dep, template_render.health_body(instances))
    go_t = Template(template_render.GO_TEMPLATE, syntax="go")
    jinja_t = Template(template_render.JINJA_TEMPLATE, syntax="jinja")
    fixture_t = Template(template_render.FIXTURE, syntax="go")
    template_render.measure("go: fixture (test-upstream.ctmpl)", lambda: fixture_t.render(src), rounds)
    template_render.measure("go: upstream with meta/or/index/join", lambda: go_t.render(src), rounds)
    template_render.measure("jinja: same upstream", lambda: jinja_t.render(src), rounds)


# ---------------------------------------------------------------------------- 2. latency


def wait_file(path: Path, want: str, timeout_s: float = 30) -> float:
    """Monotonic time at which ``path`` first holds ``want`` (polled every 0.5 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if path.read_text() == want:
                return time.monotonic()
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never became {want!r}")
        time.sleep(0.0005)


def bench_latency(addr: str, workdir: Path, changes: int) -> None:
    print(f"\n== change → file (real agent, real `ctk template` daemon, wait off, N={changes}) ==")
    base = f"http://{addr}"
    http = httpx.Client(base_url=base)
    http.put("/v1/kv/bench/k", content=b"init")
    body = {"Name": "lat", "ID": "lat-1", "Address": "127.0.0.1", "Port": 9, "Check": {"TTL": "600s"}}
    http.put("/v1/agent/service/register", json=body).raise_for_status()
    http.put("/v1/agent/check/pass/service:lat-1").raise_for_status()
    (workdir / "kv.ctmpl").write_text('{{ key "bench/k" }}')
    (workdir / "ttl.ctmpl").write_text('{{ range service "lat" }}{{ .ID }}{{ end }}|')
    kv_out, ttl_out = workdir / "kv.out", workdir / "ttl.out"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli.main", "template", "-consul-addr", addr, "-log-level", "warn",
         f"{workdir}/kv.ctmpl:{kv_out}", f"{workdir}/ttl.ctmpl:{ttl_out}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(workdir / "ctk-template.log").open("wb"),
    )
    results: dict[str, list[float]] = {}
    try:
        wait_file(kv_out, "init")
        wait_file(ttl_out, "lat-1|")
        time.sleep(0.5)  # let both long-polls settle
        for spacing, tag in ((0.15, "spaced 150ms"), (0.0, "back-to-back")):
            kv_ms: list[float] = []
            for i in range(changes):
                time.sleep(spacing)
                value = f"{tag}-{i}"
                t0 = time.monotonic()
                http.put("/v1/kv/bench/k", content=value.encode()).raise_for_status()
                kv_ms.append((wait_file(kv_out, value) - t0) * 1000)
            results[f"KV write → file, {tag}"] = kv_ms
            ttl_ms: list[float] = []
            healthy = True
            for _ in range(changes):
                time.sleep(spacing)
                healthy = not healthy
                t0 = time.monotonic()
                http.put(f"/v1/agent/check/{'pass' if healthy else 'fail'}/service:lat-1").raise_for_status()
                ttl_ms.append((wait_file(ttl_out, "lat-1|" if healthy else "|") - t0) * 1000)
            results[f"TTL flip → file, {tag}"] = ttl_ms
            time.sleep(0.6)  # refill the per-dependency token bucket between series
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        http.close()
    for label, samples in results.items():
        print(f"{label:<34} p50 {statistics.median(samples):7.2f} ms   p99 {pct(samples, 0.99):7.2f} ms   "
              f"max {max(samples):7.2f} ms   (n={len(samples)})")
    print("(back-to-back: each dependency's loop is rate-limited to a burst of 5, then 10 fetches/s,\n"
          " like consul-template's 100ms spacing, so a key rewritten continuously costs ≤10 renders/s)")


# ---------------------------------------------------------------------------- 3. long-polls


async def bench_long_polls(addr: str, workdir: Path, n_templates: int) -> None:
    print(f"\n== open blocking queries: {n_templates} templates sharing dependencies ==")
    base = f"http://{addr}"
    async with aiohttp.ClientSession() as s:
        await s.put(base + "/v1/kv/shared/a", data=b"1")
        await s.put(base + "/v1/kv/shared/list/x", data=b"2")
        body = {"Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": 80}
        await s.put(base + "/v1/agent/service/register", json=body)

    open_: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.StreamResponse:
        blocking = "index" in request.query
        if blocking:
            open_[request.path] += 1
            peak[request.path] = max(peak[request.path], open_[request.path])
        try:
            async with session.get(base + request.path_qs) as r:
                data = await r.read()
                headers = {k: v for k, v in r.headers.items() if k.lower().startswith("x-consul")}
                return web.Response(body=data, status=r.status, headers=headers, content_type=r.content_type)
        finally:
            if blocking:
                open_[request.path] -= 1

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner_web = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
    await runner_web.setup()
    site = web.TCPSite(runner_web, "127.0.0.1", 0)
    await site.start()
    proxy = f"127.0.0.1:{runner_web.addresses[0][1]}"

    bodies = [
        '{{ range service "web" }}{{ .Address }}{{ end }}',
        '{{ key "shared/a" }}',
        '{{ range ls "shared/list" }}{{ .Key }}{{ end }}',
    ]
    templates = tuple(
        TemplateConfig(contents=bodies[i % 3] + ("\n" + bodies[(i + 1) % 3] if i % 2 else ""),
                       destination=str(workdir / f"lp{i:03d}.out"), origin=f"t{i}")
        for i in range(n_templates)
    )
    runner = Runner(Config(consul_address=proxy, block_query_wait_s=10, templates=templates))
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + 30
        while not (all((workdir / f"lp{i:03d}.out").exists() for i in range(n_templates))
                   and runner.open_polls == 3 and sum(open_.values()) == 3):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        distinct = len({d for st in runner.states for d in st.deps})
        print(f"templates: {n_templates}; distinct dependencies: {distinct}")
        print(f"open long-polls, runner's count:            {runner.open_polls}")
        print(f"open long-polls, seen by the agent (proxy): {sum(open_.values())}  "
              f"({', '.join(f'{p} ×{c}' for p, c in sorted(open_.items()) if c)})")
        print(f"peak concurrent blocking requests per path: {max(peak.values()) if peak else 0}")
        verdict = "OK" if runner.open_polls == distinct == sum(open_.values()) else "MISMATCH"
        print(f"long-polls == distinct dependencies: {verdict}")
    finally:
        runner.stop()
        await asyncio.wait_for(task, 15)
        await session.close()
        await runner_web.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=50, help="changes per latency series (N)")
    ap.add_argument("--templates", type=int, default=50, help="templates in the long-poll section")
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="small N everywhere (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.changes, args.rounds, args.templates = 5, 3, 12
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    bench_render(args.instances, args.rounds)
    with tempfile.TemporaryDirectory(prefix="ctk-template-bench-") as tmp:
        work = Path(tmp)
        with agent_process(work) as addr:
            bench_latency(addr, work, args.changes)
            asyncio.run(bench_long_polls(addr, work, args.templates))
    print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
