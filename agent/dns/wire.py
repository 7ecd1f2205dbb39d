"""DNS wire format: the few pieces ctk needs, written for speed on the query path (RFC 1035 §4).

Sans-IO and pure. Two halves:

* :func:`parse_query` walks a request once (header, the single question, the additional section
  for an EDNS0 OPT record, RFC 6891) without building objects for every label.
* :class:`NameCompressor` / :func:`encode_record` encode resource records whose names are compressed
  **only against the question** (which always starts at offset 12). Records encoded this way are
  position-independent byte blobs, so a cached answer can be shuffled by permuting blobs and trimmed
  by dropping blobs, without re-encoding anything (``docs/discovery/dns.mdx``: answers are shuffled
  per query).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA", "SRV", "OPT", "IXFR", "AXFR", "ANY",
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
    "QR", "AA", "TC", "RD", "RA", "CD",
    "SRVData", "SOAData", "Record", "Query", "MalformedQuery",
    "NameCompressor", "encode_record", "name_labels", "parse_query", "error_response", "opt_record",
    "header_flags",
]

# Record types (RFC 1035 §3.2.2, RFC 3596, RFC 2782, RFC 6891).
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
IXFR, AXFR, ANY = 251, 252, 255
CLASS_IN = 1

# Response codes.
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

# Header flag bits (16-bit flags word).
QR, AA, TC, RD, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010

MAX_NAME = 255
_U16 = struct.Struct("!H")
_HDR = struct.Struct("!6H")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_SRV = struct.Struct("!HHH")
_SOA_NUMS = struct.Struct("!5I")


@dataclass(frozen=True, slots=True)
class SRVData:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SOAData:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RData = str | SRVData | SOAData | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record, class IN. ``rdata``: an address or a name (A, AAAA, NS, CNAME, PTR),
    :class:`SRVData`, :class:`SOAData`, or a tuple of strings (TXT)."""

    name: str
    rtype: int
    ttl: int
    rdata: RData


def name_labels(name: str) -> tuple[bytes, ...]:
    """``"a.B.consul."`` → ``(b"a", b"B", b"consul")``; ValueError if it cannot be a DNS name."""
    text = name[:-1] if name.endswith(".") else name
    if not text:
        return ()
    out = tuple(label.encode("utf-8", "surrogateescape") for label in text.split("."))
    total = 1
    for label in out:
        if not label or len(label) > 63:
            raise ValueError(f"invalid DNS name {name!r}")
        total += len(label) + 1
    if total > MAX_NAME:
        raise ValueError(f"DNS name too long: {name!r}")
    return out


class NameCompressor:
    """Encodes names, pointing at the question (offset 12) for any suffix the question shares.

    ``question=None`` disables compression (``dns_config.disable_compression``).
    """

    def __init__(self, question: tuple[bytes, ...] | None) -> None:
        self._table: dict[tuple[bytes, ...], int] = {}
        if question is None:
            return
        offset = 12
        for i, label in enumerate(question):
            if offset > 0x3FFF:
                break
            self._table.setdefault(tuple(x.lower() for x in question[i:]), offset)
            offset += 1 + len(label)

    def encode(self, name: str, compress: bool = True) -> bytes:
        labels = name_labels(name)
        table = self._table if compress else {}
        lowered = tuple(x.lower() for x in labels)
        out = bytearray()
        for i, label in enumerate(labels):
            ptr = table.get(lowered[i:])
            if ptr is not None:
                out += _U16.pack(0xC000 | ptr)
                return bytes(out)
            out.append(len(label))
            out += label
        out.append(0)
        return bytes(out)


def _rdata(rec: Record, comp: NameCompressor) -> bytes:
    data = rec.rdata
    rtype = rec.rtype
    if rtype == A and isinstance(data, str):
        return ipaddress.IPv4Address(data).packed
    if rtype == AAAA and isinstance(data, str):
        return ipaddress.IPv6Address(data).packed
    if rtype in (NS, CNAME, PTR) and isinstance(data, str):
        return comp.encode(data)  # well-known types may be compressed (RFC 3597 §4)
    if rtype == SRV and isinstance(data, SRVData):
        # RFC 2782: the target is never compressed.
        return _SRV.pack(data.priority, data.weight, data.port) + comp.encode(data.target, compress=False)
    if rtype == SOA and isinstance(data, SOAData):
        return (comp.encode(data.mname) + comp.encode(data.rname)
                + _SOA_NUMS.pack(data.serial & 0xFFFFFFFF, data.refresh, data.retry, data.expire, data.minimum))
    if rtype == TXT and isinstance(data, tuple):
        out = bytearray()
        for s in data:
            raw = s.encode("utf-8")[:255]
            out.append(len(raw))
            out += raw
        return bytes(out)
    raise ValueError(f"cannot encode record type {rtype} with {type(data).__name__}")


