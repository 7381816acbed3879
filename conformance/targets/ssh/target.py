"""The ssh target: a device inside a running guest, driven by the agent over SSH.

One SSH connection and one agent serve every case.  Between cases the agent
quiesces the device (Bus Master off, device_status 0) and rewinds its DMA
allocator; the driver resets the device again when it initializes it.

After a case that failed, the function is handed to its kernel driver and
taken back ("rebind"): virtio-pci's probe resets and re-initializes the device
and must find its disk again, which is the closest thing to a function-level
reset QEMU's virtio-pci offers (it has no FLR, so sysfs has no ``reset``
file for it).  If the agent or the connection died, the next case gets a new
connection and a new agent, which first gives back any function a dead agent
left behind (its journal in /run).
"""

from __future__ import annotations

from typing import Any

from conformance.driver.platform import Platform, PlatformError
from conformance.targets.base import Target, TargetError
from conformance.targets.config import TargetSpec
from guest_agent import protocol as p

from .client import AgentLost, AgentRequestError
from .config import SshSpec, ssh_spec_from_mapping
from .platform import SshPlatform
from .session import Session, open_session


class SshTarget(Target):
    kind = "ssh"

    def __init__(self, name: str, timeout: float, spec: SshSpec,
                 facts: dict[str, Any] | None = None):
        super().__init__(name, timeout)
        self.spec = spec
        self.facts = facts or {}
        self.session: Session | None = None
        self._platform: SshPlatform | None = None
        self._rebind_next = False
        self.connects = 0
        self.rebinds = 0
        self.last_give_back = ""

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> SshTarget:
        return cls(spec.name, spec.timeout, ssh_spec_from_mapping(spec.options, spec.where))

    # --- connection -------------------------------------------------------------------
    def _connect(self) -> SshPlatform:
        self.session = open_session(self.spec, self.timeout)
        self.connects += 1
        self._platform = SshPlatform(
            self.session.client, self.session.selected, self.timeout, self.spec.backing_file,
            {"kind": self.kind, "host": self.spec.address, **self.facts})
        return self._platform

    def _drop(self) -> None:
        if self._platform is not None:
            self._platform.close()  # its posted-write flusher stops
        if self.session is not None:
            self.last_give_back = self.session.close(give_back=True)
        self.session = None
        self._platform = None

    def platform(self) -> Platform:
        if self._platform is None or self.session is None or self.session.client.lost:
            self._drop()
            self._rebind_next = False
            return self._connect()
        rebind = self._rebind_next
        self._rebind_next = False
        try:
            self._platform.control(p.REPROBE, {"rebind": rebind},
                                   timeout=max(self.timeout, 30.0),
                                   what="resetting the device between cases")
            self.rebinds += rebind
            return self._platform
        except (AgentLost, AgentRequestError, PlatformError):
            # The agent could not bring the device back to a known state: start over
            # with a fresh connection and agent (the old one gives the device back).
            self._drop()
            try:
                return self._connect()
            except TargetError as exc:
                raise PlatformError(f"reconnecting after a failed reset: {exc}") from None

    def release(self, platform: Platform, broken: bool) -> None:
        if broken:
            self._rebind_next = True

    def describe(self) -> dict[str, Any]:
        base = {**super().describe(), "host": self.spec.address, **self.facts}
        if self._platform is not None:
            base.update(self._platform.describe())
        return base

    def close(self) -> None:
        self._drop()
