"""The guest agent: serves the Platform primitives for one virtio-blk function.

Run inside the guest as root with nothing but python3's standard library::

    python3 -m guest_agent.agent [--idle-timeout S] [--hugepages N] ...

It talks the protocol in ``guest_agent.protocol`` on stdin/stdout (the SSH
channel).  Whatever ends it (a BYE, stdin closed because the connection
dropped, no message for ``--idle-timeout`` seconds, SIGTERM/SIGHUP, an
unexpected error), the function it holds goes back to virtio-pci first.
Nothing is written to stderr except on a crash; diagnostics travel as ERROR
frames.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import signal
import struct
import sys
import time
import zlib

from . import protocol as p
from .devices import AgentError, Sysfs, select_function
from .dma import DmaMemory, HugeMemory, PlainMemory, hugepages_free
from .function import HeldFunction, Journal, give_back_orphans

OP = p.OP_STRUCTS
CFG_READ, CFG_WRITE = OP[p.OP_CFG_READ], OP[p.OP_CFG_WRITE]
BAR_READ, BAR_WRITE = OP[p.OP_BAR_READ], OP[p.OP_BAR_WRITE]
MEM_READ, MEM_WRITE, POLL = OP[p.OP_MEM_READ], OP[p.OP_MEM_WRITE], OP[p.OP_POLL]
U64 = p.U64


class Lost(Exception):
    """The host went away (stdin closed) or was silent for too long."""


class Stream:
    """Frames on two file descriptors, reads with a deadline."""

    def __init__(self, rfd: int, wfd: int, idle_timeout: float):
        self.rfd = rfd
        self.wfd = wfd
        self.idle_timeout = idle_timeout
        self.buf = bytearray()

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Lost(f"no message from the host for {self.idle_timeout:g}s")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.rfd, max(1 << 16, n - len(self.buf)))
            except OSError as exc:  # EIO on a pty whose other side is gone
                raise Lost(f"reading from the host failed: {exc.strerror}") from None
            if not chunk:
                raise Lost("the host closed the connection")
            self.buf += chunk

    def read_frame(self) -> tuple[int, memoryview]:
        deadline = time.monotonic() + self.idle_timeout
        self._fill(p.FRAME.size, deadline)
        length, kind = p.FRAME.unpack_from(self.buf, 0)
        if length < 1 or length > p.MAX_FRAME:
            raise p.ProtocolError(f"frame length {length} out of range")
        # A long frame may take a while to arrive; the host is not idle meanwhile.
        self._fill(4 + length, time.monotonic() + max(self.idle_timeout, 60.0))
        payload = bytes(self.buf[p.FRAME.size:4 + length])
        del self.buf[:4 + length]
        return kind, memoryview(payload)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.wfd, view)
            except BrokenPipeError:
                raise Lost("the host closed the connection") from None
            view = view[n:]


class Agent:
    def __init__(self, sysfs: Sysfs, journal: Journal, memory_factory, settle: float = 10.0):
        self.sysfs = sysfs
        self.journal = journal
        self.memory_factory = memory_factory
        self.settle = settle
        self.held: HeldFunction | None = None
        self.mem: DmaMemory | None = None

    # --- control requests ---------------------------------------------------------------
    def hello(self) -> dict:
        return {
            "version": p.VERSION, "pid": os.getpid(), "uid": os.geteuid(),
            "python": platform.python_version(), "kernel": platform.release(),
            "hugepages_free": hugepages_free(self.sysfs.proc),
        }

    def select(self, req: dict) -> dict:
        if self.held is not None:
            raise AgentError("bad-request", f"a device is already selected ({self.held.bdf})")
        if os.geteuid() != 0:
            raise AgentError("not-root", "the agent needs root in the guest (unbinding a "
                                         "driver, pagemap, config space): use user root or sudo")
        orphans = give_back_orphans(self.sysfs, self.journal)
        if orphans:
            deadline = time.monotonic() + self.settle
            while time.monotonic() < deadline and not all(
                    self.sysfs.disks_of(b) for b in orphans):
                time.sleep(0.05)
        fn = select_function(self.sysfs, req.get("pci"), req.get("serial"))
        self.mem = self.memory_factory()
        held = HeldFunction(self.sysfs, self.journal, fn, self.settle)
        self.held = held
        held.take()
        return {"bdf": fn.bdf, "serial": fn.serial, "disks": fn.disk_names,
                "device_id": fn.device_id, "was_bound": held.was_bound,
                "orphans_given_back": orphans, "dma": self.mem.describe(),
                "bars": {str(i): [hex(s), hex(n)] for i, (s, n, _) in held.resources.items()}}

    def reprobe(self, req: dict) -> dict:
        held = self.require()
        held.quiesce()
        self.mem.rewind()
        note = "quiesced"
        if req.get("rebind") and held.was_bound:
            note = held.give_back()
            fn = select_function(self.sysfs, held.bdf, None)
            held = HeldFunction(self.sysfs, self.journal, fn, self.settle)
            self.held = held
            held.take()
        return {"note": note}

    def require(self) -> HeldFunction:
        if self.held is None or self.mem is None:
            raise AgentError("not-selected", "no device selected yet (send SELECT first)")
        return self.held

    def give_back(self) -> str:
        if self.held is None:
            return "no device held"
        held, self.held = self.held, None
        return held.give_back()

    # --- batches ---------------------------------------------------------------------------
    def batch(self, payload: memoryview) -> bytes:
        fn = self.require()
        mem = self.mem
        if len(payload) < 1:
            raise AgentError("bad-request", "empty batch (no flags byte)")
        flags = payload[0]
        body = payload[1:]
        if flags & p.FLAG_ZLIB:
            try:
                body = memoryview(zlib.decompress(body))
            except zlib.error as exc:
                raise AgentError("bad-request", f"batch does not decompress: {exc}") from None
        out = bytearray()
        pos = 0
        end = len(body)
        index = 0
        try:
            while pos < end:
                code = body[pos]
                if code == p.OP_MEM_WRITE:
                    _, addr, n = MEM_WRITE.unpack_from(body, pos)
                    pos += MEM_WRITE.size
                    if pos + n > end:
                        raise AgentError("bad-op", f"op {index}: MEM_WRITE of {n} bytes runs "
                                                   "past the end of the batch")
                    mem.write(addr, body[pos:pos + n])
                    pos += n
                elif code == p.OP_MEM_READ:
                    _, addr, n = MEM_READ.unpack_from(body, pos)
                    pos += MEM_READ.size
                    out += mem.read(addr, n)
                elif code == p.OP_BAR_WRITE:
                    _, bar, off, size, value = BAR_WRITE.unpack_from(body, pos)
                    pos += BAR_WRITE.size
                    fn.bar(bar).write(off, size, value)
                elif code == p.OP_BAR_READ:
                    _, bar, off, size = BAR_READ.unpack_from(body, pos)
                    pos += BAR_READ.size
                    out += U64.pack(fn.bar(bar).read(off, size))
                elif code == p.OP_POLL:
                    _, addr, size, mask, value, equal, timeout = POLL.unpack_from(body, pos)
                    pos += POLL.size
                    cur, ok = poll(mem, addr, size, mask, value, bool(equal), timeout)
                    if not ok:
                        return self._timeout_reply(flags, index, cur, out)
                    out += U64.pack(cur)
                elif code == p.OP_CFG_READ:
                    _, off, size = CFG_READ.unpack_from(body, pos)
                    pos += CFG_READ.size
                    out += U64.pack(fn.config_read(off, size))
                elif code == p.OP_CFG_WRITE:
                    _, off, size, value = CFG_WRITE.unpack_from(body, pos)
                    pos += CFG_WRITE.size
                    fn.config_write(off, size, value)
                else:
                    raise AgentError("bad-op", f"op {index}: unknown op code {code}")
                index += 1
        except (struct.error, ValueError, OverflowError) as exc:
            raise AgentError("bad-op", f"op {index}: malformed ({exc})") from None
        except OSError as exc:
            raise AgentError("bad-op", f"op {index}: {exc.strerror or exc}") from None
        if flags & p.FLAG_ZLIB_REPLY:
            return p.frame(p.RESULTS_ZLIB, zlib.compress(bytes(out), 1))
        return p.frame(p.RESULTS, bytes(out))

    @staticmethod
    def _timeout_reply(flags: int, index: int, last: int, out: bytearray) -> bytes:
        body = p.TIMEOUT_HEAD.pack(index, last) + bytes(out)
        if flags & p.FLAG_ZLIB_REPLY:
            return p.frame(p.POLL_TIMEOUT_ZLIB, zlib.compress(body, 1))
        return p.frame(p.POLL_TIMEOUT, body)

    # --- dispatch -----------------------------------------------------------------------------
    def handle(self, kind: int, payload: memoryview) -> tuple[bytes, bool]:
        """The reply frame and whether to stop."""
        try:
            if kind == p.BATCH:
                return self.batch(payload), False
            if kind == p.ALLOC:
                self.require()
                if len(payload) != p.ALLOC_REQ.size:
                    raise AgentError("bad-request", f"ALLOC payload of {len(payload)} bytes, "
                                                    f"expected {p.ALLOC_REQ.size}")
                size, align = p.ALLOC_REQ.unpack(payload)
                return p.frame(p.OK, U64.pack(self.mem.alloc(size, align))), False
            if kind == p.SELECT:
                return p.json_frame(p.OK, self.select(self._json(payload))), False
            if kind == p.REPROBE:
                return p.json_frame(p.OK, self.reprobe(self._json(payload))), False
            if kind == p.INFO:
                return p.json_frame(p.OK, self.hello()), False
            if kind == p.BYE:
                return p.json_frame(p.OK, {"note": self.give_back()}), True
            raise AgentError("bad-request", f"unknown request kind {kind}")
        except AgentError as exc:
            return p.json_frame(p.ERROR, {"code": exc.code, "message": str(exc)}), False
        except Exception as exc:  # a bug here: say so, then give the device back and stop
            message = f"{type(exc).__name__}: {exc}"
            return p.json_frame(p.ERROR, {"code": "internal", "message": message}), True

    @staticmethod
    def _json(payload: memoryview) -> dict:
        try:
            obj = p.parse_json(payload)
        except p.ProtocolError as exc:
            raise AgentError("bad-request", str(exc)) from None
        if not isinstance(obj, dict):
            raise AgentError("bad-request", "expected a JSON object")
        return obj


def poll(mem: DmaMemory, addr: int, size: int, mask: int, value: int, equal: bool,
         timeout: float) -> tuple[int, bool]:
    """Re-read guest memory until the condition holds or the deadline passes.

    Spin briefly (a device usually answers within microseconds of a kick),
    then sleep in growing steps so a waiting vCPU gives the host CPU back to
    the emulated device.
    """
    cur = mem.value(addr, size)
    if ((cur & mask) == value) == equal:
        return cur, True
    deadline = time.monotonic() + timeout
    spins = 0
    delay = 20e-6
    while True:
        cur = mem.value(addr, size)
        if ((cur & mask) == value) == equal:
            return cur, True
        if time.monotonic() >= deadline:
            return cur, False
        spins += 1
        if spins > 50:
            time.sleep(delay)
            delay = min(delay * 2, 200e-6)


def serve(agent: Agent, stream: Stream) -> str:
    """Answer requests until BYE or the host is gone; return why it ended."""
    stream.write(p.MAGIC + p.json_frame(p.HELLO, agent.hello()))
    while True:
        try:
            kind, payload = stream.read_frame()
        except p.ProtocolError as exc:
            # The frame boundary is lost: answer once, then stop (the finally gives back).
            stream.write(p.json_frame(p.ERROR, {"code": "bad-request", "message": str(exc)}))
            return f"protocol error: {exc}"
        reply, stop = agent.handle(kind, payload)
        stream.write(reply)
        if stop:
            return "bye"


def _on_signal(signum, _frame):
    raise Lost(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="guest_agent", description=__doc__.splitlines()[0])
    ap.add_argument("--idle-timeout", type=float, default=300.0,
                    help="give the device back and exit after this many silent seconds")
    ap.add_argument("--hugepages", type=int, default=16, help="hugetlb pages to map at most")
    ap.add_argument("--sysfs", default="/sys", help=argparse.SUPPRESS)
    ap.add_argument("--proc", default="/proc", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", default="/run/vblk-agent",
                    help="journal of held functions (survives this agent, not a reboot)")
    ap.add_argument("--plain-memory", action="store_true",
                    help="ordinary memory at made-up bus addresses (tests without a device)")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds to wait for the kernel to unbind/bind the function")
    args = ap.parse_args(argv)
    if args.plain_memory:
        factory = PlainMemory
    else:
        def factory():
            return HugeMemory(args.hugepages, args.proc)
    agent = Agent(Sysfs(args.sysfs, args.proc), Journal(args.state_dir), factory, args.settle)
    stream = Stream(sys.stdin.fileno(), sys.stdout.fileno(), args.idle_timeout)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)
    try:
        serve(agent, stream)
    except Lost:
        pass
    finally:
        # Never leave the guest without its disk: this runs on every way out,
        # and a second signal must not interrupt it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP, signal.SIGINT})
        agent.give_back()
    return 0


if __name__ == "__main__":
    sys.exit(main())
