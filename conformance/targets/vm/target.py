"""QemuVmTarget: boot a VM with the device under test, run the cases over SSH, stop it.

The VM boots when the target is opened (a boot failure is one line before any
case runs) and is stopped, with every file it used, when the target closes.
Between cases it is the ssh target that resets the device.
"""

from __future__ import annotations

from typing import Any

from conformance.driver.platform import Platform
from conformance.targets.base import Target, TargetError
from conformance.targets.config import TargetSpec
from conformance.targets.ssh.config import ssh_spec_from_mapping
from conformance.targets.ssh.target import SshTarget

from .config import VmSpec, vm_spec_from_mapping
from .machine import VirtualMachine


class QemuVmTarget(Target):
    kind = "qemu-vm"

    def __init__(self, name: str, timeout: float, spec: VmSpec):
        super().__init__(name, timeout)
        self.spec = spec
        self.vm = VirtualMachine(spec).start()
        try:
            ssh_spec = ssh_spec_from_mapping(self.vm.ssh_options(), f"qemu-vm {name}")
            self.ssh = SshTarget(name, timeout, ssh_spec, facts=self.vm.facts())
            # Connect now: a guest that cannot run the agent fails before the first case.
            self.ssh.platform()
        except TargetError:
            self.vm.stop()
            raise
        except BaseException:
            self.vm.stop()
            raise

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> QemuVmTarget:
        return cls(spec.name, spec.timeout, vm_spec_from_mapping(spec.options, spec.where))

    def platform(self) -> Platform:
        return self.ssh.platform()

    def release(self, platform: Platform, broken: bool) -> None:
        self.ssh.release(platform, broken)

    def describe(self) -> dict[str, Any]:
        return {**self.ssh.describe(), "kind": self.kind, "name": self.name}

    def close(self) -> None:
        try:
            self.ssh.close()
        finally:
            self.vm.stop()
