"""DeviceConfig: defaults, the offered feature mask and one-line validation errors."""

from __future__ import annotations

import pytest

from conformance import spec
from reference_device import DEFECTS, ConfigError, DeviceConfig

DEFAULT_BITS = {
    spec.VIRTIO_F_VERSION_1, spec.VIRTIO_F_INDIRECT_DESC, spec.VIRTIO_F_EVENT_IDX,
    spec.VIRTIO_F_RING_PACKED, spec.VIRTIO_F_RING_RESET, spec.VIRTIO_F_NOTIFICATION_DATA,
    spec.VIRTIO_BLK_F_SIZE_MAX, spec.VIRTIO_BLK_F_SEG_MAX, spec.VIRTIO_BLK_F_GEOMETRY,
    spec.VIRTIO_BLK_F_BLK_SIZE, spec.VIRTIO_BLK_F_FLUSH, spec.VIRTIO_BLK_F_TOPOLOGY,
    spec.VIRTIO_BLK_F_CONFIG_WCE, spec.VIRTIO_BLK_F_MQ, spec.VIRTIO_BLK_F_DISCARD,
    spec.VIRTIO_BLK_F_WRITE_ZEROES, spec.VIRTIO_BLK_F_SECURE_ERASE,
}


def mask(bits: set[int]) -> int:
    return sum(1 << b for b in bits)


def test_defaults():
    cfg = DeviceConfig()
    assert cfg.offered_features() == mask(DEFAULT_BITS)
    assert (cfg.num_queues, cfg.queue_size_max, cfg.capacity_sectors) == (4, 256, 32768)
    assert (cfg.serial, cfg.blk_size, cfg.writeback, cfg.defects) == ("REFDEV0001", 512, 1, ())
    assert cfg.msix_table_size == 5
    assert cfg.notify_off_multiplier == 4


def test_read_only_offers_ro():
    cfg = DeviceConfig.from_mapping({"read_only": True}, where="t")
    assert cfg.offered_features() == mask(DEFAULT_BITS | {spec.VIRTIO_BLK_F_RO})


@pytest.mark.parametrize("name", ["VIRTIO_F_RING_PACKED", "RING_PACKED", "ring_packed"])
def test_feature_names_with_or_without_prefix(name):
    cfg = DeviceConfig.from_mapping({"features": {name: False}}, where="t")
    assert cfg.offered_features() == mask(DEFAULT_BITS - {spec.VIRTIO_F_RING_PACKED})
    assert cfg.features == {"VIRTIO_F_RING_PACKED": False}


def test_optional_feature_can_be_switched_on():
    cfg = DeviceConfig.from_mapping({"features": {"IN_ORDER": True, "RO": True}}, where="t")
    assert cfg.offered_features() == mask(
        DEFAULT_BITS | {spec.VIRTIO_F_IN_ORDER, spec.VIRTIO_BLK_F_RO})


def test_no_version_1_defect_removes_the_bit():
    cfg = DeviceConfig.from_mapping({"defects": ["no-version-1"]}, where="t")
    assert cfg.offered_features() == mask(DEFAULT_BITS - {spec.VIRTIO_F_VERSION_1})
    assert cfg.has_defect("no-version-1")
    assert not cfg.has_defect("missing-isr-cap")


def test_has_defect_rejects_unknown_names():
    with pytest.raises(KeyError):
        DeviceConfig().has_defect("no-such-defect")


def test_msix_vectors_default_follows_queues_and_is_capped():
    assert DeviceConfig(num_queues=2).msix_table_size == 3
    assert DeviceConfig(num_queues=200).msix_table_size == 128
    assert DeviceConfig(msix_vectors=0).msix_table_size == 0


def test_defect_registry_has_descriptions_and_sections():
    assert {"no-version-1", "accept-unoffered-features", "missing-isr-cap",
            "used-len-includes-header", "in-reads-wrong-sector", "get-id-not-nul-padded",
            "flush-unsupported", "used-idx-no-wrap", "status-not-written"} <= set(DEFECTS)
    for d in DEFECTS.values():
        assert d.description and d.clauses and all("." in c for c in d.clauses)


