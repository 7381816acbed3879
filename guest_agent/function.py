"""The selected PCI function while the agent holds it: take, access, quiesce, give back.

Taking the function: note it in a journal (so a later agent can give back a
function whose agent was killed), unbind it from virtio-pci, save the command
register and BARs, set INTx Disable (nobody in the guest handles the line
any more; the ISR register still works), and map the memory BARs the kernel
assigned through ``resourceN``.  BARs are never moved: the test driver sees
``mmio_window = None`` and keeps them where they are.

Config space goes through the sysfs ``config`` file, so the driver's BAR
sizing (all-ones, read, restore) and command register toggles reach the
device.  Because a BAR register that no longer holds the kernel's address
would make the mapped window point at the wrong place, the agent re-checks
the BAR registers after any config write that touched them and refuses BAR
access until they hold the kernel's addresses again.

Giving back: reset the device (device_status = 0 through the common
configuration, 4.1.4.3), clear Bus Master, restore the saved registers, bind
virtio-pci again and wait for the disk to reappear.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import time

from .devices import KERNEL_DRIVER, AgentError, Function, Sysfs

PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4
PCI_COMMAND_INTX_DISABLE = 0x400
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10
PCI_CAPABILITY_LIST = 0x34
PCI_BAR0 = 0x10
PCI_BAR_END = 0x28  # BAR0..BAR5
PCI_ROM = 0x30
PCI_CAP_ID_VNDR = 0x09
VIRTIO_PCI_CAP_COMMON_CFG = 1
COMMON_STATUS = 0x14  # device_status in struct virtio_pci_common_cfg (4.1.4.3)
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200


class MemBar:
    """A memory BAR mapped through sysfs; accesses of exactly the size asked for."""

    is_io = False

    def __init__(self, path: str, size: int):
        fd = os.open(path, os.O_RDWR | os.O_SYNC)
        try:
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.size = size
        mv = memoryview(self.map)
        # Typed views load/store the whole field at once: MMIO registers care
        # about the access width (virtio common cfg is 1/2/4-byte fields).
        self.views = {1: mv, 2: mv.cast("H"), 4: mv.cast("I"), 8: mv.cast("Q")}

    def _check(self, off: int, size: int) -> None:
        if size not in self.views or off < 0 or off + size > self.size:
            raise AgentError("bad-op", f"BAR access of {size} bytes at {off:#x} outside "
                                       f"the {self.size:#x}-byte BAR (or a bad size)")

    def read(self, off: int, size: int) -> int:
        if off % size:
            self._check(off, size)
            return int.from_bytes(self.map[off:off + size], "little")
        try:
            return self.views[size][off // size]
        except (IndexError, KeyError):
            self._check(off, size)
            raise

    def write(self, off: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1 if size in self.views else 0
        if off % size:
            self._check(off, size)
            self.map[off:off + size] = value.to_bytes(size, "little")
            return
        try:
            self.views[size][off // size] = value
        except (IndexError, KeyError):
            self._check(off, size)
            raise


class IoBar:
    """An I/O BAR: sysfs serves port accesses of 1, 2 or 4 bytes through read/write."""

    is_io = True

    def __init__(self, path: str, size: int):
        self.fd = os.open(path, os.O_RDWR)
        self.size = size

    def _check(self, off: int, size: int) -> None:
        if size not in (1, 2, 4) or off < 0 or off + size > self.size:
            raise AgentError("bad-op", f"I/O BAR access of {size} bytes at {off:#x} outside "
                                       f"the {self.size:#x}-byte BAR (or a bad size)")

    def read(self, off: int, size: int) -> int:
        self._check(off, size)
        return int.from_bytes(os.pread(self.fd, size, off), "little")

    def write(self, off: int, size: int, value: int) -> None:
        self._check(off, size)
        os.pwrite(self.fd, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), off)


def parse_resources(text: str) -> dict[int, tuple[int, int, int]]:
    """sysfs ``resource``: BAR index -> (start, size, flags) for the implemented BARs."""
    out = {}
    for i, line in enumerate(text.splitlines()[:6]):
        start, end, flags = (int(x, 16) for x in line.split())
        if end > start:
            out[i] = (start, end - start + 1, flags)
    return out


def common_cfg(config: bytes) -> tuple[int, int] | None:
    """(BAR, offset) of the virtio common configuration from the capability list."""
    if not config[PCI_STATUS] & PCI_STATUS_CAP_LIST:
        return None
    ptr = config[PCI_CAPABILITY_LIST] & 0xFC
    seen = set()
    while 0x40 <= ptr < len(config) - 16 and ptr not in seen:
        seen.add(ptr)
        if config[ptr] == PCI_CAP_ID_VNDR and config[ptr + 3] == VIRTIO_PCI_CAP_COMMON_CFG:
            return config[ptr + 4], int.from_bytes(config[ptr + 8:ptr + 12], "little")
        ptr = config[ptr + 1] & 0xFC
    return None


class Journal:
    """One file per held function under ``state_dir``, so a killed agent's function comes back."""

    def __init__(self, state_dir: str):
        self.dir = state_dir

    def path(self, bdf: str) -> str:
        return os.path.join(self.dir, bdf)

    def write(self, bdf: str, entry: dict) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        tmp = self.path(bdf) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, self.path(bdf))

    def remove(self, bdf: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(bdf))

    def entries(self) -> dict[str, dict]:
        out = {}
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            if name.endswith(".tmp"):
                continue
            try:
                with open(self.path(name)) as f:
                    out[name] = json.load(f)
            except (OSError, ValueError):
                continue
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HeldFunction:
    """The function under test while this agent holds it."""

    def __init__(self, sysfs: Sysfs, journal: Journal, fn: Function, settle: float = 10.0):
        self.sysfs = sysfs
        self.journal = journal
        self.fn = fn
        self.bdf = fn.bdf
        self.dir = sysfs.pci_dir(fn.bdf)
        self.settle = settle
        self.was_bound = fn.driver == KERNEL_DRIVER
        self.cfg_fd: int | None = None
        self.bars: dict[int, MemBar | IoBar] = {}
        self.resources: dict[int, tuple[int, int, int]] = {}
        self.saved: dict[int, int] = {}  # config offset -> dword saved at take time
        self.bars_dirty = False
        self.bars_wrong: str | None = None
        self.held = False

    # --- take ----------------------------------------------------------------------
    def take(self) -> None:
        self.journal.write(self.bdf, {"pid": os.getpid(), "serial": self.fn.serial,
                                      "driver": KERNEL_DRIVER if self.was_bound else None})
        self.held = True
        if self.was_bound:
            self._write(os.path.join(self.dir, "driver", "unbind"), self.bdf)
            self._wait(lambda: self.sysfs.driver_of(self.bdf) is None,
                       f"{self.bdf} still bound to {KERNEL_DRIVER} after unbind")
        try:
            self.cfg_fd = os.open(os.path.join(self.dir, "config"), os.O_RDWR)
        except OSError as exc:
            raise AgentError("sysfs", f"cannot open {self.dir}/config: {exc.strerror}") from None
        for off in [PCI_COMMAND, *range(PCI_BAR0, PCI_BAR_END, 4), PCI_ROM]:
            self.saved[off] = self.config_read(off, 4)
        command = self.saved[PCI_COMMAND] & 0xFFFF
        self.config_write(PCI_COMMAND, 2, command | PCI_COMMAND_INTX_DISABLE)
        with open(os.path.join(self.dir, "resource")) as f:
            self.resources = parse_resources(f.read())
        for index, (_, size, flags) in self.resources.items():
            path = os.path.join(self.dir, f"resource{index}")
            if flags & IORESOURCE_MEM:
                self.bars[index] = MemBar(path, size)
            elif flags & IORESOURCE_IO:
                self.bars[index] = IoBar(path, size)

    # --- config space ------------------------------------------------------------------
    def config_read(self, off: int, size: int) -> int:
        if size not in (1, 2, 4) or off < 0 or off % size:
            raise AgentError("bad-op", f"config read of {size} bytes at {off:#x}: not a "
                                       "naturally aligned 1/2/4-byte access")
        data = os.pread(self.cfg_fd, size, off)
        if len(data) != size:
            raise AgentError("bad-op", f"config read at {off:#x} beyond the config space")
        return int.from_bytes(data, "little")

    def config_write(self, off: int, size: int, value: int) -> None:
        if size not in (1, 2, 4) or off < 0 or off % size:
            raise AgentError("bad-op", f"config write of {size} bytes at {off:#x}: not a "
                                       "naturally aligned 1/2/4-byte access")
        os.pwrite(self.cfg_fd, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), off)
        if off < PCI_BAR_END and off + size > PCI_BAR0:
            self.bars_dirty = True

    def _check_bars(self) -> None:
        """BAR registers must hold the kernel's addresses for the mapped windows to be right."""
        self.bars_dirty = False
        self.bars_wrong = None
        for index, (start, _, flags) in self.resources.items():
            reg = self.config_read(PCI_BAR0 + 4 * index, 4)
            mask = 0xFFFFFFFC if flags & IORESOURCE_IO else 0xFFFFFFF0
            addr = reg & mask
            if not flags & IORESOURCE_IO and reg & 0x6 == 0x4:
                addr |= self.config_read(PCI_BAR0 + 4 * index + 4, 4) << 32
            if addr != start:
                self.bars_wrong = (f"BAR{index} register holds {addr:#x}, not the address "
                                   f"{start:#x} the kernel assigned; refusing BAR access until "
                                   "it is restored")
                return

    def bar(self, index: int) -> MemBar | IoBar:
        if self.bars_dirty:
            self._check_bars()
        if self.bars_wrong:
            raise AgentError("bad-op", self.bars_wrong)
        try:
            return self.bars[index]
        except KeyError:
            raise AgentError("bad-op", f"BAR{index} is not implemented (or not mapped)") from None

    # --- quiesce / give back --------------------------------------------------------------
    def quiesce(self) -> None:
        """Stop the device touching memory: Bus Master off, then device reset (device_status 0)."""
        command = self.config_read(PCI_COMMAND, 2)
        self.config_write(PCI_COMMAND, 2, command & ~PCI_COMMAND_MASTER)
        # The BAR registers may have been left anything by a failed case: restore
        # them before touching the common configuration through the mapped window.
        for off in range(PCI_BAR0, PCI_BAR_END, 4):
            self.config_write(off, 4, self.saved[off])
        self.config_write(PCI_COMMAND, 2, (command | PCI_COMMAND_MEMORY | PCI_COMMAND_INTX_DISABLE)
                          & ~PCI_COMMAND_MASTER)
        self._check_bars()
        raw = b"".join(self.config_read(o, 4).to_bytes(4, "little") for o in range(0, 256, 4))
        where = common_cfg(raw)
        if where is None or where[0] not in self.bars or self.bars[where[0]].is_io:
            return
        bar, off = where
        self.bars[bar].write(off + COMMON_STATUS, 1, 0)
        deadline = time.monotonic() + 2.0
        while self.bars[bar].read(off + COMMON_STATUS, 1) != 0 and time.monotonic() < deadline:
            time.sleep(0.001)

    def give_back(self) -> str:
        """Return the function to its kernel driver; a one-line account of what happened."""
        if not self.held:
            return "not held"
        notes = []
        try:
            if self.cfg_fd is not None:
                try:
                    self.quiesce()
                except (OSError, AgentError) as exc:
                    notes.append(f"reset failed: {exc}")
                for off, value in self.saved.items():
                    if off != PCI_COMMAND:
                        self.config_write(off, 4, value)
                self.config_write(PCI_COMMAND, 2, self.saved[PCI_COMMAND] & 0xFFFF)
        except OSError as exc:
            notes.append(f"restoring config space failed: {exc.strerror}")
        finally:
            if self.cfg_fd is not None:
                os.close(self.cfg_fd)
                self.cfg_fd = None
            for bar in self.bars.values():
                if isinstance(bar, IoBar):
                    os.close(bar.fd)
            self.bars = {}
        if self.was_bound:
            notes.append(self.rebind())
        self.journal.remove(self.bdf)
        self.held = False
        return "; ".join(notes) or "given back"

    def rebind(self) -> str:
        try:
            self._write(os.path.join(self.sysfs.driver_dir(KERNEL_DRIVER), "bind"), self.bdf)
        except AgentError as exc:
            return str(exc)
        ok = self._wait(lambda: bool(self.sysfs.disks_of(self.bdf)), None)
        disks = [d.name for d in self.sysfs.disks_of(self.bdf)]
        if not ok:
            return f"bound to {KERNEL_DRIVER} but no disk appeared within {self.settle:g}s"
        return f"given back to {KERNEL_DRIVER} as {', '.join(disks)}"

    # --- helpers ---------------------------------------------------------------------
    @staticmethod
    def _write(path: str, text: str) -> None:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise AgentError("sysfs", f"writing {text} to {path} failed: {exc.strerror}") from None

    def _wait(self, cond, failure: str | None) -> bool:
        deadline = time.monotonic() + self.settle
        while not cond():
            if time.monotonic() > deadline:
                if failure:
                    raise AgentError("sysfs", failure)
                return False
            time.sleep(0.01)
        return True


def give_back_orphans(sysfs: Sysfs, journal: Journal) -> list[str]:
    """Rebind functions whose agent died without giving them back; say which."""
    done = []
    for bdf, entry in journal.entries().items():
        pid = entry.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            continue
        if entry.get("driver") == KERNEL_DRIVER and sysfs.driver_of(bdf) is None:
            with contextlib.suppress(OSError):
                with open(os.path.join(sysfs.driver_dir(KERNEL_DRIVER), "bind"), "w") as f:
                    f.write(bdf)
            done.append(bdf)
        journal.remove(bdf)
    return done
