"""Consul-shaped API answers for the dashboard's pure tests (the shapes HashiCorp Consul returns)."""

from __future__ import annotations

from typing import Any

from toolkit.dash.model import Sources

IDS = {"s1": "11111111-0000-0000-0000-000000000001", "s2": "22222222-0000-0000-0000-000000000002",
       "s3": "33333333-0000-0000-0000-000000000003"}


def addr(name: str) -> str:
    return f"10.0.0.{name[-1]}:8300"


def raft(leader: str = "s1", voters: tuple[str, ...] = ("s1", "s2", "s3")) -> dict[str, Any]:
    return {"Servers": [{"ID": IDS[n], "Node": n, "Address": addr(n), "Leader": n == leader, "Voter": n in voters,
                         "ProtocolVersion": "3"} for n in ("s1", "s2", "s3")], "Index": 1}


def autopilot(leader: str = "s1", failed: tuple[str, ...] = (), index: int = 100,
              lag: dict[str, int] | None = None, unhealthy: tuple[str, ...] = ()) -> dict[str, Any]:
    servers = []
    for n in ("s1", "s2", "s3"):
        dead = n in failed
        servers.append({"ID": IDS[n], "Name": n, "Address": addr(n), "SerfStatus": "failed" if dead else "alive",
                        "Version": "1.17.0", "Leader": n == leader, "LastContact": "0s" if n == leader else "12ms",
                        "LastTerm": 0 if dead else 4, "LastIndex": 0 if dead else index - (lag or {}).get(n, 0),
                        "Healthy": not dead and n not in unhealthy, "Voter": True,
                        "StableSince": "2024-01-01T00:00:00Z"})
    healthy = sum(1 for s in servers if s["Healthy"])
    return {"Healthy": healthy == 3, "FailureTolerance": max(0, healthy - 2), "Servers": servers}


def member(name: str, status: int = 1, role: str = "consul") -> dict[str, Any]:
    tags = {"role": role, "dc": "dc1", "build": "1.17.0:abc"}
    if role == "consul":
        tags["id"] = IDS.get(name, "")
    return {"Name": name, "Addr": f"10.0.0.{name[-1]}", "Port": 8301, "Tags": tags, "Status": status}


def check(node: str, check_id: str, status: str = "passing", service_id: str = "", output: str = "",
          name: str = "") -> dict[str, Any]:
    return {"Node": node, "CheckID": check_id, "Name": name or check_id, "Status": status, "Output": output,
            "ServiceID": service_id, "ServiceName": service_id.split("-")[0] if service_id else ""}


def instance(service: str, sid: str, node: str, port: int = 80) -> dict[str, Any]:
    return {"Node": node, "Address": f"10.0.1.{node[-1]}", "ServiceID": sid, "ServiceName": service,
            "ServiceAddress": "", "ServicePort": port, "ServiceTags": ["v1"]}


def healthy_sources(**over: Any) -> Sources:
    """A healthy 3-server cluster with two clients and services web (2 instances) and db (1)."""
    nodes = ("s1", "s2", "s3", "c1", "c2")
    src = Sources(
        agent="127.0.0.1:8500",
        leader=addr("s1"),
        raft=raft(),
        autopilot=autopilot(),
        agent_self={"Stats": {"raft": {"state": "Leader", "term": "4", "commit_index": "100"}}},
        members=[member("s1"), member("s2"), member("s3"), member("c1", role="node"), member("c2", role="node")],
        services={"consul": [], "web": ["v1"], "db": ["v1"]},
        instances=[instance("consul", "consul", n, 8300) for n in ("s1", "s2", "s3")]
        + [instance("web", "web-1", "c1"), instance("web", "web-2", "c2"), instance("db", "db-1", "c1", 5432)],
        checks=[check(n, "serfHealth") for n in nodes]
        + [check("c1", "web-check", service_id="web-1"), check("c2", "web-check", service_id="web-2"),
           check("c1", "db-check", service_id="db-1")],
    )
    for k, v in over.items():
        setattr(src, k, v)
    return src


def with_check(src: Sources, node: str, check_id: str, status: str, output: str = "") -> Sources:
    assert src.checks is not None
    src.checks = [dict(c, Status=status, Output=output) if (c["Node"], c["CheckID"]) == (node, check_id) else c
                  for c in src.checks]
    return src
