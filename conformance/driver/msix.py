"""MSI-X observed through memory.

Every table entry the driver uses gets a message address inside DMA memory the
driver owns and a data word that names the vector.  A message from the device
is then an ordinary 4-byte memory write, which the driver can poll on every
target without kernel help (the approach QEMU's libqos takes under qtest).
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance import spec
from conformance.driver.pci import Bar, Capability
from conformance.driver.platform import MemWrite, Op, Platform, Poll

MESSAGE_TAG = 0x5A000000  # data = tag | vector: never zero, names the vector


@dataclass(frozen=True)
class MsixCap:
    offset: int
    table_size: int
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int


def parse_msix_cap(cap: Capability) -> MsixCap:
    ctrl = int.from_bytes(cap.raw[spec.MSIX_CTRL:spec.MSIX_CTRL + 2], "little")
    table = cap.u32(spec.MSIX_TABLE)
    pba = cap.u32(spec.MSIX_PBA)
    return MsixCap(
        offset=cap.offset,
        table_size=(ctrl & spec.MSIX_CTRL_TABLE_SIZE_MASK) + 1,
        table_bar=table & spec.MSIX_BIR_MASK,
        table_offset=table & ~spec.MSIX_BIR_MASK,
        pba_bar=pba & spec.MSIX_BIR_MASK,
        pba_offset=pba & ~spec.MSIX_BIR_MASK,
    )


class Msix:
    """The function's MSI-X table, with each vector's message landing in ``slots``."""

    def __init__(self, platform: Platform, cap: MsixCap, bars: dict[int, Bar]):
        if cap.table_bar not in bars:
            raise ValueError(f"MSI-X table is in BAR{cap.table_bar}, which is not implemented")
        self.platform = platform
        self.cap = cap
        self.slots = platform.dma_alloc(4 * cap.table_size, 64)

    def slot(self, vector: int) -> int:
        return self.slots + 4 * vector

    def entry_off(self, vector: int, field: int) -> int:
        return self.cap.table_offset + vector * spec.MSIX_ENTRY_SIZE + field

    def enable(self) -> None:
        """Program every entry (unmasked) and set MSI-X Enable (PCI 3.0, 6.8.2.3)."""
        p = self.platform
        p.mem_write(self.slots, bytes(4 * self.cap.table_size))
        for v in range(self.cap.table_size):
            addr = self.slot(v)
            p.bar_write(self.cap.table_bar, self.entry_off(v, spec.MSIX_ENTRY_ADDR_LO), 4,
                        addr & 0xFFFFFFFF)
            p.bar_write(self.cap.table_bar, self.entry_off(v, spec.MSIX_ENTRY_ADDR_HI), 4,
                        addr >> 32)
            p.bar_write(self.cap.table_bar, self.entry_off(v, spec.MSIX_ENTRY_DATA), 4,
                        MESSAGE_TAG | v)
            p.bar_write(self.cap.table_bar, self.entry_off(v, spec.MSIX_ENTRY_VECTOR_CTRL), 4, 0)
        ctrl_off = self.cap.offset + spec.MSIX_CTRL
        ctrl = p.config_read(ctrl_off, 2)
        p.config_write(ctrl_off, 2, (ctrl | spec.MSIX_CTRL_ENABLE) & ~spec.MSIX_CTRL_FUNCTION_MASK)

    def disable(self) -> None:
        ctrl_off = self.cap.offset + spec.MSIX_CTRL
        ctrl = self.platform.config_read(ctrl_off, 2)
        self.platform.config_write(ctrl_off, 2, ctrl & ~spec.MSIX_CTRL_ENABLE)

    def set_masked(self, vector: int, masked: bool) -> None:
        self.platform.bar_write(self.cap.table_bar,
                                self.entry_off(vector, spec.MSIX_ENTRY_VECTOR_CTRL), 4,
                                spec.MSIX_ENTRY_CTRL_MASKBIT if masked else 0)

    def pending(self, vector: int) -> bool:
        word = self.platform.bar_read(self.cap.pba_bar, self.cap.pba_offset + 4 * (vector // 32), 4)
        return bool(word >> (vector % 32) & 1)

    # --- observing messages ----------------------------------------------------
    def clear_op(self, vector: int) -> Op:
        return MemWrite(self.slot(vector), bytes(4))

    def clear(self, vector: int) -> None:
        self.platform.execute([self.clear_op(vector)])

    def fired(self, vector: int) -> bool:
        """True if a message for ``vector`` arrived since the last clear."""
        value = int.from_bytes(self.platform.mem_read(self.slot(vector), 4), "little")
        return value == MESSAGE_TAG | vector

    def wait_op(self, vector: int, timeout: float) -> Poll:
        return Poll(self.slot(vector), 4, 0xFFFFFFFF, MESSAGE_TAG | vector, True, timeout)

    def wait(self, vector: int, timeout: float = 5.0) -> None:
        self.platform.execute([self.wait_op(vector, timeout)])
