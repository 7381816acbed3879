"""A pytest plugin for the qtest target's fault tests: it hurts QEMU in the middle of a case.

Loaded into a ``vblk-conformance run`` child with ``-p vbc_fault_plugin``
(tests/qtest on PYTHONPATH); driven by environment variables:

``VBC_FAULT=ACTION:TEXT``
    In the first case whose node ID contains TEXT, just before the first
    batch of primitives that waits (holds a ``Poll``, i.e. while a request is
    in flight) goes to QEMU, do ACTION: ``SIGKILL`` / ``SIGSTOP`` send that
    signal to QEMU and wait until it took effect; ``pause`` announces itself
    in the pid file and sleeps, so the test can interrupt the run right there.
``VBC_FAULT_PIDS=FILE``
    Append ``CASE PID`` for every case (and ``paused PID`` when pausing), so
    the test knows every QEMU the run started.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from conformance.driver.platform import Poll


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _note(line: str) -> None:
    path = os.environ.get("VBC_FAULT_PIDS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _hurt(action: str, pid: int) -> None:
    if action == "pause":
        _note(f"paused {pid}")
        time.sleep(60)  # the test sends SIGINT meanwhile
        return
    sig = signal.Signals[action]
    os.kill(pid, sig)
    want = {"SIGKILL": ("Z", "gone"), "SIGSTOP": ("T", "t")}[action]
    deadline = time.monotonic() + 5
    while _state(pid) not in want and time.monotonic() < deadline:
        time.sleep(0.005)


_done = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    global _done
    platform = item.funcargs.get("platform")
    pid = getattr(platform, "pid", None)
    if pid is not None:
        _note(f"{item.nodeid} {pid}")
    action, _, text = os.environ.get("VBC_FAULT", "").partition(":")
    if platform is None or _done or not text or text not in item.nodeid:
        return (yield)
    _done = True
    original = platform.execute

    def execute(ops):
        if any(isinstance(op, Poll) for op in ops):
            platform.execute = original  # once
            _hurt(action, pid)
        return original(ops)

    platform.execute = execute
    try:
        return (yield)
    finally:
        platform.execute = original
