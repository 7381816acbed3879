"""MSI-X: vector table, pending bits, masking and message delivery.

PCI Local Bus 3.0, 6.8.2: each table entry is message address (64 bits),
message data (32 bits) and vector control (bit 0 = mask, set at reset).  A
message for a masked vector (or while the whole function is masked) sets the
vector's pending bit instead and goes out when the vector is unmasked.

A message is a 4-byte little-endian write of the entry's data to the entry's
address: here a write into :class:`GuestMemory`, which is how the suite sees
interrupts on every target.  Without bus mastering the function cannot write
memory, so an unmasked message is then dropped (counted in ``dropped``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from conformance import spec

from .memory import GuestMemory

TABLE_OFFSET = 0x000
PBA_OFFSET = 0x800


class Msix:
    def __init__(self, nvec: int, mem: GuestMemory, bus_master: Callable[[], bool]):
        self.nvec = nvec
        self.mem = mem
        self.bus_master = bus_master
        self.table = bytearray(spec.MSIX_ENTRY_SIZE * nvec)
        self.pending = 0  # bit v = vector v pending
        self.enabled = False
        self.function_mask = False
        self.sent = [0] * nvec  # messages delivered per vector (for diagnostics)
        self.dropped = 0  # unmasked messages lost: no bus mastering, or address not in memory
        self.reset()

    def reset(self) -> None:
        """Function-level state after PCI reset: every vector masked, nothing pending."""
        self.table[:] = bytes(len(self.table))
        for v in range(self.nvec):
            self.table[v * 16 + spec.MSIX_ENTRY_VECTOR_CTRL] = spec.MSIX_ENTRY_CTRL_MASKBIT
        self.pending = 0
        self.enabled = False
        self.function_mask = False

    def clear_pending(self) -> None:
        """The events behind pending messages went away (virtio reset): drop them.

        PCI 3.0 6.8.2: a function clears a Pending bit whose event has been
        satisfied; after a reset the device must not notify (2.4.1).
        """
        self.pending = 0

    # ---------------------------------------------------------------- control
    def set_control(self, enabled: bool, function_mask: bool) -> None:
        """The MSI-X Enable and Function Mask bits changed in the capability."""
        self.enabled = enabled
        self.function_mask = function_mask
        self._flush_pending()

    def masked(self, vector: int) -> bool:
        ctrl = self.table[vector * 16 + spec.MSIX_ENTRY_VECTOR_CTRL]
        return self.function_mask or bool(ctrl & spec.MSIX_ENTRY_CTRL_MASKBIT)

    # ----------------------------------------------------------------- firing
    def notify(self, vector: int) -> None:
        """Send (or hold as pending) the message of ``vector``; MSI-X must be enabled."""
        if not 0 <= vector < self.nvec:
            return
        if self.masked(vector):
            self.pending |= 1 << vector
            return
        self._send(vector)

    def _send(self, vector: int) -> None:
        addr_lo, addr_hi, data = struct.unpack_from("<III", self.table, vector * 16)
        addr = addr_hi << 32 | addr_lo
        if not self.bus_master() or not self.mem.contains(addr, 4):
            self.dropped += 1
            return
        self.mem.write_u32(addr, data)
        self.sent[vector] += 1

    def _flush_pending(self) -> None:
        if not self.enabled or not self.pending:
            return
        for v in range(self.nvec):
            if self.pending >> v & 1 and not self.masked(v):
                if not self.bus_master():
                    continue  # stays pending until bus mastering is back
                self.pending &= ~(1 << v)
                self._send(v)

    # ----------------------------------------------------- BAR access (table, PBA)
    def read(self, off: int, size: int) -> int:
        """Read from the MSI-X BAR: table at 0x000, PBA at 0x800."""
        value = 0
        for i in range(size):
            o = off + i
            if TABLE_OFFSET <= o < TABLE_OFFSET + len(self.table):
                b = self.table[o - TABLE_OFFSET]
            elif PBA_OFFSET <= o < PBA_OFFSET + 8 * ((self.nvec + 63) // 64):
                b = self.pending >> (8 * (o - PBA_OFFSET)) & 0xFF
            else:
                b = 0
            value |= b << (8 * i)
        return value

    def write(self, off: int, size: int, value: int) -> None:
        """Write into the table (the PBA is read-only); unmasking releases pending messages."""
        touched_ctrl = False
        for i in range(size):
            o = off + i - TABLE_OFFSET
            if 0 <= o < len(self.table):
                field = o % 16
                b = value >> (8 * i) & 0xFF
                if field == spec.MSIX_ENTRY_VECTOR_CTRL:
                    b &= spec.MSIX_ENTRY_CTRL_MASKBIT  # other control bits are reserved
                    touched_ctrl = True
                elif field > spec.MSIX_ENTRY_VECTOR_CTRL:
                    b = 0
                self.table[o] = b
        if touched_ctrl:
            self._flush_pending()

    def bus_master_enabled(self) -> None:
        """Bus mastering came back: unmasked pending messages can go out now."""
        self._flush_pending()
