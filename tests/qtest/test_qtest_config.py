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
    ({"machine": "virt"}, "machine", "q35, pc, pc-q35-X.Y or pc-i440fx-X.Y, got 'virt'"),
    ({"machine": "pc-q35"}, "machine", "got 'pc-q35'"),
    ({"machine": "pc-q35-7.2x"}, "machine", "got 'pc-q35-7.2x'"),
    ({"machine": 35}, "machine", "non-empty string"),
    ({"device": "drive=dut,serial=x"}, "device", "driver name first"),
    ({"device": "virtio-blk-pci,bus=pci.0"}, "device", "root bus pcie.0"),
    ({"device": "virtio-blk-pci,bus=pcie.0", "machine": "pc-i440fx-7.2"}, "device",
     "root bus pci.0"),
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
    ({"data_dir": "/nonexistent/share/qemu"}, "data_dir", "no such directory"),
    ({"data_dir": "/", "extra_args": ["-L", "/"]}, "data_dir", "not both"),
    ({"shared_memory": "yes"}, "shared_memory", "true or false"),
    ({"backing_file": "/nonexistent.raw"}, "backing_file", "No such file"),
    ({"backing_file": "/"}, "backing_file", "not a regular file"),
])
def test_bad_mapping_is_one_line(mapping, key, words):
    with pytest.raises(TargetConfigError) as info:
        qtest_spec_from_mapping(mapping, "targets.yaml: targets.q")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"targets.yaml: targets.q: {key}: ")
    assert words in msg


@pytest.mark.parametrize("machine, family", [
    ("q35", "q35"), ("pc", "pc"), ("pc-q35-7.2", "q35"), ("pc-q35-10.0", "q35"),
    ("pc-i440fx-7.2", "pc"), ("pc-i440fx-2.12", "pc"),
])
def test_versioned_machine_types_map_to_their_chipset(machine, family):
    spec = qtest_spec_from_mapping({"machine": machine}, "t")
    assert spec.machine == machine
    assert spec.machine_family == family
    assert spec.root_bus == {"q35": "pcie.0", "pc": "pci.0"}[family]


def test_other_device_implementations():
    spec = qtest_spec_from_mapping(
        {"device": "vhost-user-blk-pci,chardev=vu0,disable-legacy=on"}, "t")
    assert spec.device_driver == "vhost-user-blk-pci"
    assert spec.uses_shared_memory  # automatic for vhost-user
    assert spec.created_disk_node is None  # no drive=: the backend has the disk
    assert spec.device_arg() == "vhost-user-blk-pci,chardev=vu0,disable-legacy=on,addr=04.0"
    forced = qtest_spec_from_mapping({"shared_memory": False,
                                      "device": "vhost-user-blk-pci,chardev=vu0"}, "t")
    assert not forced.uses_shared_memory
    default = qtest_spec_from_mapping({}, "t")
    assert not default.uses_shared_memory and default.created_disk_node == "dut"
    assert qtest_spec_from_mapping({"shared_memory": True}, "t").uses_shared_memory


def test_backing_file_is_a_raw_image(tmp_path):
    img = tmp_path / "img.raw"
    img.write_bytes(b"\0" * 4096)
    spec = qtest_spec_from_mapping({"backing_file": str(img)}, "t")
    assert spec.backing_file == str(img) and spec.created_disk_node is None
    img.write_bytes(b"\0" * 1000)
    with pytest.raises(TargetConfigError, match=r"^t: backing_file: .* is 1000 bytes, not a "):
        qtest_spec_from_mapping({"backing_file": str(img)}, "t")
    img.write_bytes(b"\0" * 512)
    with pytest.raises(TargetConfigError, match="^t: disk_size: only applies"):
        qtest_spec_from_mapping({"backing_file": str(img), "disk_size": "1M"}, "t")


def test_data_dir(tmp_path):
    spec = qtest_spec_from_mapping({"data_dir": str(tmp_path)}, "t")
    assert spec.data_dir == str(tmp_path)
    assert qtest_spec_from_mapping({}, "t").data_dir is None


def test_prefix_data_dir(tmp_path):
    from conformance.targets.qtest.process import prefix_data_dir

    binary = tmp_path / "usr" / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    assert prefix_data_dir(str(binary)) is None  # no share/qemu beside it
    (tmp_path / "usr" / "share" / "qemu").mkdir(parents=True)
    assert prefix_data_dir(str(binary)) == str(tmp_path / "usr" / "share" / "qemu")
    assert prefix_data_dir("/usr/bin/qemu-system-x86_64") is None  # system-wide
    elsewhere = tmp_path / "qemu-system-x86_64"
    elsewhere.write_text("")
    assert prefix_data_dir(str(elsewhere)) is None  # not in a bin directory


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


def test_pattern_image_and_file(tmp_path):
    from conformance.targets.qtest.backing import create_pattern_file, pattern_image

    image = pattern_image(64 * 512)
    assert image == b"".join(sector_pattern(lba) for lba in range(64))
    path = tmp_path / "disk.raw"
    path.write_bytes(b"\xff" * (128 * 512))  # longer, and dirty
    create_pattern_file(str(path), 64 * 512, truncate=False)  # in place: keeps the tail
    data = path.read_bytes()
    assert data[:64 * 512] == image and data[64 * 512:] == b"\xff" * (64 * 512)
    create_pattern_file(str(path), 64 * 512)
    assert path.read_bytes() == image
    with pytest.raises(ValueError, match="not a positive multiple of 512"):
        pattern_image(1000)