@pytest.mark.parametrize("mapping, needle", [
    ({"nmu_queues": 2}, "targets/x.yaml: device: unknown key 'nmu_queues'"),
    ({"num_queues": "2"}, "targets/x.yaml: device: num_queues: expected an integer, got '2'"),
    ({"num_queues": True}, "targets/x.yaml: device: num_queues: expected an integer"),
    ({"num_queues": 0}, "targets/x.yaml: device: num_queues: must be in 1..1024, got 0"),
    ({"queue_size_max": 100}, "targets/x.yaml: device: queue_size_max: must be a power of 2"),
    ({"features": {"VIRTIO_F_BOGUS": True}},
     "targets/x.yaml: device: features: unknown feature 'VIRTIO_F_BOGUS'"),
    ({"features": {"RING_PACKED": "no"}},
     "targets/x.yaml: device: features: RING_PACKED: expected true or false, got 'no'"),
    ({"features": {"ZONED": True}},
     "targets/x.yaml: device: features: VIRTIO_BLK_F_ZONED is not implemented"),
    ({"features": ["RO"]}, "targets/x.yaml: device: features: expected a mapping"),
    ({"features": {"FLUSH": False}},
     "targets/x.yaml: device: features: VIRTIO_BLK_F_CONFIG_WCE needs VIRTIO_BLK_F_FLUSH"),
    ({"defects": ["no-such"]}, "targets/x.yaml: device: defects: unknown defect 'no-such'"),
    ({"defects": "no-version-1"}, "targets/x.yaml: device: defects: expected a list"),
    ({"serial": "X" * 21}, "targets/x.yaml: device: serial: at most 20 bytes, got 21"),
    ({"serial": "é"}, "targets/x.yaml: device: serial: must be ASCII"),
    ({"notify_off_multiplier": 3},
     "targets/x.yaml: device: notify_off_multiplier: must be 0 or a power of 2 >= 4"),
    ({"notify_off_multiplier": 2},
     "targets/x.yaml: device: notify_off_multiplier: must be 0 or a power of 2 >= 4"),
    ({"msix_vectors": 129}, "targets/x.yaml: device: msix_vectors: must be in 0..128, got 129"),
    ({"writeback": 2}, "targets/x.yaml: device: writeback: must be in 0..1, got 2"),
    ({"read_only": 1}, "targets/x.yaml: device: read_only: expected true or false, got 1"),
    ({"backing_file": 5}, "targets/x.yaml: device: backing_file: expected a path string"),
    ({"pre_eol_info": 4}, "targets/x.yaml: device: pre_eol_info: must be in 0..3, got 4"),
    ({"lifetime_typ_a": 12}, "targets/x.yaml: device: lifetime_typ_a/lifetime_typ_b: at most 11"),
    ({"where": "x"}, "targets/x.yaml: device: unknown key 'where'"),
])
def test_from_mapping_errors_are_one_line_and_name_where_and_key(mapping, needle):
    with pytest.raises(ConfigError) as info:
        DeviceConfig.from_mapping(mapping, where="targets/x.yaml: device")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(needle), msg


def test_from_mapping_rejects_a_non_mapping():
    with pytest.raises(ConfigError, match=r"^t: expected a mapping, got list$"):
        DeviceConfig.from_mapping([1], where="t")


def test_from_mapping_none_gives_defaults():
    assert DeviceConfig.from_mapping(None, where="t") == DeviceConfig()


def test_multiplier_2_is_fine_without_notification_data():
    cfg = DeviceConfig.from_mapping(
        {"notify_off_multiplier": 2, "features": {"NOTIFICATION_DATA": False}}, where="t")
    assert cfg.notify_off_multiplier == 2


def test_missing_backing_file_is_a_config_error(tmp_path):
    from reference_device import GuestMemory, VirtioBlkPci
    cfg = DeviceConfig.from_mapping({"backing_file": str(tmp_path / "nope.img")},
                                    where="targets/x.yaml: device")
    with pytest.raises(ConfigError) as info:
        VirtioBlkPci(cfg, memory=GuestMemory(size=1 << 20))
    msg = str(info.value)
    assert msg.startswith("targets/x.yaml: device: backing_file: cannot open ")
    assert "nope.img" in msg and "\n" not in msg


def test_config_is_hashable_and_compares_without_where():
    a = DeviceConfig.from_mapping({"features": {"RO": True}}, where="a")
    b = DeviceConfig.from_mapping({"features": {"VIRTIO_BLK_F_RO": True}}, where="b")
    assert a == b and hash(a) == hash(b)
