"""Agent configuration: command-line flags + config files → one frozen :class:`AgentConfig`.

Follows Consul's rules (``docs/agent/config/config-files.mdx``, ``cli-flags.mdx``):

- Flags are spelled as operators type them: ``-dev``, ``-node=n1``, ``-bootstrap-expect 3`` — and
  ``--dev``, ``--node n1`` as well.
- ``-config-file`` and every ``*.json`` / ``*.hcl`` of ``-config-dir`` are read in lexical order;
  later files override scalar values and extend lists (``service``/``check`` blocks, ``retry_join``).
- Command-line flags win over files.
- A Consul key ctk does not implement is reported once as ignored, never fatal, so existing Consul
  configuration loads as it is. A malformed file is an error naming the file and the field.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.durations import DurationError, parse_duration_value
from agent.gossip.config import GossipConfig

__all__ = ["AgentConfig", "DNSConfig", "Ports", "ConfigError", "load", "build_parser", "gossip_config", "VERSION"]

VERSION = "0.1.0"


class ConfigError(Exception):
    """Bad configuration: the message names the file (or flag) and the field."""


@dataclass(frozen=True)
class Ports:
    http: int = 8500
    https: int = -1
    dns: int = 8600
    serf_lan: int = 8301
    serf_wan: int = 8302
    server: int = 8300
    grpc: int = -1


@dataclass(frozen=True)
class DNSConfig:
    node_ttl_s: float = 0.0
    service_ttl_s: Mapping[str, float] = field(default_factory=dict)
    only_passing: bool = False
    allow_stale: bool = True
    max_stale_s: float = 87600 * 3600.0
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    enable_truncate: bool = False
    recursor_timeout_s: float = 2.0
    recursor_strategy: str = "sequential"
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    soa_min_ttl: int = 0
    disable_compression: bool = False


@dataclass(frozen=True)
class AgentConfig:
    dev: bool = False
    server: bool = False
    bootstrap: bool = False
    bootstrap_expect: int = 0
    datacenter: str = "dc1"
    node_name: str = ""
    node_id: str = ""
    node_meta: Mapping[str, str] = field(default_factory=dict)
    data_dir: str = ""
    bind_addr: str = "127.0.0.1"
    advertise_addr: str = ""
    client_addr: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    domain: str = "consul."
    recursors: tuple[str, ...] = ()
    dns_config: DNSConfig = field(default_factory=DNSConfig)
    retry_join: tuple[str, ...] = ()
    retry_interval_s: float = 30.0
    retry_max: int = 0
    rejoin_after_leave: bool = False
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    ui: bool = False
    log_level: str = "info"
    log_json: bool = False
    encrypt: str = ""
    raft_multiplier: int = 5
    raft_snapshot_threshold: int = 16384
    raft_trailing_logs: int = 10240
    default_query_time_s: float = 300.0
    ae_interval_s: float = 60.0  # Consul's AEInterval: the full anti-entropy sync period (1 min)
    gossip_lan: Mapping[str, Any] = field(default_factory=dict)  # gossip_lan {} block, validated in _finish
    reconnect_timeout_s: float = 72 * 3600.0
    cleanup_dead_servers: bool = True  # autopilot { cleanup_dead_servers }
    min_quorum: int = 0  # autopilot { min_quorum }: never prune below this many voters
    max_query_time_s: float = 600.0
    leave_on_terminate: bool | None = None
    skip_leave_on_interrupt: bool | None = None
    pid_file: str = ""
    pretty_json: bool = False
    services: tuple[Mapping[str, Any], ...] = ()
    checks: tuple[Mapping[str, Any], ...] = ()
    config_files: tuple[str, ...] = ()
    config_dirs: tuple[str, ...] = ()
    ignored_keys: tuple[str, ...] = ()
    cli_flags: Mapping[str, Any] = field(default_factory=dict)  # kept so a reload re-reads files the same way

    @property
    def advertise(self) -> str:
        return self.advertise_addr or self.bind_addr

    def with_(self, **changes: Any) -> AgentConfig:
        return replace(self, **changes)


# --------------------------------------------------------------------------- flags

_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("dev", {"action": "store_true", "help": "in-memory server that is its own leader at once"}),
    ("server", {"action": "store_true", "help": "run as a server (default: client)"}),
    ("bootstrap", {"action": "store_true", "help": "this server may elect itself (one per datacenter)"}),
    ("bootstrap-expect", {"type": int, "help": "servers to wait for before bootstrapping Raft"}),
    ("datacenter", {"help": "datacenter name (default dc1)"}),
    ("dc", {"dest": "datacenter", "help": "alias of -datacenter"}),
    ("node", {"help": "node name (default: hostname)"}),
    ("node-id", {"help": "node UUID (default: random, persisted in the data dir)"}),
    ("node-meta", {"action": "append", "help": "key:value node metadata (repeatable)"}),
    ("data-dir", {"help": "where state is kept (required unless -dev)"}),
    ("bind", {"help": "address for cluster traffic (Raft, gossip)"}),
    ("advertise", {"help": "address advertised to other agents"}),
    ("client", {"help": "address for client interfaces: HTTP, DNS (default 127.0.0.1)"}),
    ("http-port", {"type": int}),
    ("dns-port", {"type": int, "help": "DNS port (default 8600, -1 disables)"}),
    ("server-port", {"type": int}),
    ("serf-lan-port", {"type": int}),
    ("serf-wan-port", {"type": int}),
    ("domain", {"help": "DNS domain (default consul.)"}),
    ("recursor", {"action": "append", "help": "upstream DNS server (repeatable)"}),
    ("join", {"action": "append", "help": "address of an agent to join (repeatable)"}),
    ("retry-join", {"action": "append", "help": "address of an agent to join, retried (repeatable)"}),
    ("retry-interval", {"help": "time between join attempts (default 30s)"}),
    ("retry-max", {"type": int, "help": "join attempts before giving up (0 = forever)"}),
    ("rejoin", {"action": "store_true", "help": "rejoin the cluster after a graceful leave"}),
    ("config-file", {"action": "append", "help": "a JSON or HCL config file (repeatable)"}),
    ("config-dir", {"action": "append", "help": "a directory of .json/.hcl config files (repeatable)"}),
    ("enable-script-checks", {"action": "store_true", "help": "allow script checks from files AND the HTTP API"}),
    ("enable-local-script-checks", {"action": "store_true", "help": "allow script checks from config files only"}),
    ("ui", {"action": "store_true", "help": "serve the web UI at /ui/"}),
    ("log-level", {"help": "trace|debug|info|warn|error"}),
    ("log-json", {"action": "store_true"}),
    ("encrypt", {"help": "gossip encryption key (base64)"}),
    ("pid-file", {}),
    ("raft-multiplier", {"type": int}),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one clear line, no usage dump
        raise ConfigError(f"agent: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ctk agent", description="Run a ctk agent (Consul-compatible).", add_help=True,
                allow_abbrev=False)
    for name, kw in _FLAGS:
        kw = dict(kw)
        dest = kw.pop("dest", name.replace("-", "_"))
        p.add_argument(f"-{name}", f"--{name}", dest=dest, default=None, **kw)
    return p


# ------------------------------------------------------------------------ files

# Keys ctk reads. Anything else in a Consul config is reported once as ignored.
_KNOWN_TOP = {
    "datacenter", "node_name", "node_id", "node_meta", "data_dir", "bind_addr", "advertise_addr",
    "client_addr", "ports", "server", "bootstrap", "bootstrap_expect", "retry_join", "start_join",
    "retry_interval", "retry_max", "rejoin_after_leave", "enable_script_checks", "enable_local_script_checks",
    "ui", "ui_config", "log_level", "log_json", "domain", "recursors", "dns_config", "encrypt", "performance",
    "raft_snapshot_threshold", "raft_trailing_logs", "default_query_time", "max_query_time",
    "leave_on_terminate", "skip_leave_on_interrupt", "pid_file", "service", "services", "check", "checks",
    "ae_interval", "gossip_lan", "reconnect_timeout", "autopilot",
}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        if path.suffix == ".hcl":
            import hcl  # pyhcl: HCL1, the dialect Consul's config files are written in

            data = hcl.loads(text)
        else:
            data = json.loads(text) if text.strip() else {}
    except Exception as err:  # the parsers raise assorted types; all mean "malformed"
        raise ConfigError(f"{path}: parse error: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be an object")
    return data


def _listify(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def _merge(into: dict[str, Any], data: Mapping[str, Any], source: str) -> None:
    for key, value in data.items():
        k = key.lower()
        if k in ("service", "services"):
            into.setdefault("__services", []).extend((source, v) for v in _listify(value))
        elif k in ("check", "checks"):
            into.setdefault("__checks", []).extend((source, v) for v in _listify(value))
        elif k in ("retry_join", "start_join", "recursors"):
            into.setdefault(k, []).extend(_listify(value))
        elif isinstance(value, Mapping) and isinstance(into.get(k), dict):
            merged = dict(into[k])
            merged.update(value)
            into[k] = merged
        else:
            into[k] = value if not isinstance(value, Mapping) else dict(value)
        into.setdefault("__sources", {})[k] = source


def _files_from(config_files: Sequence[str], config_dirs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for d in config_dirs:
        dp = Path(d)
        if not dp.is_dir():
            raise ConfigError(f"-config-dir {d}: not a directory")
        files.extend(sorted(p for p in dp.iterdir() if p.suffix in (".json", ".hcl") and p.is_file()))
    for f in config_files:
        fp = Path(f)
        if not fp.is_file():
            raise ConfigError(f"-config-file {f}: no such file")
        files.append(fp)
    return files


def _dur(raw: Any, where: str) -> float:
    try:
        return parse_duration_value(raw)
    except DurationError as err:
        raise ConfigError(f"{where}: {err}") from None


def _typed(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    v = raw[key]
    if kind is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        raise ConfigError(f"{where}: field '{key}' must be a boolean, got {v!r}")
    if kind is int:
        if isinstance(v, bool):
            raise ConfigError(f"{where}: field '{key}' must be a number, got {v!r}")
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: field '{key}' must be a number, got {v!r}") from None
    if kind is str:
        if not isinstance(v, str):
            raise ConfigError(f"{where}: field '{key}' must be a string, got {v!r}")
        return v
    return v


def load(argv: Sequence[str]) -> AgentConfig:
    """Parse ``ctk agent`` arguments and the config files they name."""
    ns = build_parser().parse_args(list(argv))
    return from_sources(vars(ns))


def from_sources(flags: Mapping[str, Any]) -> AgentConfig:
    config_files = tuple(flags.get("config_file") or ())
    config_dirs = tuple(flags.get("config_dir") or ())
    merged: dict[str, Any] = {}
    for path in _files_from(config_files, config_dirs):
        _merge(merged, _read_file(path), str(path))
    src: dict[str, str] = merged.pop("__sources", {})

    def where(key: str) -> str:
        return src.get(key, "config")

    kw: dict[str, Any] = {}
    ignored = sorted(k for k in merged if not k.startswith("__") and k not in _KNOWN_TOP)
    simple = {
        "datacenter": str, "node_name": str, "node_id": str, "data_dir": str, "bind_addr": str,
        "advertise_addr": str, "client_addr": str, "server": bool, "bootstrap": bool, "bootstrap_expect": int,
        "retry_max": int, "rejoin_after_leave": bool, "enable_script_checks": bool,
        "enable_local_script_checks": bool, "ui": bool, "log_level": str, "log_json": bool, "domain": str,
        "encrypt": str, "raft_snapshot_threshold": int, "raft_trailing_logs": int,
        "leave_on_terminate": bool, "skip_leave_on_interrupt": bool, "pid_file": str,
    }
    for key, kind in simple.items():
        if key in merged:
            kw[key] = _typed(merged, key, kind, where(key))
    if "ui_config" in merged and isinstance(merged["ui_config"], Mapping):
        kw["ui"] = bool(merged["ui_config"].get("enabled", False))
    for key in ("retry_interval", "default_query_time", "max_query_time", "ae_interval", "reconnect_timeout"):
        if key in merged:
            kw[key + "_s"] = _dur(merged[key], f"{where(key)}: field '{key}'")
    joins = [str(x) for x in merged.get("retry_join", []) + merged.get("start_join", [])]
    if joins:
        kw["retry_join"] = tuple(joins)
    if merged.get("recursors"):
        kw["recursors"] = tuple(str(x) for x in merged["recursors"])
    if "node_meta" in merged:
        if not isinstance(merged["node_meta"], Mapping):
            raise ConfigError(f"{where('node_meta')}: field 'node_meta' must be an object")
        kw["node_meta"] = {str(k): str(v) for k, v in merged["node_meta"].items()}
    if "performance" in merged and isinstance(merged["performance"], Mapping):
        if "raft_multiplier" in merged["performance"]:
            kw["raft_multiplier"] = _typed(merged["performance"], "raft_multiplier", int, where("performance"))
    if "autopilot" in merged:
        ap = merged["autopilot"]
        if not isinstance(ap, Mapping):
            raise ConfigError(f"{where('autopilot')}: field 'autopilot' must be an object")
        if "cleanup_dead_servers" in ap:
            kw["cleanup_dead_servers"] = _typed(ap, "cleanup_dead_servers", bool, where("autopilot"))
        if "min_quorum" in ap:
            kw["min_quorum"] = _typed(ap, "min_quorum", int, where("autopilot"))
        ignored += [f"autopilot.{k}" for k in ap if k not in ("cleanup_dead_servers", "min_quorum")]
    if "gossip_lan" in merged:
        if not isinstance(merged["gossip_lan"], Mapping):
            raise ConfigError(f"{where('gossip_lan')}: field 'gossip_lan' must be an object")
        kw["gossip_lan"] = {str(k).lower(): v for k, v in merged["gossip_lan"].items()}
        gossip_config(AgentConfig(gossip_lan=kw["gossip_lan"]), where("gossip_lan"))  # fail at load, not later
    if "ports" in merged:
        ports = merged["ports"]
        if not isinstance(ports, Mapping):
            raise ConfigError(f"{where('ports')}: field 'ports' must be an object")
        known = {f: _typed(ports, f, int, where("ports") + ": ports") for f in Ports.__dataclass_fields__ if f in ports}
        ignored += [f"ports.{k}" for k in ports if k not in Ports.__dataclass_fields__]
        kw["ports"] = Ports(**known)
    if "dns_config" in merged:
        kw["dns_config"], extra = _dns_config(merged["dns_config"], where("dns_config"))
        ignored += extra
    kw["services"] = tuple({"__source": s, **_as_map(v, s, "service")} for s, v in merged.get("__services", []))
    kw["checks"] = tuple({"__source": s, **_as_map(v, s, "check")} for s, v in merged.get("__checks", []))

    # Flags win over files.
    flag_map = {
        "datacenter": "datacenter", "node": "node_name", "node_id": "node_id", "data_dir": "data_dir",
        "bind": "bind_addr", "advertise": "advertise_addr", "client": "client_addr", "domain": "domain",
        "encrypt": "encrypt", "log_level": "log_level", "pid_file": "pid_file", "retry_max": "retry_max",
        "bootstrap_expect": "bootstrap_expect", "raft_multiplier": "raft_multiplier",
    }
    for fk, ck in flag_map.items():
        if flags.get(fk) is not None:
            kw[ck] = flags[fk]
    for fk in ("dev", "server", "bootstrap", "enable_script_checks", "enable_local_script_checks", "ui",
               "log_json"):
        if flags.get(fk):
            kw[fk] = True
    if flags.get("rejoin"):
        kw["rejoin_after_leave"] = True
    if flags.get("retry_interval") is not None:
        kw["retry_interval_s"] = _dur(flags["retry_interval"], "-retry-interval")
    joins = list(flags.get("join") or []) + list(flags.get("retry_join") or [])
    if joins:
        kw["retry_join"] = tuple(kw.get("retry_join", ())) + tuple(joins)
    if flags.get("recursor"):
        kw["recursors"] = tuple(flags["recursor"])
    if flags.get("node_meta"):
        meta = dict(kw.get("node_meta", {}))
        for item in flags["node_meta"]:
            if ":" not in item:
                raise ConfigError(f"-node-meta {item!r}: expected key:value")
            k, v = item.split(":", 1)
            meta[k] = v
        kw["node_meta"] = meta
    port_flags = {"http_port": "http", "dns_port": "dns", "server_port": "server", "serf_lan_port": "serf_lan",
                  "serf_wan_port": "serf_wan"}
    ports_obj: Ports = kw.get("ports", Ports())
    for fk, pk in port_flags.items():
        if flags.get(fk) is not None:
            ports_obj = replace(ports_obj, **{pk: int(flags[fk])})
    kw["ports"] = ports_obj
    kw["config_files"] = config_files
    kw["config_dirs"] = config_dirs
    kw["ignored_keys"] = tuple(ignored)
    kw["cli_flags"] = dict(flags)
    cfg = AgentConfig(**kw)
    return _finish(cfg)


def _as_map(v: Any, source: str, what: str) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{source}: '{what}' must be an object")
    return dict(v)


def _dns_config(raw: Any, where: str) -> tuple[DNSConfig, list[str]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: field 'dns_config' must be an object")
    kw: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in raw.items():
        k = key.lower()
        loc = f"{where}: dns_config.{key}"
        if k == "node_ttl":
            kw["node_ttl_s"] = _dur(value, loc)
        elif k == "service_ttl":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{loc} must be an object")
            kw["service_ttl_s"] = {str(n): _dur(v, loc) for n, v in value.items()}
        elif k == "max_stale":
            kw["max_stale_s"] = _dur(value, loc)
        elif k == "recursor_timeout":
            kw["recursor_timeout_s"] = _dur(value, loc)
        elif k in ("only_passing", "allow_stale", "enable_truncate", "disable_compression"):
            kw[k] = _typed(raw, key, bool, where)
        elif k in ("udp_answer_limit", "a_record_limit"):
            kw[k] = _typed(raw, key, int, where)
        elif k == "recursor_strategy":
            kw[k] = str(value)
        elif k == "soa" and isinstance(value, Mapping):
            for sk in ("refresh", "retry", "expire", "min_ttl"):
                if sk in value:
                    kw["soa_" + sk] = _typed(value, sk, int, where)
        else:
            ignored.append(f"dns_config.{key}")
    return DNSConfig(**kw), ignored


def _finish(cfg: AgentConfig) -> AgentConfig:
    """Apply -dev defaults and derived values, then validate cross-field rules."""
    changes: dict[str, Any] = {}
    if cfg.dev:
        changes.update(server=True, bootstrap=True, ui=True, pretty_json=True)
        if cfg.log_level == "info":
            changes["log_level"] = "debug"
        if cfg.raft_multiplier == 5:
            changes["raft_multiplier"] = 1
    if not cfg.node_name:
        changes["node_name"] = socket.gethostname().split(".")[0] or "ctk"
    if not cfg.domain.endswith("."):
        changes["domain"] = cfg.domain + "."
    cfg = replace(cfg, **changes)
    if cfg.bootstrap and cfg.bootstrap_expect:
        raise ConfigError("agent: -bootstrap cannot be used with -bootstrap-expect")
    if cfg.bootstrap_expect and not cfg.server:
        raise ConfigError("agent: -bootstrap-expect requires -server")
    if cfg.bootstrap_expect == 1:
        cfg = replace(cfg, bootstrap=True, bootstrap_expect=0)
    if not cfg.dev and not cfg.data_dir:
        raise ConfigError("agent: -data-dir is required unless -dev (where should state be kept?)")
    if cfg.node_id:
        try:
            uuid.UUID(cfg.node_id)
        except ValueError:
            raise ConfigError(f"agent: -node-id {cfg.node_id!r} is not a UUID") from None
    if cfg.ae_interval_s <= 0:
        raise ConfigError("agent: ae_interval must be positive")
    if not 1 <= cfg.raft_multiplier <= 10:
        raise ConfigError("agent: performance.raft_multiplier must be between 1 and 10")
    if cfg.log_level.lower() not in ("trace", "debug", "info", "warn", "warning", "err", "error"):
        raise ConfigError(f"agent: -log-level {cfg.log_level!r}: expected trace|debug|info|warn|error")
    return cfg


_GOSSIP_DURATIONS = {"gossip_interval": "gossip_interval_s", "probe_interval": "probe_interval_s",
                     "probe_timeout": "probe_timeout_s"}
_GOSSIP_INTS = ("gossip_nodes", "retransmit_mult", "suspicion_mult")
_GOSSIP_PROFILES = ("lan", "local", "fast")


def gossip_config(cfg: AgentConfig, where: str = "gossip_lan") -> GossipConfig:
    """The LAN gossip tuning: Consul's ``gossip_lan {}`` keys over a memberlist profile.

    ``profile`` (ctk's addition: ``lan`` default, ``local``, ``fast``) picks the preset the keys
    override; the fast profile is a test-friendly set of numbers, not a different code path. The
    ``reconnect_timeout`` key (top level, as in Consul) sets how long a failed member is kept.
    """
    raw = dict(cfg.gossip_lan)
    profile = str(raw.pop("profile", "lan")).lower()
    if profile not in _GOSSIP_PROFILES:
        raise ConfigError(f"{where}: gossip_lan.profile {profile!r}: expected one of {', '.join(_GOSSIP_PROFILES)}")
    overrides: dict[str, Any] = {"reconnect_timeout_s": cfg.reconnect_timeout_s}
    for key, value in raw.items():
        if key in _GOSSIP_DURATIONS:
            overrides[_GOSSIP_DURATIONS[key]] = _dur(value, f"{where}: gossip_lan.{key}")
        elif key in _GOSSIP_INTS:
            overrides[key] = _typed(raw, key, int, where)
        else:
            raise ConfigError(f"{where}: gossip_lan.{key} is not a gossip_lan setting "
                              f"(known: profile, {', '.join([*_GOSSIP_DURATIONS, *_GOSSIP_INTS])})")
    try:
        return getattr(GossipConfig, profile)(**overrides)  # type: ignore[no-any-return]
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: gossip_lan: {err}") from None


def persisted_node_id(cfg: AgentConfig) -> str:
    """The node's UUID: given, else read from ``<data-dir>/node-id``, else new (and written there)."""
    if cfg.node_id:
        return cfg.node_id
    if not cfg.data_dir:
        return str(uuid.uuid4())
    path = Path(cfg.data_dir) / "node-id"
    if path.exists():
        text = path.read_text().strip()
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise ConfigError(f"{path}: not a UUID: {text!r}") from None
    node_id = str(uuid.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(node_id)
    return node_id
