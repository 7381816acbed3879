"""The qemu-vm target's spare VM: taken after a hang, replaced, stopped at the end (no boot).

VirtualMachine and the ssh target are replaced by fakes that record what the
target did with them, so the policy is checked without QEMU.
"""

from __future__ import annotations

import pytest

from conformance.targets.base import TargetError
from conformance.targets.vm import target as vm_target
from conformance.targets.vm.config import vm_spec_from_mapping


class FakeVm:
    made: list[FakeVm] = []
    fail_ready: set[int] = set()  # indexes (in made) of VMs that never come up

    def __init__(self, spec):
        self.spec = spec
        self.index = len(FakeVm.made)
        self.kvm = False
        self.launched_with = "unlaunched"
        self.ready = self.stopped = False
        FakeVm.made.append(self)

    def launch(self, kvm=None):
        self.launched_with = kvm
        return self

    def wait_ready(self):
        if self.index in FakeVm.fail_ready:
            self.stop()
            raise TargetError(f"qemu-vm: VM {self.index} did not boot")
        self.ready = True
        return self

    def stop(self, grace=3.0):
        self.stopped = True

    def alive(self):
        return self.ready and not self.stopped

    def ssh_options(self):
        return {"host": "127.0.0.1", "port": 2200 + self.index, "serial": "VMDUT0001"}

    def facts(self):
        return {"vm": self.index}


class FakeSsh:
    def __init__(self, name, timeout, spec, facts):
        self.vm_index = facts["vm"]
        self.session = None
        self._platform = None

    def platform(self):
        return object()

    def close(self):
        pass

    def describe(self):
        return {}


@pytest.fixture
def fakes(monkeypatch):
    FakeVm.made = []
    FakeVm.fail_ready = set()
    monkeypatch.setattr(vm_target, "VirtualMachine", FakeVm)
    monkeypatch.setattr(vm_target, "SshTarget", FakeSsh)
    return FakeVm


def make(spare: bool) -> vm_target.QemuVmTarget:
    return vm_target.QemuVmTarget("vm", 10.0, vm_spec_from_mapping({"spare": spare}, "vm.yaml"))


def test_a_spare_boots_with_the_first_vm_and_replaces_a_hung_one(fakes):
    t = make(spare=True)
    first, spare = fakes.made
    assert t.vm is first and first.ready
    assert spare.launched_with is False and not spare.ready  # booting, not waited for
    t._reboot()
    assert first.stopped
    assert t.vm is spare and t.ssh.vm_index == spare.index
    assert len(fakes.made) == 3 and fakes.made[2].launched_with is False  # the next spare
    t.close()
    assert all(vm.stopped for vm in fakes.made)


def test_a_spare_that_does_not_come_up_is_replaced_by_a_fresh_vm(fakes):
    fakes.fail_ready = {1}
    t = make(spare=True)
    t._reboot()
    assert fakes.made[1].stopped
    assert t.vm is fakes.made[2] and t.vm.ready  # booted on the spot
    assert len(fakes.made) == 4  # and a new spare behind it
    t.close()
    assert all(vm.stopped for vm in fakes.made)


def test_without_a_spare_each_hang_boots_one_vm(fakes):
    t = make(spare=False)
    assert len(fakes.made) == 1
    t._reboot()
    assert len(fakes.made) == 2 and t.vm is fakes.made[1]
    t.close()
    assert all(vm.stopped for vm in fakes.made)


def test_the_spare_is_stopped_when_the_first_vm_fails_to_boot(fakes):
    fakes.fail_ready = {0}
    with pytest.raises(TargetError, match="VM 0 did not boot"):
        make(spare=True)
    assert [vm.stopped for vm in fakes.made] == [True, True]
