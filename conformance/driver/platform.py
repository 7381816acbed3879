"""The Platform: the one seam between the test driver and a target.

A Platform gives the driver byte-level access to exactly one PCI function (the
device under test) and to DMA memory the device can reach.  Every target
(reference device in process, QEMU over qtest, a guest agent over SSH)
implements this interface and nothing else; the driver and the test cases are
the same for all of them.

Primitives are small value objects (``ConfigRead``, ``MemWrite``, ``Poll``, ...)
so that a driver can hand a whole burst of them to :meth:`Platform.execute` and
pay for one round trip instead of hundreds.  ``Poll`` is evaluated where the
memory lives, so a wait inside a batch is still one round trip.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class PlatformError(Exception):
    """A target could not carry out a primitive (it died, hung, or refused)."""


class PollTimeout(PlatformError):
    """A :class:`Poll` did not see its condition before its deadline.

    ``index`` is the position of the poll inside the batch, ``last_value`` the
    value read last.  Results of the primitives before it are in ``results``.
    """

    def __init__(self, poll: Poll, last_value: int, index: int = 0, results: list | None = None):
        self.poll = poll
        self.last_value = last_value
        self.index = index
        self.results = results or []
        super().__init__(
            f"timed out after {poll.timeout:g}s waiting for {poll.describe()}: "
            f"last value {last_value:#x}"
        )


class Unsupported(PlatformError):
    """The target cannot do this (e.g. observe INTx, resize the disk)."""


# --- primitives -----------------------------------------------------------------


# The primitives are plain slotted dataclasses, not frozen ones: a wraparound case
# builds millions of them, and a frozen dataclass costs 2.5 times as much to make.
# Treat them as values all the same.
@dataclass(slots=True)
class ConfigRead:
    off: int
    size: int


@dataclass(slots=True)
class ConfigWrite:
    off: int
    size: int
    value: int


@dataclass(slots=True)
class BarRead:
    bar: int
    off: int
    size: int


@dataclass(slots=True)
class BarWrite:
    bar: int
    off: int
    size: int
    value: int


@dataclass(slots=True)
class MemRead:
    addr: int
    n: int


@dataclass(slots=True)
class MemWrite:
    addr: int
    data: bytes


@dataclass(slots=True)
class Poll:
    """Wait until ``(value_at(addr) & mask) == value`` (or ``!=`` when ``equal`` is False).

    The value is ``size`` bytes, little endian.  The result of a poll is the
    last value read (the whole field, unmasked).
    """

    addr: int
    size: int
    mask: int
    value: int
    equal: bool = True
    timeout: float = 5.0

    def satisfied(self, current: int) -> bool:
        return ((current & self.mask) == self.value) == self.equal

    def describe(self) -> str:
        op = "==" if self.equal else "!="
        return f"([{self.addr:#x}]/{self.size} & {self.mask:#x}) {op} {self.value:#x}"


Op = ConfigRead | ConfigWrite | BarRead | BarWrite | MemRead | MemWrite | Poll
Result = int | bytes | None


def int_from_le(data: bytes) -> int:
    return int.from_bytes(data, "little")


# --- the interface ----------------------------------------------------------------


class Platform(abc.ABC):
    """Access to one PCI function and its DMA memory.

    Subclasses implement :meth:`execute` and :meth:`dma_alloc`; the single
    primitives below default to a one-element batch and may be overridden
    where a target has a faster path.
    """

    #: Where the driver may place BARs that nothing has assigned yet
    #: (``(start, end)``, end exclusive); ``None`` means BARs come assigned.
    mmio_window: tuple[int, int] | None = None

    @abc.abstractmethod
    def execute(self, ops: Sequence[Op]) -> list[Result]:
        """Carry out ``ops`` in order; return one result per op.

        Reads give ``int`` (config/BAR), ``bytes`` (memory) or the last value
        (poll); writes give ``None``.  A poll that times out raises
        :class:`PollTimeout` and the primitives after it are not carried out.
        """

    @abc.abstractmethod
    def dma_alloc(self, size: int, align: int = 4096) -> int:
        """Reserve ``size`` bytes of device-reachable memory; return the bus address."""

    # single primitives -----------------------------------------------------
    def config_read(self, off: int, size: int) -> int:
        return self.execute([ConfigRead(off, size)])[0]  # type: ignore[return-value]

    def config_write(self, off: int, size: int, value: int) -> None:
        self.execute([ConfigWrite(off, size, value)])

    def bar_read(self, bar: int, off: int, size: int) -> int:
        return self.execute([BarRead(bar, off, size)])[0]  # type: ignore[return-value]

    def bar_write(self, bar: int, off: int, size: int, value: int) -> None:
        self.execute([BarWrite(bar, off, size, value)])

    def mem_read(self, addr: int, n: int) -> bytes:
        return self.execute([MemRead(addr, n)])[0]  # type: ignore[return-value]

    def mem_write(self, addr: int, data: bytes) -> None:
        self.execute([MemWrite(addr, bytes(data))])

    def poll(self, addr: int, size: int, mask: int, value: int, *, equal: bool = True,
             timeout: float = 5.0) -> int:
        return self.execute([Poll(addr, size, mask, value, equal, timeout)])[0]  # type: ignore[return-value]

    # observation and control plane (optional) --------------------------------
    def intx_level(self) -> bool:
        """Level of the function's INTx line; :class:`Unsupported` where it cannot be seen."""
        raise Unsupported("this target cannot observe the INTx line")

    def resize(self, capacity_bytes: int) -> None:
        """Change the disk size from outside (a configuration change, 5.2.4)."""
        raise Unsupported("this target cannot resize the disk")

    def backing_read(self, offset: int, n: int) -> bytes:
        """Read the backing store directly, bypassing the device."""
        raise Unsupported("this target cannot read the backing store directly")

    def describe(self) -> dict[str, Any]:
        """Facts about the target for reports (versions, command lines, ...)."""
        return {}

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release the target's resources; idempotent."""
