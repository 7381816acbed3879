"""Block requests (5.2.6) end to end through a split queue written by hand."""

from __future__ import annotations

import os
import struct

import pytest
from refdev_harness import DATA, DEVCFG

from conformance import spec

IN, OUT, FLUSH, GET_ID = (spec.VIRTIO_BLK_T_IN, spec.VIRTIO_BLK_T_OUT, spec.VIRTIO_BLK_T_FLUSH,
                          spec.VIRTIO_BLK_T_GET_ID)
DISCARD, WZ, SE = (spec.VIRTIO_BLK_T_DISCARD, spec.VIRTIO_BLK_T_WRITE_ZEROES,
                   spec.VIRTIO_BLK_T_SECURE_ERASE)
OK, IOERR, UNSUPP = spec.VIRTIO_BLK_S_OK, spec.VIRTIO_BLK_S_IOERR, spec.VIRTIO_BLK_S_UNSUPP
NEXT, WRITE = spec.VIRTQ_DESC_F_NEXT, spec.VIRTQ_DESC_F_WRITE


def ready(make_harness, mapping=None, drop=()):
    h = make_harness(mapping)
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED, *drop))
    h.setup_queue(0)
    h.driver_ok()
    return h


def submit(h, rtype, sector=0, data=b"", data_in=0):
    """One request; returns (status byte, used length, data read back)."""
    st = h.request(rtype, sector, data, data_in)
    n = h.used_idx()
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == (n + 1) & 0xFFFF, h.dev.needs_reset_reasons
    head, length = h.used_elem(n)
    assert head == 0
    return h.mem.read(st, 1)[0], length, h.mem.read(DATA + 0x100, data_in)


def disk(h, sector, n):
    with open(h.dev.backing_path, "rb") as f:
        f.seek(sector * 512)
        return f.read(n)


def segments(*segs):
    return b"".join(struct.pack("<QII", *s) for s in segs)


def test_out_then_in(make_harness):
    h = ready(make_harness)
    payload = bytes(range(256)) * 8
    assert submit(h, OUT, 7, payload)[:2] == (OK, 1)
    assert disk(h, 7, 2048) == payload
    status, used, got = submit(h, IN, 7, data_in=2048)
    assert (status, used, got) == (OK, 2049, payload)


def test_in_of_fresh_disk_is_zero(make_harness):
    h = ready(make_harness)
    assert submit(h, IN, 100, data_in=512) == (OK, 513, bytes(512))


def test_in_last_sector_ok_and_beyond_capacity_ioerr(make_harness):
    h = ready(make_harness)
    assert submit(h, IN, 32767, data_in=512)[:2] == (OK, 513)
    status, used, got = submit(h, IN, 32767, data_in=1024)
    assert (status, used) == (IOERR, 1)
    assert got == b"\xcc" * 1024  # nothing transferred


def test_out_beyond_capacity_writes_nothing(make_harness):
    h = ready(make_harness)
    assert submit(h, OUT, 32767, b"\x5a" * 1024)[:2] == (IOERR, 1)
    assert disk(h, 32767, 512) == bytes(512)


@pytest.mark.parametrize("rtype", [IN, OUT])
def test_data_not_a_multiple_of_512_is_ioerr(make_harness, rtype):
    h = ready(make_harness)
    if rtype == OUT:
        assert submit(h, OUT, 0, b"\x11" * 513)[:2] == (IOERR, 1)
        assert disk(h, 0, 513) == bytes(513)
    else:
        assert submit(h, IN, 0, data_in=100)[:2] == (IOERR, 1)


def test_flush(make_harness):
    assert submit(ready(make_harness), FLUSH)[:2] == (OK, 1)


def test_flush_not_negotiated_is_unsupp(make_harness):
    h = ready(make_harness, drop=(spec.VIRTIO_BLK_F_FLUSH, spec.VIRTIO_BLK_F_CONFIG_WCE))
    assert submit(h, FLUSH)[:2] == (UNSUPP, 1)


