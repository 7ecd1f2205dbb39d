"""3 servers + 2 client agents as real processes on loopback (issue 5's "done when").

Client agents keep no state: their HTTP API and DNS are answered by a server, their services reach the
catalog through anti-entropy, and the leader turns gossip into ``serfHealth``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from agent.raft.transport import RPCError, TCPTransport
from tests.agentproc import ctk, free_port
from tests.cluster.cluster import Cluster, Server, settle

pytestmark = pytest.mark.slow

FAILURE_DETECTION_S = 40.0  # LAN gossip defaults: 1 s probes, suspicion up to 6 × 4 s, plus reconcile


def _service_file(tmp: Path, name: str, service: dict[str, object]) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"service": service}))
    return str(path)


def _serf(server: Server, node: str) -> str:
    for check in server.get(f"/v1/health/node/{node}").json():
        if check["CheckID"] == "serfHealth":
            return str(check["Status"])
    return ""


def _passing_nodes(agent: Server, service: str) -> set[str]:
    return {e["Node"]["Node"] for e in agent.get(f"/v1/health/service/{service}?passing").json()}


def _dig(port: int, ip: str, name: str) -> list[str]:
    out = subprocess.run(["dig", f"@{ip}", "-p", str(port), "+short", "+time=2", "+tries=1", name],
                         capture_output=True, text=True, timeout=15).stdout
    return sorted(line for line in out.split() if line)


def test_clients_forward_to_servers_fail_recover_and_leave(tmp_path: Path) -> None:
    with Cluster(tmp_path, 3) as cluster:
        cluster.start()
        web = {"name": "web", "port": 8080}
        c1 = cluster.add_client("c1", "-config-file", _service_file(tmp_path, "c1-web", {**web, "id": "web-c1"}))
        dns_port = free_port()
        c2 = cluster.add_client("c2", "-config-file", _service_file(tmp_path, "c2-web", {**web, "id": "web-c2"}),
                                "-dns-port", str(dns_port))
        s1 = cluster.servers[0]

        # Both clients are members and nodes; their services are in the catalog, read through a client.
        settle(lambda: _passing_nodes(c2, "web") == {"c1", "c2"}, timeout_s=30)
        members = {m["Name"]: m for m in c1.get("/v1/agent/members").json()}
        assert set(members) == {"s1", "s2", "s3", "c1", "c2"}
        assert members["c1"]["Tags"]["role"] == "node" and members["s1"]["Tags"]["role"] == "consul"
        assert c1.get("/v1/status/leader").json() == s1.leader()
        assert c1.get("/v1/agent/self").json()["Config"]["Server"] is False

        # Writes and blocking reads through a client are the servers' (one catalog, one index).
        assert httpx.put(f"{c1.url}/v1/kv/app/config", content=b"v1", timeout=10).json() is True
        r = c2.get("/v1/kv/app/config")
        assert r.status_code == 200 and r.json()[0]["Value"] == "djE="
        index = int(r.headers["X-Consul-Index"])
        assert int(s1.get("/v1/kv/app/config").headers["X-Consul-Index"]) == index
        with httpx.Client(timeout=30) as http:
            httpx.put(f"{s1.url}/v1/kv/app/other", content=b"x", timeout=10)  # another key: no wake-up
            waiter = http.build_request("GET", f"{c2.url}/v1/kv/app/config?index={index}&wait=20s")
            holder: dict[str, httpx.Response] = {}
            t = threading.Thread(target=lambda: holder.update(r=http.send(waiter)))
            t.start()
            t.join(1.0)
            assert t.is_alive(), "a blocking query through a client returned before the key changed"
            assert httpx.put(f"{s1.url}/v1/kv/app/config", content=b"v2", timeout=10).json() is True
            t.join(15)
            assert not t.is_alive() and holder["r"].json()[0]["Value"] == "djI="
            assert int(holder["r"].headers["X-Consul-Index"]) > index

        # DNS on a client is answered by a server.
        if shutil.which("dig"):
            settle(lambda: _dig(dns_port, c2.ip, "web.service.consul") == sorted([c1.ip, c2.ip]), timeout_s=15)

        # kill -9 a client: its serfHealth goes critical and its service leaves health queries and DNS.
        c1.kill()
        settle(lambda: _serf(s1, "c1") == "critical", timeout_s=FAILURE_DETECTION_S)
        assert _passing_nodes(c2, "web") == {"c2"}
        if shutil.which("dig"):
            settle(lambda: _dig(dns_port, c2.ip, "web.service.consul") == [c2.ip], timeout_s=10)

        # Restart it: it rejoins from its member snapshot, becomes healthy, its service passes again.
        c1.start([*cluster.join_args(), "-config-file", str(tmp_path / "c1-web.json")])
        settle(lambda: _serf(s1, "c1") == "passing", timeout_s=FAILURE_DETECTION_S)
        settle(lambda: _passing_nodes(s1, "web") == {"c1", "c2"}, timeout_s=20)

        # `ctk leave` on a client: the node is gone from the catalog; the member is "left".
        out = ctk("leave", "--http-addr", c2.addr)
        assert out.returncode == 0, out.stderr
        settle(lambda: not c2.alive(), timeout_s=20)
        settle(lambda: s1.get("/v1/catalog/node/c2").json() is None, timeout_s=20)
        left = {m["Name"]: m["Status"] for m in s1.get("/v1/agent/members").json()}
        assert left["c2"] == 3  # serf's StatusLeft

        # A new server joins the running cluster and becomes a voter.
        s4 = Server("s4", f"{cluster.base}.4", tmp_path / "s4", tmp_path)
        cluster.servers.append(s4)
        s4.start(["-bootstrap-expect", "3", *cluster.join_args(cluster.servers[:3])])

        def s4_voter() -> bool:
            conf = s1.get("/v1/operator/raft/configuration").json()
            return any(s["Node"] == "s4" and s["Voter"] for s in conf["Servers"])

        settle(s4_voter, timeout_s=30)
        assert cluster.wait_leader().alive()
        assert s4.get("/v1/kv/app/config").json()[0]["Value"] == "djI="


def test_client_without_servers_answers_500_and_catches_up(tmp_path: Path) -> None:
    """A client that knows no server says so in one line (Consul: "No known Consul servers"), and its
    services reach the catalog as soon as a server appears."""
    cluster = Cluster(tmp_path, 1)
    with cluster:
        c1 = cluster.add_client("c1", "-config-file", _service_file(tmp_path, "svc", {"name": "api", "port": 9}))
        settle(lambda: c1.get("/v1/agent/self").status_code == 200, timeout_s=15)
        r = httpx.get(f"{c1.url}/v1/catalog/services", timeout=15)
        assert r.status_code == 500 and "No known Consul servers" in r.text
        cluster.start()
        settle(lambda: "api" in c1.get("/v1/catalog/services").json(), timeout_s=30)
        # A forwarded request can only name an API path on the server itself, never another host.
        assert "not under /v1/" in asyncio.run(_forward_raw(cluster.servers[0].server_addr, "@127.0.0.1:9/v1/kv/x"))


async def _forward_raw(server_addr: str, path: str) -> str:
    transport = TCPTransport("127.0.0.1", 0, on_message=lambda _m: None)
    try:
        await transport.call(server_addr, "http", {"method": "GET", "path": path, "headers": {}, "body": b""})
        return "accepted"
    except RPCError as err:
        return str(err)
    finally:
        await transport.close()
