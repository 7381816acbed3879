"""The reference target: the Python reference device, in this process.

Each case gets a new device (power-on state) over a copy of a pattern-filled
template backing file, and a fresh guest memory.  The device completes
requests synchronously inside the notify write, so waits end at once.

Target file keys (besides kind/name/timeout)::

    device:          # any field of reference_device.DeviceConfig
      num_queues: 2
      features: {VIRTIO_F_RING_PACKED: false}
      defects: [used-len-includes-header]
    memory: 64M      # guest memory for DMA buffers
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
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
    Poll,
    PollTimeout,
    Result,
)
from conformance.pattern import write_pattern_file
from conformance.spec import PCI_BASE_ADDRESS_0, SECTOR_SIZE
from conformance.targets.base import Target, TargetConfigError
from conformance.targets.config import TargetSpec
from conformance.targets.sizes import parse_size

DMA_BASE = 0x100000  # keep address 0 and the first MiB out of DMA buffers, as on a PC
MMIO_WINDOW = (0xC0000000, 0xFEC00000)


class ReferencePlatform(Platform):
    mmio_window = MMIO_WINDOW

    def __init__(self, device: Any, memory: Any, memory_size: int):
        self.device = device
        self.memory = memory
        self.memory_size = memory_size
        self._next_dma = DMA_BASE
        self._bar_cache: dict[int, int] = {}

    # --- BAR decoding: addresses come from the BAR registers, like a bus would -----
    def _bar_base(self, bar: int) -> int:
        base = self._bar_cache.get(bar)
        if base is None:
            base = self._bar_cache[bar] = self._read_bar_base(bar)
        return base

    def _read_bar_base(self, bar: int) -> int:
        off = PCI_BASE_ADDRESS_0 + 4 * bar
        low = self.device.config_read(off, 4)
        if low & 1:
            return low & ~0x3
        base = low & ~0xF
        if (low & 0x6) == 0x4:
            base |= self.device.config_read(off + 4, 4) << 32
        return base

    def bar_read(self, bar: int, off: int, size: int) -> int:
        value = self.device.mmio_read(self._bar_base(bar) + off, size)
        return (1 << (8 * size)) - 1 if value is None else value  # master abort: all ones

    def bar_write(self, bar: int, off: int, size: int, value: int) -> None:
        self.device.mmio_write(self._bar_base(bar) + off, size, value)

    def config_read(self, off: int, size: int) -> int:
        return self.device.config_read(off, size)

    def config_write(self, off: int, size: int, value: int) -> None:
        # Any config write may move a BAR (BAR registers, or a window onto them);
        # forget the decoded bases rather than guess which writes matter.
        self._bar_cache.clear()
        self.device.config_write(off, size, value)

    def mem_read(self, addr: int, n: int) -> bytes:
        return self.memory.read(addr, n)

    def mem_write(self, addr: int, data: bytes) -> None:
        self.memory.write(addr, data)

    def _poll(self, op: Poll, index: int, results: list[Result]) -> int:
        # The device acts only inside the driver's own register writes (it has
        # no thread of its own), so nothing can change memory while a poll
        # waits: a condition false now stays false.  Waiting out the timeout
        # would only make every quiet window and every failure slower.
        value = int.from_bytes(self.memory.read(op.addr, op.size), "little")
        if op.satisfied(value):
            return value
        raise PollTimeout(op, value, index, results)

    def execute(self, ops: Sequence[Op]) -> list[Result]:
        results: list[Result] = []
        append = results.append
        for op in ops:
            t = type(op)
            if t is MemWrite:
                self.memory.write(op.addr, op.data)
                append(None)
            elif t is BarWrite:
                self.bar_write(op.bar, op.off, op.size, op.value)
                append(None)
            elif t is MemRead:
                append(self.memory.read(op.addr, op.n))
            elif t is Poll:
                append(self._poll(op, len(results), results))
            elif t is BarRead:
                append(self.bar_read(op.bar, op.off, op.size))
            elif t is ConfigRead:
                append(self.device.config_read(op.off, op.size))
            elif t is ConfigWrite:
                self.config_write(op.off, op.size, op.value)
                append(None)
            else:
                raise TypeError(f"unknown primitive {op!r}")
        return results

    def dma_alloc(self, size: int, align: int = 4096) -> int:
        addr = (self._next_dma + align - 1) & ~(align - 1)
        if addr + size > self.memory_size:
            raise MemoryError(f"guest memory of {self.memory_size} bytes is exhausted")
        self._next_dma = addr + size
        return addr

    def intx_level(self) -> bool:
        return bool(self.device.intx_level)

    def resize(self, capacity_bytes: int) -> None:
        self.device.resize(capacity_bytes // SECTOR_SIZE)

    def backing_read(self, offset: int, n: int) -> bytes:
        with open(self.device.backing_path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def describe(self) -> dict[str, Any]:
        cfg = self.device.cfg
        # backing_lifetime_metrics: does the storage behind the disk have lifetime
        # metrics (5.2.6.2)?  A plain file has none unless the config models them.
        return {"target": "reference", "serial": cfg.serial,
                "backing_lifetime_metrics": cfg.lifetime_metrics}

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None


class ReferenceTarget(Target):
    kind = "reference"
    KEYS = ("device", "memory")

    def __init__(self, name: str, timeout: float, device_config: Any, memory_size: int):
        super().__init__(name, timeout)
        self.device_config = device_config
        self.memory_size = memory_size
        self._tmp = Path(tempfile.mkdtemp(prefix="vblk-reference-"))
        self._template: Path | None = None
        self._serial = 0

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> ReferenceTarget:
        from reference_device import ConfigError, DeviceConfig

        for key in spec.options:
            if key not in cls.KEYS:
                raise TargetConfigError(f"{spec.where}: {key}: unknown key for kind reference "
                                        f"(known: {', '.join(cls.KEYS)})")
        device = spec.options.get("device") or {}
        try:
            config = DeviceConfig.from_mapping(device, where=f"{spec.where}: device")
        except ConfigError as exc:
            raise TargetConfigError(str(exc)) from None
        memory = parse_size(spec.options.get("memory", "64M"), f"{spec.where}: memory")
        if memory < 16 << 20:
            raise TargetConfigError(f"{spec.where}: memory: at least 16M is needed, got {memory}")
        return cls(spec.name, spec.timeout, config, memory)

    def _backing_copy(self) -> Path | None:
        if self.device_config.backing_file is not None:
            return None  # the user's own file: used in place
        if self._template is None:
            self._template = self._tmp / "template.img"
            write_pattern_file(self._template, self.device_config.capacity_sectors * SECTOR_SIZE)
        self._serial += 1
        path = self._tmp / f"case-{self._serial}.img"
        shutil.copyfile(self._template, path)
        return path

    def platform(self) -> ReferencePlatform:
        from reference_device import GuestMemory, VirtioBlkPci

        config = self.device_config
        copy = self._backing_copy()
        if copy is not None:
            config = dataclasses.replace(config, backing_file=str(copy))
        memory = GuestMemory(size=self.memory_size)
        platform = ReferencePlatform(VirtioBlkPci(config, memory=memory), memory, self.memory_size)
        platform.backing_copy = copy  # type: ignore[attr-defined]
        return platform

    def release(self, platform: Platform, broken: bool) -> None:
        platform.close()
        copy = getattr(platform, "backing_copy", None)
        if copy is not None:
            copy.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": dataclasses.asdict(self.device_config)}

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
