"""QemuVmTarget: boot a VM with the device under test, run the cases over SSH, stop it.

The VM boots when the target is opened (a boot failure is one line before any
case runs) and is stopped, with every file it used, when the target closes.
Between cases the ssh target resets the device, and this target rewrites
the disk with its pattern (and first size), as the qtest target does.

A case can hang QEMU itself (a device model that deadlocks takes the whole
VM with it).  After a case that failed, QEMU's monitor must answer within a
few seconds; if it does not, or the connection cannot be brought back, the
next case gets a freshly booted VM, so one hang costs one boot rather than
the rest of the run.
"""

from __future__ import annotations

from typing import Any

from conformance.driver.platform import Platform, PlatformError
from conformance.targets.base import Target, TargetError
from conformance.targets.config import TargetSpec
from conformance.targets.ssh.config import ssh_spec_from_mapping
from conformance.targets.ssh.platform import SshPlatform
from conformance.targets.ssh.target import SshTarget

from .config import VmSpec, vm_spec_from_mapping
from .machine import VirtualMachine


class QemuVmTarget(Target):
    kind = "qemu-vm"

    def __init__(self, name: str, timeout: float, spec: VmSpec):
        super().__init__(name, timeout)
        self.spec = spec
        self.boots = 0
        self._reboot_next = False
        self.vm, self.ssh = self._boot()

    def _boot(self) -> tuple[VirtualMachine, SshTarget]:
        vm = VirtualMachine(self.spec).start()
        try:
            ssh_spec = ssh_spec_from_mapping(vm.ssh_options(), f"qemu-vm {self.name}")
            ssh = SshTarget(self.name, self.timeout, ssh_spec, facts=vm.facts())
            # Connect now: a guest that cannot run the agent fails before the first case.
            ssh.platform()
        except BaseException:
            vm.stop()
            raise
        self.boots += 1
        return vm, ssh

    def _reboot(self) -> None:
        # The guest goes away with its agent: nothing to give back.  QEMU is
        # stopped first so closing the old session does not wait on a hung guest.
        if self.ssh._platform is not None:
            self.ssh._platform.close()
        old, self.ssh.session, self.ssh._platform = self.ssh.session, None, None
        self.vm.stop()
        if old is not None:
            old.close(give_back=False)
        try:
            self.vm, self.ssh = self._boot()
        except TargetError as exc:
            raise PlatformError(f"rebooting the test VM failed: {exc}") from None

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> QemuVmTarget:
        return cls(spec.name, spec.timeout, vm_spec_from_mapping(spec.options, spec.where))

    def platform(self) -> Platform:
        if self._reboot_next or not self.vm.alive():
            self._reboot_next = False
            self._reboot()
        try:
            plat = self.ssh.platform()
        except (PlatformError, TargetError):
            self._reboot()
            plat = self.ssh.platform()
        assert isinstance(plat, SshPlatform)
        self.vm.restore_disk()
        plat.resizer = self.vm.resize
        return plat

    def release(self, platform: Platform, broken: bool) -> None:
        self.ssh.release(platform, broken)
        if broken and not self.vm.alive():
            self._reboot_next = True

    def describe(self) -> dict[str, Any]:
        return {**self.ssh.describe(), "kind": self.kind, "name": self.name,
                "vm_boots": self.boots}

    def close(self) -> None:
        try:
            self.ssh.close()
        finally:
            self.vm.stop()
