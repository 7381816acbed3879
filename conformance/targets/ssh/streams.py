"""Byte streams the agent protocol runs over: an SSH channel, or pipes to a local process.

Both offer ``send(data)``, ``recv(n, timeout)`` (``b""`` at end of stream,
:class:`TimeoutError` when nothing arrives in time) and ``close()``; the
agent client above them does not care which it has.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess


class ChannelStream:
    """A paramiko channel running the agent (its stdin/stdout)."""

    def __init__(self, channel):
        self.channel = channel

    def send(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (OSError, EOFError) as exc:
            raise ConnectionError(f"sending to the agent failed: {exc}") from None

    def recv(self, n: int, timeout: float) -> bytes:
        self.channel.settimeout(max(timeout, 0.001))
        return self.channel.recv(n)  # socket.timeout is TimeoutError

    def stderr_tail(self, limit: int = 2000) -> str:
        data = b""
        with contextlib.suppress(OSError):
            while self.channel.recv_stderr_ready():
                data += self.channel.recv_stderr(65536)
        return data.decode("utf-8", "replace")[-limit:]

    def exit_status(self, wait: float = 2.0) -> int | None:
        """The remote command's exit status if it has ended (within ``wait``)."""
        self.channel.status_event.wait(wait)
        return self.channel.exit_status if self.channel.exit_status_ready() else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()


class PipeStream:
    """Pipes to a local agent process (tests, benchmarks of the agent itself)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.wfd = proc.stdin.fileno()
        self.rfd = proc.stdout.fileno()

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.wfd, view):]
        except OSError as exc:
            raise ConnectionError(f"sending to the agent failed: {exc.strerror}") from None

    def recv(self, n: int, timeout: float) -> bytes:
        ready, _, _ = select.select([self.rfd], [], [], max(timeout, 0))
        if not ready:
            raise TimeoutError
        return os.read(self.rfd, n)

    def stderr_tail(self, limit: int = 2000) -> str:
        return ""

    def exit_status(self, wait: float = 2.0) -> int | None:
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
