"""Taking and giving back the function: unbind/bind, saved registers, quiesce, orphans."""

from __future__ import annotations

import json
import os
import time

import pytest
from agent_fake_sysfs import BAR4_START, DEVICE_STATUS, FakeFunction, FakeKernel, FakeTree

from guest_agent.devices import AgentError, Sysfs, select_function
from guest_agent.function import HeldFunction, Journal, give_back_orphans

A = "0000:00:0a.0"


@pytest.fixture
def env(tmp_path):
    tree = FakeTree(tmp_path, [FakeFunction(A, partitions=["vda1"])])
    sysfs = Sysfs(str(tree.sys), str(tree.proc))
    journal = Journal(str(tree.state))
    with FakeKernel(tree) as kernel:
        yield tree, sysfs, journal, kernel


def take(sysfs, journal) -> HeldFunction:
    held = HeldFunction(sysfs, journal, select_function(sysfs, None, "DUT123"), settle=3.0)
    held.take()
    return held


def test_take_unbinds_journals_and_disables_intx(env):
    tree, sysfs, journal, kernel = env
    held = take(sysfs, journal)
    assert kernel.log == [("unbind", A)]
    assert tree.bound(A) is None
    assert tree.command(A) == 0x0103 | 0x400  # INTx Disable added, the rest kept
    entry = json.loads((tree.state / A).read_text())
    assert entry == {"pid": os.getpid(), "serial": "DUT123", "driver": "virtio-pci"}
    held.give_back()


def test_bar_access_reaches_the_resource_file(env):
    tree, sysfs, journal, _ = env
    held = take(sysfs, journal)
    bar = held.bar(4)
    bar.write(0x10, 4, 0x11223344)
    bar.write(0x16, 2, 0xBEEF)
    bar.write(0x14, 1, 0x0F)
    raw = tree.bar4(A)
    assert raw[0x10:0x18] == bytes.fromhex("44332211" "0f00" "efbe")
    assert (bar.read(0x10, 4), bar.read(0x14, 1), bar.read(0x16, 2)) == (0x11223344, 0x0F, 0xBEEF)
    with pytest.raises(AgentError, match="outside"):
        bar.read(0x4000, 4)
    held.give_back()


def test_moved_bar_register_blocks_bar_access_until_restored(env):
    tree, sysfs, journal, _ = env
    held = take(sysfs, journal)
    held.config_write(0x20, 4, 0xFFFFFFFF)  # BAR sizing writes all-ones ...
    with pytest.raises(AgentError, match=f"BAR4 register holds .* not the address "
                                         f"{BAR4_START:#x}"):
        held.bar(4)
    held.config_write(0x20, 4, BAR4_START | 0xC)  # ... and restores the original
    assert held.bar(4).read(0, 4) == 0
    held.give_back()


def test_quiesce_clears_bus_master_and_resets_the_device(env):
    tree, sysfs, journal, _ = env
    held = take(sysfs, journal)
    held.config_write(0x04, 2, 0x0106)  # memory + bus master, as the driver leaves it
    held.bar(4).write(DEVICE_STATUS, 1, 0x0F)  # DRIVER_OK etc.
    held.quiesce()
    assert tree.bar4(A)[DEVICE_STATUS] == 0
    assert tree.command(A) & 0x4 == 0
    assert tree.command(A) & 0x2 == 0x2
    held.give_back()


def test_give_back_restores_registers_and_rebinds(env):
    tree, sysfs, journal, kernel = env
    held = take(sysfs, journal)
    held.config_write(0x04, 2, 0x0506)
    held.config_write(0x24, 4, 0x12345678)  # a case left the upper BAR half wrong
    note = held.give_back()
    assert note == "given back to virtio-pci as vda"
    assert kernel.log == [("unbind", A), ("bind", A)]
    assert tree.bound(A) == "virtio-pci"
    assert tree.command(A) == 0x0103
    assert tree.config(A)[0x24:0x28] == bytes(4)
    assert not (tree.state / A).exists()


def test_orphan_of_a_dead_agent_is_given_back(env):
    tree, sysfs, journal, kernel = env
    held = take(sysfs, journal)
    held.held = False  # as if this agent had been SIGKILLed: nothing gives it back
    entry = json.loads((tree.state / A).read_text())
    entry["pid"] = 2 ** 22 + 12345  # no such process
    (tree.state / A).write_text(json.dumps(entry))
    assert give_back_orphans(sysfs, journal) == [A]
    assert not (tree.state / A).exists()
    for _ in range(300):
        if tree.bound(A) == "virtio-pci":
            break
        time.sleep(0.01)
    assert tree.bound(A) == "virtio-pci"
    assert kernel.log[-1] == ("bind", A)


def test_journal_of_a_live_agent_is_left_alone(env):
    tree, sysfs, journal, kernel = env
    held = take(sysfs, journal)
    entry = json.loads((tree.state / A).read_text())
    entry["pid"] = os.getppid()  # another agent that is still running
    (tree.state / A).write_text(json.dumps(entry))
    assert give_back_orphans(sysfs, journal) == []
    assert (tree.state / A).exists()
    held.give_back()


def test_no_hugepages_is_one_clear_line(tmp_path):
    from guest_agent.dma import HugeMemory

    tree = FakeTree(tmp_path, [FakeFunction(A)], hugepages=0)
    with pytest.raises(AgentError) as info:
        HugeMemory(16, str(tree.proc))
    assert info.value.code == "no-hugepages"
    assert str(info.value) == (
        f"no free 2 MiB hugepages (HugePages_Free is 0 in {tree.proc}/meminfo): boot the guest "
        "with hugepages=16 or write 16 to /proc/sys/vm/nr_hugepages")


def test_dma_allocations_stay_inside_physically_contiguous_runs():
    from guest_agent.dma import HUGE_PAGE, DmaMemory

    mem = DmaMemory()
    pages = {pfn: memoryview(bytearray(HUGE_PAGE)) for pfn in (7, 6, 5, 9)}  # 5-7 and 9
    mem._set_pages(pages)
    assert mem.runs == [(5 * HUGE_PAGE, 8 * HUGE_PAGE), (9 * HUGE_PAGE, 10 * HUGE_PAGE)]
    big = mem.alloc(4 * HUGE_PAGE // 2, 4096)  # 4 MiB: only the first run holds it
    assert big == 5 * HUGE_PAGE
    data = bytes(range(256)) * 64
    mem.write(6 * HUGE_PAGE - 100, data)  # across a page boundary inside the run
    assert mem.read(6 * HUGE_PAGE - 100, len(data)) == data
    with pytest.raises(AgentError, match="cannot fit 8388608 bytes"):
        mem.alloc(8 << 20, 4096)
    mem.rewind()
    assert mem.alloc(64, 64) == 5 * HUGE_PAGE
