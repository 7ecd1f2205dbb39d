#!/usr/bin/env python3
"""DNS queries/second for ``web.service.consul SRV`` over UDP, three servers side by side, one run.

Servers (each in its own process, one at a time, on a free 127.0.0.1 port):

* ``ctk``     — ctk's :class:`agent.dns.server.DNSServer` fed with 3 healthy instances of ``web``;
* ``dnslib``  — a bare dnslib ``BaseResolver`` + ``DNSServer`` answering the same fixed records;
* ``fixed``   — a minimal asyncio ``DatagramProtocol`` replying with a pre-encoded packet (ID patched):
                the ceiling for a Python asyncio UDP server on this machine.

All three return the same answer (3 SRV + 3 A, byte for byte the packet ctk builds). The load
generator is another process: ``dnsperf`` (Debian package ``dnsperf``) if installed, else a Python
asyncio client (``--client asyncio``), keeping ``--inflight`` (100) queries outstanding for
``--duration`` seconds. The servers are measured in interleaved rounds and the median is printed
(this machine is shared and noisy), with the server process's CPU time per answered query, which
noise disturbs less. Every process started here is stopped by PID, whatever happens.

    .venv/bin/python bench/dns_bench.py [--duration 3] [--rounds 3] [--client auto|dnsperf|asyncio] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QNAME = "web.service.consul"
SERVERS = ("ctk", "dnslib", "fixed")
_LIVE: list[subprocess.Popen[bytes]] = []
PIN: dict[str, int] = {}  # "server" / "load" → CPU, when pinning (set in main)


def _pinned(role: str) -> dict[str, object]:
    """Popen keyword arguments that pin the child to its CPU (server and load never share one)."""
    cpu = PIN.get(role)
    if cpu is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {cpu})}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def query_packet(qid: int = 0x1234, edns: bool = False) -> bytes:
    from dnslib import EDNS0, DNSRecord

    q = DNSRecord.question(QNAME, "SRV")
    q.header.id = qid
    if edns:
        q.add_ar(EDNS0(udp_len=1232))
    return bytes(q.pack())


# ------------------------------------------------------------------ servers


def _ctk_store() -> object:
    from agent.state import commands
    from agent.state.store import Store

    store = Store()
    for i in range(3):
        node = f"node{i}"
        store.apply(i + 1, commands.register(
            {"node": node, "address": f"10.0.0.{i + 1}"},
            service={"id": "web", "service": "web", "port": 8080, "tags": ["rails"]},
            checks=[{"node": node, "check_id": "serfHealth", "name": "Serf Health Status", "status": "passing"},
                    {"node": node, "check_id": "service:web", "name": "web", "status": "passing",
                     "service_id": "web"}]))
    return store


def ctk_reference_answer() -> bytes:
    """The exact bytes ctk answers to :func:`query_packet` (used by the other two servers)."""
    import random

    from agent.config import AgentConfig
    from agent.dns.resolver import Resolver
    from agent.dns.responder import Responder

    responder = Responder(Resolver(_ctk_store(), AgentConfig(node_name="node0")),  # type: ignore[arg-type]
                          rng=random.Random(0))
    out = responder.handle(query_packet())
    assert isinstance(out, bytes)
    return out


async def _serve_ctk(port: int) -> None:
    from agent.config import AgentConfig, Ports
    from agent.dns.server import DNSServer

    server = DNSServer(_ctk_store(), AgentConfig(node_name="node0", ports=Ports(dns=port)))  # type: ignore[arg-type]
    await server.start()
    print(f"PORT {server.port}", flush=True)
    await asyncio.Event().wait()


class _Fixed(asyncio.DatagramProtocol):
    def __init__(self, packet: bytes) -> None:
        self.tail = packet[2:]
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and len(data) >= 12:
            self.transport.sendto(data[:2] + self.tail, addr)


async def _serve_fixed(port: int) -> None:
    packet = ctk_reference_answer()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Fixed(packet), local_addr=("127.0.0.1", port))
    print(f"PORT {transport.get_extra_info('sockname')[1]}", flush=True)
    await asyncio.Event().wait()


def _serve_dnslib(port: int) -> None:
    from dnslib import DNSRecord
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    fixed = DNSRecord.parse(ctk_reference_answer())

    class FixedResolver(BaseResolver):  # type: ignore[misc]
        def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
            reply = request.reply()
            for rr in fixed.rr:
                reply.add_answer(rr)
            for rr in fixed.ar:
                reply.add_ar(rr)
            return reply

    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False,
                      logf=lambda *_: None)
    if port == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    server = DNSServer(FixedResolver(), port=port, address="127.0.0.1", logger=quiet)
    print(f"PORT {port}", flush=True)
    server.start()  # blocks


def serve(kind: str, port: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if kind == "ctk":
        asyncio.run(_serve_ctk(port))
    elif kind == "fixed":
        asyncio.run(_serve_fixed(port))
    elif kind == "dnslib":
        _serve_dnslib(port)
    else:
        raise SystemExit(f"unknown server {kind!r}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``); 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@contextlib.contextmanager
def server_process(kind: str) -> Iterator[tuple[int, int]]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **_pinned("server"))  # type: ignore[call-overload]
    _LIVE.append(proc)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.match(r"PORT (\d+)", line)
        if not m:
            raise RuntimeError(f"{kind} server did not start (exit {proc.poll()}): {line!r}")
        yield int(m.group(1)), proc.pid
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    if proc in _LIVE:
        _LIVE.remove(proc)


def check_answer(port: int) -> str:
    """One query before loading: the server must answer 3 SRV + 3 A."""
    from dnslib import QTYPE, DNSRecord

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(query_packet(0x4242), ("127.0.0.1", port))
        reply = DNSRecord.parse(s.recv(4096))
    srv = sum(1 for rr in reply.rr if rr.rtype == QTYPE.SRV)
    a = sum(1 for rr in reply.ar if rr.rtype == QTYPE.A)
    if reply.header.id != 0x4242 or srv != 3 or a != 3:
        raise RuntimeError(f"unexpected answer on port {port}: {reply}")
    return f"{srv} SRV + {a} A"


# ------------------------------------------------------------- load generators


def run_dnsperf(port: int, duration: float, inflight: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"{QNAME} SRV\n")
        qfile = f.name
    try:
        proc = subprocess.Popen(
            ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", qfile, "-l", str(duration),
             "-q", str(inflight), "-c", "1", "-t", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **_pinned("load"))  # type: ignore[call-overload]
        _LIVE.append(proc)
        try:
            out, _ = proc.communicate(timeout=duration + 30)
        finally:
            stop(proc)
    finally:
        os.unlink(qfile)
    text = out.decode(errors="replace")
    m = re.search(r"Queries per second:\s+([\d.]+)", text)
    lost = re.search(r"Queries lost:\s+(\d+)", text)
    if not m:
        raise RuntimeError(f"dnsperf output not understood:\n{text}")
    if lost and int(lost.group(1)):
        log(f"  (dnsperf: {lost.group(1)} queries lost)")
    return float(m.group(1))


class _LoadClient(asyncio.DatagramProtocol):
    def __init__(self, template: bytes, inflight: int, deadline: float) -> None:
        self.tail = template[2:]
        self.inflight = inflight
        self.deadline = deadline
        self.done = 0
        self.sent: dict[int, float] = {}
        self.next_id = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.inflight):
            self.send()

    def send(self) -> None:
        qid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFF
        self.sent[qid] = time.monotonic()
        assert self.transport is not None
        self.transport.sendto(struct.pack("!H", qid) + self.tail)

    def datagram_received(self, data: bytes, addr: object) -> None:
        qid = (data[0] << 8) | data[1]
        if self.sent.pop(qid, None) is None:
            return
        self.done += 1
        if time.monotonic() < self.deadline:
            self.send()
        elif not self.sent and not self.finished.done():
            self.finished.set_result(None)

    def resend_lost(self) -> None:
        now = time.monotonic()
        for qid in [q for q, t in self.sent.items() if now - t > 1.0]:
            del self.sent[qid]
            if now < self.deadline:
                self.send()


async def _asyncio_load(port: int, duration: float, inflight: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    deadline = start + duration
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _LoadClient(query_packet(), inflight, deadline), remote_addr=("127.0.0.1", port))
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            proto.resend_lost()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proto.finished, 2.0)
    finally:
        transport.close()
    return proto.done / (time.monotonic() - start)


def run_asyncio_client(port: int, duration: float, inflight: int) -> float:
    proc = subprocess.Popen([sys.executable, __file__, "--load", str(port), "--duration", str(duration),
                             "--inflight", str(inflight)], cwd=ROOT, stdout=subprocess.PIPE,
                            **_pinned("load"))  # type: ignore[call-overload]
    _LIVE.append(proc)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        stop(proc)
    return float(json.loads(out)["qps"])


# ------------------------------------------------------------------------ main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds of load per server and round (default 3)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds over the three servers, interleaved; the median is reported (default 3)")
    p.add_argument("--inflight", type=int, default=100, help="queries outstanding (default 100)")
    p.add_argument("--client", choices=("auto", "dnsperf", "asyncio"), default="auto")
    p.add_argument("--only", choices=SERVERS, action="append", help="measure only these servers")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to CPU 0 and the load generator to CPU 1")
    p.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    p.add_argument("--load", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, 0)
        return 0
    if args.load:
        qps = asyncio.run(_asyncio_load(args.load, args.duration, args.inflight))
        print(json.dumps({"qps": qps}))
        return 0

    client = args.client
    if client == "auto":
        client = "dnsperf" if shutil.which("dnsperf") else "asyncio"
    if client == "dnsperf" and not shutil.which("dnsperf"):
        raise SystemExit("dnsperf is not installed (apt-get install -y dnsperf), or use --client asyncio")
    duration = max(0.5, min(args.duration, 120.0))
    rounds = max(1, min(args.rounds, 20))
    kinds = args.only or list(SERVERS)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not args.no_pin and len(cpus) >= 2:
        PIN.update(server=cpus[0], load=cpus[1])
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    load = run_dnsperf if client == "dnsperf" else run_asyncio_client
    try:
        for rnd in range(rounds):
            for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:  # rotate the order
                with server_process(kind) as (port, pid):
                    what = check_answer(port)
                    log(f"round {rnd + 1}/{rounds} {kind}: port {port}, answers {what}; {duration:g}s of load ...")
                    before = cpu_seconds(pid)
                    qps = load(port, duration, args.inflight)
                    used = cpu_seconds(pid) - before
                    samples[kind].append(qps)
                    if used > 0 and qps > 0:
                        cpu[kind].append(used / (qps * duration) * 1e6)
    finally:
        for proc in list(_LIVE):
            stop(proc)
    results = {k: statistics.median(v) for k, v in samples.items()}
    cpu_us = {k: statistics.median(v) for k, v in cpu.items() if v}
    if args.json:
        print(json.dumps({"client": client, "duration_s": duration, "rounds": rounds, "inflight": args.inflight,
                          "qps_median": results, "qps_samples": samples,
                          "server_cpu_us_per_query_median": cpu_us, "pinned": dict(PIN)}, indent=2))
        return 0
    pinning = f"server on CPU {PIN['server']}, load on CPU {PIN['load']}" if PIN else "not pinned"
    print(f"DNS {QNAME} SRV over UDP, {args.inflight} in flight, load generator: {client}, "
          f"median of {rounds} x {duration:g}s, {pinning}")
    print(f"{'server':<10}{'queries/s':>12}{'vs dnslib':>12}{'vs fixed':>12}{'cpu us/q':>10}   samples")
    for kind, qps in results.items():
        vs_dnslib = f"{qps / results['dnslib']:.2f}x" if results.get("dnslib") else "-"
        vs_fixed = f"{qps / results['fixed']:.2f}x" if results.get("fixed") else "-"
        each = ", ".join(f"{x:,.0f}" for x in samples[kind])
        per_q = f"{cpu_us[kind]:.1f}" if kind in cpu_us else "-"
        print(f"{kind:<10}{qps:>12,.0f}{vs_dnslib:>12}{vs_fixed:>12}{per_q:>10}   {each}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
