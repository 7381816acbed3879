"""The qtest client: ordering, IRQ lines between answers, FAIL, big batches, timeouts."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from qtest_helpers import needs_qemu

from conformance.targets.qtest import protocol as qt
from conformance.targets.qtest.errors import QemuDiedError, QtestCommandError, QtestTimeoutError


def fake_qemu(script):
    """A socketpair whose far end runs ``script(lines) -> reply bytes`` per read."""
    ours, theirs = socket.socketpair()

    def serve():
        buf = b""
        with theirs:
            while True:
                data = theirs.recv(65536)
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                reply = script([ln.decode() for ln in lines])
                if reply is None:
                    return
                theirs.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return ours


def test_irq_lines_between_answers_are_split_off():
    def script(lines):
        out = b""
        for i, _ in enumerate(lines):
            out += b"IRQ raise 20\n" if i == 0 else b""
            out += f"OK 0x{i:x}\n".encode() + (b"IRQ lower 20\nIRQ raise 5\n" if i == 1 else b"")
        return out

    c = qt.QtestClient(fake_qemu(script), timeout=2)
    assert c.pipeline(["readl 0x0", "readl 0x4", "readl 0x8"]) == ["0x0", "0x1", "0x2"]
    assert c.irq_levels == {20: False, 5: True}
    assert c.irq_raises == {20: 1, 5: 1}


def test_fail_answer_keeps_the_stream_in_step():
    def script(lines):
        return b"".join(b"FAIL Unknown command 'x'\n" if ln == "x" else b"OK 0x7\n"
                        for ln in lines)

    c = qt.QtestClient(fake_qemu(script), timeout=2)
    with pytest.raises(QtestCommandError, match="Unknown command"):
        c.pipeline(["readb 0x0", "x", "readb 0x1"])
    assert c.readb(0) == 7  # the answers after the FAIL were consumed
    assert not c.supports("x")
    assert c.supports("readb 0x0")


def test_silence_is_a_timeout_and_the_connection_stays_failed():
    c = qt.QtestClient(fake_qemu(lambda lines: b""), timeout=0.2,
                       diagnose=lambda: "QEMU is still running")
    with pytest.raises(QtestTimeoutError) as info:
        c.readl(0x10)
    assert str(info.value) == "QEMU is still running: no answer to 'readl 0x10' within 0.2s"
    with pytest.raises(QemuDiedError, match="no answer to 'readl 0x10'"):
        c.readl(0x10)
    assert not c.usable


def test_a_timeout_quotes_no_payload():
    c = qt.QtestClient(fake_qemu(lambda lines: b""), timeout=0.2,
                       diagnose=lambda: "QEMU is stopped\nlast QEMU stderr lines:\n  boom")
    with pytest.raises(QtestTimeoutError) as info:
        c.memwrite(0x1000, b"x" * 4096)
    assert str(info.value) == ("QEMU is stopped: no answer to 'b64write 0x1000' within 0.2s\n"
                               "last QEMU stderr lines:\n  boom")


def test_eof_is_qemu_died():
    c = qt.QtestClient(fake_qemu(lambda lines: None), timeout=2,
                       diagnose=lambda: "QEMU was killed by SIGKILL")
    with pytest.raises(QemuDiedError, match="^QEMU was killed by SIGKILL: qtest connection "
                                            "closed by QEMU$"):
        c.readl(0)


@needs_qemu
@pytest.mark.qemu
def test_big_batches_do_not_deadlock(platform):
    """Far more answer bytes than a socket buffer holds, sent as one batch."""
    c = platform.qtest
    addr = platform.dma_alloc(4 << 20)
    data = os.urandom(4 << 20)
    c.memwrite(addr, data)  # 4 x 1 MiB b64write lines
    assert c.memread(addr, 4 << 20) == data
    answers = c.pipeline([qt.read_cmd(4, addr + 4 * (i % 1024)) for i in range(50_000)])
    words = [int.from_bytes(data[4 * j:4 * j + 4], "little") for j in range(1024)]
    assert [qt.parse_int(a) for a in answers] == [words[i % 1024] for i in range(50_000)]
    big = c.pipeline([qt.b64read_cmd(addr, 65536)] * 64)  # 5.6 MB of answers
    assert all(qt.parse_b64(b) == data[:65536] for b in big)


@needs_qemu
@pytest.mark.qemu
def test_clock_step_is_detected(platform):
    # Debian's QEMU has no qtest accelerator: clock_step is an unknown command there.
    assert platform.describe()["clock_step"] in (True, False)
