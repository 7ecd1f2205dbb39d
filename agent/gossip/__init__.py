"""SWIM + Lifeguard gossip membership (Consul's serf/memberlist layer), sans-IO.

``GossipCore`` is the pure protocol; ``InMemoryNetwork``/``FakeClock`` drive many cores in one
thread for tests and simulations. The asyncio UDP/TCP driver lives in ``agent.gossip.node``.
See ``agent/gossip/DESIGN.md`` for the knobs and their formulas.
"""

from agent.gossip.awareness import Awareness
from agent.gossip.broadcast import BroadcastQueue
from agent.gossip.config import GossipConfig
from agent.gossip.core import (
    Address,
    GossipCore,
    GossipStats,
    LeaveComplete,
    Member,
    MemberEvent,
    MemberEventKind,
    MemberStatus,
    Output,
    PacketSeal,
    SendPacket,
    StreamRequest,
    UserEventReceived,
)
from agent.gossip.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    GossipError,
    LocalProtocolError,
    UnknownMember,
)
from agent.gossip.memnet import FakeClock, InMemoryNetwork, NetworkStats
from agent.gossip.suspicion import Suspicion

__all__ = [
    "Address",
    "Awareness",
    "BroadcastQueue",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "FakeClock",
    "GossipConfig",
    "GossipCore",
    "GossipError",
    "GossipStats",
    "InMemoryNetwork",
    "LeaveComplete",
    "LocalProtocolError",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "MemberStatus",
    "NetworkStats",
    "Output",
    "PacketSeal",
    "SendPacket",
    "StreamRequest",
    "Suspicion",
    "UnknownMember",
    "UserEventReceived",
]
