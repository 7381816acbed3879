"""Errors of the qtest target.

``TargetConfigError`` and ``TargetStartError`` are local for now and will be
unified with the other targets' errors later.  Both carry a one-line message
meant to be shown to a user as is.
"""

from __future__ import annotations

from conformance.driver.platform import PlatformError


class TargetConfigError(Exception):
    """A qtest target mapping is malformed (one line: where, key, problem)."""


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
