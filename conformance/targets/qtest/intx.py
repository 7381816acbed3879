"""Where the DUT's INTx line lands on the IOAPIC, per QEMU machine.

The suite observes INTx by intercepting the IOAPIC's inputs (qtest
``irq_intercept_in ioapic``, docs/devel/qtest.rst): each input change shows up
as ``IRQ raise N`` / ``IRQ lower N``.  This module names N for the DUT.

q35 (ICH9): a device in slot S (1..24) on pcie.0 with pin INTx (0 = INTA)
drives PIRQ ``(S + x) % 4 + 4`` (E..H); in APIC mode PIRQ p is GSI ``16 + p``,
independent of the PIRQ routing registers (QEMU hw/isa/lpc_ich9.c).

pc (i440fx/PIIX3): the pin drives PIRQ ``(S - 1 + x) % 4`` (A..D), which
reaches an ISA IRQ only once the PIIX3 PIRQRC registers (config 0x60..0x63 of
00:01.0) route it; firmware normally does that, and with no firmware the
suite does it here, the way SeaBIOS does (PIRQA..D -> IRQ 10, 10, 11, 11).
"""

from __future__ import annotations

PIIX3_DEVFN = (1, 0)
PIIX3_PIRQRC = 0x60
PIIX3_ID = 0x70008086  # device 0x7000, vendor 0x8086
PC_PIRQ_IRQS = (10, 10, 11, 11)


def q35_gsi(slot: int, pin: int) -> int:
    """IOAPIC input for ``pin`` (1 = INTA) of a function in ``slot`` on pcie.0."""
    if not 1 <= slot <= 24:
        raise ValueError(f"slot {slot} has a chipset-specific INTx routing")
    return 16 + (slot + pin - 1) % 4 + 4


def pc_pirq(slot: int, pin: int) -> int:
    """PIRQ (0 = A) for ``pin`` (1 = INTA) of a function in ``slot`` on pci.0."""
    return (slot - 1 + pin - 1) & 3


def pc_gsi(slot: int, pin: int) -> int:
    return PC_PIRQ_IRQS[pc_pirq(slot, pin)]
