"""Render cost over 1,000 service instances (Go-syntax and Jinja dialects).

The runner re-renders every template on each data change, so the per-render cost bounds how
fast a fleet-wide change can propagate. Prints ms per render; no assertions.

    .venv/bin/python bench/template_render.py [--instances 1000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from templates.dependencies import parse_service  # noqa: E402
from templates.functions import MemoryDataSource  # noqa: E402
from templates.render import Template  # noqa: E402

GO_TEMPLATE = """\
upstream web {
    least_conn;
{{- range service "web" }}
    server {{ .Address }}:{{ .Port }} max_fails=3 fail_timeout=60 weight={{ or (index .ServiceMeta "weight") "1" }}; # {{ .Node }} {{ .Tags | join "," }}
{{- else }}
    server 127.0.0.1:65535; # force a 502
{{- end }}
}
"""

JINJA_TEMPLATE = """\
upstream web {
    least_conn;
{% for s in service("web") %}
    server {{ s.Address }}:{{ s.Port }} max_fails=3 fail_timeout=60 weight={{ s.ServiceMeta.weight or "1" }}; # {{ s.Node }} {{ s.Tags | join(",") }}
{% else %}
    server 127.0.0.1:65535; # force a 502
{% endfor %}
}
"""

FIXTURE = """\
upstream test-cluster {
    ip_hash;
    {{range service "web"}}server {{.Address}}:{{.Port}};
    {{end}}
}
"""


def health_body(n: int) -> list[dict[str, Any]]:
    """A /v1/health/service/web body with ``n`` passing instances."""
    return [
        {
            "Node": {"ID": f"id-{i}", "Node": f"node-{i:04d}", "Address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                     "Datacenter": "dc1", "TaggedAddresses": {}, "Meta": {"rack": f"r{i % 8}"}},
            "Service": {"ID": f"web-{i}", "Service": "web", "Tags": ["prod", f"v{i % 3}"], "Address": "",
                        "Meta": {"weight": str(1 + i % 5)}, "Port": 8000 + i % 100,
                        "Weights": {"Passing": 1, "Warning": 1}},
            "Checks": [{"Node": f"node-{i:04d}", "CheckID": "serfHealth", "Status": "passing"},
                       {"Node": f"node-{i:04d}", "CheckID": f"service:web-{i}", "Status": "passing"}],
        }
        for i in range(n)
    ]  # fmt: skip


def measure(label: str, fn: Any, rounds: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(samples)
    print(f"{label:<44} {med:8.2f} ms/render  (min {min(samples):.2f}, max {max(samples):.2f}, n={rounds})")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()

    dep = parse_service("web")
    body = health_body(args.instances)
    src = MemoryDataSource()
    t0 = time.perf_counter()
    src.set_response(dep, body)
    decode_ms = (time.perf_counter() - t0) * 1000
    print(f"instances: {args.instances}; decode /v1/health/service body once: {decode_ms:.2f} ms")

    go_t = Template(GO_TEMPLATE, syntax="go")
    jinja_t = Template(JINJA_TEMPLATE, syntax="jinja")
    fixture_t = Template(FIXTURE, syntax="go")
    out_go = go_t.render(src)
    out_j = jinja_t.render(src)
    assert out_go.complete and out_go.text == out_j.text, "dialects disagree"
    print(
        f"output: {len(out_go.text.splitlines())} lines, {len(out_go.text)} bytes (identical in both dialects)"
    )

    measure("go: fixture (test-upstream.ctmpl)", lambda: fixture_t.render(src), args.rounds)
    measure("go: upstream with meta/or/index/join", lambda: go_t.render(src), args.rounds)
    measure("jinja: same upstream", lambda: jinja_t.render(src), args.rounds)
    measure(
        "go: parse + render (no template cache)",
        lambda: Template(GO_TEMPLATE, syntax="go").render(src),
        args.rounds,
    )


if __name__ == "__main__":
    main()
