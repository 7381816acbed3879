"""Every conformance case must be able to fail.

For each injectable defect of the reference device, the cases that check the
violated clause are run against a device with that defect; each must fail.
The defect-free device passing every case is the CI step that runs
``vblk-conformance run`` on the reference target.
"""

from __future__ import annotations

import pytest
import yaml

from conformance.selfcheck import run_outcomes
from reference_device.defects import DEFECTS

# defect -> (pytest -k expression selecting the cases, node ID fragments that must fail)
KILLS: dict[str, tuple[str, list[str]]] = {
    "no-version-1": ("test_version_1_offered", ["test_version_1_offered"]),
    "accept-unoffered-features": (
        "test_features_ok_refused",
        ["refused_for_unoffered_feature[blk-feature]",
         "refused_for_unoffered_feature[reserved-bit]"]),
    "missing-isr-cap": ("test_required_capability_present",
                        ["test_required_capability_present[isr]"]),
    "used-len-includes-header": ("test_in_returns_backing_data",
                                 ["test_in_returns_backing_data[0-512]"]),
    "in-reads-wrong-sector": ("test_in_returns_backing_data or test_in_last_sector",
                              ["test_in_returns_backing_data[3-4096]", "test_in_last_sector"]),
    "get-id-not-nul-padded": ("test_get_id", ["test_get_id"]),
    "flush-unsupported": ("test_flush", ["test_flush"]),
    "used-idx-no-wrap": ("test_index_wraparound", ["test_index_wraparound[8]"]),
    "status-not-written": ("test_out_lands_on_disk", ["test_out_lands_on_disk[5-512]"]),
}


def target_file(tmp_path, defects: list[str]):
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump({"kind": "reference", "timeout": 2,
                                    "device": {"defects": defects}}))
    return path


def test_every_defect_is_listed():
    assert sorted(KILLS) == sorted(DEFECTS), "a defect without cases that must catch it"


@pytest.mark.parametrize("defect", sorted(KILLS))
def test_defect_makes_its_cases_fail(tmp_path, defect):
    keyword, must_fail = KILLS[defect]
    outcomes = run_outcomes(target_file(tmp_path, [defect]), ["-k", keyword])
    assert outcomes, f"-k {keyword!r} selected no case"
    for fragment in must_fail:
        hits = {n: o for n, o in outcomes.items() if fragment in n}
        assert hits, f"no case matches {fragment!r}"
        for nodeid, (outcome, _detail) in hits.items():
            assert outcome == "failed", f"{nodeid} {outcome} with defect {defect}"


@pytest.mark.parametrize("keyword", [
    "test_version_1_offered or test_features_ok_refused or test_required_capability_present",
    "test_in_returns_backing_data or test_get_id or test_flush or test_out_lands_on_disk",
])
def test_same_cases_pass_without_defects(tmp_path, keyword):
    outcomes = run_outcomes(target_file(tmp_path, []), ["-k", keyword])
    assert outcomes and all(o == "passed" for o, _ in outcomes.values()), outcomes