def encode_record(rec: Record, comp: NameCompressor) -> bytes:
    """One RR as bytes, position-independent (names point only into the question)."""
    rdata = _rdata(rec, comp)
    if len(rdata) > 0xFFFF:
        raise ValueError("rdata too long")
    ttl = min(max(int(rec.ttl), 0), 0x7FFFFFFF)
    return comp.encode(rec.name) + _RR_FIXED.pack(rec.rtype, CLASS_IN, ttl, len(rdata)) + rdata


def opt_record(udp_size: int, ext_rcode: int = 0) -> bytes:
    """An EDNS0 OPT pseudo-RR (RFC 6891 §6.1.2): root owner, no options, DO clear, version 0."""
    return b"\x00" + _RR_FIXED.pack(OPT, udp_size, (ext_rcode & 0xFF) << 24, 0)


def header_flags(data: bytes) -> int:
    return (data[2] << 8) | data[3]


class MalformedQuery(Exception):
    """The packet has a header but cannot be parsed: answer FORMERR (or NOTIMP for ``rcode``)."""

    def __init__(self, reason: str, question_end: int = 0, rcode: int = FORMERR) -> None:
        super().__init__(reason)
        self.question_end = question_end
        self.rcode = rcode


# (question_end, qtype, edns_size, edns_version); edns_size is 0 without an OPT record.
Query = tuple[int, int, int, int]

_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1, no other records
_ONE_AR = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # QD=1, ARCOUNT=1 (usually the OPT)
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT


def _skip_name(data: bytes, pos: int) -> int:
    n = len(data)
    while True:
        if pos >= n:
            raise MalformedQuery("name runs past the end")
        ln = data[pos]
        if ln == 0:
            return pos + 1
        if ln & 0xC0 == 0xC0:
            if pos + 2 > n:
                raise MalformedQuery("truncated pointer")
            return pos + 2
        if ln & 0xC0:
            raise MalformedQuery("bad label type")
        pos += 1 + ln


def parse_query(data: bytes) -> Query:
    """Parse a request with a 12-byte header (the caller checks length and QR).

    Returns ``(question_end, qtype, edns_size, edns_version)``; raises :class:`MalformedQuery`. Only
    opcode QUERY with exactly one question is accepted. The common shapes (no records besides the
    question, or one OPT) take a short path.
    """
    if data[2] & 0x78:
        raise MalformedQuery("opcode not implemented", 0, NOTIMP)
    counts = data[4:12]
    if counts[:2] != b"\x00\x01":
        raise MalformedQuery("exactly one question is required")
    n = len(data)
    pos = 12
    while True:
        if pos >= n:
            raise MalformedQuery("question runs past the end")
        ln = data[pos]
        if ln == 0:
            break
        if ln > 63:
            raise MalformedQuery("compressed or extended label in the question")
        pos += ln + 1
    if pos - 12 + 1 > MAX_NAME:
        raise MalformedQuery("question name too long")
    qend = pos + 5
    if qend > n:
        raise MalformedQuery("question runs past the end")
    qtype = (data[pos + 1] << 8) | data[pos + 2]
    if counts == _PLAIN:
        return qend, qtype, 0, 0
    if counts == _ONE_AR and data[qend:qend + 3] == _OPT_HEAD and qend + 11 <= n:
        if qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) > n:
            raise MalformedQuery("OPT runs past the end", qend)
        return qend, qtype, max((data[qend + 3] << 8) | data[qend + 4], 512), data[qend + 6]
    return _parse_records(data, qend, qtype)


def _parse_records(data: bytes, qend: int, qtype: int) -> Query:
    n = len(data)
    an, ns, ar = struct.unpack_from("!3H", data, 6)
    edns_size = edns_version = 0
    pos = qend
    seen_opt = False
    for i in range(an + ns + ar):
        start = pos
        try:
            pos = _skip_name(data, pos)
        except MalformedQuery as err:
            raise MalformedQuery(str(err), qend) from None
        if pos + 10 > n:
            raise MalformedQuery("record runs past the end", qend)
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > n:
            raise MalformedQuery("rdata runs past the end", qend)
        if rtype == OPT and i >= an + ns:
            if seen_opt or data[start] != 0:
                raise MalformedQuery("bad OPT record", qend)  # RFC 6891 §6.1.1
            seen_opt = True
            edns_size = max(rclass, 512)
            edns_version = (ttl >> 16) & 0xFF
    return qend, qtype, edns_size, edns_version


def error_response(data: bytes, rcode: int, question_end: int = 0, *, ra: bool = False,
                   edns_size: int = 0, ext_rcode: int = 0, aa: bool = False) -> bytes:
    """A reply carrying only an rcode; echoes the question when it could be parsed."""
    qflags = header_flags(data)
    flags = QR | (qflags & (0x7800 | RD | CD)) | (RA if ra else 0) | (AA if aa else 0) | (rcode & 0x0F)
    question = data[12:question_end] if question_end else b""
    opt = opt_record(edns_size, ext_rcode) if edns_size else b""
    return (_HDR.pack((data[0] << 8) | data[1], flags, 1 if question else 0, 0, 0, 1 if opt else 0)
            + question + opt)
