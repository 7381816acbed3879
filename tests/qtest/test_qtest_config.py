"""qtest target mapping validation: every mistake is one line naming where and what."""

from __future__ import annotations

import pytest

from conformance.targets.qtest import QtestSpec, TargetConfigError, qtest_spec_from_mapping
from conformance.targets.qtest.backing import pattern_bytes, sector_pattern


def test_defaults():
    spec = qtest_spec_from_mapping({}, "targets.yaml: qemu")
    assert spec == QtestSpec()
    assert spec.machine == "q35"
    assert spec.device_arg().endswith(",addr=04.0")
    assert spec.devfn == (4, 0)
    assert spec.memory_bytes == 256 << 20


def test_full_mapping():
    spec = qtest_spec_from_mapping({
        "type": "qtest", "qemu": "/opt/qemu/bin/qemu-system-x86_64", "machine": "pc",
        "device": "virtio-blk-pci,drive=d0,addr=05.0", "blockdev": "driver=null-co,node-name=d0",
        "extra_args": ["-accel", "tcg"], "memory": "512M", "timeout": 3,
    }, "t")
    assert spec.machine == "pc" and spec.devfn == (5, 0)
    assert spec.device_arg() == "virtio-blk-pci,drive=d0,addr=05.0"
    assert spec.extra_args == ("-accel", "tcg")
    assert spec.memory == "512M" and spec.timeout == 3.0


@pytest.mark.parametrize("mapping, key, words", [
    ({"qemu_path": "x"}, "qemu_path", "unknown key"),
    ({"machine": "virt"}, "machine", "q35, pc"),
    ({"machine": 35}, "machine", "non-empty string"),
    ({"device": "virtio-net-pci"}, "device", "virtio-blk-pci"),
    ({"device": "virtio-blk-pci,addr=zz"}, "device", "bad addr"),
    ({"device": "virtio-blk-pci,bus=pcie.1"}, "device", "root bus"),
    ({"drive": "file=a", "blockdev": "driver=null-co"}, "blockdev", "not both"),
    ({"disk_size": "lots"}, "disk_size", "size like"),
    ({"disk_size": 1000}, "disk_size", "multiple of 512"),
    ({"disk_size": "1M", "drive": "file=x"}, "disk_size", "only applies"),
    ({"extra_args": "-s"}, "extra_args", "list of strings"),
    ({"extra_args": ["-s", 1]}, "extra_args", "list of strings"),
    ({"memory": "256"}, "memory", "whole number of MiB"),
    ({"memory": "1.5G"}, "memory", "size like"),
    ({"timeout": 0}, "timeout", "positive"),
    ({"timeout": True}, "timeout", "positive"),
    ({"type": "ssh"}, "type", "'qtest'"),
])
def test_bad_mapping_is_one_line(mapping, key, words):
    with pytest.raises(TargetConfigError) as info:
        qtest_spec_from_mapping(mapping, "targets.yaml: targets.q")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"targets.yaml: targets.q: {key}: ")
    assert words in msg


def test_not_a_mapping():
    with pytest.raises(TargetConfigError, match="^here: expected a mapping"):
        qtest_spec_from_mapping(["qemu"], "here")  # type: ignore[arg-type]


def test_sector_pattern():
    one = sector_pattern(1)
    assert len(one) == 512
    assert int.from_bytes(one[:8], "little") == 1 << 8
    assert len({sector_pattern(lba) for lba in range(64)}) == 64
    both = sector_pattern(0) + sector_pattern(1)
    assert pattern_bytes(500, 30) == both[500:530]