def test_get_id_is_nul_padded(make_harness):
    status, used, got = submit(ready(make_harness), GET_ID, data_in=20)
    assert (status, used, got) == (OK, 21, b"REFDEV0001" + bytes(10))


def test_get_id_full_length_serial(make_harness):
    h = ready(make_harness, {"serial": "ABCDEFGHIJKLMNOPQRST"})
    assert submit(h, GET_ID, data_in=20) == (OK, 21, b"ABCDEFGHIJKLMNOPQRST")


def test_get_lifetime(make_harness):
    h = ready(make_harness, {"pre_eol_info": 2, "lifetime_typ_a": 4, "lifetime_typ_b": 11,
                            "features": {"VIRTIO_BLK_F_LIFETIME": True}})
    assert submit(h, spec.VIRTIO_BLK_T_GET_LIFETIME, data_in=6) == (
        OK, 7, struct.pack("<HHH", 2, 4, 11))


def test_get_lifetime_not_negotiated(make_harness):
    h = ready(make_harness, drop=(spec.VIRTIO_BLK_F_LIFETIME,))
    assert submit(h, spec.VIRTIO_BLK_T_GET_LIFETIME, data_in=6)[:2] == (UNSUPP, 1)


@pytest.mark.parametrize("rtype", [2, 3, 5, 7, 12, 15, 0x80000000, 0xFFFFFFFF])
def test_unknown_and_legacy_types_are_unsupp(make_harness, rtype):
    assert submit(ready(make_harness), rtype)[:2] == (UNSUPP, 1)


def fill(h, sector, n, byte=0x77):
    assert submit(h, OUT, sector, bytes([byte]) * (512 * n))[0] == OK


@pytest.mark.parametrize("rtype, flags", [(DISCARD, 0), (WZ, 0), (WZ, 1), (SE, 0)])
def test_range_commands_zero_the_ranges(make_harness, rtype, flags):
    h = ready(make_harness)
    fill(h, 10, 8)
    status, used, _ = submit(h, rtype, 0, segments((11, 2, flags), (15, 1, flags)))
    assert (status, used) == (OK, 1)
    assert disk(h, 10, 8 * 512) == (b"\x77" * 512 + bytes(1024) + b"\x77" * 1024 + bytes(512)
                                    + b"\x77" * 1024)


@pytest.mark.parametrize("rtype, feature", [
    (DISCARD, spec.VIRTIO_BLK_F_DISCARD), (WZ, spec.VIRTIO_BLK_F_WRITE_ZEROES),
    (SE, spec.VIRTIO_BLK_F_SECURE_ERASE)])
def test_range_commands_need_their_feature(make_harness, rtype, feature):
    h = ready(make_harness, drop=(feature,))
    fill(h, 1, 1)
    assert submit(h, rtype, 0, segments((1, 1, 0)))[:2] == (UNSUPP, 1)
    assert disk(h, 1, 512) == b"\x77" * 512


@pytest.mark.parametrize("rtype, segs, expect", [
    (DISCARD, [(1, 1, 1)], UNSUPP),  # unmap on discard
    (SE, [(1, 1, 1)], UNSUPP),  # unmap is a write-zeroes flag
    (WZ, [(1, 1, 2)], UNSUPP),  # reserved flag bit
    (DISCARD, [(1, 1, 0x80000000)], UNSUPP),
    (DISCARD, [(1, 1, 0)] * 5, UNSUPP),  # more than max_discard_seg (4)
    (WZ, [(1, 65537, 0)], IOERR),  # more than max_write_zeroes_sectors
    (DISCARD, [(32767, 2, 0)], IOERR),  # beyond capacity
    (SE, [(1, 1, 0), (40000, 1, 0)], IOERR),  # second segment beyond capacity
])
def test_range_command_errors(make_harness, rtype, segs, expect):
    h = ready(make_harness)
    fill(h, 1, 1)
    assert submit(h, rtype, 0, segments(*segs))[:2] == (expect, 1)
    assert disk(h, 1, 512) == b"\x77" * 512  # nothing done


def test_range_command_with_partial_segment_is_ioerr(make_harness):
    h = ready(make_harness)
    assert submit(h, DISCARD, 0, segments((1, 1, 0))[:12])[:2] == (IOERR, 1)


