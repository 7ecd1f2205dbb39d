"""A bare gossip member for demos, multi-process tests and ``bench/gossip_bench.py``.

::

    python -m agent.gossip --name n1 --bind 127.0.0.1:0 [--join HOST[:PORT]]... [--preset fast]
                           [--encrypt KEY] [--data-dir DIR] [--rejoin] [--retry-interval S]
                           [--retry-max N] [--tag k=v]...

Prints one JSON object per line on stdout: ``{"ev": "ready", "addr": ...}`` once bound,
``{"ev": "joined", "n": N}`` after the join, ``{"ev": "member", "kind", "node", "status", "t"}``
for every member event and ``{"ev": "user", "name", "payload", "t"}`` for user events; ``t`` is
``time.monotonic()`` (one clock for every process on a host, so timings can be compared).
SIGTERM/SIGINT leave gracefully and exit 0; an exhausted ``--retry-max`` exits 1 (Consul's rule).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from agent.gossip.config import GossipConfig
from agent.gossip.core import MemberEvent, UserEventReceived
from agent.gossip.keyring import setup_keyring
from agent.gossip.node import SNAPSHOT_FILE, GossipNode, RetryJoinError, format_address, parse_address

_PRESETS = {"lan": GossipConfig.lan, "fast": GossipConfig.fast, "local": GossipConfig.local, "wan": GossipConfig.wan}


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _on_member(ev: MemberEvent) -> None:
    m = ev.member
    _emit(ev="member", kind=ev.kind.value, node=m.name, status=m.status.value, addr=format_address(m.addr, m.port),
          t=time.monotonic())


def _on_user(ev: UserEventReceived) -> None:
    _emit(ev="user", name=ev.name, payload=ev.payload.decode(errors="replace"), ltime=ev.ltime, t=time.monotonic())


async def _main(args: argparse.Namespace) -> int:
    host, port = parse_address(args.bind, 0, allow_any_port=True)
    data_dir = Path(args.data_dir) if args.data_dir else None
    seal = setup_keyring(data_dir, args.encrypt or None)
    tags = dict(t.split("=", 1) for t in args.tag)
    node = GossipNode(
        _PRESETS[args.preset](), args.name, (host, port), seal=seal, tags=tags,
        on_member_event=_on_member, on_user_event=_on_user,
        snapshot_path=data_dir / SNAPSHOT_FILE if data_dir else None, rejoin_after_leave=args.rejoin,
    )
    await node.start()
    _emit(ev="ready", name=args.name, addr=format_address(*node.address), t=time.monotonic())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        addrs = list(args.join) + node.rejoin_addresses()
        if addrs:
            n = await node.retry_join(addrs, args.retry_interval, args.retry_max)
            _emit(ev="joined", n=n, t=time.monotonic())
        await stop.wait()
        ok = await node.leave()
        _emit(ev="left", ok=ok, t=time.monotonic())
        return 0
    except RetryJoinError as exc:
        _emit(ev="error", error=str(exc))
        return 1
    finally:
        await node.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.gossip", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--bind", default="127.0.0.1:0", help="host[:port] for UDP and TCP (port 0: any free port)")
    p.add_argument("--join", action="append", default=[])
    p.add_argument("--preset", choices=sorted(_PRESETS), default="fast")
    p.add_argument("--encrypt", default="")
    p.add_argument("--data-dir", default="")
    p.add_argument("--rejoin", action="store_true")
    p.add_argument("--retry-interval", type=float, default=1.0)
    p.add_argument("--retry-max", type=int, default=0)
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
