"""QemuVmTarget: boot a VM with the device under test, run the cases over SSH, stop it.

The VM boots when the target is opened (a boot failure is one line before any
case runs) and is stopped, with every file it used, when the target closes.
Between cases the ssh target resets the device, and this target rewrites
the disk with its pattern (and first size), as the qtest target does.

A case can hang QEMU itself (a device model that deadlocks takes the whole
VM with it).  After a case that failed, QEMU's monitor must answer within a
few seconds; if it does not, or the connection cannot be brought back, the
next case gets another VM, so one hang costs one VM rather than the rest of
the run.  With ``spare: true`` (the default) a second VM boots alongside the
first and waits: a hang then costs an SSH connection (about 3 s) instead of a
boot under TCG (about 25 s), and the next spare boots while cases run.
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
        self._spare: VirtualMachine | None = None
        first = VirtualMachine(spec).launch()
        self._launch_spare(first.kvm)  # boots on the other core while the first does
        try:
            self.vm, self.ssh = self._boot(first)
        except BaseException:
            self._stop_spare()
            raise

    def _launch_spare(self, kvm: bool) -> None:
        if not self.spec.spare or self._spare is not None:
            return
        try:
            self._spare = VirtualMachine(self.spec).launch(kvm=kvm)
        except TargetError:
            self._spare = None  # no spare: the next hang boots a VM, as without one

    def _stop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.stop()

    def _boot(self, vm: VirtualMachine) -> tuple[VirtualMachine, SshTarget]:
        """Wait for a launched VM and connect the agent; the VM is stopped on failure."""
        vm.wait_ready()
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
        kvm = self.vm.kvm
        self.vm.stop(grace=0.5)  # most often QEMU is hung: it will not exit on SIGTERM
        if old is not None:
            old.close(give_back=False)
        try:
            self.vm, self.ssh = self._next_vm(kvm)
        except TargetError as exc:
            raise PlatformError(f"rebooting the test VM failed: {exc}") from None
        self._launch_spare(kvm)

    def _next_vm(self, kvm: bool) -> tuple[VirtualMachine, SshTarget]:
        """The spare if it comes up, else a VM booted now."""
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                return self._boot(spare)
            except TargetError:
                pass  # the spare did not come up (and is stopped): boot another
        return self._boot(VirtualMachine(self.spec).launch(kvm=kvm))

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
                "vm_boots": self.boots, "vm_spare": self.spec.spare}

    def close(self) -> None:
        try:
            self.ssh.close()
        finally:
            self.vm.stop()
            self._stop_spare()
