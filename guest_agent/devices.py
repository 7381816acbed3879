"""Finding the device under test in the guest, and the rules that keep the guest safe.

The agent is destructive only on the one virtio-blk PCI function it was told
to use, matched by PCI address and/or virtio-blk serial.  It refuses a
function whose disk (or a partition of it) is mounted, is a swap area, holds
the root filesystem, or is held by another block device (device-mapper, md),
and it refuses to guess when a selector matches more than one function.

``sysfs`` and ``proc`` roots are parameters so the rules can be tested against
a fake tree in a temporary directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

VIRTIO_VENDOR = 0x1AF4
VIRTIO_BLK_IDS = (0x1001, 0x1042)  # transitional, modern (4.1.2 PCI Device Discovery)
KERNEL_DRIVER = "virtio-pci"


class AgentError(Exception):
    """A refusal or failure with a protocol error code (see protocol.ERROR_CODES)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass
class Disk:
    name: str  # e.g. "vda"
    devnums: list[str] = field(default_factory=list)  # "major:minor" of the disk and partitions
    parts: list[str] = field(default_factory=list)  # names of the disk and its partitions
    holders: list[str] = field(default_factory=list)
    serial: str | None = None


@dataclass
class Function:
    """One virtio-blk PCI function as sysfs shows it."""

    bdf: str
    device_id: int
    driver: str | None
    disks: list[Disk] = field(default_factory=list)

    @property
    def serial(self) -> str | None:
        serials = [d.serial for d in self.disks if d.serial is not None]
        return serials[0] if serials else None

    @property
    def disk_names(self) -> list[str]:
        return [d.name for d in self.disks]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


class Sysfs:
    """Paths under a sysfs root and a proc root (``/sys`` and ``/proc`` in production)."""

    def __init__(self, sysfs: str = "/sys", proc: str = "/proc"):
        self.sysfs = sysfs
        self.proc = proc

    def pci_dir(self, bdf: str) -> str:
        return os.path.join(self.sysfs, "bus", "pci", "devices", bdf)

    def driver_dir(self, name: str) -> str:
        return os.path.join(self.sysfs, "bus", "pci", "drivers", name)

    def driver_of(self, bdf: str) -> str | None:
        link = os.path.join(self.pci_dir(bdf), "driver")
        try:
            return os.path.basename(os.readlink(link))
        except OSError:
            return None

    # --- discovery ---------------------------------------------------------------
    def functions(self) -> list[Function]:
        """Every virtio-blk PCI function, bound or not."""
        base = os.path.join(self.sysfs, "bus", "pci", "devices")
        try:
            names = sorted(os.listdir(base))
        except OSError:
            raise AgentError("sysfs", f"cannot list {base}: is sysfs mounted?") from None
        out = []
        for bdf in names:
            d = os.path.join(base, bdf)
            vendor = _read(os.path.join(d, "vendor"))
            device = _read(os.path.join(d, "device"))
            if vendor is None or device is None:
                continue
            try:
                if int(vendor, 16) != VIRTIO_VENDOR or int(device, 16) not in VIRTIO_BLK_IDS:
                    continue
            except ValueError:
                continue
            if int(device, 16) == 0x1001:
                # Transitional IDs are shared by all device types; the subsystem ID says which.
                sub = _read(os.path.join(d, "subsystem_device"))
                if sub is None or int(sub, 16) != 2:
                    continue
            out.append(Function(bdf, int(device, 16), self.driver_of(bdf), self.disks_of(bdf)))
        return out

    def disks_of(self, bdf: str) -> list[Disk]:
        """Block devices the kernel made from this function (``virtioN/block/vdX``)."""
        d = self.pci_dir(bdf)
        disks = []
        try:
            entries = sorted(os.listdir(d))
        except OSError:
            return []
        for entry in entries:
            if not entry.startswith("virtio") or not entry[6:].isdigit():
                continue
            block = os.path.join(d, entry, "block")
            try:
                names = sorted(os.listdir(block))
            except OSError:
                continue
            for name in names:
                disks.append(self.disk(os.path.join(block, name), name))
        return disks

    def disk(self, path: str, name: str) -> Disk:
        disk = Disk(name, serial=_read(os.path.join(path, "serial")))
        dev = _read(os.path.join(path, "dev"))
        if dev:
            disk.devnums.append(dev)
        disk.parts.append(name)
        try:
            entries = sorted(os.listdir(path))
        except OSError:
            entries = []
        for entry in entries:
            if entry.startswith(name) and os.path.isfile(os.path.join(path, entry, "partition")):
                part_dev = _read(os.path.join(path, entry, "dev"))
                if part_dev:
                    disk.devnums.append(part_dev)
                disk.parts.append(entry)
                disk.holders += self._holders(os.path.join(path, entry))
        disk.holders += self._holders(path)
        return disk

    @staticmethod
    def _holders(path: str) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(path, "holders")))
        except OSError:
            return []

    # --- what the guest is using -------------------------------------------------
    def mounts(self) -> list[tuple[str, str]]:
        """(major:minor, mount point) of every mount (proc/self/mountinfo)."""
        text = _read(os.path.join(self.proc, "self", "mountinfo"))
        if text is None:
            raise AgentError("sysfs", f"cannot read {self.proc}/self/mountinfo")
        out = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 5:
                out.append((fields[2], fields[4]))
        return out

    def swaps(self) -> list[str]:
        """Base names of the swap devices (proc/swaps)."""
        text = _read(os.path.join(self.proc, "swaps")) or ""
        return [os.path.basename(line.split()[0]) for line in text.splitlines()[1:] if line.split()]

    def in_use(self, fn: Function) -> str | None:
        """Why ``fn`` must not be touched, or None."""
        mounts = self.mounts()
        swaps = set(self.swaps())
        for disk in fn.disks:
            devnums = set(disk.devnums)
            for devnum, where in mounts:
                if devnum in devnums:
                    part = disk.parts[disk.devnums.index(devnum)] if len(disk.parts) == len(
                        disk.devnums) else disk.name
                    if where == "/":
                        return f"{part} holds the root filesystem"
                    return f"{part} is mounted on {where}"
            for part in disk.parts:
                if part in swaps:
                    return f"{part} is in use as swap"
            if disk.holders:
                return f"{disk.name} is held by {', '.join(disk.holders)}"
        return None


