"""A fake /sys and /proc in a temporary directory, and a fake kernel that (un)binds.

Real enough for the agent's device selection, safety rules, take and give
back: PCI functions with vendor/device files, a config space file, a
``resource`` table and ``resourceN`` files (mmap-able like sysfs BARs),
virtio-blk disks with serials and partitions, mountinfo and swaps.
:class:`FakeKernel` watches the driver's ``bind``/``unbind`` files (written
by the agent, in this process or another) and moves the ``driver`` link and
the disks the way the kernel would.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BAR4_START = 0xFEBFC000
BAR4_SIZE = 0x4000
COMMON_CFG_OFF = 0x0  # common cfg at BAR4 + 0
DEVICE_STATUS = 0x14


def virtio_config(device_id: int = 0x1042) -> bytes:
    """256 bytes of config space: IDs, command, BAR4 (64-bit), a common-cfg capability."""
    cfg = bytearray(256)
    cfg[0:2] = (0x1AF4).to_bytes(2, "little")
    cfg[2:4] = device_id.to_bytes(2, "little")
    cfg[4:6] = (0x0103).to_bytes(2, "little")  # I/O, memory, SERR
    cfg[6:8] = (0x0010).to_bytes(2, "little")  # capability list
    cfg[0x20:0x24] = (BAR4_START | 0x4 | 0x8).to_bytes(4, "little")  # 64-bit prefetchable
    cfg[0x24:0x28] = (0).to_bytes(4, "little")
    cfg[0x34] = 0x40
    # struct virtio_pci_cap: vndr, next, len, cfg_type, bar, id, pad[2], offset, length
    cfg[0x40:0x50] = bytes([0x09, 0x00, 16, 1, 4, 0, 0, 0]) + COMMON_CFG_OFF.to_bytes(
        4, "little") + (0x38).to_bytes(4, "little")
    return bytes(cfg)


@dataclass
class FakeFunction:
    bdf: str
    serial: str | None = "DUT123"
    device_id: int = 0x1042
    vendor: int = 0x1AF4
    driver: str | None = "virtio-pci"
    disk: str | None = "vda"
    partitions: list[str] = field(default_factory=list)
    major: int = 254
    minor: int = 0
    holders: list[str] = field(default_factory=list)
    virtio_index: int = 3


class FakeTree:
    def __init__(self, root: Path, functions: list[FakeFunction], mounts=(), swaps=(),
                 hugepages: int = 16):
        self.root = root
        self.sys = root / "sys"
        self.proc = root / "proc"
        self.state = root / "state"
        self.functions = {f.bdf: f for f in functions}
        for name in ("virtio-pci", "vfio-pci"):
            d = self.sys / "bus/pci/drivers" / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "bind").write_text("")
            (d / "unbind").write_text("")
        for f in functions:
            self._make(f)
        (self.proc / "self").mkdir(parents=True, exist_ok=True)
        lines = ["20 1 0:19 / / ro - 9p /dev/root ro"]
        for i, (devnum, where) in enumerate(mounts):
            lines.append(f"{30 + i} 20 {devnum} / {where} rw - ext4 /dev/x rw")
        (self.proc / "self/mountinfo").write_text("\n".join(lines) + "\n")
        swap_lines = ["Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"]
        swap_lines += [f"/dev/{s}                               partition\t1024\t0\t-2"
                       for s in swaps]
        (self.proc / "swaps").write_text("\n".join(swap_lines) + "\n")
        (self.proc / "meminfo").write_text(f"MemTotal: 1000 kB\nHugePages_Free:   {hugepages}\n")

    def dev_dir(self, bdf: str) -> Path:
        return self.sys / "bus/pci/devices" / bdf

    def _make(self, f: FakeFunction) -> None:
        d = self.dev_dir(f.bdf)
        d.mkdir(parents=True)
        (d / "vendor").write_text(f"{f.vendor:#06x}\n")
        (d / "device").write_text(f"{f.device_id:#06x}\n")
        (d / "subsystem_device").write_text("0x0002\n" if f.device_id == 0x1001 else "0x1100\n")
        (d / "config").write_bytes(virtio_config(f.device_id))
        rows = ["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * 13
        rows[4] = f"{BAR4_START:#018x} {BAR4_START + BAR4_SIZE - 1:#018x} 0x000000000014220c"
        (d / "resource").write_text("\n".join(rows) + "\n")
        (d / "resource4").write_bytes(bytes(BAR4_SIZE))
        if f.driver:
            (d / "driver").symlink_to(self.sys / "bus/pci/drivers" / f.driver)
            self.add_disk(f)

    def add_disk(self, f: FakeFunction) -> None:
        if not f.disk:
            return
        disk = self.dev_dir(f.bdf) / f"virtio{f.virtio_index}" / "block" / f.disk
        disk.mkdir(parents=True, exist_ok=True)
        if f.serial is not None:
            (disk / "serial").write_text(f.serial + "\n")
        (disk / "dev").write_text(f"{f.major}:{f.minor}\n")
        (disk / "holders").mkdir(exist_ok=True)
        for h in f.holders:
            (disk / "holders" / h).write_text("")
        for i, part in enumerate(f.partitions, 1):
            (disk / part).mkdir(exist_ok=True)
            (disk / part / "partition").write_text(f"{i}\n")
            (disk / part / "dev").write_text(f"{f.major}:{f.minor + i}\n")

    def remove_disk(self, bdf: str) -> None:
        import shutil

        for entry in self.dev_dir(bdf).iterdir():
            if entry.name.startswith("virtio") and entry.name[6:].isdigit():
                shutil.rmtree(entry)

    def config(self, bdf: str) -> bytes:
        return (self.dev_dir(bdf) / "config").read_bytes()

    def command(self, bdf: str) -> int:
        return int.from_bytes(self.config(bdf)[4:6], "little")

    def bar4(self, bdf: str) -> bytes:
        return (self.dev_dir(bdf) / "resource4").read_bytes()

    def bound(self, bdf: str) -> str | None:
        link = self.dev_dir(bdf) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def args(self) -> list[str]:
        return ["--sysfs", str(self.sys), "--proc", str(self.proc), "--state-dir",
                str(self.state)]


class FakeKernel:
    """Acts on writes to virtio-pci's bind/unbind files, like the PCI core would."""

    def __init__(self, tree: FakeTree):
        self.tree = tree
        self.log: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeKernel:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        drv = self.tree.sys / "bus/pci/drivers/virtio-pci"
        while not self._stop.is_set():
            for action in ("unbind", "bind"):
                path = drv / action
                text = path.read_text().strip()
                if not text:
                    continue
                path.write_text("")
                self.log.append((action, text))
                link = self.tree.dev_dir(text) / "driver"
                if action == "unbind":
                    self.tree.remove_disk(text)
                    if link.is_symlink():
                        link.unlink()
                else:
                    if not link.is_symlink():
                        link.symlink_to(drv)
                    self.tree.add_disk(self.tree.functions[text])
            time.sleep(0.005)
