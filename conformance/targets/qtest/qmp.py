"""A synchronous face for ``qemu.qmp`` (QEMU's own asyncio QMP client).

The client runs on a private event loop in a daemon thread, so the suite can
call QMP from plain synchronous code, and also from code that already runs an
asyncio loop of its own (``qemu.qmp.legacy`` would drive the caller's loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from conformance.driver.platform import PlatformError


class QmpError(PlatformError):
    """A QMP command failed or QEMU's monitor went away."""


class QmpSession:
    def __init__(self, sock: socket.socket, *, timeout: float = 10.0, name: str = "qtest-dut"):
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qmp-loop",
                                        daemon=True)
        self._thread.start()
        self._client = QMPClient(name)
        try:
            # QEMU sends its greeting only once its main loop runs; negotiate also
            # enables commands (qmp_capabilities).
            self._run(self._client.connect(sock))
        except BaseException:
            self.close()
            raise

    def _run(self, coro, timeout: float | None = None) -> Any:
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(coro, timeout or self.timeout), self._loop)
        try:
            return fut.result()
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise QmpError(f"QMP did not answer within {timeout or self.timeout:g}s") from None
        except QMPError as exc:
            raise QmpError(f"QMP: {exc}") from None
        except (OSError, EOFError) as exc:
            raise QmpError(f"QMP connection lost: {exc!r}") from None

    def command(self, name: str, timeout: float | None = None, **arguments: Any) -> Any:
        """Execute ``name`` with ``arguments``; return its ``return`` value."""
        return self._run(self._client.execute(name, arguments or None), timeout)

    def command_and_event(self, name: str, event: str, timeout: float | None = None,
                          **arguments: Any) -> Any:
        """Execute ``name`` and wait for the QMP event ``event`` it causes."""

        async def run() -> Any:
            # Listen before executing, so an event sent right after the
            # command's answer cannot slip past.
            with self._client.listener(event) as listener:
                result = await self._client.execute(name, arguments or None)
                await listener.get()
            return result

        return self._run(run(), timeout)

    def close(self) -> None:
        """Disconnect and stop the loop thread; idempotent."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._client.disconnect(),
                                                 self._loop).result(2.0)
            except Exception:  # QEMU may be gone already; nothing to save
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2.0)
        if not self._loop.is_running():
            self._loop.close()