def test_read_only_device(make_harness):
    h = ready(make_harness, {"read_only": True})
    assert h.dev.negotiated_features >> spec.VIRTIO_BLK_F_RO & 1
    assert submit(h, OUT, 3, b"\x42" * 512)[:2] == (IOERR, 1)
    assert disk(h, 3, 512) == bytes(512)
    assert submit(h, WZ, 0, segments((3, 1, 0)))[:2] == (IOERR, 1)
    assert submit(h, IN, 3, data_in=512)[:2] == (OK, 513)


def test_read_only_backing_file_opened_read_only(make_harness, tmp_path):
    img = tmp_path / "ro.img"
    img.write_bytes(b"\x99" * 4096)
    os.chmod(img, 0o444)
    h = ready(make_harness, {"read_only": True, "backing_file": str(img),
                             "capacity_sectors": 8})
    assert submit(h, IN, 1, data_in=512) == (OK, 513, b"\x99" * 512)


def test_caller_backing_file_is_kept_on_close(make_harness, tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(8192))
    h = ready(make_harness, {"backing_file": str(img), "capacity_sectors": 16})
    fill(h, 2, 1, 0x33)
    h.dev.close()
    assert img.read_bytes()[1024:1536] == b"\x33" * 512


def test_temp_backing_file_is_removed_on_close(make_harness):
    h = make_harness()
    path = h.dev.backing_path
    assert path.stat().st_size == 32768 * 512
    h.dev.close()
    assert not path.exists()


def test_any_descriptor_layout(make_harness):
    """2.7.4.1: header split over two descriptors; data and status in one descriptor."""
    h = ready(make_harness)
    fill(h, 9, 1, 0x21)
    h.mem.write(DATA, struct.pack("<IIQ", IN, 0, 9))
    h.desc(0, DATA, 5, NEXT, 1)
    h.desc(1, DATA + 5, 11, NEXT, 2)
    h.desc(2, DATA + 0x100, 513, WRITE)
    h.publish(0)
    h.notify(0)
    assert h.used_elem(1) == (0, 513)
    assert h.mem.read(DATA + 0x100, 513) == b"\x21" * 512 + bytes([OK])


def test_out_header_and_data_in_one_descriptor(make_harness):
    h = ready(make_harness)
    h.mem.write(DATA, struct.pack("<IIQ", OUT, 0, 4) + b"\x44" * 1024)
    h.desc(0, DATA, 16 + 1024, NEXT, 1)
    h.desc(1, DATA + 0x800, 1, WRITE)
    h.publish(0)
    h.notify(0)
    assert h.used_elem(0) == (0, 1)
    assert h.mem.read(DATA + 0x800, 1) == bytes([OK])
    assert disk(h, 4, 1024) == b"\x44" * 1024


def test_request_without_status_byte_needs_reset(make_harness):
    h = ready(make_harness)
    h.mem.write(DATA, struct.pack("<IIQ", FLUSH, 0, 0))
    h.desc(0, DATA, 16)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 0
    assert h.status() & spec.STATUS_DEVICE_NEEDS_RESET
    assert "status" in h.dev.needs_reset_reasons[0]


def test_request_with_short_header_needs_reset(make_harness):
    h = ready(make_harness)
    h.desc(0, DATA, 8, NEXT, 1)
    h.desc(1, DATA + 0x100, 1, WRITE)
    h.publish(0)
    h.notify(0)
    assert h.status() & spec.STATUS_DEVICE_NEEDS_RESET


def test_writeback_toggle_and_writethrough(make_harness):
    h = ready(make_harness)
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_WRITEBACK, 1) == 1
    assert h.dev.engine.writethrough is False
    h.dev.mmio_write(DEVCFG + spec.BLK_CFG_WRITEBACK, 1, 0)
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_WRITEBACK, 1) == 0
    assert h.dev.engine.writethrough is True
    assert submit(h, OUT, 0, b"\x01" * 512)[:2] == (OK, 1)


