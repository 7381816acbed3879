"""The qemu-vm target's keys, the virtme-ng command line it builds, and vm stop (no boot)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conformance.targets import TargetConfigError
from conformance.targets.vm.config import vm_spec_from_mapping
from conformance.targets.vm.machine import VirtualMachine, guest_script, stop_saved

W = "vm.yaml"


def test_defaults_and_device_arg():
    spec = vm_spec_from_mapping({}, W)
    assert (spec.kvm, spec.cpus, spec.memory, spec.hugepages, spec.serial) == (
        "off", 1, "512M", 16, "VMDUT0001")
    assert spec.device_arg() == "virtio-blk-pci,disable-legacy=on,serial=VMDUT0001,drive=vblkdut"


def test_serial_and_drive_are_added_when_missing():
    spec = vm_spec_from_mapping({"device": "virtio-blk-pci,num-queues=2"}, W)
    assert spec.device_arg() == "virtio-blk-pci,num-queues=2,drive=vblkdut,serial=VMDUT0001"
    assert spec.serial == "VMDUT0001"


@pytest.mark.parametrize("keys,message", [
    ({"device": "virtio-net-pci"}, f"{W}: device: expected a virtio-blk-pci device string, got "
                                   "'virtio-net-pci' (the VM backs the device with a file the "
                                   "target creates)"),
    ({"device": "virtio-blk-pci,serial=123456789012345678901"},
     f"{W}: device: serial='123456789012345678901': the agent selects the device by its serial, "
     "which must be 1..20 bytes"),
    ({"kvm": "maybe"}, f"{W}: kvm: expected one of off, on, auto, got 'maybe'"),
    ({"disk_size": "lots"}, f"{W}: disk_size: expected a size like 16M, got 'lots'"),
    ({"memory": "128M"}, f"{W}: memory: expected at least 256M, got '128M'"),
    ({"hugepages": 200}, f"{W}: hugepages: 200 pages of 2 MiB need more than half of memory "
                         "(512M)"),
    ({"image": "x"}, None),
])
def test_bad_keys_are_one_line(keys, message):
    with pytest.raises(TargetConfigError) as info:
        vm_spec_from_mapping(keys, W)
    if message is None:
        assert str(info.value).startswith(f"{W}: image: unknown key (known keys: ")
    else:
        assert str(info.value) == message


def test_yaml_booleans_for_kvm():
    assert vm_spec_from_mapping({"kvm": False}, W).kvm == "off"
    assert vm_spec_from_mapping({"kvm": True}, W).kvm == "on"


def test_command_line(tmp_path):
    vm = VirtualMachine(vm_spec_from_mapping({"hugepages": 8}, W), workdir=str(tmp_path))
    vm.kernel, vm.qemu = "/boot/vmlinuz-test", "/usr/bin/qemu-system-x86_64"
    cmd = vm.command(False, "sleep 5", 2222)
    assert cmd[cmd.index("--run") + 1] == "/boot/vmlinuz-test"
    assert cmd[cmd.index("--append") + 1] == "hugepages=8"
    assert cmd[cmd.index("--exec") + 1] == "sleep 5"
    assert "--disable-kvm" in cmd and "--disable-microvm" in cmd
    assert cmd[cmd.index("--ssh") + 1] == "2222" and "--ssh-tcp" in cmd
    opts = cmd[-1]
    assert opts.startswith("--qemu-opts=-drive file=")
    assert "-device virtio-blk-pci,disable-legacy=on,serial=VMDUT0001,drive=vblkdut" in opts
    assert f"-qmp unix:{tmp_path}/qmp.sock,server=on,wait=off" in opts
    assert "--disable-kvm" not in vm.command(True, "true", None)


def test_guest_script_configures_every_nic_and_sleeps():
    script = guest_script(3600)
    assert script.endswith("exec sleep 3600")
    assert "addr add 10.0.2.15/24" in script and "route add default via 10.0.2.2" in script
    out = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_vm_stop_without_a_vm(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"pgid": 2 ** 22 + 4321}))
    assert stop_saved(str(tmp_path)) == f"no VM was running; removed {tmp_path}"
    assert not os.path.exists(tmp_path)


def test_vm_stop_on_a_directory_without_state(tmp_path):
    from conformance.targets.base import TargetError

    with pytest.raises(TargetError, match=f"vm stop: no VM state in {tmp_path}/state.json"):
        stop_saved(str(tmp_path))


def test_run_checks_a_qemu_vm_file_without_booting(tmp_path, monkeypatch):
    """`vblk-conformance run` checks the file first; for qemu-vm that must not boot a VM
    (the run itself boots one), and a missing QEMU is one line naming the file."""
    from conformance.targets import check_target, load_target_file
    from conformance.targets.vm import machine

    def no_boot(self):
        raise AssertionError("check_target booted a VM")

    monkeypatch.setattr(machine.VirtualMachine, "start", no_boot)
    good = tmp_path / "good.yaml"
    good.write_text("kind: qemu-vm\nname: vm\nkernel: /proc/version\nqemu: /bin/true\n")
    check_target(load_target_file(str(good)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: qemu-vm\nname: vm\nkernel: /proc/version\nqemu: /nonexistent/qemu\n")
    with pytest.raises(TargetConfigError) as exc:
        check_target(load_target_file(str(bad)))
    assert str(exc.value).startswith(f"{bad}")
    assert "QEMU binary not found: /nonexistent/qemu" in str(exc.value)
