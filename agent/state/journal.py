"""A durable journal for ``-dev -data-dir``: snapshot + checksummed append-only log.

Layout under ``<data-dir>/state/``: ``snapshot.bin`` (the store's snapshot, written to a temp file,
fsynced and renamed into place, so it is always whole) and ``log.bin`` (``[index, command]`` records
appended after the snapshot, in the same checksummed record format as the Raft log, see
:mod:`agent.raft.filestorage`). On open, a torn or corrupt tail — a crash mid-write — is detected by
its length or checksum and cut off, never applied. Appends are batched by the caller (group commit):
one ``write`` + one ``fsync`` per batch. Servers of a cluster use the Raft log instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from agent.raft.filestorage import encode_record, scan_records

__all__ = ["Journal"]

log = logging.getLogger(__name__)


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
            for end, kind, body in scan_records(data):
                if kind != "J" or not isinstance(body, list) or len(body) != 2:
                    break
                records.append((int(body[0]), body[1]))
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
        os.write(self._fd, b"".join(encode_record("J", [index, command]) for index, command in records))
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