def select_function(sysfs: Sysfs, pci: str | None, serial: str | None,
                    journal_serials: dict[str, str] | None = None) -> Function:
    """The one function matching ``pci`` and/or ``serial``; refuse anything else.

    ``journal_serials`` maps BDF -> serial for functions this agent unbound
    earlier (their serial is not visible while they have no driver).
    """
    if not pci and not serial:
        raise AgentError("bad-request", "no device selector: give a PCI address or a serial")
    funcs = sysfs.functions()
    journal_serials = journal_serials or {}

    def serial_of(fn: Function) -> str | None:
        return fn.serial if fn.serial is not None else journal_serials.get(fn.bdf)

    if pci:
        pci = pci if pci.count(":") == 2 else f"0000:{pci}"
        matches = [f for f in funcs if f.bdf == pci]
        if not matches:
            found = ", ".join(f.bdf for f in funcs) or "none"
            raise AgentError("not-found", f"no virtio-blk PCI function at {pci} "
                                          f"(virtio-blk functions: {found})")
        fn = matches[0]
        if serial is not None and serial_of(fn) != serial:
            raise AgentError("refused", f"{pci} has serial {serial_of(fn)!r}, not {serial!r}: "
                                        "refusing a device that was not selected")
    else:
        matches = [f for f in funcs if serial_of(f) == serial]
        if not matches:
            found = ", ".join(f"{f.bdf}={serial_of(f)!r}" for f in funcs) or "none"
            raise AgentError("not-found", f"no virtio-blk device with serial {serial!r} "
                                          f"(virtio-blk functions: {found})")
        if len(matches) > 1:
            raise AgentError("ambiguous", f"serial {serial!r} matches "
                                          f"{', '.join(f.bdf for f in matches)}: give the PCI "
                                          "address too")
        fn = matches[0]
    if fn.driver not in (None, KERNEL_DRIVER):
        raise AgentError("in-use", f"{fn.bdf} is bound to driver {fn.driver!r}, not "
                                   f"{KERNEL_DRIVER}: refusing to take it")
    why = sysfs.in_use(fn)
    if why:
        raise AgentError("in-use", f"{fn.bdf} ({', '.join(fn.disk_names)}): {why}; refusing "
                                   "to touch it")
    return fn
