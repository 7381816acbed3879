"""Target files: a malformed one ends in one line naming the file, the key and the problem."""

import pytest

from conformance.targets import TargetConfigError, load_target_file


def write(tmp_path, text):
    p = tmp_path / "t.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,needle", [
    ("kind: [", "not valid YAML at line 1"),
    ("- a\n- b\n", "expected a mapping"),
    ("name: x\n", "kind: missing"),
    ("kind: floppy\n", "kind: unknown kind 'floppy'"),
    ("kind: reference\ntimeout: -1\n", "timeout: expected a positive number"),
    ("kind: reference\nname: ''\n", "name: expected a non-empty string"),
])
def test_malformed_file_one_line(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(TargetConfigError) as exc:
        load_target_file(p)
    msg = str(exc.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(TargetConfigError, match="cannot read the target file"):
        load_target_file(tmp_path / "nope.yaml")


def test_good_file_defaults(tmp_path):
    spec = load_target_file(write(tmp_path, "kind: reference\ndevice: {num_queues: 2}\n"))
    assert (spec.kind, spec.name, spec.timeout) == ("reference", "t", 10.0)
    assert spec.options == {"device": {"num_queues": 2}}
