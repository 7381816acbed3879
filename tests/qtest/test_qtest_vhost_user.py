"""Another implementation behind the qtest target: vhost-user-blk-pci served by
qemu-storage-daemon (Debian ships it in qemu-system-common).

The test starts the backend itself, as a user would, exporting a raw image the
target knows as ``backing_file``; guest RAM becomes a shared memfd
automatically (vhost-user), so the daemon can reach the rings and buffers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from qtest_helpers import QEMU, QEMU_10, needs_qemu

from conformance.selfcheck import run_outcomes
from conformance.targets.qtest import QtestPlatform, QtestSpec

QSD = shutil.which("qemu-storage-daemon")
pytestmark = [needs_qemu, pytest.mark.qemu,
              pytest.mark.skipif(QSD is None, reason="no qemu-storage-daemon on PATH "
                                                     "(Debian: qemu-system-common)")]
DISK = 16 << 20
DATA_PATH_CASES = {"test_in_returns_backing_data", "test_in_last_sector",
                   "test_out_lands_on_disk", "test_flush"}


@pytest.fixture
def backend(tmp_path):
    """qemu-storage-daemon exporting a 16 MiB raw image over vhost-user-blk."""
    image = tmp_path / "vu.raw"
    with open(image, "wb") as f:
        f.truncate(DISK)
    sock = tmp_path / "vu.sock"
    log = open(tmp_path / "qsd.log", "w+")
    proc = subprocess.Popen(
        [QSD, "--blockdev", f"driver=file,node-name=file0,filename={image}",
         "--blockdev", "driver=raw,node-name=disk0,file=file0",
         "--export", f"type=vhost-user-blk,id=exp0,node-name=disk0,writable=on,"
                     f"addr.type=unix,addr.path={sock}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            log.seek(0)
            assert proc.poll() is None, f"qemu-storage-daemon exited: {log.read()}"
            assert time.monotonic() < deadline, "qemu-storage-daemon made no socket in 10s"
            time.sleep(0.02)
        yield image, sock
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def vhost_user_options(image, sock) -> dict:
    return {
        "device": "vhost-user-blk-pci,chardev=vu0,disable-legacy=on",
        "extra_args": ["-chardev", f"socket,id=vu0,path={sock}"],
        "backing_file": str(image),
    }


def test_shared_memory_and_outside_disk(backend):
    image, sock = backend
    opts = vhost_user_options(image, sock)
    with QtestPlatform(QtestSpec(qemu=QEMU, device=opts["device"],
                                 extra_args=tuple(opts["extra_args"]),
                                 backing_file=opts["backing_file"])) as p:
        d = p.describe()
        assert d["shared_memory"] is True
        assert "memory-backend-memfd" in d["command_line"]
        assert "-blockdev" not in d["command_line"]  # the disk lives in the daemon
        assert p.config_read(0, 4) == 0x1042_1AF4  # a modern virtio block function
        # The suite filled the daemon's image with its sector pattern.
        from conformance.targets.qtest.backing import pattern_bytes
        assert p.backing_read(4096, 64) == pattern_bytes(4096, 64)


@pytest.mark.parametrize("qemu", [
    QEMU,
    pytest.param(QEMU_10, marks=pytest.mark.skipif(
        not os.path.exists(QEMU_10), reason=f"no {QEMU_10} (bash ci/install-qemu.sh)")),
], ids=["qemu", "qemu-10.0"])
def test_request_cases_through_vhost_user_blk(backend, tmp_path, qemu):
    image, sock = backend
    opts = vhost_user_options(image, sock)
    target = tmp_path / "vhost-user.yaml"
    target.write_text(
        "kind: qtest\nname: vhost-user\n"
        f"qemu: {qemu}\ndevice: {opts['device']}\nbacking_file: {image}\n"
        f"extra_args: [-chardev, 'socket,id=vu0,path={sock}']\n")
    results = run_outcomes(target, ["-k", "test_requests.py"])
    assert results, "no request case ran"
    assert not [n for n, (o, _) in results.items() if o == "error"], results
    # The plain data path: reads checked against the image, writes found in it.
    data_path = {n: o for n, (o, _) in results.items()
                 if n.split("::")[1].split("[")[0] in DATA_PATH_CASES}
    assert {n.split("::")[1].split("[")[0] for n in data_path} == DATA_PATH_CASES
    assert len(data_path) >= 7 and set(data_path.values()) == {"passed"}, data_path
