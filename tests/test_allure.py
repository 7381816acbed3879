"""Allure labels, links and environment, as allure-pytest writes them."""

from __future__ import annotations

import json

from fake_cases import run_fake

from conformance.allure import chapter, environment_properties, labels_for, spec_link
from conformance.clauses import load_registry


def test_labels_for_clauses():
    reg = load_registry()
    labels, links = labels_for([reg["pci.revision-id"], reg["blk.get-id"]])
    assert labels[0] == ("severity", "critical")  # blk.get-id is a MUST
    assert ("epic", "4 Virtio Transport Options") in labels
    assert ("epic", "5 Device Types") in labels
    assert ("feature", "pci") in labels and ("feature", "blk") in labels
    assert ("story", f"pci.revision-id ({reg['pci.revision-id'].section}, SHOULD)") in labels
    assert links[0] == (
        "https://docs.oasis-open.org/virtio/virtio/v1.2/cs01/virtio-v1.2-cs01.html"
        "#:~:text=4.1.2.1%20Device%20Requirements%3A%20PCI%20Device%20Discovery",
        "VIRTIO 1.2 4.1.2.1 Device Requirements: PCI Device Discovery")
    assert labels_for([reg["pci.revision-id"]])[0][0] == ("severity", "normal")


def test_chapter_and_link_template():
    assert chapter("2.7.8") == "2 Basic Facilities of a Virtio Device"
    assert chapter("9.1") == "Chapter 9"
    assert spec_link("2.7", "Split-Virtqueues, x", "file:///spec.html#{section}/{title}") == \
        "file:///spec.html#2.7/Split%2DVirtqueues%2C%20x"


def test_environment_properties_escaping():
    text = environment_properties({"name": "q", "qemu": {"binary path": "/usr/bin/x"},
                                   "note": "a=b\nc", "skip": None, "list": [1, 2],
                                   "unicode": "é😀"})
    assert text.splitlines() == [
        "list=1, 2", "name=q", "note=a=b\\nc", "qemu.binary\\ path=/usr/bin/x",
        "unicode=\\u00e9\\ud83d\\ude00"]


def test_alluredir_gets_labels_links_and_environment(tmp_path, monkeypatch):
    out = tmp_path / "allure"
    run_fake(tmp_path, monkeypatch, f"--alluredir={out}", "-k",
             "test_should_fails or test_mixed_levels_fails")
    results = {}
    for f in out.glob("*-result.json"):
        data = json.loads(f.read_text())
        results[data["name"]] = data
    assert set(results) == {"test_should_fails", "test_mixed_levels_fails"}

    def labels(name):
        return {(lab["name"], lab["value"]) for lab in results[name]["labels"]}

    dev = labels("test_should_fails")
    assert {("severity", "normal"), ("epic", "4 Virtio Transport Options"), ("feature", "pci"),
            ("story", "pci.revision-id (4.1.2.1, SHOULD)"), ("tag", "deviation")} <= dev
    mixed = labels("test_mixed_levels_fails")
    assert ("severity", "critical") in mixed and ("tag", "failed") in mixed
    assert results["test_mixed_levels_fails"]["status"] == "failed"
    assert results["test_should_fails"]["status"] == "skipped"  # a deviation does not gate
    assert [lk["name"] for lk in results["test_should_fails"]["links"]] == [
        "VIRTIO 1.2 4.1.2.1 Device Requirements: PCI Device Discovery"]
    env = (out / "environment.properties").read_text().splitlines()
    assert "kind=reference" in env and "name=reference" in env
    assert "device.serial=REFDEV0001" in env  # the reference device configuration
    assert any(line.startswith("suite.version=") for line in env)


def test_no_alluredir_no_labels(tmp_path, monkeypatch):
    code, _ = run_fake(tmp_path, monkeypatch, "-k", "test_pass")
    assert code == 0
    assert not (tmp_path / "allure").exists()
