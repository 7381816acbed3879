"""Common configuration structure (4.1.4.3): selects, status machine, reset, queue fields."""

from __future__ import annotations

from refdev_harness import NOTIFY

from conformance import spec

NO_VECTOR = spec.VIRTIO_MSI_NO_VECTOR
BASIC = spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER


def test_device_feature_window(h):
    offered = h.dev.cfg.offered_features()
    for sel, expect in ((0, offered & 0xFFFFFFFF), (1, offered >> 32), (2, 0), (0x1234, 0)):
        h.cw(spec.COMMON_DFSELECT, 4, sel)
        assert h.cr(spec.COMMON_DFSELECT, 4) == sel
        assert h.cr(spec.COMMON_DF, 4) == expect
    h.cw(spec.COMMON_DF, 4, 0)  # read-only: ignored
    h.cw(spec.COMMON_DFSELECT, 4, 0)
    assert h.cr(spec.COMMON_DF, 4) == offered & 0xFFFFFFFF


def test_driver_feature_words_are_stored_per_select(h):
    h.set_status(BASIC)
    h.cw(spec.COMMON_GFSELECT, 4, 0)
    h.cw(spec.COMMON_GF, 4, 0x1234)
    h.cw(spec.COMMON_GFSELECT, 4, 1)
    h.cw(spec.COMMON_GF, 4, 0x1)
    h.cw(spec.COMMON_GFSELECT, 4, 0)
    assert h.cr(spec.COMMON_GF, 4) == 0x1234
    h.cw(spec.COMMON_GFSELECT, 4, 1)
    assert h.cr(spec.COMMON_GF, 4) == 0x1


def test_features_ok_sticks_for_a_valid_subset_and_locks_features(h):
    h.set_status(BASIC)
    h.write_features(1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_BLK_F_FLUSH)
    h.set_status(BASIC | spec.STATUS_FEATURES_OK)
    assert h.status() == BASIC | spec.STATUS_FEATURES_OK
    assert h.dev.negotiated_features == 1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_BLK_F_FLUSH
    h.cw(spec.COMMON_GFSELECT, 4, 0)
    h.cw(spec.COMMON_GF, 4, 0xFFFFFFFF)  # after FEATURES_OK: no effect
    assert h.cr(spec.COMMON_GF, 4) == 1 << spec.VIRTIO_BLK_F_FLUSH


def test_features_ok_refused_for_unoffered_feature(h):
    h.set_status(BASIC)
    h.write_features(1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_BLK_F_RO)  # RO not offered
    h.set_status(BASIC | spec.STATUS_FEATURES_OK)
    assert h.status() == BASIC


def test_features_ok_refused_for_feature_bits_above_63(h):
    h.set_status(BASIC)
    h.write_features(1 << spec.VIRTIO_F_VERSION_1)
    h.cw(spec.COMMON_GFSELECT, 4, 2)
    h.cw(spec.COMMON_GF, 4, 1)
    h.set_status(BASIC | spec.STATUS_FEATURES_OK)
    assert h.status() == BASIC


def test_features_ok_refused_without_version_1(h):
    h.set_status(BASIC)
    h.write_features(1 << spec.VIRTIO_BLK_F_FLUSH)
    h.set_status(BASIC | spec.STATUS_FEATURES_OK)
    assert h.status() == BASIC


def test_accept_unoffered_features_defect(make_harness):
    h = make_harness({"defects": ["accept-unoffered-features"]})
    h.set_status(BASIC)
    h.write_features(1 << spec.VIRTIO_F_VERSION_1 | 1 << spec.VIRTIO_BLK_F_RO)
    h.set_status(BASIC | spec.STATUS_FEATURES_OK)
    assert h.status() == BASIC | spec.STATUS_FEATURES_OK


def test_reset_restores_defaults(h):
    h.negotiate()
    h.cw(spec.COMMON_MSIX, 2, 1)
    h.setup_queue(1, size=16, vector=2)
    h.driver_ok()
    h.dev.t.isr = 3
    h.set_status(0)
    assert h.status() == 0
    assert h.dev.t.isr == 0
    assert h.cr(spec.COMMON_MSIX, 2) == NO_VECTOR
    assert h.cr(spec.COMMON_Q_SELECT, 2) == 0
    h.cw(spec.COMMON_Q_SELECT, 2, 1)
    assert h.cr(spec.COMMON_Q_ENABLE, 2) == 0
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 256
    assert h.cr(spec.COMMON_Q_MSIX, 2) == NO_VECTOR
    assert h.cr(spec.COMMON_Q_DESCLO, 4) == 0
    assert h.cr(spec.COMMON_Q_USEDHI, 4) == 0
    h.cw(spec.COMMON_GFSELECT, 4, 1)
    assert h.cr(spec.COMMON_GF, 4) == 0
    assert h.dev.negotiated_features == 0


def test_driver_cannot_set_needs_reset(h):
    h.set_status(BASIC | spec.STATUS_DEVICE_NEEDS_RESET)
    assert h.status() == BASIC


