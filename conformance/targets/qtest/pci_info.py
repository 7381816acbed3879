"""Run metadata from QMP ``query-pci``: what sits on the DUT's PCI bus."""

from __future__ import annotations

from typing import Any


def _functions(buses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every function on every bus, depth first (a bridge lists its secondary bus's)."""
    found = []
    for bus in buses:
        for dev in bus.get("devices", []):
            found.append(dev)
            if dev.get("pci_bridge"):
                found += _functions([dev["pci_bridge"]])
    return found


def _hex16(value: Any) -> str | None:
    return f"{value:#06x}" if isinstance(value, int) else None


def pci_summary(buses: list[dict[str, Any]]) -> list[str]:
    """One line per function: ``00:04.0 1af4:1042 SCSI controller``."""
    lines = []
    for dev in _functions(buses):
        ident = dev.get("id", {})
        desc = dev.get("class_info", {}).get("desc") or f"class {dev.get('class_info', {})}"
        lines.append(f"{dev.get('bus', 0):02x}:{dev.get('slot', 0):02x}.{dev.get('function', 0)} "
                     f"{ident.get('vendor', 0):04x}:{ident.get('device', 0):04x} {desc}")
    return lines


def dut_pci_info(buses: list[dict[str, Any]], slot: int, fn: int) -> dict[str, Any] | None:
    """IDs, interrupt pin and BAR sizes QEMU reports for the DUT on the root bus."""
    for dev in _functions(buses):
        if (dev.get("bus"), dev.get("slot"), dev.get("function")) != (0, slot, fn):
            continue
        ident = dev.get("id", {})
        return {
            "vendor": _hex16(ident.get("vendor")),
            "device": _hex16(ident.get("device")),
            "subsystem_vendor": _hex16(ident.get("subsystem-vendor")),
            "subsystem": _hex16(ident.get("subsystem")),
            "class": _hex16(dev.get("class_info", {}).get("class")),
            "irq_pin": dev.get("irq_pin"),
            "qdev_id": dev.get("qdev_id") or None,
            "bars": {r["bar"]: {"type": r.get("type"), "size": r.get("size")}
                     for r in dev.get("regions", []) if "bar" in r},
        }
    return None
