"""Snapshot archives: Consul's layout, and damaged archives refused before anything is restored."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from agent.state import commands
from agent.state.archive import ArchiveError, build_archive, read_archive
from agent.state.store import Store


def _store() -> Store:
    s = Store()
    for i in range(1, 11):
        s.apply(i, commands.kv("set", f"k{i}", value=b"v"))
    return s


def test_roundtrip_and_consul_layout() -> None:
    s = _store()
    blob = build_archive(s.snapshot(), index=10, term=3)
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))).getnames()
    assert names == ["meta.json", "state.bin", "SHA256SUMS"]
    archive = read_archive(blob)
    assert archive.meta["Index"] == 10 and archive.meta["Term"] == 3
    restored = Store()
    restored.restore(archive.state)
    assert sorted(restored.kv) == sorted(s.kv)


def test_restore_command_moves_indexes_forward_and_replaces_state() -> None:
    s = _store()
    blob = s.snapshot()
    s.apply(11, commands.kv("set", "late", value=b"x"))
    before = s.table_index("kvs")
    assert s.apply(12, {"op": "restore", "state": blob}) is True
    assert "late" not in s.kv and len(s.kv) == 10
    assert s.table_index("kvs") == 12 > before
    s.apply(13, commands.kv("set", "after", value=b"y"))  # the log continues normally


@pytest.mark.parametrize("damage", ["flip", "truncate", "not-gzip", "missing"])
def test_damaged_archives_are_refused(damage: str) -> None:
    blob = build_archive(_store().snapshot(), index=10, term=1)
    if damage == "not-gzip":
        bad = b"hello"
    elif damage == "truncate":
        bad = blob[: len(blob) // 2]
    elif damage == "missing":
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            info = tarfile.TarInfo("meta.json")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
        bad = gzip.compress(raw.getvalue())
    else:
        raw = bytearray(gzip.decompress(blob))
        i = raw.find(b"k5")  # inside state.bin
        raw[i] ^= 0x01
        bad = gzip.compress(bytes(raw))
    with pytest.raises(ArchiveError):
        read_archive(bad)
    s = Store()
    assert s.apply(1, {"op": "restore", "state": b"garbage"}).status == 400  # type: ignore[union-attr]
