"""What this agent owns: the services and checks registered *on it* (config files or /v1/agent/*).

Consul's model (``docs/architecture/anti-entropy.mdx``): the agent is authoritative for its own node.
The catalog only stores what agents sync; :mod:`agent.local.sync` makes the catalog match this state
after every change and periodically, re-creating what was removed behind the agent's back and removing
what it no longer has. Check results live here first (``/v1/agent/checks`` shows them at once);
status changes sync immediately, output-only changes lazily (``check_update_interval``, 5 min), so a
check whose output changes every run does not write to Raft every run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.local.definitions import CheckDefinition, ServiceDefinition
from agent.state.structs import CRITICAL, NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX

__all__ = ["LocalState", "LocalCheck", "LocalService", "UnknownCheck", "UnknownService"]

log = logging.getLogger(__name__)

NODE_MAINT_DEFAULT = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
SERVICE_MAINT_DEFAULT = (
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
)


class UnknownService(KeyError):
    pass


class UnknownCheck(KeyError):
    pass


@dataclass
class LocalService:
    definition: ServiceDefinition
    source: str  # "config" | "http"


@dataclass
class LocalCheck:
    definition: CheckDefinition
    source: str
    status: str = CRITICAL
    output: str = ""
    synced_output: str = ""
    output_dirty_since: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def check_id(self) -> str:
        return self.definition.check_id


class LocalState:
    """The agent's own services and checks. Mutations call ``on_change`` (schedule a sync)."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.services: dict[str, LocalService] = {}
        self.checks: dict[str, LocalCheck] = {}
        self.on_change = on_change
        self.on_check_added: Callable[[LocalCheck], None] = lambda c: None
        self.on_check_removed: Callable[[str], None] = lambda cid: None

    # ------------------------------------------------------------ services

    def add_service(self, svc: ServiceDefinition, source: str, replace_existing_checks: bool = False) -> None:
        old = self.services.get(svc.id)
        self.services[svc.id] = LocalService(svc, source)
        if replace_existing_checks and old is not None:
            keep = {c.check_id for c in svc.checks}
            for cid in [c for c, lc in self.checks.items() if lc.definition.service_id == svc.id]:
                if cid not in keep and not cid.startswith(SERVICE_MAINT_PREFIX):
                    self._remove_check(cid)
        for chk in svc.checks:
            self.add_check(chk, source, notify=False)
        self.on_change()

    def remove_service(self, service_id: str) -> bool:
        if service_id not in self.services:
            return False
        del self.services[service_id]
        for cid in [c for c, lc in self.checks.items() if lc.definition.service_id == service_id]:
            self._remove_check(cid)
        self.on_change()
        return True

    # -------------------------------------------------------------- checks

    def add_check(self, chk: CheckDefinition, source: str, notify: bool = True) -> None:
        if chk.service_id and chk.service_id not in self.services:
            raise UnknownService(chk.service_id)
        old = self.checks.get(chk.check_id)
        if old is not None:
            self.on_check_removed(chk.check_id)
        lc = LocalCheck(chk, source, status=chk.status)
        if old is not None and old.definition.spec == chk.spec:
            lc.status, lc.output = old.status, old.output  # re-registration keeps the last result
        self.checks[chk.check_id] = lc
        self.on_check_added(lc)
        if notify:
            self.on_change()

    def remove_check(self, check_id: str) -> bool:
        if check_id not in self.checks:
            return False
        self._remove_check(check_id)
        self.on_change()
        return True

    def _remove_check(self, check_id: str) -> None:
        self.checks.pop(check_id, None)
        self.on_check_removed(check_id)

    def update_check(self, check_id: str, status: str, output: str, now: float = 0.0) -> None:
        """A check result. Status changes sync now; output-only changes wait for the lazy sync."""
        lc = self.checks.get(check_id)
        if lc is None:
            raise UnknownCheck(check_id)
        status_changed = lc.status != status
        lc.status = status
        if lc.output != output:
            lc.output = output
            if lc.output_dirty_since is None:
                lc.output_dirty_since = now
        if status_changed:
            self.on_change()

    # ---------------------------------------------------------- maintenance

    def set_node_maintenance(self, enable: bool, reason: str = "") -> None:
        if enable:
            chk = CheckDefinition(check_id=NODE_MAINT_CHECK_ID, name="Node Maintenance Mode",
                                  notes=reason or NODE_MAINT_DEFAULT, status=CRITICAL)
            self.checks[chk.check_id] = LocalCheck(chk, "maintenance", status=CRITICAL)
            self.on_change()
        elif NODE_MAINT_CHECK_ID in self.checks:
            self.remove_check(NODE_MAINT_CHECK_ID)

    def set_service_maintenance(self, service_id: str, enable: bool, reason: str = "") -> None:
        if service_id not in self.services:
            raise UnknownService(service_id)
        cid = SERVICE_MAINT_PREFIX + service_id
        if enable:
            chk = CheckDefinition(check_id=cid, name="Service Maintenance Mode", service_id=service_id,
                                  notes=reason or SERVICE_MAINT_DEFAULT, status=CRITICAL)
            self.checks[cid] = LocalCheck(chk, "maintenance", status=CRITICAL)
            self.on_change()
        elif cid in self.checks:
            self.remove_check(cid)

    # ---------------------------------------------------------------- reads

    def service_checks(self, service_id: str) -> list[LocalCheck]:
        return [c for c in self.checks.values() if c.definition.service_id == service_id]
