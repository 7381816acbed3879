"""QtestPlatform: the Platform seam over a real QEMU virtio-blk-pci, via qtest.

The suite itself is the guest: there is no firmware and no OS (see
``process.py``).  Config space goes through ports 0xCF8/0xCFC, BARs through
qtest's MMIO/port commands at the address the driver programmed, DMA memory
through ``b64read``/``b64write`` of guest RAM.  Consecutive primitives of a
batch become one pipelined round trip; a ``Poll`` re-reads guest memory until
its condition holds, since the device completes requests in real time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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

from . import intx, pci
from . import protocol as qt
from .backing import create_pattern_file
from .config import QtestSpec, split_options
from .errors import QemuDiedError, QtestCommandError, QtestTimeoutError, TargetStartError
from .pci_info import dut_pci_info, pci_summary
from .process import QemuProcess, prefix_data_dir, resolve_binary
from .qmp import QmpError, QmpSession

#: BAR windows: above q35's MMCONFIG (0xB0000000, 256 MiB, where firmware puts
#: PCIEXBAR) and, for pc, where QEMU's libqos places BARs; both end below the
#: IOAPIC at 0xFEC00000.  Guest RAM stays below 2 GiB, so neither overlaps it.
MMIO_WINDOWS = {"q35": (0xC000_0000, 0xFEC0_0000), "pc": (0xE000_0000, 0xFEC0_0000)}
#: Port range for I/O BARs (transitional devices), as libqos uses.
IO_WINDOW = (0xC000, 0x10000)
#: DMA memory: above the first 2 MiB (real-mode area, option ROMs, BIOS
#: shadow) and below 2 GiB (the lowest below-4G RAM top QEMU picks on x86).
DMA_START = 0x20_0000
DMA_LIMIT = 0x8000_0000
RAM_BACKEND = "vbc-ram"
START_TIMEOUT = 30.0

Decoder = Callable[[list[str]], Result]


class QtestPlatform(Platform):
    """One QEMU with one virtio-blk-pci DUT, started by the constructor."""

    def __init__(self, spec: QtestSpec | None = None):
        self.spec = spec = spec or QtestSpec()
        self.mmio_window = MMIO_WINDOWS[spec.machine_family]
        self.io_window = IO_WINDOW
        self._closed = False
        self._qemu: QemuProcess | None = None
        self._qt: qt.QtestClient | None = None
        self._qmp: QmpSession | None = None
        self._bars: dict[int, pci.BarInfo] = {}
        self._cf8: int | None = None  # last value written to 0xCF8
        self._slot, self._fn = spec.devfn
        self._dma_next = DMA_START
        self._dma_end = min(spec.memory_bytes, DMA_LIMIT)
        self._intx_gsi: int | None = None
        self._intx_why = "INTx has not been set up"
        self._workdir = tempfile.mkdtemp(prefix="vbc-qtest-")
        self.backing_path: str | None = None
        self._backing_size = 0
        self._data_dir: str | None = None
        self._pci: list[dict[str, Any]] = []
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- start-up -------------------------------------------------------------
    def _disk_args(self) -> list[str]:
        spec = self.spec
        if spec.backing_file:
            # Served by a backend the user started; QEMU itself opens nothing.
            self.backing_path = spec.backing_file
            self._backing_size = os.path.getsize(spec.backing_file)
            create_pattern_file(self.backing_path, self._backing_size, truncate=False)
        if spec.blockdev:
            return ["-blockdev", spec.blockdev]
        if spec.drive:
            return ["-drive", spec.drive]
        node = spec.created_disk_node
        if node is None:
            return []  # e.g. vhost-user-blk-pci: the disk lives in the backend
        self.backing_path = os.path.join(self._workdir, "disk.raw")
        self._backing_size = spec.disk_size
        create_pattern_file(self.backing_path, spec.disk_size)
        path = self.backing_path.replace(",", ",,")  # QEMU's option-value escaping
        return ["-blockdev", f"driver=raw,node-name={node},file.driver=file,"
                             f"file.filename={path}"]

    def _machine_args(self) -> list[str]:
        spec = self.spec
        # The PIT would tick (and raise IRQ 0) forever with nobody to program
        # it; nothing here needs a timer.
        machine = f"{spec.machine},pit=off"
        args = ["-m", spec.memory]
        if spec.uses_shared_memory:
            # A vhost-user backend maps guest RAM to reach the rings and
            # buffers, so RAM must be a file descriptor it can be handed.
            machine += f",memory-backend={RAM_BACKEND}"
            args += ["-object", f"memory-backend-memfd,id={RAM_BACKEND},size={spec.memory},"
                                "share=on"]
        self._data_dir = spec.data_dir
        if self._data_dir is None and "-L" not in spec.extra_args:
            self._data_dir = prefix_data_dir(resolve_binary(spec.qemu))
        if self._data_dir:
            args += ["-L", self._data_dir]
        return ["-machine", machine, *args]

    def _start(self) -> None:
        spec = self.spec
        argv = [*self._machine_args(), *self._disk_args(), "-device", spec.device_arg(),
                *spec.extra_args]
        self._qemu = QemuProcess(spec.qemu, argv, start_timeout=max(START_TIMEOUT, spec.timeout),
                                 workdir=self._workdir)
        self._qt = qt.QtestClient(self._qemu.qtest_sock, timeout=spec.timeout,
                                  diagnose=self._qemu.diagnose)
        try:
            # qtest commands are served by the main loop: the first answer
            # means machine and devices were created without error.
            self._qt.pipeline(["endianness"], timeout=max(START_TIMEOUT, spec.timeout))
        except QemuDiedError:
            raise self._qemu.start_error() from None
        except QtestTimeoutError:
            raise TargetStartError(
                f"QEMU did not answer within {max(START_TIMEOUT, spec.timeout):g}s of starting"
            ) from None
        try:
            self._qmp = QmpSession(self._qemu.qmp_sock, timeout=spec.timeout)
            self._version = self._qmp.command("query-version")
        except QmpError as exc:
            if not self._qemu.alive():
                raise self._qemu.start_error() from None
            raise TargetStartError(f"QMP of QEMU did not come up: {exc}") from None
        self._clock_step = self._qt.supports("clock_step")
        try:
            self._pci = self._qmp.command("query-pci")
        except QmpError:
            self._pci = []  # metadata only; a QEMU without it still runs the cases
        ident = self.config_read(0, 4)
        if ident == 0xFFFFFFFF:
            raise TargetStartError(
                f"no PCI function at 00:{self._slot:02x}.{self._fn} (device string "
                f"{spec.device_arg()!r})")
        self._setup_intx()

    def _setup_intx(self) -> None:
        pin = self.config_read(0x3D, 1)
        if not 1 <= pin <= 4:
            self._intx_why = f"the DUT reports no INTx pin (Interrupt Pin = {pin})"
            return
        try:
            if self.spec.machine_family == "q35":
                gsi = intx.q35_gsi(self._slot, pin)
            else:
                if self._other_config_read(*intx.PIIX3_DEVFN, 0, 4) != intx.PIIX3_ID:
                    self._intx_why = "no PIIX3 at 00:01.0 to route PIRQs"
                    return
                pirq = intx.pc_pirq(self._slot, pin)
                self._other_config_write(*intx.PIIX3_DEVFN, intx.PIIX3_PIRQRC + pirq, 1,
                                         intx.PC_PIRQ_IRQS[pirq])
                gsi = intx.pc_gsi(self._slot, pin)
            self._qt.irq_intercept_in("ioapic")
        except ValueError as exc:
            self._intx_why = str(exc)
            return
        except QtestCommandError as exc:
            self._intx_why = f"cannot intercept the IOAPIC inputs: {exc.answer}"
            return
        self._intx_gsi = gsi

    def _other_config_read(self, slot: int, fn: int, off: int, size: int) -> int:
        self._cf8 = None
        ans = self._qt.pipeline([qt.out_cmd(4, pci.CONFIG_ADDRESS,
                                            pci.config_address(0, slot, fn, off)),
                                 qt.in_cmd(size, pci.CONFIG_DATA + (off & 3))])
        return qt.parse_int(ans[1])

    def _other_config_write(self, slot: int, fn: int, off: int, size: int, value: int) -> None:
        self._cf8 = None
        self._qt.pipeline([qt.out_cmd(4, pci.CONFIG_ADDRESS,
                                      pci.config_address(0, slot, fn, off)),
                           qt.out_cmd(size, pci.CONFIG_DATA + (off & 3), value)])

    # --- primitives -------------------------------------------------------------
    def execute(self, ops: Sequence[Op]) -> list[Result]:
        if self._closed:
            raise PlatformError("the qtest platform is closed")
        results: list[Result] = []
        cmds: list[str] = []
        decoders: list[tuple[int, Decoder | None]] = []

        def flush() -> None:
            if not decoders:
                return
            answers = self._qt.pipeline(cmds)
            i = 0
            for n, decode in decoders:
                results.append(decode(answers[i:i + n]) if decode else None)
                i += n
            cmds.clear()
            decoders.clear()

        for index, op in enumerate(ops):
            if isinstance(op, Poll):
                flush()
                results.append(self._poll(op, index, results))
                continue
            if isinstance(op, (BarRead, BarWrite)) and op.bar not in self._bars:
                flush()  # the BAR's address may depend on config writes just queued
                self._load_bar(op.bar)
            try:
                op_cmds, decode = self._translate(op)
            except ValueError as exc:
                raise PlatformError(f"{op}: {exc}") from None
            # An op may need no command at all (an empty MemRead/MemWrite);
            # its decoder then sees an empty answer list.
            cmds.extend(op_cmds)
            decoders.append((len(op_cmds), decode))
            if isinstance(op, ConfigWrite) and pci.touches_bar_decoding(op.off, op.size):
                self._bars.clear()
        flush()
        return results

    def _translate(self, op: Op) -> tuple[list[str], Decoder | None]:
        if isinstance(op, MemRead):
            if op.n == 0:
                return [], lambda _a: b""
            chunks = range(0, op.n, qt.MAX_BULK)
            return ([qt.b64read_cmd(op.addr + o, min(qt.MAX_BULK, op.n - o)) for o in chunks],
                    lambda a: b"".join(qt.parse_b64(p) for p in a))
        if isinstance(op, MemWrite):
            data = op.data
            return [qt.b64write_cmd(op.addr + o, data[o:o + qt.MAX_BULK])
                    for o in range(0, len(data), qt.MAX_BULK)], None
        if isinstance(op, ConfigRead):
            pci.check_config_access(op.off, op.size)
            return self._select_config(op.off) + [
                qt.in_cmd(op.size, pci.CONFIG_DATA + (op.off & 3))], _last_int
        if isinstance(op, ConfigWrite):
            pci.check_config_access(op.off, op.size)
            return self._select_config(op.off) + [
                qt.out_cmd(op.size, pci.CONFIG_DATA + (op.off & 3), _fit(op.value, op.size))], None
        if isinstance(op, BarRead):
            return self._bar_access(op.bar, op.off, op.size, None)
        if isinstance(op, BarWrite):
            return self._bar_access(op.bar, op.off, op.size, _fit(op.value, op.size))
        raise ValueError(f"unknown primitive {type(op).__name__}")

    def _select_config(self, off: int) -> list[str]:
        addr = pci.config_address(0, self._slot, self._fn, off)
        if addr == self._cf8:
            return []  # nobody else touches 0xCF8: the vCPU is halted
        self._cf8 = addr
        return [qt.out_cmd(4, pci.CONFIG_ADDRESS, addr)]

    def _load_bar(self, bar: int) -> None:
        if not 0 <= bar < 6:
            raise PlatformError(f"no BAR {bar} (a type-0 header has BARs 0..5)")
        off = pci.BAR_FIRST + 4 * bar
        ops = [ConfigRead(off, 4)] + ([ConfigRead(off + 4, 4)] if bar < 5 else [])
        cmds: list[str] = []
        for op in ops:
            cmds += self._translate(op)[0]
        answers = [qt.parse_int(a) for a in self._qt.pipeline(cmds) if a]
        lo, hi = answers[0], answers[1] if len(answers) > 1 else 0
        info = pci.decode_bar(lo, hi)
        if info.base == 0:
            raise PlatformError(f"BAR {bar} is not assigned (it reads {lo:#010x})")
        self._bars[bar] = info

    def _bar_access(self, bar: int, off: int, size: int,
                    value: int | None) -> tuple[list[str], Decoder | None]:
        info = self._bars[bar]
        addr = info.base + off
        if not info.io:
            if size not in (1, 2, 4, 8):
                raise ValueError(f"BAR access of size {size}")
            if value is None:
                return [qt.read_cmd(size, addr)], _last_int
            return [qt.write_cmd(size, addr, value)], None
        # I/O space has no 8-byte access: two dwords, low first.
        if size == 8:
            if value is None:
                return ([qt.in_cmd(4, addr), qt.in_cmd(4, addr + 4)],
                        lambda a: qt.parse_int(a[0]) | qt.parse_int(a[1]) << 32)
            return [qt.out_cmd(4, addr, value & 0xFFFFFFFF),
                    qt.out_cmd(4, addr + 4, value >> 32)], None
        if size not in (1, 2, 4):
            raise ValueError(f"BAR access of size {size}")
        if value is None:
            return [qt.in_cmd(size, addr)], _last_int
        return [qt.out_cmd(size, addr, value)], None

    def _poll(self, p: Poll, index: int, results: list[Result]) -> int:
        if p.size in (1, 2, 4, 8):
            cmd, decode = qt.read_cmd(p.size, p.addr), qt.parse_int
        else:
            cmd = qt.b64read_cmd(p.addr, p.size)

            def decode(payload: str) -> int:
                return int.from_bytes(qt.parse_b64(payload), "little")
        deadline = time.monotonic() + p.timeout
        pause = 0.0
        while True:
            value = decode(self._qt.command(cmd))
            if p.satisfied(value):
                return value
            if time.monotonic() >= deadline:
                raise PollTimeout(p, value, index, list(results))
            if self._clock_step:
                # Under the qtest accelerator virtual time only moves when told.
                self._qt.command("clock_step")
            # Back off from a tight loop so QEMU's main loop gets on with the I/O.
            if pause:
                time.sleep(pause)
            pause = min(pause * 2 or 20e-6, 1e-3)

    def dma_alloc(self, size: int, align: int = 4096) -> int:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise ValueError(f"bad dma_alloc(size={size}, align={align})")
        addr = (self._dma_next + align - 1) & ~(align - 1)
        if addr + size > self._dma_end:
            raise PlatformError(
                f"out of DMA memory: {size} bytes at {addr:#x} would pass {self._dma_end:#x} "
                f"(raise 'memory' in the target config)")
        self._dma_next = addr + size
        return addr

    def reset(self) -> None:
        """System reset: every device, the DUT included, back to its power-on state.

        BARs are unassigned again and the DMA allocator starts over.  The disk
        keeps its content and size (see :meth:`restore_disk`).  Much cheaper
        than a new QEMU, for a target that reuses one between cases.
        """
        if self._closed:
            raise PlatformError("the qtest platform is closed")
        try:
            # system_reset only requests a reset; the RESET event says it happened.
            self._qmp.command_and_event("system_reset", "RESET")
        except QmpError as exc:
            raise PlatformError(f"system_reset failed: {exc}") from None
        self._bars.clear()
        self._cf8 = None
        self._dma_next = DMA_START
        self._qt.sync_events()  # take in the IRQ lowers the reset caused
        if self._intx_gsi is not None and self.spec.machine_family == "pc":
            self._setup_intx()  # PIIX3 reset its PIRQ routing; the intercept stays

    def restore_disk(self) -> None:
        """Give the disk the target created its first size and pattern again."""
        if not self.backing_path:
            raise Unsupported("the target did not create the disk")
        with open(self.backing_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
        if size != self._backing_size:
            self.resize(self._backing_size)
        # Raw file, no QEMU-side data cache: rewriting it is seen by the next read.
        create_pattern_file(self.backing_path, self._backing_size, truncate=False)

    # --- observation and control plane ---------------------------------------------
    def intx_level(self) -> bool:
        if self._intx_gsi is None:
            raise Unsupported(f"INTx cannot be observed: {self._intx_why}")
        self._qt.sync_events()
        return self._qt.irq_levels.get(self._intx_gsi, False)

    @property
    def intx_gsi(self) -> int | None:
        """The IOAPIC input the DUT's INTx is watched on (None when unsupported)."""
        return self._intx_gsi

    def resize(self, capacity_bytes: int) -> None:
        # block_resize (QMP) grows/shrinks the image and makes virtio-blk send
        # a configuration change notification (VIRTIO 1.2, 5.2.4 and 4.1.5.3).
        target = self._resize_target()
        try:
            self._qmp.command("block_resize", size=capacity_bytes, **target)
        except QmpError as exc:
            raise PlatformError(f"resize to {capacity_bytes} bytes failed: {exc}") from None

    def _resize_target(self) -> dict[str, str]:
        spec = self.spec
        if spec.blockdev:
            opts = split_options(spec.blockdev)[1]
            if "node-name" in opts:
                return {"node-name": opts["node-name"]}
        elif spec.drive:
            opts = split_options(spec.drive)[1]
            if "id" in opts:
                return {"device": opts["id"]}
        elif spec.created_disk_node:
            return {"node-name": spec.created_disk_node}
        else:
            raise Unsupported("cannot resize: the disk lives in a backend outside QEMU")
        raise Unsupported("cannot resize: the blockdev/drive options name no node-name/id")

    def backing_read(self, offset: int, n: int) -> bytes:
        if not self.backing_path:
            raise Unsupported("the backing file was not created by the target (drive/blockdev "
                              "given), so its format is unknown")
        # The file is raw and QEMU writes through the host page cache, so a
        # completed write is visible to a plain read.
        with open(self.backing_path, "rb") as f:
            return os.pread(f.fileno(), n, offset)

    def healthy(self) -> bool:
        """Whether QEMU still runs and its qtest connection is usable."""
        return (not self._closed and self._qemu is not None and self._qemu.alive()
                and self._qt is not None and self._qt.usable)

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run a QMP command on this QEMU (for tests and diagnostics)."""
        if self._closed:
            raise PlatformError("the qtest platform is closed")
        return self._qmp.command(command, **arguments)

    @property
    def qtest(self) -> qt.QtestClient:
        """The raw qtest connection (for tests and benchmarks)."""
        return self._qt

    @property
    def pid(self) -> int | None:
        return self._qemu.pid if self._qemu else None

    def describe(self) -> dict[str, Any]:
        v = getattr(self, "_version", None) or {}
        q = v.get("qemu", {})
        return {
            "target": "qtest",
            "qemu_version": f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}" if q else None,
            "qemu_package": v.get("package"),
            "qemu_binary": self._qemu.binary if self._qemu else self.spec.qemu,
            "machine": self.spec.machine,
            "machine_family": self.spec.machine_family,
            "data_dir": self._data_dir,
            "shared_memory": self.spec.uses_shared_memory,
            "device": self.spec.device_arg(),
            "serial": split_options(self.spec.device_arg())[1].get("serial"),
            "pci_address": f"0000:00:{self._slot:02x}.{self._fn}",
            "command_line": self._qemu.command_line if self._qemu else None,
            "intx": (f"IOAPIC input {self._intx_gsi}" if self._intx_gsi is not None
                     else f"unsupported: {self._intx_why}"),
            "clock_step": getattr(self, "_clock_step", False),
            "mmio_window": [hex(x) for x in self.mmio_window],
            "pci_functions": pci_summary(self._pci),
            "dut_pci": dut_pci_info(self._pci, self._slot, self._fn),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for part in (self._qmp, self._qt, self._qemu):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __del__(self) -> None:
        # Nobody can reach this QEMU any more: do not leave it running.
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> QtestPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_int(answers: list[str]) -> int:
    return qt.parse_int(answers[-1])


def _fit(value: int, size: int) -> int:
    return value & ((1 << (8 * size)) - 1)
