"""The qtest target's configuration: a validated dataclass built from YAML.

``qtest_spec_from_mapping`` checks every key of a target mapping and fails
with a one-line :class:`TargetConfigError` naming where, which key and what is
wrong, so a typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import TargetConfigError

DEFAULT_QEMU = "qemu-system-x86_64"
DEFAULT_DEVICE = "virtio-blk-pci,drive=dut,disable-legacy=on,serial=QTEST0001"
DEFAULT_SLOT = 4  # the DUT's fixed PCI slot on the root bus (addr=04.0)
MACHINES = ("q35", "pc")
ROOT_BUSES = {"q35": "pcie.0", "pc": "pci.0"}
#: Versioned machine types (QEMU's compatibility machines, e.g. pc-q35-7.2 on a
#: newer QEMU) belong to the family whose chipset they emulate.
_VERSIONED_MACHINES = (
    (re.compile(r"^pc-q35-\d+\.\d+$"), "q35"),
    (re.compile(r"^pc-i440fx-\d+\.\d+$"), "pc"),
)
#: Device drivers whose guest RAM must be shareable with another process.
_SHARED_MEMORY_DRIVERS = ("vhost-user-",)

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"256M"`` / ``"16MiB"`` / ``4096`` -> bytes (binary units, as QEMU's -m)."""
    if isinstance(text, bool):
        raise ValueError("not a size")
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def split_options(text: str) -> tuple[str, dict[str, str]]:
    """Split a QEMU option string ``"driver,k=v,..."`` into (driver, {k: v}).

    QEMU escapes a comma inside a value by doubling it (docs/system/invocation);
    such values are kept whole.
    """
    parts: list[str] = []
    cur = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "," and text[i + 1:i + 2] == ",":
            cur += ","
            i += 2
            continue
        if ch == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    head = parts[0] if parts and "=" not in parts[0] else ""
    opts = {}
    for p in parts[1:] if head else parts:
        k, _, v = p.partition("=")
        opts[k.strip()] = v
    return head, opts


def machine_family(machine: str) -> str | None:
    """``q35`` or ``pc`` for a machine type of that chipset, else None."""
    if machine in MACHINES:
        return machine
    for pattern, family in _VERSIONED_MACHINES:
        if pattern.match(machine):
            return family
    return None


def parse_devfn(addr: str) -> tuple[int, int]:
    """QEMU's ``addr=SLOT[.FN]`` (hex) -> (slot, function)."""
    slot_s, _, fn_s = addr.partition(".")
    slot, fn = int(slot_s, 16), int(fn_s or "0", 16)
    if not (0 <= slot < 32 and 0 <= fn < 8):
        raise ValueError(f"PCI address {addr!r} out of range")
    return slot, fn


@dataclass(frozen=True)
class QtestSpec:
    """What QEMU to start and how.

    ``device`` is the ``-device`` string of the DUT (``virtio-blk-pci`` or any
    other implementation, e.g. ``vhost-user-blk-pci,chardev=...``); the target
    adds ``addr=04.0`` when it has none.  The disk: ``drive`` (``-drive``
    options) or ``blockdev`` (``-blockdev`` options) when given; else, when
    the device string names a ``drive=``, the target creates a raw file of
    ``disk_size`` bytes filled with
    :func:`~conformance.targets.qtest.backing.sector_pattern` under that node
    name.  ``backing_file`` names a raw image served by a backend the user
    started (e.g. qemu-storage-daemon behind vhost-user-blk-pci): the suite
    fills it with the pattern and reads it back, as with its own disk.

    ``data_dir`` is QEMU's ``-L`` (firmware and option ROMs); None means: the
    ``share/qemu`` beside the binary when the binary lives in a prefix of its
    own.  ``shared_memory`` backs guest RAM with a shareable memfd, which
    vhost-user backends need to reach the rings; None means: only for
    ``vhost-user-*`` devices.
    """

    qemu: str = DEFAULT_QEMU
    machine: str = "q35"
    device: str = DEFAULT_DEVICE
    drive: str | None = None
    blockdev: str | None = None
    disk_size: int = 16 << 20
    backing_file: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    memory: str = "256M"
    timeout: float = 10.0
    data_dir: str | None = None
    shared_memory: bool | None = None

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)

    @property
    def machine_family(self) -> str:
        """``q35`` or ``pc``: decides the root bus, the BAR window and INTx routing."""
        family = machine_family(self.machine)
        if family is None:
            raise ValueError(f"unknown machine type {self.machine!r}")
        return family

    @property
    def root_bus(self) -> str:
        return ROOT_BUSES[self.machine_family]

    @property
    def device_driver(self) -> str:
        return split_options(self.device)[0]

    @property
    def uses_shared_memory(self) -> bool:
        if self.shared_memory is not None:
            return self.shared_memory
        return self.device_driver.startswith(_SHARED_MEMORY_DRIVERS)

    @property
    def created_disk_node(self) -> str | None:
        """The node name of the disk the target creates, or None when it creates none."""
        if self.drive or self.blockdev or self.backing_file:
            return None
        return split_options(self.device)[1].get("drive") or None

    @property
    def devfn(self) -> tuple[int, int]:
        """(slot, function) of the DUT on the root bus."""
        _, opts = split_options(self.device)
        return parse_devfn(opts["addr"]) if "addr" in opts else (DEFAULT_SLOT, 0)

    def device_arg(self) -> str:
        """The ``-device`` argument with the fixed slot added where absent."""
        _, opts = split_options(self.device)
        return self.device if "addr" in opts else f"{self.device},addr={DEFAULT_SLOT:02x}.0"


