"""Starting and stopping the QEMU process behind a qtest target.

QEMU runs with no firmware of its own: ``-bios`` points at 64 KiB of HLT
instructions, so the vCPU stops at the reset vector and never enumerates PCI
or touches the DUT; the suite is the only "guest".  qtest is enabled with
``-qtest unix:PATH`` (docs/devel/qtest.rst).  QEMU connects to sockets this
module listens on, so there is no race on socket files appearing.

Every QEMU is started in its own process group, killed on :meth:`close`, and
killed again at interpreter exit (atexit) in case a caller forgot; when it is
started from the main thread it also gets PR_SET_PDEATHSIG, so it dies with us
even when we are SIGKILLed.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence

from .errors import TargetStartError

HLT_BIOS_SIZE = 64 * 1024
HLT = b"\xf4"
STDERR_LINES = 50
#: Seconds QEMU gets to exit on SIGTERM; a wedged main loop never does, so keep it short.
TERM_GRACE = 1.0

# Strong references: a QEMU whose owner forgot it must still die at exit.
_live: set[QemuProcess] = set()


def _kill_all_at_exit() -> None:
    for proc in list(_live):
        proc.close()


atexit.register(_kill_all_at_exit)


class StderrRing:
    """Drains a pipe in a thread and keeps its last lines.

    QEMU blocks when its stderr pipe is full, so someone must always read it.
    """

    def __init__(self, pipe, maxlen: int = STDERR_LINES):
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._pipe = pipe
        self._thread = threading.Thread(target=self._run, name="qemu-stderr", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in iter(self._pipe.readline, b""):
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
        with contextlib.suppress(OSError):
            self._pipe.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def tail(self, n: int = 10) -> list[str]:
        return list(self.lines)[-n:]


def _noise(line: str) -> bool:
    # QEMU 7.2 prints this GLib warning at exit when qtest logging is off; it
    # says nothing about why QEMU stopped.
    return "g_timer_elapsed" in line or not line.strip()


# Resolved in the parent: the child of a multi-threaded process must not dlopen.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def _pdeathsig_hook(parent: int):
    def hook() -> None:  # runs in the child between fork and exec
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
    return hook


def resolve_binary(path: str) -> str:
    """The executable for ``path`` (a file name is looked up on PATH)."""
    found = shutil.which(path) if os.sep not in path else (
        path if os.path.isfile(path) and os.access(path, os.X_OK) else None)
    if not found:
        raise TargetStartError(f"QEMU binary not found: {path}")
    return found


#: Where a QEMU installed system-wide looks for firmware anyway.
_SYSTEM_DATA_DIRS = ("/usr/share/qemu", "/usr/local/share/qemu")


def prefix_data_dir(binary: str) -> str | None:
    """``PREFIX/share/qemu`` for a binary in ``PREFIX/bin``, when it exists.

    A QEMU unpacked into a private prefix (e.g. by ci/install-qemu.sh) keeps
    the firmware directory compiled into it (/usr/share/qemu), which holds
    another version's files or none; ``-L`` with the prefix's own directory
    puts its firmware and option ROMs first.  None for a binary installed
    system-wide.
    """
    bindir = os.path.dirname(os.path.realpath(binary))
    if os.path.basename(bindir) != "bin":
        return None
    candidate = os.path.join(os.path.dirname(bindir), "share", "qemu")
    if candidate in _SYSTEM_DATA_DIRS or not os.path.isdir(candidate):
        return None
    return candidate


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (R, S, T, Z, ...), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "QEMU is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"QEMU was killed by {name}"
    return f"QEMU exited with status {returncode}"


class QemuProcess:
    """A running QEMU with a connected qtest socket and a connected QMP socket.

    ``argv_tail`` are the machine/device arguments; this class adds the
    binary, ``-bios``, ``-qtest``, ``-qtest-log`` and ``-qmp``.
    """

    def __init__(self, binary: str, argv_tail: Sequence[str], *, start_timeout: float = 30.0,
                 workdir: str | None = None):
        self.binary = resolve_binary(binary)
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="vbc-qtest-")
        self.proc: subprocess.Popen | None = None
        self.stderr: StderrRing | None = None
        self.qtest_sock: socket.socket | None = None
        self.qmp_sock: socket.socket | None = None
        self._closed = False
        bios = os.path.join(self.workdir, "hlt.bin")
        with open(bios, "wb") as f:
            f.write(HLT * HLT_BIOS_SIZE)
        qtest_path = os.path.join(self.workdir, "qtest.sock")
        qmp_path = os.path.join(self.workdir, "qmp.sock")
        self.argv = [
            self.binary, "-nodefaults", "-display", "none", "-bios", bios,
            "-qtest", f"unix:{qtest_path}", "-qtest-log", "/dev/null",
            "-qmp", f"unix:{qmp_path}", *argv_tail,
        ]
        listeners = [self._listen(qtest_path), self._listen(qmp_path)]
        try:
            self._spawn()
            self.qtest_sock, self.qmp_sock = self._accept(listeners, start_timeout)
        except BaseException:
            self.close()
            raise
        finally:
            for sock in listeners:
                sock.close()

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @staticmethod
    def _listen(path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(1)
        return sock

    def _spawn(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
                # PDEATHSIG follows the *thread* that forked; only safe from the main thread.
                preexec_fn=_pdeathsig_hook(os.getpid()) if main else None,
            )
        except OSError as exc:
            raise TargetStartError(f"cannot run QEMU {self.binary}: {exc.strerror}") from None
        _live.add(self)
        self.stderr = StderrRing(self.proc.stdout)

    def _accept(self, listeners: list[socket.socket],
                timeout: float) -> tuple[socket.socket, socket.socket]:
        conns: dict[socket.socket, socket.socket] = {}
        deadline = time.monotonic() + timeout
        while len(conns) < len(listeners):
            if self.proc.poll() is not None:
                raise self.start_error()
            if time.monotonic() > deadline:
                raise TargetStartError(
                    f"QEMU did not connect its qtest/QMP sockets within {timeout:g}s")
            waiting = [s for s in listeners if s not in conns]
            ready, _, _ = select.select(waiting, [], [], 0.05)
            for sock in ready:
                conns[sock], _ = sock.accept()
        return conns[listeners[0]], conns[listeners[1]]

    def error_line(self) -> str | None:
        """QEMU's own explanation, e.g. ``qemu-system-x86_64: -device foo: ...``."""
        lines = [ln for ln in (self.stderr.lines if self.stderr else []) if not _noise(ln)]
        prog = os.path.basename(self.binary) + ":"
        for line in lines:
            if line.startswith(prog):
                return line
        return lines[-1] if lines else None

    def start_error(self) -> TargetStartError:
        """A one-line error for a QEMU that exited during start-up."""
        rc = self.wait_exit(5.0)
        line = self.error_line()
        why = describe_exit(rc)
        return TargetStartError(f"{why} at start: {line}" if line else f"{why} at start")

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` for QEMU to exit (and its stderr to drain)."""
        if not self.proc:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        if self.proc.returncode is not None and self.stderr:
            self.stderr.join(1.0)
        return self.proc.returncode

    def diagnose(self) -> str:
        """For errors raised mid-session: what became of QEMU (first line), then
        its last stderr lines."""
        rc = self.wait_exit(1.0)
        text = describe_exit(rc) if rc is not None else self._describe_running()
        tail = [ln for ln in (self.stderr.tail(10) if self.stderr else []) if not _noise(ln)]
        if tail:
            text += "\nlast QEMU stderr lines:\n  " + "\n  ".join(tail)
        else:
            text += "\nQEMU printed nothing on stderr"
        return text

    def _describe_running(self) -> str:
        state = _proc_state(self.proc.pid) if self.proc else None
        if state in ("T", "t"):
            return "QEMU is stopped (SIGSTOP or a debugger) and answers nothing"
        return f"QEMU is still running (process state {state or '?'}) but did not answer"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Kill QEMU (whole process group), reap it and remove the work dir; idempotent."""
        if self._closed:
            return
        self._closed = True
        for sock in (self.qtest_sock, self.qmp_sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                    # A stopped QEMU (SIGSTOP, a debugger) acts on SIGTERM only once continued.
                    os.killpg(self.proc.pid, signal.SIGCONT)
                try:
                    self.proc.wait(TERM_GRACE)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            if self.stderr:
                self.stderr.join(1.0)
        _live.discard(self)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
