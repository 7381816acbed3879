"""The qtest target: one QEMU reused across cases, reset between them.

Each case gets the same QEMU after a ``system_reset`` (the DUT back to power-on
state, BARs unassigned, DMA allocator rewound) and the disk restored to its
pattern.  After a case that failed, or that left QEMU dead or hung, the next
case gets a fresh QEMU, so one broken case cannot poison the rest.

A QEMU that never came up (bad ``-device``, missing binary) is not retried for
every case: its one-line error is raised again at once.
"""

from __future__ import annotations

import time
from typing import Any

from conformance.driver.platform import Platform, PlatformError, Unsupported
from conformance.targets.base import Target, TargetError
from conformance.targets.config import TargetSpec
from conformance.targets.qtest.config import QtestSpec, qtest_spec_from_mapping
from conformance.targets.qtest.errors import TargetStartError
from conformance.targets.qtest.platform import QtestPlatform


class QtestTarget(Target):
    kind = "qtest"

    def __init__(self, name: str, timeout: float, spec: QtestSpec):
        super().__init__(name, timeout)
        self.spec = spec
        self._platform: QtestPlatform | None = None
        self._meta: dict[str, Any] = {}
        self._start_error: TargetError | None = None
        #: QEMU processes started, and the seconds spent starting them.
        self.starts = 0
        self.start_seconds = 0.0
        #: Resets between cases (system_reset + disk restore), and their seconds.
        self.resets = 0
        self.reset_seconds = 0.0

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> QtestTarget:
        options = dict(spec.options)
        options.setdefault("timeout", spec.timeout)
        return cls(spec.name, spec.timeout, qtest_spec_from_mapping(options, spec.where))

    def _start(self) -> QtestPlatform:
        if self._start_error is not None:
            raise self._start_error
        t0 = time.monotonic()
        try:
            platform = QtestPlatform(self.spec)
        except TargetStartError as exc:
            error = TargetError(f"{self.name}: {exc}")
            if self.starts == 0:
                self._start_error = error  # never came up: it will not on the next try
            raise error from None
        finally:
            self.start_seconds += time.monotonic() - t0
        self.starts += 1
        self._meta = platform.describe()
        return platform

    def _reuse(self, platform: QtestPlatform) -> bool:
        t0 = time.monotonic()
        try:
            platform.reset()
            platform.restore_disk()
            self.resets += 1
            return True
        except Unsupported:
            return False  # a user-supplied disk cannot be restored: start over instead
        except PlatformError:
            return False  # QEMU died or hung between cases: start over
        finally:
            self.reset_seconds += time.monotonic() - t0

    def platform(self) -> Platform:
        if self._platform is not None:
            if self._platform.healthy() and self._reuse(self._platform):
                return self._platform
            self._platform.close()
            self._platform = None
        self._platform = self._start()
        return self._platform

    def release(self, platform: Platform, broken: bool) -> None:
        # A case may fail in its set-up (no call report says "failed") because
        # QEMU died or hung: check the process, not only the verdict.
        if self._platform is not None and (broken or not self._platform.healthy()):
            self._platform.close()
            self._platform = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._meta}

    def close(self) -> None:
        if self._platform is not None:
            self._platform.close()
            self._platform = None
