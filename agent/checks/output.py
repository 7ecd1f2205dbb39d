"""Check output: bounded capture and the exact texts Consul puts in a check's ``Output``.

Consul captures script and HTTP output into a 4 KiB circular buffer (``check_output_max_size``), keeping
the *tail* — the end of a log or a stack trace is where the reason is (``docs/discovery/checks.mdx``).
ctk keeps the same texts but bounds the whole ``Output`` (framing included) by ``OutputMaxSize`` bytes, so
"Captured N of M bytes" reports the N bytes actually shown. A flood is never held in memory: only the
last ``limit`` bytes are kept while reading.
"""

from __future__ import annotations

from agent.durations import format_duration

__all__ = [
    "DEFAULT_OUTPUT_MAX_SIZE",
    "TailBuffer",
    "captured_output",
    "http_error_output",
    "http_output",
    "short_output",
    "tcp_success_output",
    "timeout_output",
    "truncate_ttl_output",
    "ttl_expired_output",
]

DEFAULT_OUTPUT_MAX_SIZE = 4096
"""Consul's ``DefaultBufSize`` / ``check_output_max_size`` default (4 KiB)."""


class TailBuffer:
    """Keeps the last ``limit`` bytes written and counts everything written."""

    __slots__ = ("limit", "total_written", "_buf")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.total_written = 0
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        """Append ``data``; memory stays O(limit) whatever the volume."""
        self.total_written += len(data)
        if len(data) >= self.limit:
            self._buf[:] = data[-self.limit :]
            return
        self._buf += data
        excess = len(self._buf) - self.limit
        if excess > 0:
            del self._buf[:excess]

    @property
    def truncated(self) -> bool:
        return self.total_written > len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)


def _decode(data: bytes) -> str:
    # A tail cut may start inside a UTF-8 sequence: drop the orphaned continuation bytes first.
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] <= 0xBF:
        start += 1
    return data[start:].decode("utf-8", errors="replace")


def _tail_within(buf: TailBuffer, budget: int) -> bytes:
    data = buf.getvalue()
    if budget <= 0:
        return b""
    return data[-budget:] if len(data) > budget else data


def captured_output(buf: TailBuffer, limit: int) -> str:
    """Script output as Consul reports it: the tail, prefixed ``Captured <n> of <total> bytes\\n...\\n``
    when anything was dropped. The result fits in ``limit`` bytes (unless ``limit`` is too small to hold
    the prefix itself, in which case the prefix and as much tail as the buffer has are returned)."""
    data = buf.getvalue()
    if not buf.truncated and len(data) <= limit:
        return _decode(data)
    total = buf.total_written
    kept = min(len(data), limit)
    # The prefix length depends on the digits of ``kept``: shrink until prefix + tail fit.
    while kept > 0 and len(f"Captured {kept} of {total} bytes\n...\n") + kept > limit:
        kept -= 1
    if kept <= 0:
        kept = len(data)
    tail = data[-kept:] if kept else b""
    return f"Captured {len(tail)} of {total} bytes\n...\n" + _decode(tail)


def http_output(method: str, url: str, status_line: str, body: TailBuffer, limit: int) -> str:
    """``HTTP GET <url>: 200 OK Output: <body tail>`` (Consul's CheckHTTP text), bounded to ``limit``."""
    head = f"HTTP {method} {url}: {status_line} Output: "
    budget = limit - len(head.encode("utf-8"))
    return head + _decode(_tail_within(body, budget))


def http_error_output(method: str, url: str, reason: str) -> str:
    """Go's ``url.Error`` text, which Consul stores verbatim: ``Get "<url>": <reason>``."""
    op = method[:1].upper() + method[1:].lower()
    return f'{op} "{url}": {reason}'


def tcp_success_output(addr: str) -> str:
    return f"TCP connect {addr}: Success"


def timeout_output(timeout_s: float, captured: TailBuffer | None, limit: int) -> str:
    """``Timed out (<dur>) running check`` plus, after a blank line, whatever the script printed."""
    msg = f"Timed out ({format_duration(timeout_s)}) running check"
    if captured is None or captured.total_written == 0:
        return msg
    budget = limit - len(msg) - 2
    return msg + "\n\n" + captured_output(captured, max(budget, 1))


def truncate_ttl_output(output: str, limit: int) -> str:
    """A TTL update's output: Consul keeps the *head* and appends `` ... (captured N of M bytes)``.
    ctk shortens the head so the suffix fits too."""
    raw = output.encode("utf-8")
    total = len(raw)
    if total <= limit:
        return output
    kept = limit
    while kept > 0 and len(f" ... (captured {kept} of {total} bytes)") + kept > limit:
        kept -= 1
    head = raw[:kept].decode("utf-8", errors="ignore")
    kept_bytes = len(head.encode("utf-8"))
    return f"{head} ... (captured {kept_bytes} of {total} bytes)"


def ttl_expired_output(last_output: str) -> str:
    """Consul's text when a TTL runs out, carrying the last output so the reason is not lost."""
    if not last_output:
        return "TTL expired"
    return f"TTL expired (last output before timeout follows): {last_output}"


def short_output(output: str, width: int = 120) -> str:
    """First line of an output, clipped: for one-line log messages."""
    line = output.strip().splitlines()[0] if output.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
