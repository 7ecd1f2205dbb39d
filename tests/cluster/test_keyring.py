"""Gossip key rotation across real servers and a client: install → use → remove, checked by -list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.gossip.keyring import generate_key
from tests.agentproc import ctk
from tests.cluster.cluster import Cluster, settle

pytestmark = pytest.mark.slow


def _list(addr: str) -> dict[str, object]:
    out = ctk("keyring", "-list", "--json", "--http-addr", addr)
    assert out.returncode == 0, out.stderr
    [pool] = json.loads(out.stdout)
    return pool  # type: ignore[no-any-return]


def test_rotate_the_gossip_key_across_the_cluster(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    with Cluster(tmp_path, 3) as cluster:
        for s in cluster.servers:
            s.extra = ["-encrypt", old]
        cluster.start()
        client = cluster.add_client("c1", "-encrypt", old)
        s1 = cluster.servers[0]
        settle(lambda: len(s1.get("/v1/agent/members").json()) == 4, timeout_s=30)
        settle(lambda: _list(s1.addr)["Keys"] == {old: 4}, timeout_s=15)
        assert _list(client.addr)["PrimaryKeys"] == {old: 4}

        # Mistakes are refused before anything is sent, with the reason.
        bad = ctk("keyring", "-install", "not-a-key", "--http-addr", s1.addr)
        assert bad.returncode == 1 and "base64" in bad.stderr and "Traceback" not in bad.stderr
        early = ctk("keyring", "-use", new, "--http-addr", s1.addr)
        assert early.returncode == 1 and "install it first" in early.stderr
        both = ctk("keyring", "-list", "-install", new, "--http-addr", s1.addr)
        assert both.returncode == 2 and "exactly one" in both.stderr

        assert ctk("keyring", "-install", new, "--http-addr", client.addr).returncode == 0
        pool = _list(s1.addr)
        assert pool["Keys"] == {old: 4, new: 4} and pool["PrimaryKeys"] == {old: 4} and pool["NumNodes"] == 4

        assert ctk("keyring", "-use", new, "--http-addr", s1.addr).returncode == 0
        assert _list(s1.addr)["PrimaryKeys"] == {new: 4}
        refused = ctk("keyring", "-remove", new, "--http-addr", s1.addr)
        assert refused.returncode == 1 and "primary" in refused.stderr

        assert ctk("keyring", "-remove", old, "--http-addr", s1.addr).returncode == 0
        assert _list(client.addr)["Keys"] == {new: 4}

        # Gossip still works on the new key alone: a member change is seen everywhere.
        client.kill()
        settle(lambda: {m["Name"]: m["Status"] for m in s1.get("/v1/agent/members").json()}["c1"] == 4,
               timeout_s=40)
        # The rotation survived on disk: the keyring file now holds only the new key.
        stored = json.loads((client.data_dir / "serf" / "local.keyring").read_text())
        assert stored == [new]


def test_keyring_needs_encryption(tmp_path: Path) -> None:
    with Cluster(tmp_path, 1) as cluster:
        cluster.start()
        out = ctk("keyring", "-list", "--http-addr", cluster.servers[0].addr)
        assert out.returncode == 1 and "without -encrypt" in out.stderr
