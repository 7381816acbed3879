"""The qtest target's configuration: a validated dataclass built from YAML.

``qtest_spec_from_mapping`` checks every key of a target mapping and fails
with a one-line :class:`TargetConfigError` naming where, which key and what is
wrong, so a typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

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

    ``device`` is the ``-device`` string of the DUT; the target adds
    ``addr=04.0`` when it has none.  Exactly one of ``drive`` (``-drive``
    options) and ``blockdev`` (``-blockdev`` options) may be given; with
    neither, the target creates a raw file of ``disk_size`` bytes filled with
    :func:`~conformance.targets.qtest.backing.sector_pattern`.
    """

    qemu: str = DEFAULT_QEMU
    machine: str = "q35"
    device: str = DEFAULT_DEVICE
    drive: str | None = None
    blockdev: str | None = None
    disk_size: int = 16 << 20
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    memory: str = "256M"
    timeout: float = 10.0

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)

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
    "machine": "q35 or pc",
    "device": "the -device string of the virtio-blk-pci DUT",
    "drive": "-drive options for the DUT's disk",
    "blockdev": "-blockdev options for the DUT's disk",
    "disk_size": "size of the disk the target creates",
    "extra_args": "extra QEMU arguments (list of strings)",
    "memory": "guest RAM size, e.g. 256M",
    "timeout": "seconds one qtest command may take",
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
    if machine not in MACHINES:
        raise fail("machine", f"expected one of {', '.join(MACHINES)}, got {machine!r}")
    device = get_str("device", DEFAULT_DEVICE)
    driver, dev_opts = split_options(device)
    if not driver.startswith("virtio-blk-pci"):
        raise fail("device", f"expected a virtio-blk-pci device string, got {device!r}")
    if "addr" in dev_opts:
        try:
            parse_devfn(dev_opts["addr"])
        except ValueError:
            bad = dev_opts["addr"]
            raise fail("device", f"bad addr={bad!r} (expected SLOT[.FN] in hex)") from None
    if "bus" in dev_opts and dev_opts["bus"] != ROOT_BUSES[machine]:
        raise fail("device", f"the DUT must sit on the root bus {ROOT_BUSES[machine]}, "
                             f"not bus={dev_opts['bus']}")
    drive = get_str("drive", None)
    blockdev = get_str("blockdev", None)
    if drive and blockdev:
        raise fail("blockdev", "give either drive or blockdev, not both")
    if "disk_size" in mapping and (drive or blockdev):
        raise fail("disk_size", "only applies to the disk the target creates "
                                "(without drive/blockdev)")
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
    return QtestSpec(
        qemu=qemu, machine=machine, device=device, drive=drive, blockdev=blockdev,
        disk_size=disk_size, extra_args=tuple(extra), memory=f"{mem_bytes >> 20}M",
        timeout=float(timeout),
    )
