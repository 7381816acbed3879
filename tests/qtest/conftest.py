"""Fixtures for the qtest target's own tests: skip all of them without QEMU."""

from __future__ import annotations

import os
import shutil

import pytest

QEMU = os.environ.get("QTEST_QEMU", "qemu-system-x86_64")
HAVE_QEMU = shutil.which(QEMU) is not None
needs_qemu = pytest.mark.skipif(
    not HAVE_QEMU, reason=f"no QEMU binary {QEMU!r} on PATH (run ci/install-qemu.sh)")


@pytest.fixture
def make_platform():
    """Factory that starts QtestPlatforms and closes them all after the test."""
    from conformance.targets.qtest import QtestPlatform, QtestSpec

    made = []

    def make(**fields):
        fields.setdefault("qemu", QEMU)
        plat = QtestPlatform(QtestSpec(**fields))
        made.append(plat)
        return plat

    yield make
    for plat in made:
        plat.close()


@pytest.fixture
def platform(make_platform):
    return make_platform()
