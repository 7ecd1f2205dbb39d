"""Output capture: tail buffer, Consul's texts, size bounds."""

from __future__ import annotations

from agent.checks.output import (
    TailBuffer,
    captured_output,
    http_error_output,
    http_output,
    tcp_success_output,
    timeout_output,
    truncate_ttl_output,
    ttl_expired_output,
)


def test_tail_buffer_keeps_the_end_and_counts_everything() -> None:
    buf = TailBuffer(10)
    for chunk in (b"abc", b"defghij", b"klm"):
        buf.write(chunk)
    assert buf.getvalue() == b"defghijklm" and buf.total_written == 13 and buf.truncated
    buf.write(b"x" * 100)
    assert buf.getvalue() == b"x" * 10 and buf.total_written == 113


def test_captured_output_untruncated_is_verbatim() -> None:
    buf = TailBuffer(4096)
    buf.write(b"all good\n")
    assert captured_output(buf, 4096) == "all good\n"


def test_captured_output_prefix_and_bound() -> None:
    buf = TailBuffer(4096)
    for i in range(10_000):
        buf.write(f"line {i}\n".encode())
    out = captured_output(buf, 4096)
    assert out.startswith(
        f"Captured {len(out.encode()) - out.index('...') - 4} of {buf.total_written} bytes\n...\n"
    )
    assert len(out.encode()) <= 4096
    assert out.endswith("line 9999\n")


def test_captured_output_does_not_start_mid_utf8_sequence() -> None:
    buf = TailBuffer(7)
    buf.write("ééééé".encode())  # 10 bytes; the tail starts inside a character
    out = captured_output(buf, 100)
    assert "\ufffd" not in out and out.endswith("ééé")


def test_texts() -> None:
    body = TailBuffer(4096)
    body.write(b"ok")
    assert http_output("GET", "http://x/", "200 OK", body, 4096) == "HTTP GET http://x/: 200 OK Output: ok"
    assert http_error_output("GET", "http://x/", "EOF") == 'Get "http://x/": EOF'
    assert tcp_success_output("127.0.0.1:80") == "TCP connect 127.0.0.1:80: Success"
    assert ttl_expired_output("") == "TTL expired"
    assert ttl_expired_output("bye") == "TTL expired (last output before timeout follows): bye"
    assert timeout_output(30.0, None, 4096) == "Timed out (30s) running check"
    captured = TailBuffer(4096)
    captured.write(b"partial")
    assert timeout_output(1.5, captured, 4096) == "Timed out (1.5s) running check\n\npartial"


def test_http_output_body_is_limited_to_the_tail() -> None:
    body = TailBuffer(4096)
    body.write(b"a" * 10_000 + b"END")
    out = http_output("GET", "http://x/", "500 Internal Server Error", body, 4096)
    assert len(out.encode()) <= 4096 and out.endswith("END")


def test_ttl_truncation() -> None:
    assert truncate_ttl_output("short", 4096) == "short"
    out = truncate_ttl_output("A" * 5000, 4096)
    assert out.startswith("AAAA") and out.endswith(" of 5000 bytes)")
    assert " ... (captured " in out and len(out) <= 4096
