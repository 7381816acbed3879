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

import threading
import time
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
#: Longest a posted write waits for the next batch before it is sent on its own.
POST_LINGER = 0.002
POSTED = (p.OP_CFG_WRITE, p.OP_BAR_WRITE, p.OP_MEM_WRITE)


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
                 backing_file: str | None = None, facts: dict[str, Any] | None = None,
                 post_writes: bool = True):
        self.client = client
        self.selected = selected
        self.timeout = timeout
        self.backing_file = backing_file
        self.facts = facts or {}
        #: Set by a target that controls the VMM (qemu-vm: QMP block_resize).
        self.resizer: Callable[[int], None] | None = None
        self.post_writes = post_writes
        self._posted: list[tuple] = []
        self._posted_at = 0.0
        self._error: BaseException | None = None
        self._lock = threading.Condition()
        self._flusher: threading.Thread | None = None

    # --- posted writes ---------------------------------------------------------------------
    # A batch of nothing but writes (config, BAR, memory) returns nothing the
    # driver can look at, so it is held back and sent in front of the next batch
    # that reads or polls: a register-by-register bring-up costs half the round
    # trips.  Like a posted PCI write it reaches the device before any later read,
    # and never later than POST_LINGER after it was issued (a flusher thread sends
    # it), so a case that writes and then sleeps still gives the device that time.

    def _flush_locked(self) -> None:
        if self._posted:
            posted, self._posted = self._posted, []
            self._run(posted)

    def _flush_loop(self) -> None:
        with self._lock:
            while self._flusher is threading.current_thread():
                if not self._posted:
                    self._lock.wait(1.0)
                    continue
                left = self._posted_at + POST_LINGER - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                try:
                    self._flush_locked()
                except BaseException as exc:  # reported by the next call from the case
                    self._error = exc

    def _raise_error_locked(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def sync(self) -> None:
        """Send the posted writes now (and report what became of them)."""
        with self._lock:
            self._raise_error_locked()
            self._flush_locked()

    def control(self, kind: int, obj: dict | None = None, timeout: float | None = None,
                what: str = "a request") -> dict:
        """A control request to the agent, after the posted writes."""
        with self._lock:
            try:
                self._flush_locked()
            except PlatformError:
                pass  # the case is over: the device is being reset anyway
            self._error = None
            return self.client.control(kind, obj, timeout, what)

    # --- the Platform -----------------------------------------------------------------------
    def execute(self, ops: Sequence[Op]) -> list[Result]:
        if not ops:
            return []
        wire = [to_wire(op) for op in ops]
        with self._lock:
            self._raise_error_locked()
            if self.post_writes and all(w[0] in POSTED for w in wire):
                if not self._posted:
                    self._posted_at = time.monotonic()
                self._posted += wire
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                                     name="ssh-posted-writes")
                    self._flusher.start()
                self._lock.notify()
                return [None] * len(wire)
            posted, self._posted = self._posted, []
            try:
                return self._run(posted + wire)[len(posted):]
            except PollTimeout as exc:
                n = len(posted)
                raise PollTimeout(exc.poll, exc.last_value, exc.index - n, exc.results[n:]) \
                    from None

    def _run(self, wire: list[tuple]) -> list[Result]:
        payload = sum(len(w[2]) for w in wire if w[0] == p.OP_MEM_WRITE) + 16 * len(wire)
        result_bytes = sum(p.result_layout(wire))
        polls = sum(w[6] for w in wire if w[0] == p.OP_POLL)
        budget = self.timeout + polls + (payload + result_bytes) / BYTES_PER_SECOND
        got = self.client.batch(wire, budget, compress=payload > COMPRESS_OVER,
                                compress_reply=result_bytes > COMPRESS_OVER)
        if isinstance(got, PollExpired):
            w = wire[got.index]
            poll = Poll(w[1], w[2], w[3], w[4], bool(w[5]), w[6])
            raise PollTimeout(poll, got.last_value, got.index, got.results)
        return got

    def dma_alloc(self, size: int, align: int = 4096) -> int:
        with self._lock:
            self._raise_error_locked()
            self._flush_locked()
            return self.client.alloc(size, align)

    def resize(self, capacity_bytes: int) -> None:
        if self.resizer is None:
            raise Unsupported("the ssh target cannot resize the disk (a qemu-vm target can)")
        self.sync()
        self.resizer(capacity_bytes)

    def backing_read(self, offset: int, n: int) -> bytes:
        if not self.backing_file:
            raise Unsupported("the ssh target was given no backing_file to read")
        self.sync()
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
        with self._lock:
            self._flusher = None  # the flusher thread ends
            self._lock.notify()
