"""SshPlatform: the Platform seam served by the guest agent.

Every :meth:`execute` is one frame to the agent and one frame back, however
many primitives it holds: polls are evaluated in the agent, next to the
memory.  BARs stay where the guest kernel put them (``mmio_window`` is None),
DMA memory is hugetlb memory the agent maps, and bus address == guest
physical address (the guest has no IOMMU in front of the device).

Large batches are zlib-compressed on the way in and their results on the way
back: inside a TCG guest zlib (C code) is an order of magnitude faster than
the SSH channel, and ring traffic (poison fills, pattern data, zeroed rings)
compresses well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from conformance.driver.platform import (
    BarRead,
    BarWrite,
    ConfigRead,
    ConfigWrite,
    MemRead,
    MemWrite,
    Op,
    Platform,
    PlatformError,
    Poll,
    PollTimeout,
    Result,
    Unsupported,
)
from guest_agent import protocol as p

from .client import AgentClient, PollExpired

#: Batches whose encoded ops (or expected results) exceed this are compressed.
COMPRESS_OVER = 8 << 10
#: Allowance for moving a batch through the channel, on top of its poll timeouts.
BYTES_PER_SECOND = 256 << 10


def to_wire(op: Op) -> tuple:
    """A Platform primitive as the agent protocol's op tuple."""
    if isinstance(op, MemWrite):
        return (p.OP_MEM_WRITE, op.addr, op.data)
    if isinstance(op, MemRead):
        return (p.OP_MEM_READ, op.addr, op.n)
    if isinstance(op, BarWrite):
        return (p.OP_BAR_WRITE, op.bar, op.off, op.size, op.value & ((1 << (8 * op.size)) - 1))
    if isinstance(op, BarRead):
        return (p.OP_BAR_READ, op.bar, op.off, op.size)
    if isinstance(op, Poll):
        return (p.OP_POLL, op.addr, op.size, op.mask & ((1 << 64) - 1),
                op.value & ((1 << 64) - 1), int(op.equal), float(op.timeout))
    if isinstance(op, ConfigRead):
        return (p.OP_CFG_READ, op.off, op.size)
    if isinstance(op, ConfigWrite):
        return (p.OP_CFG_WRITE, op.off, op.size, op.value & ((1 << (8 * op.size)) - 1))
    raise PlatformError(f"unknown primitive {op!r}")


class SshPlatform(Platform):
    """The device the agent holds, reached through ``client``."""

    mmio_window = None  # BARs come assigned by the guest kernel: reuse them

    def __init__(self, client: AgentClient, selected: dict[str, Any], timeout: float = 10.0,
                 backing_file: str | None = None, facts: dict[str, Any] | None = None):
        self.client = client
        self.selected = selected
        self.timeout = timeout
        self.backing_file = backing_file
        self.facts = facts or {}
        #: Set by a target that controls the VMM (qemu-vm: QMP block_resize).
        self.resizer: Callable[[int], None] | None = None

    def execute(self, ops: Sequence[Op]) -> list[Result]:
        if not ops:
            return []
        wire = [to_wire(op) for op in ops]
        payload = sum(len(w[2]) for w in wire if w[0] == p.OP_MEM_WRITE) + 16 * len(wire)
        result_bytes = sum(p.result_layout(wire))
        polls = sum(w[6] for w in wire if w[0] == p.OP_POLL)
        budget = self.timeout + polls + (payload + result_bytes) / BYTES_PER_SECOND
        got = self.client.batch(wire, budget, compress=payload > COMPRESS_OVER,
                                compress_reply=result_bytes > COMPRESS_OVER)
        if isinstance(got, PollExpired):
            poll = ops[got.index]
            assert isinstance(poll, Poll)
            raise PollTimeout(poll, got.last_value, got.index, got.results)
        return got

    def dma_alloc(self, size: int, align: int = 4096) -> int:
        return self.client.alloc(size, align)

    def resize(self, capacity_bytes: int) -> None:
        if self.resizer is None:
            raise Unsupported("the ssh target cannot resize the disk (a qemu-vm target can)")
        self.resizer(capacity_bytes)

    def backing_read(self, offset: int, n: int) -> bytes:
        if not self.backing_file:
            raise Unsupported("the ssh target was given no backing_file to read")
        with open(self.backing_file, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def describe(self) -> dict[str, Any]:
        hello = self.client.hello
        return {
            **self.facts,
            "bdf": self.selected.get("bdf"),
            "serial": self.selected.get("serial"),
            "guest_disks": self.selected.get("disks"),
            "guest_kernel": hello.get("kernel"),
            "guest_python": hello.get("python"),
            "agent_version": hello.get("version"),
        }

    def close(self) -> None:
        """The connection belongs to the target, which reuses it for the next case."""
