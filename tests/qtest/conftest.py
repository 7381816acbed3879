"""Fixtures for the qtest target's own tests: skip all of them without QEMU."""

from __future__ import annotations

import pytest
from qtest_helpers import QEMU


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
