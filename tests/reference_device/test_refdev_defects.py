"""Every injectable defect changes exactly the behaviour it names.

missing-isr-cap, accept-unoffered-features and used-idx-no-wrap are covered in
test_refdev_pci, test_refdev_common_cfg and test_refdev_split.
"""

from __future__ import annotations

from refdev_harness import DATA

from conformance import spec

IN, OUT = spec.VIRTIO_BLK_T_IN, spec.VIRTIO_BLK_T_OUT


def ready(make_harness, defect):
    h = make_harness({"defects": [defect]} if defect else None)
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED,))
    h.setup_queue(0)
    h.driver_ok()
    return h


def submit(h, rtype, sector=0, data=b"", data_in=0):
    st = h.request(rtype, sector, data, data_in)
    n = h.used_idx()
    h.publish(0)
    h.notify(0)
    return h.mem.read(st, 1)[0], h.used_elem(n)[1], h.mem.read(DATA + 0x100, data_in)


def test_no_version_1(make_harness):
    h = make_harness({"defects": ["no-version-1"]})
    assert not h.device_features() >> spec.VIRTIO_F_VERSION_1 & 1
    # without VERSION_1 offered the device does not insist on it
    h.negotiate(features=1 << spec.VIRTIO_BLK_F_FLUSH)
    assert h.status() & spec.STATUS_FEATURES_OK


def test_used_len_includes_header(make_harness):
    assert submit(ready(make_harness, None), IN, 0, data_in=512)[:2] == (0, 513)
    assert submit(ready(make_harness, "used-len-includes-header"), IN, 0,
                  data_in=512)[:2] == (0, 529)


def test_in_reads_wrong_sector(make_harness):
    for defect, expect in ((None, b"\x01"), ("in-reads-wrong-sector", b"\x02")):
        h = ready(make_harness, defect)
        submit(h, OUT, 4, b"\x01" * 512 + b"\x02" * 512)
        assert submit(h, IN, 4, data_in=512)[2] == expect * 512


def test_get_id_not_nul_padded(make_harness):
    h = ready(make_harness, "get-id-not-nul-padded")
    assert submit(h, spec.VIRTIO_BLK_T_GET_ID, data_in=20)[2] == b"REFDEV0001" + b" " * 10


def test_flush_unsupported(make_harness):
    h = ready(make_harness, "flush-unsupported")
    assert h.dev.negotiated_features >> spec.VIRTIO_BLK_F_FLUSH & 1
    assert submit(h, spec.VIRTIO_BLK_T_FLUSH)[:2] == (spec.VIRTIO_BLK_S_UNSUPP, 1)


def test_status_not_written(make_harness):
    h = ready(make_harness, "status-not-written")
    status, used, _ = submit(h, OUT, 0, b"\x01" * 512)
    assert (status, used) == (0xEE, 1)  # the harness pre-fills the status byte with 0xEE
    with open(h.dev.backing_path, "rb") as f:
        assert f.read(512) == b"\x01" * 512  # the write itself happened
    assert submit(h, IN, 0, data_in=512)[0] == 0  # other requests unaffected
