"""Fixtures for the reference device unit tests (helpers: refdev_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from refdev_harness import Harness, make_device

from reference_device import VirtioBlkPci


@pytest.fixture
def make_harness() -> Iterator:
    made: list[VirtioBlkPci] = []

    def factory(mapping: dict | None = None, *, mapped: bool = True) -> Harness:
        dev, mem = make_device(mapping)
        made.append(dev)
        h = Harness(dev, mem)
        if mapped:
            h.map_bars()
        return h

    yield factory
    for dev in made:
        assert not dev.internal_errors, dev.internal_errors
        dev.close()


@pytest.fixture
def h(make_harness) -> Harness:
    return make_harness()
