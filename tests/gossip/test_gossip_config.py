"""GossipConfig: memberlist's LAN defaults, presets as deltas, validate()."""

from __future__ import annotations

import dataclasses

import pytest

from agent.gossip import ConfigError, GossipConfig


def test_lan_defaults_match_memberlist_and_consul() -> None:
    """consul-api.md §9, LAN column."""
    c = GossipConfig.lan()
    assert (c.probe_interval_s, c.probe_timeout_s) == (1.0, 0.5)
    assert (c.suspicion_mult, c.suspicion_max_timeout_mult) == (4, 6)
    assert (c.gossip_nodes, c.gossip_interval_s, c.retransmit_mult) == (3, 0.2, 4)
    assert (c.indirect_checks, c.push_pull_interval_s, c.tcp_timeout_s) == (3, 30.0, 10.0)
    assert (c.gossip_to_the_dead_s, c.awareness_max_multiplier, c.dead_node_reclaim_s) == (30.0, 8, 30.0)
    assert c.udp_buffer_size == 1400
    assert c.reconnect_timeout_s == 72 * 3600 and c.tombstone_timeout_s == 24 * 3600
    assert GossipConfig() == c


def test_wan_is_a_delta_on_lan() -> None:
    lan, wan = GossipConfig.lan(), GossipConfig.wan()
    changed = {f.name for f in dataclasses.fields(GossipConfig) if getattr(lan, f.name) != getattr(wan, f.name)}
    assert changed == {
        "tcp_timeout_s", "suspicion_mult", "push_pull_interval_s", "probe_timeout_s",
        "probe_interval_s", "gossip_nodes", "gossip_interval_s", "gossip_to_the_dead_s",
    }
    assert (wan.probe_interval_s, wan.probe_timeout_s, wan.suspicion_mult, wan.gossip_nodes) == (5.0, 3.0, 6, 4)


def test_fast_preset_is_consul_dev_gossip() -> None:
    """consul-api.md §7.1: -dev sets gossip/probe interval 100 ms and suspicion_mult 3."""
    f = GossipConfig.fast()
    assert (f.probe_interval_s, f.gossip_interval_s, f.suspicion_mult) == (0.1, 0.1, 3)
    assert f.probe_timeout_s < f.probe_interval_s
    assert f.retransmit_mult == GossipConfig.lan().retransmit_mult


def test_presets_take_overrides() -> None:
    assert GossipConfig.fast(reconnect_timeout_s=5.0).reconnect_timeout_s == 5.0
    assert GossipConfig.local().indirect_checks == 1


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"probe_interval_s": 0}, "probe_interval_s"),
        ({"probe_timeout_s": 2.0}, "probe_timeout_s"),  # longer than the interval
        ({"suspicion_mult": 0}, "suspicion_mult"),
        ({"gossip_nodes": True}, "gossip_nodes"),  # a bool is not a count
        ({"udp_buffer_size": 100}, "udp_buffer_size"),
        ({"tags_max_bytes": 5000}, "tags_max_bytes"),
        ({"user_event_max_bytes": 9000}, "user_event_max_bytes"),
        ({"gossip_to_the_dead_s": -1.0}, "gossip_to_the_dead_s"),
    ],
)
def test_validate_names_the_bad_field(overrides: dict[str, object], field_name: str) -> None:
    with pytest.raises(ConfigError, match=field_name):
        GossipConfig.lan(**overrides).validate()


def test_every_preset_validates() -> None:
    for preset in (GossipConfig.lan, GossipConfig.wan, GossipConfig.local, GossipConfig.fast):
        assert preset().validate() == preset()
