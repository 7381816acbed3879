"""The fuzzer against real QEMU: a crash or hang is triaged and a fresh QEMU carries on;
the documented findings replay."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from conformance import spec
from conformance.fuzz.chain import QueueSetup, blk_chain
from conformance.fuzz.reproducer import load_reproducer, replay
from conformance.fuzz.session import FuzzSession
from conformance.targets import open_target, spec_from_mapping

QEMU = os.environ.get("QTEST_QEMU", "qemu-system-x86_64")
QEMU_10 = os.environ.get("QTEST_QEMU_10",
                         "/opt/vblk-conformance/qemu-10.0/usr/bin/qemu-system-x86_64")
pytestmark = pytest.mark.skipif(shutil.which(QEMU) is None,
                                reason=f"no QEMU binary {QEMU!r} (run ci/install-qemu.sh)")
FINDINGS = Path(__file__).resolve().parents[1] / "docs" / "findings"
S = spec.SECTOR_SIZE


def qtest_spec(qemu: str = QEMU, timeout: float = 3):
    return spec_from_mapping({"kind": "qtest", "name": "qemu", "timeout": timeout,
                              "qemu": qemu}, "test", "qemu")


@pytest.fixture
def session():
    target = open_target(qtest_spec())
    s = FuzzSession(target, QueueSetup(), quiet=0.05)
    yield s
    s.close()
    target.close()


def test_a_killed_qemu_is_a_crash_with_its_signal_and_a_fresh_qemu_follows(session):
    first = session.platform.inner.pid
    os.kill(first, signal.SIGKILL)
    _obs, finding = session.execute(blk_chain(spec.VIRTIO_BLK_T_IN, 1, read_len=S))
    assert finding is not None and finding.kind == "crash"
    assert finding.triage["exit"] == "QEMU was killed by SIGKILL"
    assert finding.triage["last_primitives"], "the triage names what was sent last"
    assert session.restarts == 1 and session.platform.inner.pid != first
    obs, again = session.execute(blk_chain(spec.VIRTIO_BLK_T_IN, 1, read_len=S))
    assert again is None and obs.status == spec.VIRTIO_BLK_S_OK


def test_a_stopped_qemu_is_a_hang_and_a_fresh_qemu_follows(session):
    first = session.platform.inner.pid
    os.kill(first, signal.SIGSTOP)
    _obs, finding = session.execute(blk_chain(spec.VIRTIO_BLK_T_IN, 1, read_len=S))
    assert finding is not None and finding.kind == "hang"
    assert finding.triage["exit"] == "QEMU is stopped (SIGSTOP or a debugger)"
    assert session.platform.inner.pid != first
    _obs, again = session.execute(blk_chain(spec.VIRTIO_BLK_T_IN, 1, read_len=S))
    assert again is None


@pytest.mark.parametrize("qemu", [QEMU, QEMU_10], ids=["qemu-7.2", "qemu-10.0"])
def test_documented_hang_reproduces(qemu):
    """docs/findings/qemu-status-into-device-status.json: the status byte written into
    the device's own device_status hangs QEMU (7.2 and 10.0 alike)."""
    if not os.path.exists(qemu) and shutil.which(qemu) is None:
        pytest.skip(f"no QEMU at {qemu}")
    rep = load_reproducer(FINDINGS / "qemu-status-into-device-status.json")
    result = replay(rep, qtest_spec(qemu))
    assert result.reproduced and result.finding.kind == "hang", result.observation


def test_documented_packed_livelock_reproduces():
    """docs/findings/qemu-packed-broken-queue-livelock.json: QEMU spins (state R)."""
    rep = load_reproducer(FINDINGS / "qemu-packed-broken-queue-livelock.json")
    target = spec_from_mapping({**rep.target, "qemu": QEMU, "timeout": 3}, "test", "qemu")
    result = replay(rep, target)
    assert result.reproduced and result.finding.kind == "hang"
    assert result.finding.triage["exit"] == "QEMU is still running (process state R)"


def test_documented_indirect_finding_reproduces():
    rep = load_reproducer(FINDINGS / "qemu-indirect-descriptor-not-at-head.json")
    result = replay(rep, qtest_spec())
    assert result.reproduced and result.finding.kind == "corruption"
    assert "which no device-writable descriptor covers" in result.finding.summary


def test_the_reference_device_handles_the_documented_findings():
    ref = spec_from_mapping({"kind": "reference"}, "test", "ref")
    for path in sorted(FINDINGS.glob("*.json")):
        result = replay(load_reproducer(path), ref)
        assert not result.reproduced, (path.name, result.finding)
