"""Request bytes → response bytes, with answers encoded once per change of the data. Sans-IO.

The query path does no DNS object building: it walks the question, looks up the lowercased question
bytes in a cache of encoded answers, and glues a header, the client's own question and a cached body
together. A cache entry holds each answer group (an SRV with its target's A record, or one A record)
as a pre-encoded blob whose names are compressed only against the question
(:class:`~agent.dns.wire.NameCompressor`), so per-query shuffling is a permutation of blobs. For up to
:data:`PRECOMPUTED_PERMUTATIONS_UPTO` groups every permutation's body is built once; larger answers
are sampled per query with the injected RNG.

Entries are dropped by store watches (``service:<name>``, ``node:<name>``; see
:mod:`agent.state.watch`) — never by time — except entries holding an SOA, whose serial is the unix
time (``docs/discovery/dns.mdx``) and which are rebuilt when the second changes.

Size rules (``docs/discovery/dns.mdx``, "UDP based DNS queries"):

* UDP without EDNS0: at most ``min(8, udp_answer_limit)`` answer groups, then trimmed to 512 bytes.
* UDP with EDNS0: trimmed to the advertised size (at least 512, at most 65467); the OPT is echoed.
* TCP: everything that fits in 65535 bytes.

**Where ctk is stricter than Consul:** Consul sets TC only with ``dns_config.enable_truncate``
(default false — it silently trims). ctk sets TC on a UDP answer **whenever** it dropped records that
a TCP query would return, whatever ``enable_truncate`` says, so clients know to retry over TCP. Groups
cut by ``a_record_limit`` are not "trimmed": TCP would not return them either.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import permutations

from agent.state.watch import Watch

from .resolver import Answer, Resolver
from .wire import (
    AA,
    CD,
    QR,
    RA,
    RD,
    SERVFAIL,
    TC,
    MalformedQuery,
    NameCompressor,
    Record,
    encode_record,
    error_response,
    opt_record,
    parse_query,
)

__all__ = ["Responder", "Forward", "FORWARD", "PRECOMPUTED_PERMUTATIONS_UPTO", "MAX_UDP_EDNS", "MAX_TCP"]

PRECOMPUTED_PERMUTATIONS_UPTO = 4  # 4! = 24 pre-built bodies
MAX_UDP_EDNS = 65467  # largest EDNS0 size honoured (as Consul)
MAX_TCP = 65535
MAX_UDP_ANSWERS = 8  # Consul's hard cap under udp_answer_limit
MAX_ENTRIES = 20_000

log = logging.getLogger("ctk.dns")

_COUNTS = struct.Struct("!4H")
_FLAGS = struct.Struct("!H")


class Forward:
    """Returned by :meth:`Responder.handle` when the query must go to the recursors."""

    __slots__ = ()


FORWARD = Forward()


@dataclass(slots=True)
class _Unit:
    answer: bytes
    an: int
    additional: bytes
    ar: int

    @property
    def size(self) -> int:
        return len(self.answer) + len(self.additional)


# One pre-built response tail for a given client class: header-after-ID for each RD/CD
# combination, and the body that follows the question.
_Variant = tuple[tuple[bytes, bytes, bytes, bytes], bytes]


class _Entry:
    __slots__ = ("answer", "units", "flags", "authority", "ns", "extra", "ar", "shuffle", "limit",
                 "serial", "forward", "watch", "memo", "key")

    def __init__(self, key: bytes, answer: Answer, units: list[_Unit], flags: int, authority: bytes,
                 ns: int, extra: bytes, ar: int, serial: int | None) -> None:
        self.key = key
        self.answer = answer
        self.units = units
        self.flags = flags
        self.authority = authority
        self.ns = ns
        self.extra = extra
        self.ar = ar
        self.shuffle = answer.shuffle and len(units) > 1
        self.limit = answer.record_limit if answer.record_limit > 0 else len(units)
        self.serial = serial
        self.forward = answer.forward
        self.watch: Watch | None = None
        # (tcp, edns size) → the pre-built variants (None = sample per query)
        self.memo: dict[tuple[bool, int], tuple[list[_Variant] | None, int, int, bytes]] = {}


def _decode_labels(key: bytes) -> tuple[str, ...]:
    labels: list[str] = []
    pos = 0
    while key[pos]:
        ln = key[pos]
        labels.append(key[pos + 1: pos + 1 + ln].decode("utf-8", "surrogateescape"))
        pos += 1 + ln
    return tuple(labels)


class Responder:
    """Answers raw DNS requests: :meth:`handle` returns bytes to send, :data:`FORWARD`, or None (drop).

    ``rng`` shuffles answers (inject a seeded one in tests); ``clock`` drives the SOA serial.
    """

    def __init__(self, resolver: Resolver, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, max_entries: int = MAX_ENTRIES) -> None:
        self.resolver = resolver
        self.rng = rng or random.Random()
        self.clock = clock
        cfg = resolver.config
        dns = cfg.dns_config
        self.recursion = bool(cfg.recursors)
        self.compress = not dns.disable_compression
        limit = dns.udp_answer_limit if dns.udp_answer_limit > 0 else MAX_UDP_ANSWERS
        self.udp_answer_limit = min(MAX_UDP_ANSWERS, limit)
        self.max_entries = max_entries
        self._cache: dict[bytes, _Entry] = {}
        self._by_name: dict[tuple[str, str], set[bytes]] = {}
        self.encodes = 0  # how many answers were encoded (for tests and metrics)
        self.errors = 0

    # ------------------------------------------------------------------ cache

    def cached(self, key: bytes) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        for entry in list(self._cache.values()):
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if entry.watch is not None:
            entry.watch.cancel()
            entry.watch = None
        if self._cache.get(entry.key) is not entry:
            return  # already dropped (a newer entry may hold the key)
        del self._cache[entry.key]
        for name in entry.answer.names:
            keys = self._by_name.get(name)
            if keys is not None:
                keys.discard(entry.key)
                if not keys:
                    del self._by_name[name]

    def _refresh_names(self) -> None:
        names = self.resolver.names
        if names.stale:
            names.refresh()
        changed, names.changed = names.changed, set()
        for name in changed:
            for key in list(self._by_name.get(name, ())):
                entry = self._cache.get(key)
                if entry is not None:
                    self._drop(entry)

    def _build(self, key: bytes) -> _Entry:
        labels = _decode_labels(key)
        qtype = (key[-4] << 8) | key[-3]
        answer = self.resolver.resolve(labels, qtype)
        self.encodes += 1
        comp = NameCompressor(tuple(x.encode("utf-8", "surrogateescape") for x in labels)
                              if self.compress else None)
        units: list[_Unit] = []
        for group in answer.groups:
            try:
                units.append(_Unit(self._encode(group.answer, comp), len(group.answer),
                                   self._encode(group.additional, comp), len(group.additional)))
            except ValueError:
                continue  # a catalog name that is not a valid DNS name: leave that record out
        authority, ns = self._encode_all(answer.authority, comp)
        extra, ar = self._encode_all(answer.additional, comp)
        flags = QR | (AA if answer.authoritative else 0) | (RA if self.recursion else 0) | answer.rcode
        serial = int(self.clock()) if answer.timed else None
        entry = _Entry(key, answer, units, flags, authority, ns, extra, ar, serial)
        if len(self._cache) >= self.max_entries:
            self._drop(next(iter(self._cache.values())))
        self._cache[key] = entry
        if answer.topics:
            entry.watch = self.resolver.store.hub.watch(lambda: self._drop(entry), topics=answer.topics)
        for name in answer.names:
            self._by_name.setdefault(name, set()).add(key)
        return entry

    @staticmethod
    def _encode(records: Sequence[Record], comp: NameCompressor) -> bytes:
        return b"".join(encode_record(r, comp) for r in records)

    @staticmethod
    def _encode_all(records: Sequence[Record], comp: NameCompressor) -> tuple[bytes, int]:
        out = []
        for r in records:
            try:
                out.append(encode_record(r, comp))
            except ValueError:
                continue
        return b"".join(out), len(out)

    # ------------------------------------------------------------- assembly

    def _select(self, entry: _Entry, order: Sequence[_Unit], cap: int, budget: int, tcp: bool,
                opt: bytes) -> _Variant:
        an = ar = used = taken = 0
        answers: list[bytes] = []
        extras: list[bytes] = []
        for unit in order:
            if taken >= cap:
                break
            size = unit.size
            if used + size > budget:
                break
            used += size
            taken += 1
            an += unit.an
            ar += unit.ar
            answers.append(unit.answer)
            extras.append(unit.additional)
        trimmed = taken < min(len(entry.units), entry.limit)
        flags = entry.flags | (TC if trimmed and not tcp else 0)
        counts = _COUNTS.pack(1, an, entry.ns, ar + entry.ar + (1 if opt else 0))
        heads = tuple(_FLAGS.pack(flags | rd | cd) + counts for cd in (0, CD) for rd in (0, RD))
        body = b"".join(answers) + entry.authority + b"".join(extras) + entry.extra + opt
        return (heads[0], heads[1], heads[2], heads[3]), body

    def _prepare(self, entry: _Entry, tcp: bool, edns: int) -> tuple[list[_Variant] | None, int, int, bytes]:
        if tcp:
            size, cap = MAX_TCP, entry.limit
        elif edns:
            size, cap = min(edns, MAX_UDP_EDNS), entry.limit
        else:
            size, cap = 512, min(entry.limit, self.udp_answer_limit)
        opt = opt_record(min(edns, MAX_UDP_EDNS)) if edns else b""
        budget = size - 12 - len(entry.key) - len(entry.authority) - len(entry.extra) - len(opt)
        units = entry.units
        variants: list[_Variant] | None
        if not entry.shuffle:
            variants = [self._select(entry, units, cap, budget, tcp, opt)]
        elif len(units) <= PRECOMPUTED_PERMUTATIONS_UPTO:
            variants = [self._select(entry, p, cap, budget, tcp, opt) for p in permutations(units)]
        else:
            variants = None
        prepared = (variants, cap, budget, opt)
        entry.memo[(tcp, edns)] = prepared
        return prepared

    # ---------------------------------------------------------------- handle

    def handle(self, data: bytes, tcp: bool = False) -> bytes | Forward | None:
        """One request → the response bytes, :data:`FORWARD`, or None (no parseable header: drop)."""
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) < 12 or data[2] & 0x80:
            return None  # no header, or a response (never answer those: reflection loops)
        try:
            qend, _, edns, version = parse_query(data)
        except MalformedQuery as err:
            return error_response(data, err.rcode, err.question_end, ra=self.recursion)
        if version:
            # RFC 6891 §6.1.3: BADVERS (extended rcode 16 = 1 << 4).
            return error_response(data, 0, qend, ra=self.recursion, edns_size=min(edns, MAX_UDP_EDNS),
                                  ext_rcode=1)
        names = self.resolver.names
        if names.stale or names.changed:
            self._refresh_names()
        key = data[12:qend].lower()
        entry = self._cache.get(key)
        if entry is not None and entry.serial is not None and entry.serial != int(self.clock()):
            self._drop(entry)
            entry = None
        if entry is None:
            try:
                entry = self._build(key)
            except Exception:  # a bug: never a traceback to the client, SERVFAIL instead
                self.errors += 1
                if self.errors <= 10:
                    log.exception("answering %r failed", key)
                return error_response(data, SERVFAIL, qend, ra=self.recursion)
        if entry.forward:
            return FORWARD
        prepared = entry.memo.get((tcp, edns))
        if prepared is None:
            prepared = self._prepare(entry, tcp, edns)
        variants = prepared[0]
        if variants is None:
            units = entry.units
            order = self.rng.sample(units, min(prepared[1], len(units)))
            head, body = self._select(entry, order, prepared[1], prepared[2], tcp, prepared[3])
        elif len(variants) == 1:
            head, body = variants[0]
        else:
            head, body = variants[int(self.rng.random() * len(variants))]
        return data[:2] + head[(data[2] & 1) | ((data[3] & 0x10) >> 3)] + data[12:qend] + body
