"""Assertions for conformance cases, with messages that say what the spec wanted.

Each helper raises ``AssertionError`` with one readable line (the pytest
report shows it as the failure), so a case reads as a list of requirements.
"""

from __future__ import annotations

import time

from conformance import spec
from conformance.driver.blk import BlkCompletion
from conformance.driver.msix import Msix
from conformance.driver.platform import Platform, Poll, PollTimeout
from conformance.pattern import describe_mismatch


def expect_status(c: BlkCompletion, status: int, why: str = "") -> None:
    want = spec.BLK_STATUS_NAMES.get(status, str(status))
    kind = spec.REQUEST_TYPE_NAMES.get(c.request.type, f"type {c.request.type}")
    assert c.status == status, (
        f"{kind} at sector {c.request.sector}: status {c.status_name}, expected {want}"
        + (f" ({why})" if why else ""))


def expect_used_len(c: BlkCompletion, length: int) -> None:
    """2.7.8.2 / 2.8.21: used length is the number of bytes written to the writable buffers."""
    kind = spec.REQUEST_TYPE_NAMES.get(c.request.type, f"type {c.request.type}")
    assert c.used_len == length, (
        f"{kind}: used length {c.used_len}, expected {length} (bytes the device wrote into "
        f"the device-writable buffers, status byte included)")


def expect_guards(c: BlkCompletion) -> None:
    assert c.guards_intact, "the device wrote outside the request's device-writable buffers"


def expect_data(actual: bytes, expected: bytes, what: str, base_offset: int = 0) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: {describe_mismatch(expected, actual, base_offset)}")


def expect_ok(c: BlkCompletion, data_len: int = 0) -> None:
    """Status OK, exact used length for ``data_len`` written bytes plus status, guards intact."""
    expect_status(c, spec.VIRTIO_BLK_S_OK)
    expect_used_len(c, data_len + 1)
    expect_guards(c)


def expect_unchanged(platform: Platform, addr: int, size: int, value: int, what: str,
                     wait: float = 0.2) -> None:
    """The ``size`` bytes at ``addr`` keep ``value`` for ``wait`` seconds (a bounded wait).

    For "the device must not (yet)" checks: a used index that must not move, an
    MSI-X message slot that must stay empty.  ``what`` says what a change means.
    """
    mask = (1 << (8 * size)) - 1
    try:
        got = platform.execute([Poll(addr, size, mask, value, equal=False, timeout=wait)])[0]
    except PollTimeout:
        return
    raise AssertionError(f"{what} (read {got:#x} where {value:#x} was)")


#: How long a case listens for an interrupt that must not come.  The device has
#: already published the used buffer by then, and a notification follows the
#: used ring update directly (2.7.7, 2.8.10), so a short window suffices.
QUIET_S = 0.1


def expect_interrupt(msix: Msix, vector: int, what: str, timeout: float = 2.0) -> None:
    """An MSI-X message for ``vector`` arrives (the driver cleared its slot before)."""
    try:
        msix.wait(vector, timeout)
    except PollTimeout:
        raise AssertionError(f"{what}: no MSI-X message on vector {vector} within "
                             f"{timeout:g}s") from None


def expect_no_interrupt(msix: Msix, vector: int, what: str, quiet: float = QUIET_S) -> None:
    """No MSI-X message for ``vector`` within ``quiet`` seconds."""
    try:
        msix.wait(vector, quiet)
    except PollTimeout:
        return
    raise AssertionError(f"{what}: an MSI-X message arrived on vector {vector}, expected none")


def expect_reset(device, what: str = "") -> None:
    """Write 0 to device_status and require it to read 0 within the device's timeout.

    4.1.4.3.1: the device resets when 0 is written and presents 0 once done; the
    driver's queue objects stay as they are (a case may go on poking the old rings).
    """
    t = device.transport
    before = t.device_status
    t.device_status = 0
    deadline = time.monotonic() + device.timeout
    while (status := t.device_status) != 0:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"device_status still {spec.status_str(status)} {device.timeout:g}s after 0 was "
                f"written (reset from {spec.status_str(before)}{', ' + what if what else ''})")
        time.sleep(0.001)


def expect_status_in(c: BlkCompletion, statuses: tuple[int, ...], why: str) -> None:
    """Where the spec leaves a choice (``why`` says where), any of ``statuses``."""
    kind = spec.REQUEST_TYPE_NAMES.get(c.request.type, f"type {c.request.type}")
    want = " or ".join(spec.BLK_STATUS_NAMES.get(s, str(s)) for s in statuses)
    assert c.status in statuses, (
        f"{kind} at sector {c.request.sector}: status {c.status_name}, expected {want} ({why})")


def expect_used_len_within(c: BlkCompletion) -> None:
    """A used length never counts more bytes than the device-writable part holds (2.7.8.2)."""
    assert c.used_len <= c.request.writable_len, (
        f"used length {c.used_len} is more than the {c.request.writable_len} device-writable "
        f"bytes of the request")


def expect_error(c: BlkCompletion, status: int, why: str = "") -> None:
    """A refused request: this status, guards intact, a used length inside the buffer.

    The exact used length of a failed request is left to the used-ring clauses: the
    spec does not say whether the data part the device did not fill counts.
    """
    expect_status(c, status, why)
    expect_guards(c)
    expect_used_len_within(c)
