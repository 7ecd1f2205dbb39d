"""Durable Raft storage under ``<data-dir>/raft/``: one checksummed append-only log file + a snapshot.

``log.bin`` is a sequence of records ``u32 length | u32 crc32 | msgpack [kind, body]``:

- ``E`` an entry (``Entry.to_wire``); an entry at index *i* discards any stored entry at or after *i*
  (a conflicting tail, Raft §5.3) — so appending is the only operation the file ever needs;
- ``H`` the hard state (term, vote, commit): Figure 2's persistent state, last record wins;
- ``R`` reset to an offset ``[index, term]``: the log was replaced by a snapshot (InstallSnapshot, §7)
  or compacted; entries at or below the offset are gone.

One :meth:`FileStorage.save` is one ``write`` and one ``fsync``, however many entries it carries:
that is the group commit the driver relies on. A crash mid-write leaves a torn or corrupt tail, which
:meth:`load` detects by length and checksum and cuts off — never applies. Compaction rewrites the
file (temp file, fsync, rename, fsync the directory), so it is atomic too. ``snapshot.bin`` holds the
newest snapshot, written the same atomic way, with its own checksum.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack

from .errors import StorageError
from .messages import Entry, HardState, Snapshot
from .storage import InitialState

__all__ = ["FileStorage", "scan_records", "encode_record"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 256 * 1024 * 1024


def encode_record(kind: str, body: object) -> bytes:
    """One ``u32 length | u32 crc32 | msgpack [kind, body]`` record."""
    payload: bytes = msgpack.packb([kind, body], use_bin_type=True)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def scan_records(data: bytes) -> Iterator[tuple[int, str, object]]:
    """Yield (end offset, kind, body) for every intact record; stop at the first damaged one."""
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        try:
            kind, body = msgpack.unpackb(data[start:end], raw=False, strict_map_key=False)
        except Exception:
            return
        yield end, str(kind), body
        pos = end


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class FileStorage:
    """A :class:`agent.raft.storage.Storage` on disk. Called from one task (the Raft driver)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "log.bin"
        self.snapshot_path = self.dir / "snapshot.bin"
        self._fd: int | None = None
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._offset_index = 0
        self._offset_term = 0
        self._entries: list[Entry] = []
        self.records_in_file = 0
        self.cut_bytes = 0

    # ------------------------------------------------------------- Storage

    def load(self) -> InitialState:
        self._read_snapshot()
        self._replay_log()
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return InitialState(self._hard_state, self._snapshot, self._offset_index, self._offset_term,
                            tuple(self._entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None = None) -> None:
        buf = bytearray()
        if snapshot is not None:
            _write_atomic(self.snapshot_path, encode_record("S", snapshot.to_wire()))
            self._snapshot = snapshot
            self._offset_index, self._offset_term = snapshot.meta.index, snapshot.meta.term
            self._entries = []
            buf += encode_record("R", [self._offset_index, self._offset_term])
        if entries:
            first = entries[0].index
            if first <= self._offset_index:
                raise StorageError(f"append at {first} is at or below the compaction offset {self._offset_index}")
            if first > self.last_index + 1:
                raise StorageError(f"append at {first} leaves a gap after last index {self.last_index}")
            for e in entries:
                buf += encode_record("E", e.to_wire())
        if hard_state is not None:
            buf += encode_record("H", hard_state.to_wire())
        if not buf:
            return
        # Only the commit index moved: it is a restart hint, not a promise (Figure 2 persists term,
        # vote and log), so it is written but not worth an fsync of its own.
        hint_only = (snapshot is None and not entries and hard_state is not None
                     and (hard_state.term, hard_state.vote) == (self._hard_state.term, self._hard_state.vote))
        self._write(bytes(buf), sync=not hint_only)
        if entries:
            del self._entries[entries[0].index - self._offset_index - 1:]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state
        self.records_in_file += len(entries) + (hard_state is not None) + (snapshot is not None)

    def compact(self, snapshot: Snapshot, through_index: int, through_term: int) -> None:
        """Store a local snapshot and rewrite the log without the entries it covers."""
        if self._snapshot is None or snapshot.meta.index >= self._snapshot.meta.index:
            _write_atomic(self.snapshot_path, encode_record("S", snapshot.to_wire()))
            self._snapshot = snapshot
        if through_index <= self._offset_index:
            return
        if through_index > self.last_index:
            raise StorageError(f"compact through {through_index} beyond last index {self.last_index}")
        keep = self._entries[through_index - self._offset_index:]
        body = bytearray(encode_record("R", [through_index, through_term]))
        for e in keep:
            body += encode_record("E", e.to_wire())
        body += encode_record("H", self._hard_state.to_wire())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _write_atomic(self.log_path, bytes(body))
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND, 0o600)
        self._entries = list(keep)
        self._offset_index, self._offset_term = through_index, through_term
        self.records_in_file = len(keep) + 2

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ---------------------------------------------------------- inspection

    @property
    def last_index(self) -> int:
        return self._offset_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._offset_term

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    # ------------------------------------------------------------ internal

    def _write(self, data: bytes, sync: bool = True) -> None:
        if self._fd is None:
            raise StorageError("storage not loaded")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if sync:
            os.fsync(self._fd)

    def _read_snapshot(self) -> None:
        if not self.snapshot_path.exists():
            return
        data = self.snapshot_path.read_bytes()
        records = list(scan_records(data))
        if not records or records[0][1] != "S":
            raise StorageError(f"{self.snapshot_path}: damaged snapshot (checksum mismatch); refusing to start")
        snap = Snapshot.from_wire(records[0][2])
        self._snapshot = snap
        self._offset_index, self._offset_term = snap.meta.index, snap.meta.term

    def _replay_log(self) -> None:
        if not self.log_path.exists():
            return
        data = self.log_path.read_bytes()
        good_end = 0
        for end, kind, body in scan_records(data):
            if kind == "E":
                e = Entry.from_wire(body)
                if e.index <= self._offset_index:
                    good_end = end
                    continue
                if e.index > self.last_index + 1:
                    log.error("%s: gap before entry %d; cutting the log there", self.log_path, e.index)
                    break
                del self._entries[e.index - self._offset_index - 1:]
                self._entries.append(e)
            elif kind == "H":
                self._hard_state = HardState.from_wire(body)
            elif kind == "R":
                if not isinstance(body, list) or len(body) != 2:
                    break
                index, term = int(body[0]), int(body[1])
                if index >= self._offset_index:
                    self._offset_index, self._offset_term = index, term
                    self._entries = [e for e in self._entries if e.index > self._offset_index]
                    if self._entries and self._entries[0].index != self._offset_index + 1:
                        self._entries = []
            good_end = end
            self.records_in_file += 1
        if good_end < len(data):
            self.cut_bytes = len(data) - good_end
            log.warning("%s: cut %d bytes of torn or corrupt tail (a crash mid-write); they were never "
                        "acknowledged", self.log_path, self.cut_bytes)
            with open(self.log_path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
