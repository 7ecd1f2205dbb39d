"""The gossip package's exception tree.

::

    GossipError                     anything raised by agent.gossip
    ├── ConfigError(ValueError)     GossipConfig.validate() refused a setting (names the field)
    ├── DecodeError(ValueError)     a peer sent bytes that are not a valid gossip message
    ├── EncodeError(ValueError)     a local message cannot be put on the wire (too large for a packet)
    ├── UnknownMember(KeyError)     an API call named a member this node does not know
    └── LocalProtocolError          the caller misused the core (leave twice, force-leave self, ...)

As in h11, the remote/local split matters to the driver: a ``DecodeError`` is the peer's fault, so
the driver logs it and drops the packet or closes the stream; the others are bugs or bad operator
input and go back to whoever called the API (the HTTP layer turns them into 400s).
"""

from __future__ import annotations

__all__ = [
    "GossipError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "UnknownMember",
    "LocalProtocolError",
]


class GossipError(Exception):
    """Base class of every error raised by ``agent.gossip``."""


class ConfigError(GossipError, ValueError):
    """A ``GossipConfig`` field is out of range or inconsistent with another field."""


class DecodeError(GossipError, ValueError):
    """Received bytes are not a valid gossip packet or stream frame (the peer's fault)."""


class EncodeError(GossipError, ValueError):
    """A message cannot be encoded within the size limits (the local caller's fault)."""


class UnknownMember(GossipError, KeyError):
    """The named member is not in this node's member list."""


class LocalProtocolError(GossipError):
    """The core was asked to do something that makes no sense in its current state."""
