"""Server-to-server TCP transport on ``-server-port`` (8300): Raft messages and RPC, msgpack frames.

A frame is ``u32 length | u8 version | u8 channel | payload``; ``length`` counts everything after
itself and is bounded (:data:`MAX_FRAME_BYTES`), so a garbage or hostile peer cannot make us allocate
without limit. Channels: ``RAFT`` (one-way :func:`agent.raft.messages.encode_message` payloads),
``REQ``/``RESP`` (msgpack ``[id, method, body]`` / ``[id, ok, body]``) for request/response calls such
as a follower forwarding a write to the leader. Never pickle: every payload is decoded by a validating
reader, and a frame that fails to decode closes that connection (and is counted), nothing more.

Outgoing traffic to a peer goes through one connection with a bounded queue; when the queue is full
the oldest Raft message is dropped (Raft tolerates loss; a stalled peer must not grow memory).
Connections are re-established with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from .messages import Message, decode_message, encode_message

__all__ = ["TCPTransport", "RPCError", "NotSent", "OutcomeUnknown", "FRAME_VERSION", "MAX_FRAME_BYTES"]

log = logging.getLogger(__name__)

FRAME_VERSION = 1
MAX_FRAME_BYTES = 128 * 1024 * 1024
CH_RAFT, CH_REQ, CH_RESP = 1, 2, 3
_LEN = struct.Struct(">I")
QUEUE_LIMIT = 4096
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 2.0

RPCHandler = Callable[[str, Any], Awaitable[Any]]


class RPCError(Exception):
    """A remote call that failed: unreachable peer, timeout, or the remote handler's error text."""


class NotSent(RPCError):
    """The request never left this node: retrying it cannot apply it twice."""


class OutcomeUnknown(RPCError):
    """The request was written but no answer came: it may or may not have taken effect. Never retry a
    non-idempotent request on this (that is how a forwarded write gets applied twice)."""


