"""FileStorage keeps the Storage contract across restarts and never applies a torn tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.raft.errors import StorageError
from agent.raft.filestorage import FileStorage
from agent.raft.messages import Configuration, Entry, HardState, Server, Snapshot, SnapshotMeta
from agent.raft.storage import MemoryStorage


def entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(index=i, term=term, data=f"e{i}".encode()) for i in range(first, last + 1)]


def snap(index: int, term: int) -> Snapshot:
    cfg = Configuration.of([Server(id="a", address="127.0.0.1:8300")])
    return Snapshot(SnapshotMeta(index=index, term=term, configuration=cfg), data=b"fsm-state")


def reopen(path: Path) -> FileStorage:
    s = FileStorage(path)
    s.load()
    return s


def test_same_behaviour_as_memory_storage_across_restarts(tmp_path: Path) -> None:
    mem, disk = MemoryStorage(), FileStorage(tmp_path)
    disk.load()
    ops = [
        (HardState(term=1, vote="a"), entries(1, 5, 1), None),
        (None, entries(4, 6, 2), None),  # conflicting tail from index 4 replaced (§5.3)
        (HardState(term=2, vote="b", commit=3), [], None),
        (None, [], snap(10, 3)),  # InstallSnapshot: log discarded, offset moves
        (HardState(term=3, vote="b", commit=10), entries(11, 12, 3), None),
    ]
    for hs, es, sn in ops:
        mem.save(hs, es, sn)
        disk.save(hs, es, sn)
        disk.close()
        disk = reopen(tmp_path)
        assert disk.load() == mem.load()
    mem.compact(snap(11, 3), 11, 3)
    disk.compact(snap(11, 3), 11, 3)
    disk.close()
    again = FileStorage(tmp_path)
    assert again.load() == mem.load()
    assert [e.index for e in again.entries] == [12]


def test_torn_tail_is_cut_and_never_applied(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.save(HardState(term=1), entries(1, 3, 1))
    s.close()
    size = (tmp_path / "log.bin").stat().st_size
    with open(tmp_path / "log.bin", "ab") as f:
        f.write(b"\x00\x00\x01\x00\xde\xad")  # half a record: the crash happened mid-write
    s2 = FileStorage(tmp_path)
    state = s2.load()
    assert [e.index for e in state.entries] == [1, 2, 3]
    assert s2.cut_bytes == 6 and (tmp_path / "log.bin").stat().st_size == size
    s2.save(None, entries(4, 4, 1))  # appends after the cut continue cleanly
    s2.close()
    assert [e.index for e in reopen(tmp_path).entries] == [1, 2, 3, 4]


def test_corrupt_record_cuts_everything_after_it(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    for i in range(1, 4):
        s.save(None, entries(i, i, 1))
    s.close()
    data = bytearray((tmp_path / "log.bin").read_bytes())
    data[-3] ^= 0x55  # flip bits inside the last record
    (tmp_path / "log.bin").write_bytes(bytes(data))
    assert [e.index for e in reopen(tmp_path).entries] == [1, 2]


def test_damaged_snapshot_refuses_to_start(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.save(None, [], snap(5, 1))
    s.close()
    data = bytearray((tmp_path / "snapshot.bin").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "snapshot.bin").write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged snapshot"):
        FileStorage(tmp_path).load()


def test_gaps_are_refused(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.load()
    s.save(None, entries(1, 2, 1))
    with pytest.raises(StorageError):
        s.save(None, entries(5, 5, 1))
