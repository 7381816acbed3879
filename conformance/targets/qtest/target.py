"""The qtest target: one QEMU reused across cases, reset between them.

Each case gets the same QEMU after a ``system_reset`` (the DUT back to power-on
state, BARs unassigned, DMA allocator rewound) and the disk restored to its
pattern.  After a case that failed or left QEMU in doubt, the next case gets a
fresh QEMU, so one broken case cannot poison the rest.
"""

from __future__ import annotations

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
        self.starts = 0

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> QtestTarget:
        options = dict(spec.options)
        options.setdefault("timeout", spec.timeout)
        return cls(spec.name, spec.timeout, qtest_spec_from_mapping(options, spec.where))

    def _start(self) -> QtestPlatform:
        try:
            platform = QtestPlatform(self.spec)
        except TargetStartError as exc:
            raise TargetError(str(exc)) from None
        self.starts += 1
        self._meta = platform.describe()
        return platform

    def platform(self) -> Platform:
        if self._platform is not None:
            try:
                self._platform.reset()
                self._platform.restore_disk()
                return self._platform
            except Unsupported:
                pass  # a user-supplied disk cannot be restored: start over instead
            except PlatformError:
                pass  # QEMU died or hung between cases: start over
            self._platform.close()
            self._platform = None
        self._platform = self._start()
        return self._platform

    def release(self, platform: Platform, broken: bool) -> None:
        if broken and self._platform is not None:
            self._platform.close()
            self._platform = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._meta}

    def close(self) -> None:
        if self._platform is not None:
            self._platform.close()
            self._platform = None