def _frame(channel: int, payload: bytes) -> bytes:
    return _LEN.pack(len(payload) + 2) + bytes((FRAME_VERSION, channel)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(_LEN.size)
    (length,) = _LEN.unpack(head)
    if length < 2 or length > MAX_FRAME_BYTES:
        raise ValueError(f"frame length {length} out of bounds")
    body = await reader.readexactly(length)
    if body[0] != FRAME_VERSION:
        raise ValueError(f"unsupported frame version {body[0]}")
    return body[1], body[2:]


class _Peer:
    """The outgoing connection to one address: a queue, a writer, and a reader for RPC answers."""

    def __init__(self, transport: TCPTransport, address: str) -> None:
        self.t = transport
        self.address = address
        self.queue: deque[tuple[bytes, int | None]] = deque()  # (frame, request id for RPC requests)
        self.wakeup = asyncio.Event()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.written: set[int] = set()  # request ids whose frame reached the socket
        self.task = asyncio.create_task(self._run(), name=f"raft-peer:{address}")
        self.connected = False

    def enqueue(self, frame: bytes, req_id: int | None = None) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            for i, (_, rid) in enumerate(self.queue):
                if rid is None:  # drop the oldest Raft message, never a request someone awaits
                    del self.queue[i]
                    self.t.dropped += 1
                    break
        self.queue.append((frame, req_id))
        self.wakeup.set()

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        host, _, port = self.address.rpartition(":")
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5.0)
            except (OSError, TimeoutError, ValueError):
                self._fail_pending(f"cannot connect to {self.address}")
                self.queue = deque(item for item in self.queue if item[1] is None)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            self.connected = True
            read_task = asyncio.create_task(self._read_answers(reader))
            try:
                while not read_task.done():
                    if not self.queue:
                        self.wakeup.clear()
                        waiter = asyncio.create_task(self.wakeup.wait())
                        await asyncio.wait({waiter, read_task}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        continue
                    items = list(self.queue)
                    self.queue.clear()
                    self.written.update(rid for _, rid in items if rid is not None)
                    writer.write(b"".join(frame for frame, _ in items))
                    await writer.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                self.connected = False
                read_task.cancel()
                with contextlib.suppress(BaseException):
                    await read_task
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                self._fail_pending(f"connection to {self.address} lost")

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                channel, payload = await _read_frame(reader)
                if channel != CH_RESP:
                    raise ValueError(f"unexpected channel {channel} on an outgoing connection")
                req_id, ok, body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                fut = self.pending.pop(int(req_id), None)
                self.written.discard(int(req_id))
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(body)
                    else:
                        fut.set_exception(RPCError(str(body)))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        except (ValueError, TypeError, msgpack.UnpackException) as err:
            self.t.bad_frames += 1
            log.warning("bad frame from %s: %s; closing the connection", self.address, err)

    def _fail_pending(self, why: str) -> None:
        """Fail every awaited request; say whether each one may have reached the peer."""
        for req_id, fut in self.pending.items():
            if not fut.done():
                if req_id in self.written:
                    fut.set_exception(OutcomeUnknown(f"{why} after the request was sent: outcome unknown"))
                else:
                    fut.set_exception(NotSent(f"{why}; the request was not sent"))
        unsent = set(self.pending) - self.written
        self.queue = deque(item for item in self.queue if item[1] not in unsent or item[1] is None)
        self.pending.clear()
        self.written.clear()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        self._fail_pending("transport closed")


class TCPTransport:
    def __init__(self, host: str, port: int, on_message: Callable[[Message], None],
                 rpc_handler: RPCHandler | None = None) -> None:
        self.host = host
        self.port = port
        self.on_message = on_message
        self.rpc_handler = rpc_handler
        self._server: asyncio.Server | None = None
        self._peers: dict[str, _Peer] = {}
        self._ids = itertools.count(1)
        self._conns: set[asyncio.Task[None]] = set()
        self.bad_frames = 0
        self.dropped = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    def _peer(self, address: str) -> _Peer:
        p = self._peers.get(address)
        if p is None:
            p = self._peers[address] = _Peer(self, address)
        return p

    def send(self, address: str, msg: Message) -> None:
        """Fire and forget: Raft messages may be lost, reordered or duplicated."""
        self._peer(address).enqueue(_frame(CH_RAFT, encode_message(msg)))

    async def call(self, address: str, method: str, body: Any, timeout_s: float = 10.0) -> Any:
        peer = self._peer(address)
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        peer.pending[req_id] = fut
        peer.enqueue(_frame(CH_REQ, msgpack.packb([req_id, method, body], use_bin_type=True)), req_id)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            sent = req_id in peer.written
            peer.queue = deque(item for item in peer.queue if item[1] != req_id)
            cls = OutcomeUnknown if sent else NotSent
            raise cls(f"{method} to {address} timed out after {timeout_s:.1f}s") from None
        finally:
            peer.pending.pop(req_id, None)
            peer.written.discard(req_id)

    def forget(self, address: str) -> None:
        """Stop dialling an address that left the configuration."""
        p = self._peers.pop(address, None)
        if p is not None:
            asyncio.ensure_future(p.close())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                channel, payload = await _read_frame(reader)
                if channel == CH_RAFT:
                    self.on_message(decode_message(payload))
                elif channel == CH_REQ:
                    req_id, method, body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
                    asyncio.ensure_future(self._answer(writer, int(req_id), str(method), body))
                else:
                    raise ValueError(f"unknown channel {channel}")
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception as err:  # any decode failure: count it, drop the connection, never crash
            self.bad_frames += 1
            peer = writer.get_extra_info("peername")
            log.warning("bad frame from %s: %s; closing the connection", peer, err)
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, req_id: int, method: str, body: Any) -> None:
        if self.rpc_handler is None:
            ok, result = False, "no RPC handler"
        else:
            try:
                ok, result = True, await self.rpc_handler(method, body)
            except Exception as err:
                ok, result = False, str(err) or type(err).__name__
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write(_frame(CH_RESP, msgpack.packb([req_id, ok, result], use_bin_type=True)))
            await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        for p in list(self._peers.values()):
            await p.close()
        self._peers.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
