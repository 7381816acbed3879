"""A small client for QEMU's qtest protocol (QEMU docs/devel/qtest.rst).

The protocol is line based: every command line gets exactly one answer line,
``OK [payload]`` or ``FAIL reason``, in order.  Lines ``IRQ raise N`` /
``IRQ lower N`` arrive asynchronously (after ``irq_intercept_in``) and may sit
between answers; they are split off and tracked in :attr:`QtestClient.irq_levels`.

Each round trip costs tens of microseconds, so :meth:`QtestClient.pipeline`
sends a whole list of commands at once and then collects all answers.  Sending
and receiving run interleaved on a non-blocking socket: QEMU writes answers
synchronously from its main loop, so a large batch whose answers we did not
read while still sending could otherwise deadlock both sides.
"""

from __future__ import annotations

import base64
import contextlib
import selectors
import socket
import struct
import time
from collections.abc import Callable, Sequence

from .errors import QemuDiedError, QtestCommandError, QtestTimeoutError

#: Largest single b64read/b64write; bigger transfers are split so no single
#: line (and no single buffer on either side) grows without bound.
MAX_BULK = 1 << 20
#: Batches up to this many bytes are sent whole before reading: they fit in a
#: Unix socket's send buffer, so QEMU need not read them before we read answers.
SMALL_BATCH = 64 << 10

_READ = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}
_WRITE = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}
_IN = {1: "inb", 2: "inw", 4: "inl"}
_OUT = {1: "outb", 2: "outw", 4: "outl"}


# --- command builders (for pipelining) -------------------------------------------

def read_cmd(size: int, addr: int) -> str:
    return f"{_READ[size]} {addr:#x}"


def write_cmd(size: int, addr: int, value: int) -> str:
    return f"{_WRITE[size]} {addr:#x} {value:#x}"


def in_cmd(size: int, port: int) -> str:
    return f"{_IN[size]} {port:#x}"


def out_cmd(size: int, port: int, value: int) -> str:
    return f"{_OUT[size]} {port:#x} {value:#x}"


def b64read_cmd(addr: int, n: int) -> str:
    return f"b64read {addr:#x} {n:#x}"


def b64write_cmd(addr: int, data: bytes) -> str:
    return f"b64write {addr:#x} {len(data):#x} {base64.b64encode(data).decode('ascii')}"


def _brief(cmd: str) -> str:
    """A command without its payload (a b64write line can be megabytes long)."""
    return " ".join(cmd.split()[:2])


def parse_int(payload: str) -> int:
    return int(payload, 16)


def parse_b64(payload: str) -> bytes:
    return base64.b64decode(payload)


# --- the client -----------------------------------------------------------------

