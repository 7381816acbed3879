"""What every target offers the plugin: a fresh Platform per case.

A target owns whatever is expensive (a QEMU process, an SSH connection, a
template backing file) and hands each case a Platform whose device starts from
power-on state.  After the case the plugin gives the Platform back and says
whether the case left the device broken, so the target can start over.
"""

from __future__ import annotations

import abc
from typing import Any

from conformance.driver.platform import Platform


class TargetConfigError(Exception):
    """A target file or option is wrong; the message is one line naming where and what."""


class TargetError(Exception):
    """A target could not be brought up (binary missing, process died at start, ...)."""


class Target(abc.ABC):
    kind: str = ""

    def __init__(self, name: str, timeout: float):
        self.name = name
        self.timeout = timeout

    @abc.abstractmethod
    def platform(self) -> Platform:
        """A Platform whose device is in its power-on state."""

    def release(self, platform: Platform, broken: bool) -> None:
        """Called after each case with the Platform it got."""
        platform.close()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Stop everything the target started; idempotent."""
