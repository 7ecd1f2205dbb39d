"""Which servers exist, as SWIM gossip on the LAN (serf) port sees them.

``-join``/``-retry-join`` name another agent's LAN address, exactly as in Consul (``127.0.0.3`` means
port 8301, ``127.0.0.3:8311`` a given port). Every agent gossips its tags; servers carry Consul's
``role=consul``, ``id`` (node id), ``port`` (server RPC port), ``dc`` and ``expect``. Servers are
identified by **node id**: when one comes back on a new address, gossip says so, which is what lets a
whole cluster that restarted on new IPs elect a leader again.

:class:`ServerDirectory` is all the rest of the agent needs from membership (``servers()``,
``on_change``); the gossip node behind it also serves ``/v1/agent/members``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent.gossip.core import Member, MemberStatus
from agent.gossip.node import GossipNode

__all__ = ["ServerInfo", "ServerDirectory", "server_info"]

log = logging.getLogger(__name__)

LIVE = (MemberStatus.ALIVE, MemberStatus.SUSPECT)


@dataclass(frozen=True)
class ServerInfo:
    id: str
    name: str
    datacenter: str
    server_addr: str  # ip:port of Raft/RPC
    serf_addr: str  # ip:port of gossip
    expect: int = 0


def server_info(member: Member) -> ServerInfo | None:
    """A server's identity from its gossip tags (None for clients and malformed tags)."""
    tags = member.tags
    if tags.get("role") != "consul" or not tags.get("id"):
        return None
    try:
        port = int(tags.get("port", "8300"))
        expect = int(tags.get("expect", "0") or 0)
    except ValueError:
        return None
    return ServerInfo(id=tags["id"], name=member.name, datacenter=tags.get("dc", ""),
                      server_addr=f"{member.addr}:{port}", serf_addr=f"{member.addr}:{member.port}", expect=expect)


class ServerDirectory:
    """``me`` describes this agent when it is a server; a client agent passes None and its
    ``datacenter``, and sees only the others."""

    def __init__(self, gossip: GossipNode, me: Callable[[], ServerInfo] | None, datacenter: str = "") -> None:
        self.gossip = gossip
        self.me = me
        self.datacenter = datacenter

    def servers(self) -> list[ServerInfo]:
        """Every live server of this datacenter gossip knows, this one included, sorted by id."""
        out: dict[str, ServerInfo] = {}
        dc = self.datacenter
        if self.me is not None:
            me = self.me()
            out[me.id] = me
            dc = me.datacenter
        if self.gossip.running:
            for m in self.gossip.members():
                info = server_info(m)
                if info is not None and m.status in LIVE and info.datacenter == dc:
                    out.setdefault(info.id, info)
        return [out[k] for k in sorted(out)]

    def departed_servers(self) -> list[ServerInfo]:
        """Servers that left gracefully (or were force-left): the leader takes them out of Raft."""
        if not self.gossip.running:
            return []
        out = []
        for m in self.gossip.members():
            info = server_info(m)
            if info is not None and m.status is MemberStatus.LEFT:
                out.append(info)
        return out
