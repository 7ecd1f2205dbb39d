"""Snapshot archives as Consul writes them (``snapshot/archive.go``): a gzipped tar holding
``meta.json`` (the Raft snapshot metadata), ``state.bin`` (the state machine's data) and ``SHA256SUMS``
(``<hex>  <file>`` lines). Verification checks every listed hash and that nothing is missing, so a
truncated or tampered archive is refused before anything is restored. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ArchiveError", "SnapshotArchive", "build_archive", "read_archive"]

MAX_MEMBER_BYTES = 1024 * 1024 * 1024


class ArchiveError(ValueError):
    """Not a usable snapshot archive; the message says why."""


@dataclass(frozen=True)
class SnapshotArchive:
    meta: dict[str, Any]
    state: bytes


def build_archive(state: bytes, index: int, term: int, configuration: list[dict[str, Any]] | None = None) -> bytes:
    meta = {"Version": 1, "ID": f"{term}-{index}-{int(time.time() * 1000)}", "Index": index, "Term": term,
            "Peers": None, "Configuration": {"Servers": configuration or []}, "ConfigurationIndex": 0,
            "Size": len(state)}
    meta_bytes = json.dumps(meta, indent=2).encode()
    files = {"meta.json": meta_bytes, "state.bin": state}
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items()).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [*files.items(), ("SHA256SUMS", sums)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def read_archive(blob: bytes) -> SnapshotArchive:
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError) as err:
        raise ArchiveError(f"not a gzip snapshot archive: {err}") from None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    continue
                f = tar.extractfile(member)
                if f is not None:
                    files[member.name] = f.read()
    except tarfile.TarError as err:
        raise ArchiveError(f"corrupt snapshot archive: {err}") from None
    for needed in ("meta.json", "state.bin", "SHA256SUMS"):
        if needed not in files:
            raise ArchiveError(f"snapshot archive is missing {needed}")
    for line in files["SHA256SUMS"].decode(errors="replace").splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if name not in files:
            raise ArchiveError(f"SHA256SUMS lists {name!r}, which the archive does not contain")
        if hashlib.sha256(files[name]).hexdigest() != digest.strip():
            raise ArchiveError(f"checksum mismatch for {name}: the archive is damaged")
    try:
        meta = json.loads(files["meta.json"])
    except ValueError as err:
        raise ArchiveError(f"meta.json is not JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ArchiveError("meta.json is not an object")
    return SnapshotArchive(meta, files["state.bin"])
