"""The clause registry: the packaged file validates, and the coverage math is exact."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conformance.clauses import (
    COVERED,
    LEVELS,
    NOT_OBSERVABLE,
    UNCOVERED,
    Clause,
    RegistryError,
    area_of,
    coverage,
    format_listing,
    load_registry,
    parse_registry,
    section_key,
    totals,
)

# IDs that conformance cases already cite; renaming any of them breaks those cases.
REQUIRED = {
    "feat.version-1-offered": "6.2",
    "feat.features-ok-refusal": "2.2.2",
    "feat.subset-accepted": "2.2.2",
    "pci.vendor-id": "4.1.2.1",
    "pci.device-id": "4.1.2.1",
    "pci.revision-id": "4.1.2.1",
    "pci.common-cap-present": "4.1.4.3.1",
    "pci.notify-cap-present": "4.1.4.4.1",
    "pci.isr-cap-present": "4.1.4.5.1",
    "pci.device-cap-present": "4.1.4.6",
    "pci.pci-cfg-cap-present": "4.1.4.9.1",
    "pci.cap-offset-alignment": "4.1.4.3.1",
    "pci.notify-multiplier": "4.1.4.4.1",
    "pci.cap-bar-bounds": "4.1.4",
    "split.used-len": "2.7.8.2",
    "split.used-idx-wrap": "2.7.8",
    "blk.in-data": "5.2.6",
    "blk.out-data": "5.2.6",
    "blk.flush": "5.2.6.2",
    "blk.get-id": "5.2.6",
    "blk.status-ok": "5.2.6",
    "blk.unsupp-type": "5.2.6",
    "blk.out-of-range-ioerr": "5.2.6",
}

AREAS = {"status", "feat", "reset", "config", "vq", "split", "packed", "notify", "init",
         "pci", "msix", "isr", "blk", "driver"}  # driver: what the robustness tier violates


def entry(cid: str = "pci.vendor-id", **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": cid, "section": "4.1.2.1", "title": "Device Requirements: PCI Device Discovery",
        "level": "MUST", "text": "Vendor ID is 0x1AF4."}
    base.update(overrides)
    return base


def reg(*entries: dict[str, object]) -> dict[str, Clause]:
    return parse_registry({"spec": "VIRTIO 1.2", "clauses": list(entries)}, "test.yaml")


def one_line_error(*entries: dict[str, object]) -> str:
    with pytest.raises(RegistryError) as info:
        reg(*entries)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the packaged registry -------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> dict[str, Clause]:
    return load_registry()


def test_packaged_registry_loads(registry: dict[str, Clause]) -> None:
    device = [c for c in registry.values() if c.area != "driver"]
    assert 100 <= len(device) <= 220
    assert {c.level for c in registry.values()} <= set(LEVELS)


def test_required_ids_exist_in_their_sections(registry: dict[str, Clause]) -> None:
    missing = sorted(set(REQUIRED) - set(registry))
    assert not missing
    wrong = {cid: registry[cid].section for cid, sec in REQUIRED.items()
             if registry[cid].section != sec}
    assert not wrong


def test_areas_are_the_documented_ones(registry: dict[str, Clause]) -> None:
    assert {c.area for c in registry.values()} == AREAS


def test_every_in_scope_device_requirements_section_has_an_entry(
        registry: dict[str, Clause]) -> None:
    # The normative "Device Requirements" sections the brief puts in scope (VIRTIO 1.2
    # numbering); each must contribute at least one clause.
    sections = {"2.1.2", "2.2.2", "2.4.1", "2.5.2", "2.6.1.1.1", "2.6.1.2.1", "2.7.4.1",
                "2.7.5.1", "2.7.5.3.2", "2.7.7.2", "2.7.8.2", "2.7.10.2", "2.8.12",
                "2.8.15", "2.8.18", "4.1.1", "4.1.2.1", "4.1.3.2", "4.1.4.2", "4.1.4.3.1",
                "4.1.4.4.1", "4.1.4.5.1", "4.1.4.6.1", "4.1.4.7.1", "4.1.4.8.1",
                "4.1.4.9.1", "4.1.5.1.2.1", "4.1.5.3.1", "4.1.5.4.1", "5.2.5.2",
                "5.2.6.2", "6.2"}
    present = {c.section for c in registry.values()}
    assert sections - present == set()
    for c in registry.values():
        if c.section in sections:
            assert c.title.startswith("Device Requirements: "), c.id


def test_titles_agree_within_a_section(registry: dict[str, Clause]) -> None:
    titles: dict[str, set[str]] = {}
    for c in registry.values():
        titles.setdefault(c.section, set()).add(c.title)
    assert {s: t for s, t in titles.items() if len(t) > 1} == {}


def test_not_observable_is_used_sparingly(registry: dict[str, Clause]) -> None:
    hidden = [c for c in registry.values() if c.not_observable]
    assert len(hidden) <= len(registry) // 10


def test_packaged_file_keeps_sections_quoted() -> None:
    # An unquoted 2.10 would load as the float 2.1; parse_registry rejects non-strings,
    # and this keeps the source file itself honest too.
    path = Path(__file__).parents[1] / "conformance" / "clauses.yaml"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("section:"):
            assert re.match(r'^\s+section: "[\d.]+"$', line), line


def test_texts_are_one_line_paraphrases(registry: dict[str, Clause]) -> None:
    for c in registry.values():
        assert len(c.text) <= 240, c.id
        assert c.text.endswith((".", ")")), c.id


# --- validation --------------------------------------------------------------------------


def test_valid_minimal_registry() -> None:
    r = reg(entry(), entry("blk.flush", section="5.2.6.2", level="MUST NOT",
                           not_observable="  internal\n ordering "))
    assert list(r) == ["pci.vendor-id", "blk.flush"]
    assert r["pci.vendor-id"].spec_ref == "4.1.2.1 Device Requirements: PCI Device Discovery"
    assert r["pci.vendor-id"].not_observable is None
    assert r["blk.flush"].not_observable == "internal ordering"


def test_duplicate_id() -> None:
    msg = one_line_error(entry(), entry(text="again"))
    assert msg == ("test.yaml: entry 2 (pci.vendor-id): duplicate id, "
                   "first used by entry 1")


@pytest.mark.parametrize("level", ["must", "REQUIRED", "MUST_NOT", "", 1])
def test_bad_level(level: object) -> None:
    msg = one_line_error(entry(level=level))
    assert msg.startswith("test.yaml: entry 1 (pci.vendor-id): ")
    assert "level" in msg


@pytest.mark.parametrize("cid", ["PCI.vendor-id", "pci", "pci.vendor_id", "pci.vendor id",
                                 "pci.", ".vendor", "pci.vendor.id"])
def test_bad_id(cid: str) -> None:
    msg = one_line_error(entry(cid))
    assert "bad id" in msg and repr(cid) in msg


@pytest.mark.parametrize("section", ["4.1.", "A.1", "4..1", "§4.1"])
def test_bad_section(section: str) -> None:
    assert "bad section" in one_line_error(entry(section=section))


def test_unquoted_section_is_rejected_with_a_hint() -> None:
    data = yaml.safe_load("clauses:\n  - {id: a.b, section: 2.10, title: t, level: MAY, "
                          "text: x}\n")
    with pytest.raises(RegistryError, match="quote it"):
        parse_registry(data, "x.yaml")


@pytest.mark.parametrize("key", ["title", "text", "id", "section", "level"])
def test_missing_or_empty_field(key: str) -> None:
    e = entry()
    del e[key]
    assert f"missing '{key}'" in one_line_error(e)
    if key not in ("level",):
        assert "empty" in one_line_error(entry(**{key: "  "}))


def test_unknown_key_and_empty_reason() -> None:
    assert "unknown key(s) not_observeable" in one_line_error(entry(not_observeable="x"))
    assert "not_observable" in one_line_error(entry(not_observable=""))


def test_bad_top_level() -> None:
    with pytest.raises(RegistryError, match="'clauses' must be a list"):
        parse_registry({"spec": "x"}, "t")
    with pytest.raises(RegistryError, match="top level"):
        parse_registry(["a"], "t")
    with pytest.raises(RegistryError, match="entry 1: must be a mapping"):
        parse_registry({"clauses": ["pci.vendor-id"]}, "t")


def test_load_registry_from_path(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"spec": "VIRTIO 1.2", "clauses": [entry()]}))
    assert list(load_registry(good)) == ["pci.vendor-id"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("clauses: [\n  - id: x\n")
    with pytest.raises(RegistryError) as info:
        load_registry(bad)
    assert "\n" not in str(info.value) and "not valid YAML" in str(info.value)
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "absent.yaml")


# --- coverage and listing ----------------------------------------------------------------


@pytest.fixture
def small() -> dict[str, Clause]:
    # Registry order deliberately differs from section order.
    return reg(
        entry("vq.ten", section="2.10", title="T10", level="MUST", text="ten"),
        entry("vq.nine", section="2.9", title="T9", level="MUST NOT", text="nine"),
        entry("vq.nine-b", section="2.9", title="T9", level="SHOULD", text="nine b"),
        entry("vq.hidden", section="2.7.8.2", title="T", level="MUST", text="hidden",
              not_observable="device internal"),
        entry("vq.hidden-tested", section="2.7.8.2", title="T", level="MUST", text="ht",
              not_observable="device internal"),
        entry("vq.may", section="2.1", title="T1", level="MAY", text="may"),
        entry("vq.must-open", section="2.1", title="T1", level="MUST", text="open"),
    )


def test_coverage_rows(small: dict[str, Clause]) -> None:
    rows = coverage(small, {"vq.ten": ["c::a", "c::b"], "vq.nine-b": ["c::c"],
                            "vq.hidden-tested": ["c::d"]})
    assert [r.clause.id for r in rows] == ["vq.may", "vq.must-open", "vq.hidden",
                                           "vq.hidden-tested", "vq.nine", "vq.nine-b",
                                           "vq.ten"]
    status = {r.clause.id: r.status for r in rows}
    assert status == {"vq.may": UNCOVERED, "vq.must-open": UNCOVERED,
                      "vq.hidden": NOT_OBSERVABLE, "vq.hidden-tested": COVERED,
                      "vq.nine": UNCOVERED, "vq.nine-b": COVERED, "vq.ten": COVERED}
    assert next(r for r in rows if r.clause.id == "vq.ten").cases == ("c::a", "c::b")


def test_totals_math(small: dict[str, Clause]) -> None:
    rows = coverage(small, {"vq.ten": ["c::a"], "vq.nine-b": ["c::c"],
                            "vq.hidden-tested": ["c::d"]})
    t = totals(rows)
    assert (t.covered, t.uncovered, t.not_observable) == (3, 3, 1)
    # MUST/MUST NOT: ten (covered), nine (uncovered), must-open (uncovered),
    # hidden-tested (covered); hidden is not observable and leaves the denominator.
    assert (t.must_covered, t.must_observable) == (2, 4)
    assert t.must_percent == 50.0
    listing = format_listing(rows)
    assert listing.splitlines()[-1] == ("covered 3 / uncovered 3 / not observable 1; "
                                        "MUST coverage 2/4 (50.0%)")


def test_listing_groups_by_section_in_numeric_order(small: dict[str, Clause]) -> None:
    listing = format_listing(coverage(small, {"vq.ten": ["cases/test_x.py::test_ten"]}))
    headers = [line for line in listing.splitlines() if line and not line.startswith(" ")]
    assert headers[:4] == ["2.1 T1", "2.7.8.2 T", "2.9 T9", "2.10 T10"]
    assert "<- cases/test_x.py::test_ten" in listing
    assert "(why: device internal)" in listing


def test_listing_uncovered_only_keeps_full_totals(small: dict[str, Clause]) -> None:
    rows = coverage(small, {"vq.ten": ["c::a"]})
    listing = format_listing(rows, uncovered_only=True)
    body = listing.split("\n\n")
    assert "vq.ten" not in listing and "vq.hidden " not in listing
    assert "vq.must-open" in listing and "vq.nine-b" in listing
    # hidden-tested has no case here, so it counts as not observable, not as MUST.
    assert body[-1] == ("covered 1 / uncovered 4 / not observable 2; "
                        "MUST coverage 1/3 (33.3%)")


def test_listing_with_nothing_to_show() -> None:
    r = reg(entry(level="SHOULD"))
    listing = format_listing(coverage(r, {"pci.vendor-id": ["c::x"]}), uncovered_only=True)
    assert listing.splitlines()[0] == "no uncovered clauses"
    assert listing.endswith("MUST coverage 0/0 (n/a)")


def test_coverage_rejects_unknown_ids(small: dict[str, Clause]) -> None:
    with pytest.raises(RegistryError, match=r"vq\.typo .*cited by c::z"):
        coverage(small, {"vq.typo": ["c::z"]})


def test_packaged_registry_listing(registry: dict[str, Clause]) -> None:
    rows = coverage(registry, {"pci.vendor-id": ["c::v"]})
    t = totals(rows)
    assert t.covered == 1
    assert t.covered + t.uncovered + t.not_observable == len(registry)
    mandatory = sum(1 for c in registry.values()
                    if c.level in ("MUST", "MUST NOT") and not c.not_observable)
    assert t.must_observable == mandatory
    sections = [section_key(r.clause.section) for r in rows]
    assert sections == sorted(sections)


# --- small helpers ----------------------------------------------------------------------


def test_section_key_sorts_numerically() -> None:
    ordered = sorted(["2.10", "2.9", "2.1", "10.1", "2.7.10.2", "2.7.8.2", "4.1"],
                     key=section_key)
    assert ordered == ["2.1", "2.7.8.2", "2.7.10.2", "2.9", "2.10", "4.1", "10.1"]


def test_area_of() -> None:
    assert area_of("pci.vendor-id") == "pci"
    assert area_of("blk.get-id") == "blk"
    assert Counter(area_of(c) for c in ["a.x", "a.y", "b.z"]) == {"a": 2, "b": 1}