_KEYS = {
    "type": "the target type, 'qtest'",
    "qemu": "path of the QEMU binary",
    "machine": "q35, pc or a versioned pc-q35-X.Y / pc-i440fx-X.Y",
    "device": "the -device string of the DUT",
    "drive": "-drive options for the DUT's disk",
    "blockdev": "-blockdev options for the DUT's disk",
    "disk_size": "size of the disk the target creates",
    "backing_file": "raw image a backend the user started serves (the suite overwrites it)",
    "extra_args": "extra QEMU arguments (list of strings)",
    "memory": "guest RAM size, e.g. 256M",
    "timeout": "seconds one qtest command may take",
    "data_dir": "QEMU's -L directory (firmware, option ROMs)",
    "shared_memory": "back guest RAM with shareable memory (vhost-user)",
}


def qtest_spec_from_mapping(mapping: Mapping[str, Any], where: str) -> QtestSpec:
    """Validate a qtest target's YAML mapping; ``where`` names it in errors."""

    def fail(key: str, problem: str) -> TargetConfigError:
        return TargetConfigError(f"{where}: {key}: {problem}")

    if not isinstance(mapping, Mapping):
        raise TargetConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise fail(str(key), f"unknown key (known keys: {known})")

    def get_str(key: str, default: str | None) -> str | None:
        value = mapping.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(key, f"expected a non-empty string ({_KEYS[key]}), got {value!r}")
        return value.strip()

    if "type" in mapping and mapping["type"] != "qtest":
        raise fail("type", f"expected 'qtest', got {mapping['type']!r}")
    qemu = get_str("qemu", DEFAULT_QEMU)
    machine = get_str("machine", "q35")
    family = machine_family(machine)
    if family is None:
        raise fail("machine", f"expected q35, pc, pc-q35-X.Y or pc-i440fx-X.Y, got {machine!r}")
    device = get_str("device", DEFAULT_DEVICE)
    driver, dev_opts = split_options(device)
    if not driver:
        raise fail("device", f"expected a device driver name first (e.g. virtio-blk-pci,...), "
                             f"got {device!r}")
    if "addr" in dev_opts:
        try:
            parse_devfn(dev_opts["addr"])
        except ValueError:
            bad = dev_opts["addr"]
            raise fail("device", f"bad addr={bad!r} (expected SLOT[.FN] in hex)") from None
    if "bus" in dev_opts and dev_opts["bus"] != ROOT_BUSES[family]:
        raise fail("device", f"the DUT must sit on the root bus {ROOT_BUSES[family]}, "
                             f"not bus={dev_opts['bus']}")
    drive = get_str("drive", None)
    blockdev = get_str("blockdev", None)
    if drive and blockdev:
        raise fail("blockdev", "give either drive or blockdev, not both")
    backing_file = get_str("backing_file", None)
    if backing_file is not None:
        problem = _backing_file_problem(backing_file)
        if problem:
            raise fail("backing_file", problem)
    if "disk_size" in mapping and (drive or blockdev or backing_file):
        raise fail("disk_size", "only applies to the disk the target creates "
                                "(without drive/blockdev/backing_file)")
    try:
        disk_size = parse_size(mapping.get("disk_size", 16 << 20))
    except (ValueError, TypeError):
        bad = mapping.get("disk_size")
        raise fail("disk_size", f"expected a size like 16M, got {bad!r}") from None
    if disk_size <= 0 or disk_size % 512:
        raise fail("disk_size", f"must be a positive multiple of 512, got {disk_size}")
    extra = mapping.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise fail("extra_args", f"expected a list of strings, got {extra!r}")
    memory = mapping.get("memory", "256M")
    try:
        mem_bytes = parse_size(memory)
    except (ValueError, TypeError):
        raise fail("memory", f"expected a size like 256M, got {memory!r}") from None
    if mem_bytes < 16 << 20 or mem_bytes % (1 << 20):
        raise fail("memory", f"expected a whole number of MiB, at least 16M, got {memory!r}")
    timeout = mapping.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise fail("timeout", f"expected a positive number of seconds, got {timeout!r}")
    data_dir = get_str("data_dir", None)
    if data_dir is not None and not os.path.isdir(data_dir):
        raise fail("data_dir", f"no such directory: {data_dir}")
    if data_dir is not None and "-L" in extra:
        raise fail("data_dir", "give either data_dir or -L in extra_args, not both")
    shared = mapping.get("shared_memory")
    if shared is not None and not isinstance(shared, bool):
        raise fail("shared_memory", f"expected true or false, got {shared!r}")
    return QtestSpec(
        qemu=qemu, machine=machine, device=device, drive=drive, blockdev=blockdev,
        disk_size=disk_size, backing_file=backing_file, extra_args=tuple(extra),
        memory=f"{mem_bytes >> 20}M", timeout=float(timeout), data_dir=data_dir,
        shared_memory=shared,
    )


def _backing_file_problem(path: str) -> str | None:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return f"cannot use {path}: {exc.strerror}"
    if not os.path.isfile(path):
        return f"{path} is not a regular file"
    if size <= 0 or size % 512:
        return f"{path} is {size} bytes, not a positive multiple of 512 (a raw image)"
    return None
