"""Starting, failing and stopping QEMU: one-line start errors, no process left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from qtest_helpers import QEMU, needs_qemu

from conformance.driver.platform import PlatformError
from conformance.targets.qtest import QtestPlatform, QtestSpec, TargetStartError
from conformance.targets.qtest.errors import QtestTimeoutError

pytestmark = [needs_qemu, pytest.mark.qemu]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_bad_device_string_is_one_line_in_qemus_words():
    with pytest.raises(TargetStartError) as info:
        QtestPlatform(QtestSpec(qemu=QEMU, extra_args=("-device", "foo")))
    msg = str(info.value)
    assert "\n" not in msg
    assert "-device foo: 'foo' is not a valid device model name" in msg
    assert "qemu-system-x86_64: " in msg and "exited with status 1" in msg


def test_dut_without_its_drive():
    with pytest.raises(TargetStartError, match=r"can't find value 'nope'") as info:
        QtestPlatform(QtestSpec(qemu=QEMU, device="virtio-blk-pci,drive=nope",
                                blockdev="driver=null-co,node-name=other"))
    assert "\n" not in str(info.value)


def test_missing_binary():
    with pytest.raises(TargetStartError) as info:
        QtestPlatform(QtestSpec(qemu="/nonexistent/qemu-system-x86_64"))
    assert str(info.value) == "QEMU binary not found: /nonexistent/qemu-system-x86_64"
    with pytest.raises(TargetStartError, match="QEMU binary not found: no-such-qemu$"):
        QtestPlatform(QtestSpec(qemu="no-such-qemu"))


def test_binary_that_is_not_qemu(tmp_path):
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\necho 'fake-qemu: cannot do that' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(TargetStartError) as info:
        QtestPlatform(QtestSpec(qemu=str(fake)))
    assert str(info.value) == "QEMU exited with status 3 at start: fake-qemu: cannot do that"


def test_close_leaves_no_process():
    p = QtestPlatform(QtestSpec(qemu=QEMU))
    pid = p.pid
    workdir = p._workdir
    assert running(pid)
    p.close()
    p.close()  # idempotent
    assert not running(pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie either
    assert not os.path.exists(workdir)
    with pytest.raises(PlatformError, match="closed"):
        p.config_read(0, 4)


def test_start_failure_leaves_no_process_or_files(tmp_path):
    before = set(os.listdir("/tmp"))
    with pytest.raises(TargetStartError):
        QtestPlatform(QtestSpec(qemu=QEMU, extra_args=("-device", "foo")))
    leftover = {d for d in set(os.listdir("/tmp")) - before if d.startswith("vbc-qtest-")}
    assert not leftover


@pytest.mark.parametrize("sig, words", [
    (signal.SIGKILL, "QEMU was killed by SIGKILL"),
    (signal.SIGTERM, "QEMU exited with status 0"),  # QEMU shuts down cleanly on SIGTERM
])
def test_qemu_killed_mid_session(sig, words):
    # The CPU flag makes QEMU print a warning at start, so there is a stderr line to report.
    p = QtestPlatform(QtestSpec(qemu=QEMU, extra_args=("-cpu", "qemu64,+vmx")))
    try:
        assert p.config_read(0, 2) == 0x1AF4
        os.kill(p.pid, sig)
        wait_gone(p.pid)
        with pytest.raises(PlatformError) as info:
            p.config_read(0, 2)
        msg = str(info.value)
        assert words in msg.splitlines()[0]
        assert "last QEMU stderr lines:" in msg
        assert "TCG doesn't support requested feature" in msg
        with pytest.raises(PlatformError):  # stays failed, does not hang
            p.mem_read(0x200000, 4)
    finally:
        p.close()


def test_hung_qemu_times_out():
    p = QtestPlatform(QtestSpec(qemu=QEMU, timeout=0.5))
    try:
        os.kill(p.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(QtestTimeoutError) as info:
            p.config_read(0, 2)
        assert time.monotonic() - t0 < 3
        assert str(info.value).startswith(
            "QEMU is stopped (SIGSTOP or a debugger) and answers nothing: "
            "no answer to 'outl 0xcf8' within 0.5s\n")
        assert not p.healthy()
    finally:
        os.kill(p.pid, signal.SIGCONT)
        p.close()


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from conformance.targets.qtest import QtestPlatform, QtestSpec
    p = QtestPlatform(QtestSpec(qemu={qemu!r}))
    print(p.pid, p._workdir, flush=True)
    if {mode!r} == "exit":
        sys.exit(0)  # without close(): atexit must clean up
    time.sleep(60)
""")


@pytest.mark.parametrize("mode, sig", [
    ("exit", None),                 # interpreter exit without close()
    ("wait", signal.SIGINT),        # Ctrl-C: KeyboardInterrupt, then atexit
    ("wait", signal.SIGKILL),       # no Python cleanup at all: PR_SET_PDEATHSIG
])
def test_no_qemu_outlives_the_suite(mode, sig):
    code = _CHILD.format(root=ROOT, qemu=QEMU, mode=mode)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        pid_text, workdir = child.stdout.readline().split()
        qemu_pid = int(pid_text)
        if mode == "wait":  # an exiting child may already have taken QEMU with it
            assert running(qemu_pid)
        if sig is not None:
            child.send_signal(sig)
        child.wait(60)
        assert wait_gone(qemu_pid), f"QEMU {qemu_pid} outlived its parent ({mode}, {sig})"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if sig == signal.SIGKILL:  # a SIGKILLed suite cannot remove its temp dir itself
            shutil.rmtree(workdir, ignore_errors=True)


def test_forgotten_platform_is_closed_when_collected():
    import gc

    p = QtestPlatform(QtestSpec(qemu=QEMU))
    pid = p.pid
    del p
    gc.collect()
    assert wait_gone(pid)


def test_platform_from_a_worker_thread():
    import threading

    box = {}

    def work():
        with QtestPlatform(QtestSpec(qemu=QEMU)) as p:
            box["pid"] = p.pid
            box["id"] = p.config_read(0, 4)

    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert box["id"] == 0x1042_1AF4
    assert not running(box["pid"])
