"""Gossip tuning knobs: memberlist's LAN defaults, with WAN/local/fast presets written as deltas.

Every duration is float seconds (``*_s``). The first block is memberlist's ``Config`` (values from
``DefaultLANConfig``, which Consul uses for ``gossip_lan``); the second block is the serf layer
Consul puts on top (reconnect, tombstones, leave propagation, user events).

Presets are data, not code paths: ``GossipConfig.fast()`` is just LAN with smaller numbers, and the
core has no idea which preset it was given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from agent.gossip.errors import ConfigError

__all__ = ["GossipConfig"]

_HOUR_S = 3600.0
_EVENT_FRAMING_BYTES = 64  # packet header + event fields around name and payload, rounded up


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """SWIM + Lifeguard settings for one gossip pool (LAN or WAN)."""

    # --- memberlist ---------------------------------------------------------------------------
    probe_interval_s: float = 1.0
    """One failure-detector probe per interval (SWIM §3.1). 1 s balances detection time against
    the O(1) per-member probe load; detection takes a few intervals plus the suspicion timeout."""

    probe_timeout_s: float = 0.5
    """Wait this long for a direct ack before asking ``indirect_checks`` peers. Should exceed the
    99th-percentile RTT; half the interval leaves the other half for the indirect probes."""

    suspicion_mult: int = 4
    """Suspicion timeout = suspicion_mult × max(1, log10(n)) × probe_interval (memberlist). Higher
    means fewer false positives from a slow node and slower detection of a dead one."""

    suspicion_max_timeout_mult: int = 6
    """Lifeguard starts a suspicion at this many times the minimum timeout and shrinks it as
    independent confirmations arrive (Lifeguard §IV-C). 6 is memberlist's default."""

    gossip_nodes: int = 3
    """Fan-out per gossip round. 3 random members per round spreads a rumour in O(log n) rounds
    (epidemic dissemination, SWIM §4.1) at a small constant bandwidth per node."""

    gossip_interval_s: float = 0.2
    """How often queued broadcasts are pushed to ``gossip_nodes`` members. 200 ms makes
    dissemination faster than probing, so a suspicion reaches the cluster well inside its timeout."""

    retransmit_mult: int = 4
    """Each broadcast is sent retransmit_mult × ceil(log10(n + 1)) times; enough that every member
    hears it with high probability (SWIM §4.1's λ log n)."""

    indirect_checks: int = 3
    """Members asked to ping a target that missed its direct ack (SWIM ping-req, k=3). More
    helpers tolerate more lossy paths at the cost of k extra packets per failed probe."""

    push_pull_interval_s: float = 30.0
    """Full-state TCP exchange with one random member (anti-entropy). Heals what gossip missed;
    scaled up above 32 members so total cluster bandwidth stays flat (see util.push_pull_scale_s)."""

    tcp_timeout_s: float = 10.0
    """Deadline for a push/pull stream; the driver enforces it. Generous because the state of a
    large cluster is hundreds of kilobytes."""

    gossip_to_the_dead_s: float = 30.0
    """Keep gossiping to a dead or left member this long, so a falsely accused node hears that it
    must refute (memberlist GossipToTheDeadTime)."""

    awareness_max_multiplier: int = 8
    """Lifeguard local health: probe interval and timeout stretch up to ×8 while this node itself
    seems unhealthy (missed nacks, refutations), so a slow node does not accuse healthy ones."""

    dead_node_reclaim_s: float = 30.0
    """A different address may claim a dead member's name after this long (Consul sets 30 s so a
    rebuilt node can come back under its old name without operator action)."""

    udp_buffer_size: int = 1400
    """Largest packet in bytes. 1400 fits the common 1500-byte Ethernet MTU after IP/UDP headers
    (and encryption overhead), so packets are never fragmented."""

    # --- serf layer (what Consul adds on top of memberlist) ------------------------------------
    reconnect_interval_s: float = 30.0
    """How often to try a push/pull with a random failed member, so partitions heal (serf)."""

    reconnect_timeout_s: float = 72 * _HOUR_S
    """A failed member is reaped after this long (Consul's reconnect_timeout default is 72 h)."""

    tombstone_timeout_s: float = 24 * _HOUR_S
    """A left member stays listed as ``left`` this long before it is reaped (serf's 24 h)."""

    reap_interval_s: float = 15.0
    """How often the reaper scans for failed/left members past their timeouts (serf's 15 s)."""

    leave_propagate_delay_s: float = 3.0
    """After our leave broadcast has gone out, wait this long before reporting the leave complete,
    so the rumour is relayed before the sockets close (Consul sets 3 s)."""

    broadcast_timeout_s: float = 5.0
    """Give up waiting for the leave broadcast to be sent after this long (serf's 5 s)."""

    event_buffer_size: int = 512
    """User events remembered per Lamport time window for de-duplication (serf EventBuffer)."""

    user_event_max_bytes: int = 512
    """Name plus payload of a user event; small so events ride along in gossip packets (serf)."""

    tags_max_bytes: int = 512
    """Encoded size limit of a member's tags (memberlist MetaMaxSize), so an alive message always
    fits in one packet with room for piggybacked broadcasts."""

    min_queue_depth: int = 1024
    """The user-event broadcast queue is pruned to max(min_queue_depth, 2 × n) entries (serf)."""

    # --- presets --------------------------------------------------------------------------------
    @classmethod
    def lan(cls, **overrides: Any) -> GossipConfig:
        """memberlist's DefaultLANConfig; Consul's ``gossip_lan``."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> GossipConfig:
        """memberlist's DefaultWANConfig: higher latency and loss tolerated between datacenters."""
        return cls.lan(
            tcp_timeout_s=30.0,
            suspicion_mult=6,
            push_pull_interval_s=60.0,
            probe_timeout_s=3.0,
            probe_interval_s=5.0,
            gossip_nodes=4,
            gossip_interval_s=0.5,
            gossip_to_the_dead_s=60.0,
            **overrides,
        )

    @classmethod
    def local(cls, **overrides: Any) -> GossipConfig:
        """memberlist's DefaultLocalConfig: a loopback or single-switch network, fast and reliable."""
        return cls.lan(
            tcp_timeout_s=1.0,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval_s=15.0,
            probe_timeout_s=0.2,
            probe_interval_s=1.0,
            gossip_interval_s=0.1,
            gossip_to_the_dead_s=15.0,
            **overrides,
        )

    @classmethod
    def fast(cls, **overrides: Any) -> GossipConfig:
        """Tests and ``-dev``: Consul -dev's gossip block (probe and gossip every 100 ms,
        suspicion_mult 3) on top of LAN. One deviation: -dev also sets the probe timeout to 100 ms,
        which leaves no time for indirect probes; 50 ms keeps LAN's half-interval split so ping-req
        and nacks are exercised. Tests shorten other timers with keyword overrides."""
        return cls.lan(
            probe_interval_s=0.1,
            probe_timeout_s=0.05,
            gossip_interval_s=0.1,
            suspicion_mult=3,
            **overrides,
        )

    def validate(self) -> GossipConfig:
        """Check ranges and cross-field rules; returns self so presets can be chained."""
        positive = (
            "probe_interval_s",
            "probe_timeout_s",
            "gossip_interval_s",
            "push_pull_interval_s",
            "tcp_timeout_s",
            "reconnect_interval_s",
            "reap_interval_s",
            "broadcast_timeout_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = (
            "gossip_to_the_dead_s",
            "dead_node_reclaim_s",
            "reconnect_timeout_s",
            "tombstone_timeout_s",
            "leave_propagate_delay_s",
            "indirect_checks",
        )
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        at_least_one = (
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "gossip_nodes",
            "retransmit_mult",
            "awareness_max_multiplier",
            "event_buffer_size",
            "min_queue_depth",
        )
        for name in at_least_one:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.probe_timeout_s > self.probe_interval_s:
            raise ConfigError(
                f"probe_timeout_s ({self.probe_timeout_s}) must not exceed probe_interval_s "
                f"({self.probe_interval_s}): a probe must finish before the next one starts"
            )
        if not 512 <= self.udp_buffer_size <= 65507:
            raise ConfigError(f"udp_buffer_size must be in 512..65507 bytes, got {self.udp_buffer_size!r}")
        if not 0 < self.tags_max_bytes <= self.udp_buffer_size // 2:
            raise ConfigError(
                f"tags_max_bytes must be in 1..udp_buffer_size/2 ({self.udp_buffer_size // 2}), "
                f"got {self.tags_max_bytes!r}"
            )
        event_cap = self.udp_buffer_size - _EVENT_FRAMING_BYTES
        if not 0 < self.user_event_max_bytes <= event_cap:
            raise ConfigError(
                f"user_event_max_bytes must be in 1..{event_cap} (an event must fit in one "
                f"udp_buffer_size packet), got {self.user_event_max_bytes!r}"
            )
        return self
