"""Errors of the qtest target.

``TargetConfigError`` is every target's (one line: where, key, problem);
``TargetStartError`` carries QEMU's own one-line reason.
"""

from __future__ import annotations

from conformance.driver.platform import PlatformError
from conformance.targets.base import TargetConfigError

__all__ = ["TargetConfigError", "TargetStartError", "QemuDiedError", "QtestCommandError",
           "QtestTimeoutError"]


class TargetStartError(PlatformError):
    """QEMU could not be started or did not come up (one line, QEMU's own words)."""


class QemuDiedError(PlatformError):
    """QEMU exited or stopped answering while the suite was talking to it."""


class QtestCommandError(PlatformError):
    """QEMU answered a qtest command with ``FAIL``."""

    def __init__(self, command: str, answer: str):
        self.command = command
        self.answer = answer
        super().__init__(f"qtest command {command[:80]!r} failed: {answer}")


class QtestTimeoutError(PlatformError):
    """QEMU did not answer a qtest command in time (the connection is unusable after)."""
