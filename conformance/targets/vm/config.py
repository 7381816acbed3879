"""The qemu-vm target's keys: which QEMU and device, and how to boot the test VM.

::

    kind: qemu-vm
    qemu: qemu-system-x86_64        # binary (a private prefix gets -L PREFIX/share/qemu)
    device: virtio-blk-pci,disable-legacy=on,serial=VMDUT0001
    disk_size: 16M                   # the pattern-filled file behind the device
    memory: 512M
    cpus: 1
    kernel: /boot/vmlinuz-*          # glob; the newest match boots
    boot_timeout: 180                # seconds until sshd must answer
    kvm: off                         # off | on | auto (auto: only if a KVM boot probe succeeds)
    hugepages: 16                    # 2 MiB pages reserved on the kernel command line
    lifetime: 7200                   # the guest powers itself off after this many seconds
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.targets.keys import Keys
from conformance.targets.qtest.config import parse_size, split_options

DEFAULT_DEVICE = "virtio-blk-pci,disable-legacy=on,serial=VMDUT0001"
DEFAULT_SERIAL = "VMDUT0001"
DRIVE_ID = "vblkdut"
KVM_MODES = ("off", "on", "auto")

KEYS = {
    "qemu": "QEMU binary",
    "device": "the -device string of the virtio-blk-pci device under test",
    "disk_size": "size of the backing file the target creates",
    "memory": "guest RAM, e.g. 512M",
    "cpus": "guest vCPUs",
    "kernel": "guest kernel (a glob; the newest match is used)",
    "boot_timeout": "seconds to wait for the guest's sshd",
    "kvm": "off, on or auto",
    "hugepages": "2 MiB hugepages for the agent's DMA memory",
    "lifetime": "seconds after which the guest powers off by itself",
    "spare": "keep a second VM booted, so a case that hangs QEMU costs seconds, not a boot",
}


@dataclass(frozen=True)
class VmSpec:
    qemu: str = "qemu-system-x86_64"
    device: str = DEFAULT_DEVICE
    disk_size: int = 16 << 20
    memory: str = "512M"
    cpus: int = 1
    kernel: str = "/boot/vmlinuz-*"
    boot_timeout: float = 180.0
    kvm: str = "off"
    hugepages: int = 16
    lifetime: float = 7200.0
    spare: bool = True

    @property
    def serial(self) -> str:
        _, opts = split_options(self.device)
        return opts.get("serial") or DEFAULT_SERIAL

    def device_arg(self) -> str:
        """The -device string with the target's drive and a serial (the agent selects by it)."""
        driver, opts = split_options(self.device)
        arg = self.device
        if "drive" not in opts:
            arg += f",drive={DRIVE_ID}"
        if "serial" not in opts:
            arg += f",serial={DEFAULT_SERIAL}"
        return arg

    @property
    def drive_id(self) -> str:
        _, opts = split_options(self.device)
        return opts.get("drive", DRIVE_ID)


def vm_spec_from_mapping(m: Mapping[str, Any], where: str) -> VmSpec:
    keys = Keys(m, where, KEYS)
    keys.check_known()
    fail, string, number = keys.fail, keys.string, keys.number  # defaults: never None

    def size(key: str, default: int | str, lo: int) -> int:
        v = m.get(key, default)
        try:
            n = parse_size(v)
        except (ValueError, TypeError):
            raise fail(key, f"expected a size like 16M, got {v!r}") from None
        if n < lo:
            raise fail(key, f"expected at least {lo >> 20}M, got {v!r}")
        return n

    device = string("device", DEFAULT_DEVICE)
    driver, opts = split_options(device)
    if driver != "virtio-blk-pci":
        raise fail("device", f"expected a virtio-blk-pci device string, got {device!r} "
                             "(the VM backs the device with a file the target creates)")
    serial = opts.get("serial", DEFAULT_SERIAL)
    if not serial or len(serial.encode()) > 20:
        raise fail("device", f"serial={serial!r}: the agent selects the device by its serial, "
                             "which must be 1..20 bytes")
    kvm = m.get("kvm", "off")
    if kvm is True or kvm is False:  # YAML reads on/off as booleans
        kvm = "on" if kvm else "off"
    if kvm not in KVM_MODES:
        raise fail("kvm", f"expected one of {', '.join(KVM_MODES)}, got {kvm!r}")
    disk = size("disk_size", 16 << 20, 1 << 20)
    if disk % 512:
        raise fail("disk_size", f"must be a multiple of 512, got {disk}")
    memory = size("memory", "512M", 256 << 20)
    hugepages = int(number("hugepages", 16, 4, integer=True))
    if (hugepages * 2) << 20 > memory // 2:
        raise fail("hugepages", f"{hugepages} pages of 2 MiB need more than half of memory "
                                f"({memory >> 20}M)")
    return VmSpec(
        qemu=string("qemu", "qemu-system-x86_64"), device=device, disk_size=disk,
        memory=f"{memory >> 20}M", cpus=int(number("cpus", 1, 1, integer=True)),
        kernel=string("kernel", "/boot/vmlinuz-*"),
        boot_timeout=float(number("boot_timeout", 180.0, 5)), kvm=kvm, hugepages=hugepages,
        lifetime=float(number("lifetime", 7200.0, 60)), spare=keys.flag("spare", True),
    )
