"""Durability of a single server's state: acknowledged writes survive restarts; torn tails are cut."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from agent.state import commands
from agent.state.journal import Journal
from agent.state.store import Store
from tests.agentproc import AgentProcess


def test_torn_and_corrupt_tails_are_cut_not_applied(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.load()
    j.append([(1, commands.kv("set", "a", value=b"1")), (2, commands.kv("set", "b", value=b"2"))])
    j.close()
    log = tmp_path / "log.bin"
    good = log.read_bytes()
    log.write_bytes(good + b"\x00\x00\x00\x20garbage")  # a record header promising more than was written
    _, records = Journal(tmp_path).load()
    assert [i for i, _ in records] == [1, 2]
    assert log.read_bytes() == good  # the tail was cut off the file
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF  # corrupt the last record's payload: its checksum no longer matches
    log.write_bytes(bytes(flipped))
    _, records = Journal(tmp_path).load()
    assert [i for i, _ in records] == [1]


def test_snapshot_then_log_replay(tmp_path: Path) -> None:
    store = Store()
    j = Journal(tmp_path)
    j.load()
    for i in range(1, 6):
        cmd = commands.kv("set", f"k{i}", value=b"v")
        store.apply(i, cmd)
        j.append([(i, cmd)])
    j.write_snapshot(store.snapshot())
    j.append([(6, commands.kv("delete", "k1"))])
    j.close()
    snap, records = Journal(tmp_path).load()
    fresh = Store()
    assert snap is not None
    fresh.restore(snap)
    for i, cmd in records:
        fresh.apply(i, cmd)
    assert sorted(fresh.kv) == ["k2", "k3", "k4", "k5"] and fresh.last_index == 6


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ("-server", "-bootstrap", "-data-dir", str(data), "-node", "solo")
    agent = AgentProcess(*args, log_path=tmp_path / "log").start()
    try:
        for i in range(50):
            assert httpx.put(f"{agent.url}/v1/kv/k/{i}", content=str(i).encode()).json() is True
        httpx.put(f"{agent.url}/v1/agent/service/register", json={"Name": "api", "Port": 80})
    finally:
        agent.stop(signal.SIGKILL)
    again = AgentProcess(*args, log_path=tmp_path / "log2")
    again.http_port = agent.http_port
    with again:
        entries = httpx.get(f"{again.url}/v1/kv/k/?recurse").json()
        assert sorted(int(e["Key"].split("/")[1]) for e in entries) == list(range(50))
        assert "api" in httpx.get(f"{again.url}/v1/agent/services").json()
        assert [s["ServiceID"] for s in httpx.get(f"{again.url}/v1/catalog/service/api").json()] == ["api"]