def test_writeback_is_read_only_without_config_wce(make_harness):
    h = ready(make_harness, drop=(spec.VIRTIO_BLK_F_CONFIG_WCE,))
    h.dev.mmio_write(DEVCFG + spec.BLK_CFG_WRITEBACK, 1, 0)
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_WRITEBACK, 1) == 1
    assert h.dev.engine.writethrough is False  # FLUSH negotiated: writeback cache


def test_config_wce_without_flush_starts_writethrough(make_harness):
    h = ready(make_harness, drop=(spec.VIRTIO_BLK_F_FLUSH,))
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_WRITEBACK, 1) == 0
    assert h.dev.engine.writethrough is True


def test_neither_flush_nor_wce_negotiated_means_writethrough(make_harness):
    h = ready(make_harness, drop=(spec.VIRTIO_BLK_F_FLUSH, spec.VIRTIO_BLK_F_CONFIG_WCE))
    assert h.dev.engine.writethrough is True


def test_device_config_layout(make_harness):
    h = make_harness({"capacity_sectors": 0x1_0000_0001, "num_queues": 3})
    raw = bytes(h.dev.mmio_read(DEVCFG + i, 1) for i in range(spec.BLK_CFG_SIZE))
    assert raw == struct.pack(
        "<QIIHBBIBBHIBBHIIIIIB3xIII", 0x1_0000_0001, 65536, 126, 32, 16, 63, 512, 0, 0, 1,
        128, 1, 0, 3, 65536, 4, 1, 65536, 4, 1, 65536, 4, 1)
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_CAPACITY, 4) == 1
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_CAPACITY + 4, 4) == 1
    assert h.dev.mmio_read(DEVCFG + spec.BLK_CFG_SIZE, 4) == 0


def test_in_scattered_over_elements_with_status_sharing_the_last(make_harness):
    h = ready(make_harness)
    payload = bytes(range(256)) * 6  # 1536 bytes = 3 sectors
    assert submit(h, OUT, 20, payload)[0] == OK
    h.mem.write(DATA, struct.pack("<IIQ", IN, 0, 20))
    h.desc(0, DATA, 16, NEXT, 1)
    h.desc(1, DATA + 0x1000, 1000, NEXT | WRITE, 2)
    h.desc(2, DATA + 0x2000, 100, NEXT | WRITE, 3)
    h.desc(3, DATA + 0x3000, 437, WRITE)  # 436 data bytes + the status byte
    h.publish(0)
    h.notify(0)
    assert h.used_elem(1) == (0, 1537)
    got = h.mem.read(DATA + 0x1000, 1000) + h.mem.read(DATA + 0x2000, 100) + h.mem.read(
        DATA + 0x3000, 436)
    assert got == payload
    assert h.mem.read(DATA + 0x3000 + 436, 1) == bytes([OK])


def test_out_gathered_from_elements_with_header_sharing_the_first(make_harness):
    h = ready(make_harness)
    payload = bytes(range(256)) * 4  # 1024 bytes
    h.mem.write(DATA, struct.pack("<IIQ", OUT, 0, 30) + payload[:100])
    h.mem.write(DATA + 0x1000, payload[100:])
    h.desc(0, DATA, 116, NEXT, 1)
    h.desc(1, DATA + 0x1000, 924, NEXT, 2)
    h.desc(2, DATA + 0x2000, 1, WRITE)
    h.publish(0)
    h.notify(0)
    assert h.used_elem(0) == (0, 1)
    assert h.mem.read(DATA + 0x2000, 1) == bytes([OK])
    assert disk(h, 30, 1024) == payload


def test_in_past_the_end_of_a_short_backing_file_reads_zeros(make_harness, tmp_path):
    img = tmp_path / "short.img"
    img.write_bytes(b"\x5b" * 700)  # shorter than the 8-sector capacity
    h = ready(make_harness, {"backing_file": str(img), "capacity_sectors": 8})
    status, used, got = submit(h, IN, 1, data_in=1024)
    assert (status, used) == (OK, 1025)
    assert got == b"\x5b" * 188 + bytes(836)
