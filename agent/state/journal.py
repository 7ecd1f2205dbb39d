"""A durable journal for a single server: snapshot + checksummed append-only log.

Layout under ``<data-dir>/state/``: ``snapshot.bin`` (the store's snapshot, written to a temp file,
fsynced and renamed into place, so it is always whole) and ``log.bin`` (records appended after the
snapshot). A record is ``u32 length | u32 crc32 | msgpack [index, command]``. On open, a torn or
corrupt tail — a crash mid-write — is detected by its length or checksum and cut off, never applied.
Appends are batched by the caller (group commit): one ``write`` + one ``fsync`` per batch.

This serves ``-dev -data-dir`` and single-server agents; the Raft log replaces it for clusters.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

__all__ = ["Journal"]

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024


class Journal:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_path = self.dir / "snapshot.bin"
        self.log_path = self.dir / "log.bin"
        self.records_since_snapshot = 0
        self._fd: int | None = None

    def load(self) -> tuple[bytes | None, list[tuple[int, Any]]]:
        """Read the snapshot and every intact log record; cut a corrupt tail off the file."""
        snapshot = self.snapshot_path.read_bytes() if self.snapshot_path.exists() else None
        records: list[tuple[int, Any]] = []
        good_end = 0
        if self.log_path.exists():
            data = self.log_path.read_bytes()
            for end, rec in _scan(data):
                records.append(rec)
                good_end = end
            if good_end < len(data):
                log.warning("journal %s: cut %d bytes of torn or corrupt tail after record %d",
                            self.log_path, len(data) - good_end, len(records))
                with open(self.log_path, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
        self.records_since_snapshot = len(records)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return snapshot, records

    def append(self, records: list[tuple[int, Any]]) -> None:
        """Write a batch and fsync once: everything returned from here survives a crash."""
        if self._fd is None:
            raise RuntimeError("journal not loaded")
        buf = bytearray()
        for rec in records:
            payload = msgpack.packb(list(rec), use_bin_type=True)
            buf += _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        os.write(self._fd, bytes(buf))
        os.fsync(self._fd)
        self.records_since_snapshot += len(records)

    def write_snapshot(self, blob: bytes) -> None:
        """Atomically replace the snapshot, then start an empty log."""
        tmp = self.snapshot_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.snapshot_path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.fsync(self._fd)
        self.records_since_snapshot = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _scan(data: bytes) -> Iterator[tuple[int, tuple[int, Any]]]:
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if length > MAX_RECORD_BYTES or end > len(data):
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        try:
            index, command = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:
            return
        yield end, (int(index), command)
        pos = end
