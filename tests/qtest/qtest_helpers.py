"""Just enough PCI/virtio handling, by hand, to test the Platform underneath a driver."""

from __future__ import annotations

import os
import shutil

import pytest

from conformance import spec as s
from conformance.driver.platform import Platform

QEMU = os.environ.get("QTEST_QEMU", "qemu-system-x86_64")
#: The second QEMU version ci/install-qemu.sh unpacks beside the system one.
QEMU_10 = os.environ.get("QTEST_QEMU_10",
                         "/opt/vblk-conformance/qemu-10.0/usr/bin/qemu-system-x86_64")
HAVE_QEMU = shutil.which(QEMU) is not None
needs_qemu = pytest.mark.skipif(
    not HAVE_QEMU, reason=f"no QEMU binary {QEMU!r} on PATH (run ci/install-qemu.sh)")


def virtio_caps(p: Platform) -> dict[int, tuple[int, int, int]]:
    """cfg_type -> (cap offset, bar, offset in bar), first of each (4.1.4)."""
    caps: dict[int, tuple[int, int, int]] = {}
    ptr = p.config_read(s.PCI_CAPABILITY_LIST, 1) & 0xFC
    seen = 0
    while ptr and seen < 48:
        seen += 1
        if p.config_read(ptr + s.CAP_VNDR, 1) == s.PCI_CAP_ID_VNDR:
            cfg_type = p.config_read(ptr + s.CAP_CFG_TYPE, 1)
            bar = p.config_read(ptr + s.CAP_BAR, 1)
            off = p.config_read(ptr + s.CAP_OFFSET, 4)
            caps.setdefault(cfg_type, (ptr, bar, off))
        ptr = p.config_read(ptr + s.CAP_NEXT, 1) & 0xFC
    return caps


def size_bar(p: Platform, bar: int) -> tuple[int, bool]:
    """Size a memory BAR by writing all-ones (PCI 3.0, 6.2.5.1); return (size, is64)."""
    reg = s.PCI_BASE_ADDRESS_0 + 4 * bar
    lo = p.config_read(reg, 4)
    is64 = (lo >> 1) & 3 == 2
    p.config_write(reg, 4, 0xFFFFFFFF)
    mask = p.config_read(reg, 4) & ~0xF
    if is64:
        p.config_write(reg + 4, 4, 0xFFFFFFFF)
        mask |= p.config_read(reg + 4, 4) << 32
    else:
        mask |= 0xFFFFFFFF << 32
    size = (~mask + 1) & ((1 << 64) - 1)
    return size, is64


def assign_bar(p: Platform, bar: int, addr: int, is64: bool) -> None:
    reg = s.PCI_BASE_ADDRESS_0 + 4 * bar
    p.config_write(reg, 4, addr & 0xFFFFFFFF)
    if is64:
        p.config_write(reg + 4, 4, addr >> 32)


def enable(p: Platform) -> None:
    cmd = p.config_read(s.PCI_COMMAND, 2)
    p.config_write(s.PCI_COMMAND, 2, cmd | s.PCI_COMMAND_MEMORY | s.PCI_COMMAND_MASTER)


def bring_up_bar(p: Platform, bar: int) -> int:
    """Size ``bar``, place it at the start of the MMIO window, enable decoding."""
    size, is64 = size_bar(p, bar)
    start, end = p.mmio_window
    addr = (start + size - 1) & ~(size - 1)
    assert addr + size <= end
    assign_bar(p, bar, addr, is64)
    enable(p)
    return addr