class QtestClient:
    """One qtest connection.

    ``diagnose`` is called when QEMU vanishes or hangs and returns text about
    the process for the error message: its first line what became of QEMU
    (exit status, signal, stopped), further lines details (last stderr lines).
    """

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0,
                 diagnose: Callable[[], str] | None = None):
        # The socket stays in blocking mode with kernel timeouts (SO_RCVTIMEO/
        # SO_SNDTIMEO): a plain blocking send/recv is the cheapest round trip
        # from Python; the large-batch path uses MSG_DONTWAIT per call instead.
        sock.settimeout(None)
        self._sock = sock
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ)
        self._rbuf = bytearray()
        self._broken: str | None = None
        self._kernel_timeout: float | None = None
        self.timeout = timeout
        self._diagnose = diagnose or (lambda: "")
        #: Current level of every intercepted IRQ line seen so far (by input number).
        self.irq_levels: dict[int, bool] = {}
        #: How often each line was raised; lets a caller see a pulse it polled too late for.
        self.irq_raises: dict[int, int] = {}
        self.round_trips = 0

    @property
    def usable(self) -> bool:
        """False once QEMU vanished, hung or the connection was closed."""
        return self._broken is None

    # -- low level --------------------------------------------------------------
    def pipeline(self, commands: Sequence[str], timeout: float | None = None) -> list[str]:
        """Send all ``commands`` in one go; return their ``OK`` payloads in order.

        A ``FAIL`` answer raises :class:`QtestCommandError` after all answers
        have been read, so the connection stays in step.
        """
        if not commands:
            return []
        if self._broken:
            raise QemuDiedError(self._broken)
        limit = self.timeout if timeout is None else timeout
        out = "".join(c + "\n" for c in commands).encode("ascii")
        answers: list[str] = []
        self.round_trips += 1
        try:
            if len(out) <= SMALL_BATCH:
                self._exchange_small(out, commands, answers, limit)
            else:
                self._exchange_large(memoryview(out), commands, answers, limit)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._fail_died(f"qtest connection lost ({exc.strerror})")
        for cmd, ans in zip(commands, answers):
            if not ans.startswith("OK"):
                raise QtestCommandError(cmd, ans)
        return [ans[3:] for ans in answers]

    def _set_kernel_timeout(self, limit: float) -> None:
        if limit == self._kernel_timeout:
            return
        sec = int(limit)
        tv = struct.pack("ll", sec, int((limit - sec) * 1e6) or (0 if sec else 1))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self._kernel_timeout = limit

    def _exchange_small(self, out: bytes, commands: Sequence[str], answers: list[str],
                        limit: float) -> None:
        # The whole batch fits in the socket buffer, so sending cannot wait on
        # QEMU draining its answers: send all, then read.
        self._set_kernel_timeout(limit)
        deadline = time.monotonic() + limit
        try:
            self._sock.sendall(out)
            while len(answers) < len(commands):
                self._recv(0)
                self._take_lines(answers)
                if len(answers) < len(commands) and time.monotonic() > deadline:
                    raise BlockingIOError
        except BlockingIOError:  # EAGAIN after SO_RCVTIMEO/SO_SNDTIMEO
            self._fail_timeout(commands[min(len(answers), len(commands) - 1)], limit)

    def _exchange_large(self, out: memoryview, commands: Sequence[str], answers: list[str],
                        limit: float) -> None:
        # Send and receive interleaved: QEMU writes each answer synchronously
        # from its main loop, so it stops reading while we do not read.
        want = len(commands)
        deadline = time.monotonic() + limit
        sent = 0
        self._sel.modify(self._sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        try:
            while len(answers) < want or sent < len(out):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail_timeout(commands[min(len(answers), want - 1)], limit)
                for _key, events in self._sel.select(remaining):
                    if events & selectors.EVENT_WRITE and sent < len(out):
                        try:
                            sent += self._sock.send(out[sent:sent + (1 << 20)],
                                                    socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            pass
                        if sent == len(out):
                            self._sel.modify(self._sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        with contextlib.suppress(BlockingIOError):
                            self._recv(socket.MSG_DONTWAIT)
                        self._take_lines(answers)
        finally:
            if sent < len(out):
                with contextlib.suppress(OSError, ValueError):
                    self._sel.modify(self._sock, selectors.EVENT_READ)

    def command(self, cmd: str) -> str:
        return self.pipeline([cmd])[0]

    def sync_events(self) -> None:
        """Round trip a no-op so that IRQ lines QEMU emitted before it are seen."""
        self.pipeline(["endianness"])

    def _recv(self, flags: int) -> None:
        data = self._sock.recv(1 << 20, flags)
        if not data:
            self._fail_died("qtest connection closed by QEMU")
        self._rbuf += data

    def _take_lines(self, answers: list[str]) -> None:
        buf = self._rbuf
        if b"\n" not in buf:
            return
        end = buf.rindex(b"\n")
        lines = bytes(buf[:end]).decode("ascii", "replace").split("\n")
        del buf[:end + 1]
        for line in lines:
            if line.startswith("IRQ "):
                self._irq_event(line)
            elif line.startswith(("OK", "FAIL")):
                answers.append(line)
            # Anything else (e.g. a stray log line) is not an answer; skip it.

    def _irq_event(self, line: str) -> None:
        # "IRQ raise N" / "IRQ lower N" (docs/devel/qtest.rst, irq_intercept_in)
        parts = line.split()
        if len(parts) == 3 and parts[2].lstrip("-").isdigit():
            n = int(parts[2])
            up = parts[1] == "raise"
            self.irq_levels[n] = up
            if up:
                self.irq_raises[n] = self.irq_raises.get(n, 0) + 1

    def _explain(self, what: str) -> str:
        # What became of QEMU leads (a one-line summary shows the first line
        # only); what the client saw follows; QEMU's stderr lines come last.
        diag = self._diagnose()
        if not diag:
            return what
        state, nl, details = diag.partition("\n")
        return f"{state}: {what}{nl}{details}"

    def _fail_died(self, what: str) -> None:
        self._broken = self._explain(what)
        raise QemuDiedError(self._broken)

    def _fail_timeout(self, cmd: str, limit: float) -> None:
        self._broken = self._explain(f"no answer to {_brief(cmd)!r} within {limit:g}s")
        raise QtestTimeoutError(self._broken)

    def close(self) -> None:
        if self._broken is None:
            self._broken = "the qtest connection is closed"
        try:
            self._sel.close()
        finally:
            self._sock.close()

    # -- convenience (one round trip each) ----------------------------------------
    def read(self, size: int, addr: int) -> int:
        return parse_int(self.command(read_cmd(size, addr)))

    def write(self, size: int, addr: int, value: int) -> None:
        self.command(write_cmd(size, addr, value))

    def readb(self, addr: int) -> int:
        return self.read(1, addr)

    def readw(self, addr: int) -> int:
        return self.read(2, addr)

    def readl(self, addr: int) -> int:
        return self.read(4, addr)

    def readq(self, addr: int) -> int:
        return self.read(8, addr)

    def writeb(self, addr: int, value: int) -> None:
        self.write(1, addr, value)

    def writew(self, addr: int, value: int) -> None:
        self.write(2, addr, value)

    def writel(self, addr: int, value: int) -> None:
        self.write(4, addr, value)

    def writeq(self, addr: int, value: int) -> None:
        self.write(8, addr, value)

    def port_in(self, size: int, port: int) -> int:
        return parse_int(self.command(in_cmd(size, port)))

    def port_out(self, size: int, port: int, value: int) -> None:
        self.command(out_cmd(size, port, value))

    def inb(self, port: int) -> int:
        return self.port_in(1, port)

    def inw(self, port: int) -> int:
        return self.port_in(2, port)

    def inl(self, port: int) -> int:
        return self.port_in(4, port)

    def outb(self, port: int, value: int) -> None:
        self.port_out(1, port, value)

    def outw(self, port: int, value: int) -> None:
        self.port_out(2, port, value)

    def outl(self, port: int, value: int) -> None:
        self.port_out(4, port, value)

    def memread(self, addr: int, n: int) -> bytes:
        cmds = [b64read_cmd(addr + o, min(MAX_BULK, n - o)) for o in range(0, n, MAX_BULK)]
        return b"".join(parse_b64(p) for p in self.pipeline(cmds))

    def memwrite(self, addr: int, data: bytes) -> None:
        self.pipeline([b64write_cmd(addr + o, data[o:o + MAX_BULK])
                       for o in range(0, len(data), MAX_BULK)])

    def irq_intercept_in(self, qom_path: str) -> None:
        self.command(f"irq_intercept_in {qom_path}")

    def supports(self, cmd: str) -> bool:
        """Whether QEMU knows ``cmd`` (e.g. ``clock_step`` needs the qtest accelerator)."""
        try:
            self.command(cmd)
        except QtestCommandError as exc:
            return "Unknown command" not in exc.answer
        return True
