"""Device selection and the safety rules, against a fake sysfs/proc tree."""

from __future__ import annotations

import pytest
from agent_fake_sysfs import FakeFunction, FakeTree

from guest_agent.devices import AgentError, Sysfs, select_function

A = "0000:00:0a.0"
B = "0000:00:0b.0"


def tree(tmp_path, functions, **kw) -> tuple[FakeTree, Sysfs]:
    t = FakeTree(tmp_path, functions, **kw)
    return t, Sysfs(str(t.sys), str(t.proc))


def refusal(sysfs: Sysfs, pci=None, serial=None) -> AgentError:
    with pytest.raises(AgentError) as info:
        select_function(sysfs, pci, serial)
    return info.value


def test_selects_by_serial_among_several(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, serial="OTHER", disk="vda"),
                               FakeFunction(B, serial="DUT123", disk="vdb", minor=16)])
    fn = select_function(sysfs, None, "DUT123")
    assert (fn.bdf, fn.serial, fn.disk_names, fn.driver) == (B, "DUT123", ["vdb"], "virtio-pci")


def test_selects_by_pci_address_without_domain(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A)])
    assert select_function(sysfs, "00:0a.0", None).bdf == A


def test_wrong_serial_for_the_pci_address_is_refused(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, serial="DUT123")])
    err = refusal(sysfs, A, "NOT-THIS-ONE")
    assert err.code == "refused"
    assert str(err) == (f"{A} has serial 'DUT123', not 'NOT-THIS-ONE': refusing a device that "
                        "was not selected")


def test_unknown_serial_lists_what_exists(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, serial="DUT123")])
    err = refusal(sysfs, serial="NOPE")
    assert err.code == "not-found"
    assert str(err) == ("no virtio-blk device with serial 'NOPE' "
                        f"(virtio-blk functions: {A}='DUT123')")


def test_unknown_pci_address(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A)])
    err = refusal(sysfs, pci="0000:00:1f.0")
    assert err.code == "not-found"
    assert "no virtio-blk PCI function at 0000:00:1f.0" in str(err)


def test_other_virtio_devices_are_not_candidates(tmp_path):
    # virtio-net (0x1041) with a serial file must never match.
    _, sysfs = tree(tmp_path, [FakeFunction(A, device_id=0x1041, serial="DUT123")])
    assert refusal(sysfs, serial="DUT123").code == "not-found"
    assert refusal(sysfs, pci=A).code == "not-found"


def test_mounted_partition_is_refused(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, partitions=["vda1", "vda2"])],
                    mounts=[("254:2", "/srv/data")])
    err = refusal(sysfs, serial="DUT123")
    assert err.code == "in-use"
    assert str(err) == f"{A} (vda): vda2 is mounted on /srv/data; refusing to touch it"


def test_device_holding_root_is_refused(tmp_path):
    t, sysfs = tree(tmp_path, [FakeFunction(A)])
    (t.proc / "self/mountinfo").write_text("20 1 254:0 / / rw - ext4 /dev/vda rw\n")
    err = refusal(sysfs, pci=A)
    assert (err.code, str(err)) == (
        "in-use", f"{A} (vda): vda holds the root filesystem; refusing to touch it")


def test_swap_is_refused(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, partitions=["vda1"])], swaps=["vda1"])
    err = refusal(sysfs, serial="DUT123")
    assert (err.code, str(err)) == ("in-use",
                                    f"{A} (vda): vda1 is in use as swap; refusing to touch it")


def test_disk_held_by_device_mapper_is_refused(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, holders=["dm-0"])])
    err = refusal(sysfs, serial="DUT123")
    assert (err.code, str(err)) == ("in-use",
                                    f"{A} (vda): vda is held by dm-0; refusing to touch it")


def test_function_bound_to_another_driver_is_refused(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, driver="vfio-pci", disk=None)])
    err = refusal(sysfs, pci=A)
    assert (err.code, str(err)) == ("in-use", f"{A} is bound to driver 'vfio-pci', not "
                                              "virtio-pci: refusing to take it")


def test_duplicate_serial_is_ambiguous(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A), FakeFunction(B, disk="vdb", minor=16)])
    err = refusal(sysfs, serial="DUT123")
    assert err.code == "ambiguous"
    assert A in str(err) and B in str(err)


def test_a_selector_is_required(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A)])
    assert refusal(sysfs).code == "bad-request"


def test_transitional_block_function_is_a_candidate(tmp_path):
    _, sysfs = tree(tmp_path, [FakeFunction(A, device_id=0x1001)])
    assert select_function(sysfs, None, "DUT123").device_id == 0x1001
