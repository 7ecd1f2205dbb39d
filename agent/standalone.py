"""One server that is its own leader: ``ctk agent -dev`` and single-server setups.

Writes are applied in log order with the next index. Without a data dir (``-dev``) they apply at once.
With one, proposals queue and a single writer persists each batch with one fsync (group commit), then
applies the batch and answers every proposer — so an acknowledged write is on disk, and a burst of
concurrent writes costs one fsync, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agent.state.commands import Command
from agent.state.journal import Journal
from agent.state.store import Store

__all__ = ["Standalone"]

log = logging.getLogger(__name__)


class Standalone:
    def __init__(self, store: Store, address: str, node_id: str, node_name: str,
                 journal: Journal | None = None, snapshot_threshold: int = 16384) -> None:
        self.store = store
        self.address = address
        self.node_id = node_id
        self.node_name = node_name
        self.journal = journal
        self.snapshot_threshold = snapshot_threshold
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.commit_index = store.last_index

    def recover(self) -> int:
        """Load the journal into the store; returns how many log records were replayed."""
        if self.journal is None:
            return 0
        snapshot, records = self.journal.load()
        if snapshot is not None:
            self.store.restore(snapshot)
        replayed = 0
        for index, command in records:
            if index > self.store.last_index:
                self.store.apply(index, command)
                replayed += 1
        self.commit_index = self.store.last_index
        return replayed

    async def apply(self, command: Command) -> Any:
        if self.journal is None:
            self.commit_index += 1
            return self.store.apply(self.commit_index, command)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, fut))
        if self._writer is None:
            self._wakeup = asyncio.Event()
            self._writer = asyncio.create_task(self._write_loop(), name="journal-writer")
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    async def _write_loop(self) -> None:
        assert self._wakeup is not None and self.journal is not None
        journal = self.journal
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            self._idle.clear()
            try:
                await self._commit(journal, batch)
            finally:
                if not self._queue:
                    self._idle.set()

    async def _commit(self, journal: Journal, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        """Persist one batch with one fsync, then apply it and answer every proposer."""
        first = self.commit_index + 1
        records = [(first + i, cmd) for i, (cmd, _) in enumerate(batch)]
        try:
            await asyncio.to_thread(journal.append, records)
        except OSError as err:
            log.error("journal write failed: %s", err)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        self.store.defer_notify = True
        try:
            for (index, cmd), (_, fut) in zip(records, batch, strict=True):
                result = self.store.apply(index, cmd)
                self.commit_index = index
                if not fut.done():
                    fut.set_result(result)
        finally:
            self.store.defer_notify = False
            self.store.flush_notify()
        if journal.records_since_snapshot >= self.snapshot_threshold:
            blob = self.store.snapshot()
            await asyncio.to_thread(journal.write_snapshot, blob)

    async def read_barrier(self, mode: str) -> None:
        return None

    def is_leader(self) -> bool:
        return True

    def leader_address(self) -> str:
        return self.address

    def known_leader(self) -> bool:
        return True

    def last_contact_ms(self) -> int:
        return 0

    def peers(self) -> list[str]:
        return [self.address]

    def configuration(self) -> dict[str, Any]:
        return {
            "Servers": [{
                "ID": self.node_id, "Node": self.node_name, "Address": self.address,
                "Leader": True, "Voter": True, "ProtocolVersion": "3",
            }],
            "Index": 1,
        }

    def stats(self) -> dict[str, str]:
        idx = str(self.commit_index)
        return {
            "applied_index": idx, "commit_index": idx, "fsm_pending": "0", "last_contact": "0",
            "last_log_index": idx, "last_log_term": "1", "last_snapshot_index": "0",
            "last_snapshot_term": "0",
            "latest_configuration": f"[{{Suffrage:Voter ID:{self.node_id} Address:{self.address}}}]",
            "latest_configuration_index": "1", "num_peers": "0", "protocol_version": "3",
            "protocol_version_max": "3", "protocol_version_min": "0", "snapshot_version_max": "1",
            "snapshot_version_min": "0", "state": "Leader", "term": "1",
        }

    async def close(self) -> None:
        if self._writer is not None:
            # Drain: queued and in-flight proposals finish (and are answered) before the journal closes.
            while self._queue or not self._idle.is_set():
                await self._idle.wait()
                if self._queue:
                    await asyncio.sleep(0)
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        if self.journal is not None:
            if self.journal._fd is not None:
                blob = self.store.snapshot()
                self.journal.write_snapshot(blob)
            self.journal.close()


def now_s() -> float:
    """The proposer's wall clock, stamped into commands (lock-delay, TTLs)."""
    return time.time()
