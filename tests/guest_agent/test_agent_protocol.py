"""The agent as a local process behind pipes: protocol round trips, malformed input, give-back.

The agent runs as ``python -m guest_agent.agent`` with the fake sysfs tree and
plain (non-hugetlb) memory; the host side is the real client and SshPlatform
over a pipe instead of an SSH channel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from agent_fake_sysfs import BAR4_START, FakeFunction, FakeKernel, FakeTree

from conformance.driver.platform import (
    BarRead,
    BarWrite,
    ConfigRead,
    ConfigWrite,
    MemRead,
    MemWrite,
    Poll,
    PollTimeout,
)
from conformance.targets.ssh.client import AgentClient, AgentLost, AgentRequestError
from conformance.targets.ssh.platform import SshPlatform
from conformance.targets.ssh.streams import PipeStream
from guest_agent import protocol as p

A = "0000:00:0a.0"
BASE = 0x4000_0000  # PlainMemory's made-up bus address


class Agent:
    def __init__(self, tree: FakeTree, *extra: str):
        self.tree = tree
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "guest_agent.agent", *tree.args(), "--plain-memory",
             "--settle", "3", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.stream = PipeStream(self.proc)
        self.client = AgentClient(self.stream, timeout=10)
        self.hello = self.client.start(20)

    def select(self) -> SshPlatform:
        selected = self.client.control(p.SELECT, {"serial": "DUT123"})
        return SshPlatform(self.client, selected, timeout=5)

    def wait(self, timeout: float = 60) -> int:  # generous: CI machines can be loaded
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def tree(tmp_path):
    t = FakeTree(tmp_path, [FakeFunction(A)])
    with FakeKernel(t) as kernel:
        t.kernel = kernel
        yield t


@pytest.fixture
def agent(tree):
    a = Agent(tree)
    yield a
    a.kill()


def test_hello_names_the_protocol_version(agent):
    assert agent.hello["version"] == p.VERSION
    assert agent.hello["pid"] == agent.proc.pid


def test_select_reports_the_device(agent, tree):
    plat = agent.select()
    assert plat.selected["bdf"] == A
    assert plat.selected["serial"] == "DUT123"
    assert plat.selected["disks"] == ["vda"]
    assert plat.describe()["serial"] == "DUT123"
    assert tree.bound(A) is None  # unbound while the agent holds it


def test_batch_round_trip(agent, tree):
    plat = agent.select()
    addr = plat.dma_alloc(4096, 4096)
    assert addr == BASE
    assert plat.dma_alloc(16, 64) == BASE + 4096
    results = plat.execute([
        MemWrite(addr, b"\x01\x02\x03\x04" * 4),
        MemRead(addr + 2, 6),
        ConfigRead(0, 4),
        ConfigWrite(0x0C, 1, 0x10),
        ConfigRead(0x0C, 1),
        BarWrite(4, 0x08, 4, 0xCAFEF00D),
        BarRead(4, 0x08, 2),
        Poll(addr, 2, 0xFFFF, 0x0201, True, 1.0),
    ])
    assert results == [None, b"\x03\x04\x01\x02\x03\x04", 0x1042_1AF4, None, 0x10, None,
                       0xF00D, 0x0201]
    assert tree.config(A)[0x0C] == 0x10
    assert tree.bar4(A)[8:12] == (0xCAFEF00D).to_bytes(4, "little")
    assert plat.mmio_window is None


def test_large_batches_are_compressed_both_ways(agent):
    plat = agent.select()
    addr = plat.dma_alloc(1 << 20, 4096)
    data = bytes(range(256)) * 1024  # 256 KiB
    sent = agent.client.bytes_sent
    got = plat.execute([MemWrite(addr, data), MemRead(addr, len(data))])
    assert got == [None, data]
    assert agent.client.bytes_sent - sent < len(data) // 4  # compressed on the way in


def test_poll_timeout_stops_the_batch(agent):
    plat = agent.select()
    addr = plat.dma_alloc(4096)
    poll = Poll(addr, 4, 0xFFFFFFFF, 7, True, 0.2)
    t0 = time.monotonic()
    with pytest.raises(PollTimeout) as info:
        plat.execute([MemWrite(addr, (5).to_bytes(4, "little")), MemRead(addr, 4), poll,
                      MemWrite(addr, (7).to_bytes(4, "little"))])
    assert 0.2 <= time.monotonic() - t0 < 5
    exc = info.value
    assert (exc.index, exc.last_value, exc.results) == (2, 5, [None, b"\x05\0\0\0"])
    assert exc.poll == poll
    assert plat.mem_read(addr, 4) == b"\x05\0\0\0"  # the op after the poll did not run


def test_unknown_op_code_is_refused_and_the_agent_goes_on(agent):
    plat = agent.select()
    kind, payload = agent.client.exchange(p.frame(p.BATCH, b"\x00\x63"))
    assert kind == p.ERROR
    assert p.parse_json(payload) == {"code": "bad-op", "message": "op 0: unknown op code 99"}
    assert plat.config_read(0, 2) == 0x1AF4


def test_truncated_mem_write_is_refused(agent):
    plat = agent.select()
    addr = plat.dma_alloc(4096)
    body = p.OP_STRUCTS[p.OP_MEM_WRITE].pack(p.OP_MEM_WRITE, addr, 100) + b"short"
    kind, payload = agent.client.exchange(p.frame(p.BATCH, b"\x00" + body))
    assert (kind, p.parse_json(payload)["code"]) == (p.ERROR, "bad-op")
    assert "runs past the end of the batch" in p.parse_json(payload)["message"]


def test_truncated_op_fields_are_refused(agent):
    agent.select()
    kind, payload = agent.client.exchange(p.frame(p.BATCH, b"\x00\x05\x00\x01"))
    assert kind == p.ERROR
    assert p.parse_json(payload)["message"].startswith("op 0: malformed")


def test_memory_outside_the_agents_dma_is_refused(agent):
    plat = agent.select()
    with pytest.raises(AgentRequestError) as info:
        plat.mem_read(0x1000, 4)
    assert info.value.code == "bad-op"
    assert str(info.value) == "address 0x1000 is not DMA memory this agent owns"


def test_batch_before_select_is_refused(agent):
    with pytest.raises(AgentRequestError) as info:
        agent.client.batch([(p.OP_CFG_READ, 0, 4)], 5)
    assert info.value.code == "not-selected"


def test_bad_json_and_unknown_kind_are_refused(agent):
    kind, payload = agent.client.exchange(p.frame(p.SELECT, b"{not json"))
    assert (kind, p.parse_json(payload)["code"]) == (p.ERROR, "bad-request")
    kind, payload = agent.client.exchange(p.frame(ord("?"), b""))
    assert p.parse_json(payload) == {"code": "bad-request", "message": "unknown request kind 63"}
    assert agent.proc.poll() is None


def test_broken_framing_ends_the_agent_and_gives_the_device_back(agent, tree):
    agent.select()
    kind, payload = agent.client.exchange(b"\x00\x00\x00\x00\x42")  # length 0: no kind byte
    assert kind == p.ERROR
    assert "frame length 0" in p.parse_json(payload)["message"]
    assert agent.wait() == 0
    assert tree.bound(A) == "virtio-pci"
    assert ("bind", A) in tree.kernel.log


def test_bye_gives_the_device_back(agent, tree):
    agent.select()
    note = agent.client.control(p.BYE)["note"]
    assert note == "given back to virtio-pci as vda"
    assert agent.wait() == 0
    assert tree.bound(A) == "virtio-pci"
    assert not (tree.state / A).exists()


def test_dropped_connection_gives_the_device_back(agent, tree):
    agent.select()
    agent.proc.stdin.close()  # what sshd does when the SSH connection drops
    assert agent.wait() == 0
    assert tree.bound(A) == "virtio-pci"
    assert not (tree.state / A).exists()


def test_sigterm_gives_the_device_back(agent, tree):
    agent.select()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait() == 0
    assert tree.bound(A) == "virtio-pci"


def test_silent_host_trips_the_watchdog(tree):
    a = Agent(tree, "--idle-timeout", "1")
    try:
        a.client.control(p.SELECT, {"serial": "DUT123"})
        assert tree.bound(A) is None
        assert a.wait(15) == 0
        assert tree.bound(A) == "virtio-pci"
        with pytest.raises(AgentLost):
            a.client.control(p.INFO)
    finally:
        a.kill()


def test_reprobe_with_rebind_cycles_the_kernel_driver(agent, tree):
    plat = agent.select()
    first = plat.dma_alloc(4096)
    note = agent.client.control(p.REPROBE, {"rebind": True})["note"]
    assert note == "given back to virtio-pci as vda"
    assert tree.kernel.log == [("unbind", A), ("bind", A), ("unbind", A)]
    assert tree.bound(A) is None
    assert plat.dma_alloc(4096) == first  # DMA memory rewound for the next case


def test_reprobe_restores_moved_bars(agent, tree):
    plat = agent.select()
    plat.config_write(0x20, 4, 0xFFFFFFFF)
    with pytest.raises(AgentRequestError, match="BAR4 register holds"):
        plat.bar_read(4, 0, 4)
    agent.client.control(p.REPROBE, {"rebind": False})
    assert int.from_bytes(tree.config(A)[0x20:0x24], "little") & ~0xF == BAR4_START
    assert plat.bar_read(4, 0, 4) == 0


def test_agent_survives_malformed_ops(agent):
    plat = agent.select()
    agent.client.exchange(p.frame(p.BATCH, b"\x00\x05\x00\x01"))
    assert plat.config_read(0, 2) == 0x1AF4


def test_posted_writes_go_with_the_next_read(agent, tree):
    plat = agent.select()
    rt = agent.client.round_trips
    for off in range(0x10, 0x20, 4):
        plat.bar_write(4, off, 4, off)
    assert agent.client.round_trips == rt  # held back ...
    assert plat.bar_read(4, 0x1C, 4) == 0x1C  # ... and in front of the read: one round trip
    assert agent.client.round_trips == rt + 1
    assert tree.bar4(A)[0x10:0x20] == b"".join(o.to_bytes(4, "little")
                                               for o in range(0x10, 0x20, 4))


def test_posted_write_reaches_the_device_while_the_case_sleeps(agent, tree):
    plat = agent.select()
    plat.config_write(0x0D, 1, 0x40)
    time.sleep(0.5)  # nothing else from the case: the flusher sends it
    assert tree.config(A)[0x0D] == 0x40


def test_poll_timeout_index_counts_only_the_callers_ops(agent):
    plat = agent.select()
    addr = plat.dma_alloc(4096)
    plat.mem_write(addr, b"\x01\0\0\0")  # posted
    poll = Poll(addr, 4, 0xFF, 2, True, 0.1)
    with pytest.raises(PollTimeout) as info:
        plat.execute([MemRead(addr, 4), poll])
    assert (info.value.index, info.value.last_value, info.value.results) == (
        1, 1, [b"\x01\0\0\0"])