def test_msix_vector_mapping(h):
    # 5 vectors (4 queues + 1): 0..4 map, anything else reads back NO_VECTOR
    for written, expect in ((0, 0), (4, 4), (5, NO_VECTOR), (0x7FF, NO_VECTOR),
                            (NO_VECTOR, NO_VECTOR)):
        h.cw(spec.COMMON_MSIX, 2, written)
        assert h.cr(spec.COMMON_MSIX, 2) == expect
        h.cw(spec.COMMON_Q_MSIX, 2, written)
        assert h.cr(spec.COMMON_Q_MSIX, 2) == expect


def test_msix_vector_without_msix_capability(make_harness):
    h = make_harness({"msix_vectors": 0})
    h.cw(spec.COMMON_MSIX, 2, 0)
    assert h.cr(spec.COMMON_MSIX, 2) == NO_VECTOR


def test_queue_fields(h):
    assert h.cr(spec.COMMON_NUMQ, 2) == 4
    for q in range(4):
        h.cw(spec.COMMON_Q_SELECT, 2, q)
        assert h.cr(spec.COMMON_Q_SIZE, 2) == 256
        assert h.cr(spec.COMMON_Q_NOFF, 2) == q
        assert h.cr(spec.COMMON_Q_NDATA, 2) == q
        assert h.cr(spec.COMMON_Q_ENABLE, 2) == 0
        assert h.cr(spec.COMMON_Q_RESET, 2) == 0
    h.cw(spec.COMMON_Q_SELECT, 2, 4)  # no such queue
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 0
    h.cw(spec.COMMON_Q_SIZE, 2, 8)
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 0


def test_queue_address_halves_are_independent(h):
    h.cw(spec.COMMON_Q_DESCLO, 4, 0x11223340)
    h.cw(spec.COMMON_Q_DESCHI, 4, 0x55)
    h.cw(spec.COMMON_Q_AVAILHI, 4, 0x66)
    h.cw(spec.COMMON_Q_AVAILLO, 4, 0x77880000)
    h.cw(spec.COMMON_Q_USEDLO, 4, 0x1000)
    assert h.cr(spec.COMMON_Q_DESCLO, 4) == 0x11223340
    assert h.cr(spec.COMMON_Q_DESCHI, 4) == 0x55
    assert h.dev.queue(0).desc == 0x55_11223340
    assert h.dev.queue(0).driver == 0x66_77880000
    assert h.dev.queue(0).device == 0x1000


def test_queue_size_split_needs_power_of_2(h):
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED,))
    for written, expect in ((64, 64), (100, 64), (0, 64), (512, 64), (1, 1)):
        h.cw(spec.COMMON_Q_SIZE, 2, written)
        assert h.cr(spec.COMMON_Q_SIZE, 2) == expect


def test_queue_size_packed_may_be_any_size(h):
    h.negotiate()
    h.cw(spec.COMMON_Q_SIZE, 2, 100)
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 100


def test_queue_config_is_fixed_while_enabled(h):
    h.negotiate()
    h.setup_queue(0, size=8, desc=0x1000)
    assert h.cr(spec.COMMON_Q_ENABLE, 2) == 1
    h.cw(spec.COMMON_Q_SIZE, 2, 16)
    h.cw(spec.COMMON_Q_DESCLO, 4, 0x2000)
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 8
    assert h.cr(spec.COMMON_Q_DESCLO, 4) == 0x1000
    h.cw(spec.COMMON_Q_ENABLE, 2, 0)  # the driver MUST NOT write 0: ignored
    assert h.cr(spec.COMMON_Q_ENABLE, 2) == 1


def test_queue_reset(h):
    h.negotiate()
    h.setup_queue(2, size=16, desc=0x1000, vector=1)
    h.cw(spec.COMMON_Q_RESET, 2, 1)
    assert h.cr(spec.COMMON_Q_RESET, 2) == 0
    assert h.cr(spec.COMMON_Q_ENABLE, 2) == 0
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 256
    assert h.cr(spec.COMMON_Q_MSIX, 2) == NO_VECTOR
    assert h.cr(spec.COMMON_Q_DESCLO, 4) == 0
    h.setup_queue(2, size=32)
    assert h.cr(spec.COMMON_Q_ENABLE, 2) == 1
    assert h.cr(spec.COMMON_Q_SIZE, 2) == 32


def test_queue_reset_needs_ring_reset_negotiated(h):
    h.negotiate(drop=(spec.VIRTIO_F_RING_RESET,))
    h.setup_queue(0)
    h.cw(spec.COMMON_Q_RESET, 2, 1)
    assert h.cr(spec.COMMON_Q_ENABLE, 2) == 1


def test_wrong_width_accesses_are_ignored(h):
    h.cw(spec.COMMON_Q_SELECT, 4, 2)  # 16-bit field written with 32 bits
    assert h.cr(spec.COMMON_Q_SELECT, 2) == 0
    assert h.dev.t.bad_accesses == 1
    # reads of any width see the structure's bytes
    assert h.cr(spec.COMMON_NUMQ, 1) == 4
    assert h.cr(spec.COMMON_MSIX, 4) == 4 << 16 | NO_VECTOR


def test_config_generation_changes_on_resize(h):
    gen = h.cr(spec.COMMON_CFGGENERATION, 1)
    h.dev.resize(1000)
    assert h.cr(spec.COMMON_CFGGENERATION, 1) == (gen + 1) & 0xFF
    assert h.dev.mmio_read(NOTIFY - 0x1000 + spec.BLK_CFG_CAPACITY, 4) == 1000
