"""What the split and packed virtqueue drivers have in common.

A queue driver keeps the driver's side of the ring state (2.6 Virtqueues) and
turns "make these buffers available" into Platform primitives, without running
them; the caller decides how many operations share one round trip.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conformance.driver.dma import DmaPool
from conformance.driver.platform import MemWrite, Op, Platform, PollTimeout


@dataclass(slots=True)  # not frozen: built for every request (see platform.py)
class Buffer:
    """One element of a scatter-gather list (2.6.4 Message Framing)."""

    addr: int
    length: int
    writable: bool


@dataclass(slots=True)
class UsedElem:
    """A used ring entry as the device wrote it: buffer id and written length."""

    id: int
    length: int
    token: Any


def stage(pool: DmaPool, parts: Sequence[bytes | int], fill: int = 0xA5
          ) -> tuple[list[Buffer], list[Op]]:
    """One pool block per part, for hand-built chains.

    ``bytes`` become a device-readable buffer holding them; an ``int`` n a
    device-writable buffer of n bytes, each set to ``fill`` so that untouched
    bytes show.  Returns the buffers and the ops that fill them.
    """
    buffers: list[Buffer] = []
    ops: list[Op] = []
    for part in parts:
        data = bytes([fill]) * part if isinstance(part, int) else bytes(part)
        addr = pool.alloc(len(data), 16)
        buffers.append(Buffer(addr, len(data), isinstance(part, int)))
        ops.append(MemWrite(addr, data))
    return buffers, ops


class QueueTimeout(Exception):
    """The device did not use buffers in time; the message shows the queue state."""


@dataclass
class QueueLayout:
    desc: int
    driver: int  # split: avail ring; packed: driver event suppression
    device: int  # split: used ring; packed: device event suppression


class Virtqueue(abc.ABC):
    """Driver state of one virtqueue (index ``index`` of size ``size``)."""

    kind: str = ""

    def __init__(self, platform: Platform, pool: DmaPool, index: int, size: int,
                 notify: Op | None = None):
        self.platform = platform
        self.pool = pool
        self.index = index
        self.size = size
        self.notify: Op | None = notify  # set by the device driver once queue_notify_off is known
        self.notification_data = False  # VIRTIO_F_NOTIFICATION_DATA negotiated
        self.notify_config_data: int | None = None
        self.layout = self.allocate()

    # --- set-up ------------------------------------------------------------------
    @abc.abstractmethod
    def allocate(self) -> QueueLayout:
        """Reserve and zero the ring memory; return its addresses."""

    # --- making buffers available ---------------------------------------------
    @abc.abstractmethod
    def num_free(self) -> int:
        """Descriptors (split) or ring slots (packed) the driver can still use."""

    @abc.abstractmethod
    def add(self, buffers: Sequence[Buffer], token: Any, indirect: bool = False) -> list[Op]:
        """Ops that place one chain (ends with a publish of its head)."""

    def publish(self) -> list[Op]:
        """Ops that make everything added so far visible to the device."""
        return []

    @abc.abstractmethod
    def kick_value(self) -> int:
        """The value a driver notification carries (2.9 Driver Notifications)."""

    def kick(self) -> list[Op]:
        if self.notify is None:
            raise RuntimeError(f"queue {self.index} has no notify address")
        op = self.notify
        value = self.kick_value()
        size = 4 if self.notification_data else 2
        return [type(op)(op.bar, op.off, size, value)]  # type: ignore[union-attr]

    # --- consuming used buffers ------------------------------------------------
    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        ...

    @abc.abstractmethod
    def wait_ops(self, count: int, timeout: float) -> list[Op]:
        """Ops that wait for ``count`` more used buffers, then read the ring."""

    def waits_for_all(self, count: int) -> bool:
        """True when :meth:`wait_ops` for ``count`` returns only after all in-flight chains."""
        return count == self.in_flight

    @abc.abstractmethod
    def collect(self, ring: bytes) -> list[UsedElem]:
        """Consume the used entries visible in ``ring`` (from :meth:`wait_ops`)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The queue's state for a timeout message: indexes, flags, last descriptors."""

    def wait(self, count: int, timeout: float = 5.0) -> list[UsedElem]:
        """Wait for ``count`` used buffers (several round trips at most)."""
        done: list[UsedElem] = []
        while len(done) < count:
            try:
                results = self.platform.execute(self.wait_ops(count - len(done), timeout))
            except PollTimeout as exc:
                raise self.timeout_error(exc, count - len(done)) from None
            got = self.collect(results[-1])  # type: ignore[arg-type]
            if not got:
                raise QueueTimeout(f"queue {self.index}: poll returned but no used entry\n"
                                   + self.describe())
            done.extend(got)
        return done

    def timeout_error(self, exc: PollTimeout, missing: int) -> QueueTimeout:
        try:
            state = self.describe()
        except Exception as err:  # the target may be dead; say so instead of hiding the timeout
            state = f"(queue state unreadable: {err})"
        return QueueTimeout(
            f"queue {self.index} ({self.kind}): {missing} buffer(s) not used within "
            f"{exc.poll.timeout:g}s\n{state}"
        )
