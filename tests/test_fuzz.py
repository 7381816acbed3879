"""The fuzzer on the reference device: chains, the raw ring's memory checks, findings,
reproducers, replay, and the device surviving many fuzzed chains."""

from __future__ import annotations

import json

import pytest

from conformance import spec
from conformance.fuzz import cli as fuzz_cli
from conformance.fuzz.chain import (
    ChainFormatError,
    ChainSpec,
    QueueSetup,
    blk_chain,
    chain_from_json,
    chain_to_json,
)
from conformance.fuzz.engine import fuzz
from conformance.fuzz.rawring import ALIAS_ZONE, guard_byte
from conformance.fuzz.reproducer import Reproducer, ReproducerError, load_reproducer, replay
from conformance.fuzz.session import Finding, FuzzSession
from conformance.fuzz.strategies import CHUNK, Choices, Context, decode_chain
from conformance.targets import open_target, spec_from_mapping

S = spec.SECTOR_SIZE
IN = spec.VIRTIO_BLK_T_IN
OUT = spec.VIRTIO_BLK_T_OUT
REF = spec_from_mapping({"kind": "reference", "name": "ref"}, "test", "ref")


def ref_with(*defects: str):
    return spec_from_mapping({"kind": "reference", "name": "ref-defect",
                              "device": {"defects": list(defects)}}, "test", "ref")


@pytest.fixture
def session():
    target = open_target(REF)
    s = FuzzSession(target, QueueSetup(), quiet=0.0)
    yield s
    s.close()
    target.close()


# --- chain descriptions -----------------------------------------------------------------


def test_chain_json_round_trip_keeps_every_field():
    chain = blk_chain(OUT, 7, data=b"\x11" * S, writable_split=(1,), indirect=True)
    chain = chain.with_desc(0, flags=chain.descs[0].flags | 1, next=3, alias=40, id=9)
    again = chain_from_json(json.loads(json.dumps(chain_to_json(chain))))
    assert again == chain


def test_chain_json_errors_name_the_field():
    data = chain_to_json(blk_chain(IN, 1, read_len=S))
    data["descs"][1]["lenght"] = 3
    with pytest.raises(ChainFormatError) as info:
        chain_from_json(data, "file.json: chains[0]")
    assert str(info.value) == "file.json: chains[0].descs[1]: unknown key(s) lenght"


def test_well_formed_chain_layout():
    chain = blk_chain(IN, 3, read_len=2 * S, writable_split=(S, S, 1))
    assert [d.length for d in chain.descs] == [16, S, S, 1]
    assert [d.flags for d in chain.descs] == [1, 3, 3, 2]
    assert [d.next for d in chain.descs] == [1, 2, 3, 0]
    assert chain.status == (3, 0)
    assert blk_chain(OUT, 9, data=b"x" * 1024).disk_writes == ((9, 2),)


# --- the decoder -----------------------------------------------------------------------------


CTX = Context(capacity=32768, queue_size=16, bars=(1, 4))


def test_zero_choices_decode_to_a_plain_read():
    chain = decode_chain(bytes(CHUNK), CTX)
    assert chain == blk_chain(IN, 0, read_len=S)


def test_decoding_is_deterministic_and_varied():
    import random

    rnd = random.Random(5)
    blobs = [bytes(rnd.getrandbits(8) for _ in range(CHUNK)) for _ in range(300)]
    first = [decode_chain(b, CTX) for b in blobs]
    assert first == [decode_chain(b, CTX) for b in blobs]
    types = {int.from_bytes(c.buffers[0].content[:4], "little") for c in first if c.buffers
             and c.buffers[0].content}
    assert {IN, OUT, spec.VIRTIO_BLK_T_DISCARD} <= types
    assert any(c.tables for c in first) and any(c.heads != (0,) for c in first)
    assert any(d.alias is not None or d.bar is not None for c in first for d in c.descs)


def test_choices_past_the_end_are_zero():
    c = Choices(b"\x05")
    assert (c.byte(), c.byte(), c.below(10)) == (5, 0, 0)


# --- the raw ring's memory checks ---------------------------------------------------------------


def test_plain_read_completes_and_leaves_guards(session):
    obs, finding = session.execute(blk_chain(IN, 1, read_len=S))
    assert finding is None
    assert obs.used[0][1] == S + 1 and obs.status == spec.VIRTIO_BLK_S_OK
    assert obs.memory == [] and obs.ring == []


def test_a_write_outside_the_buffers_is_found(session):
    """Turn the device into one that writes its status one byte past the status
    buffer: the arena check names the guard bytes."""
    raw = session.raw
    chain = blk_chain(IN, 1, read_len=S)
    arena, ops = raw.place(chain)
    raw.platform.execute(ops)
    off, n = arena.buffers[-1]
    raw.platform.mem_write(arena.base + off + n, b"\x00")  # what a sloppy device would do
    obs = raw.observe(chain, arena)
    assert obs.memory[0].startswith("device wrote 1 byte(s) into guard bytes outside every "
                                    "buffer of the request")


def test_alias_zone_names_truncated_addresses(session):
    raw = session.raw
    chain = blk_chain(IN, 1, read_len=S)
    arena, ops = raw.place(chain)
    raw.platform.execute(ops)
    raw.platform.mem_write(arena.base + arena.zone + 4, bytes([guard_byte(arena.zone + 4) ^ 1]))
    obs = raw.observe(chain, arena)
    assert "where a truncated address beyond guest memory lands" in obs.memory[0]
    assert ALIAS_ZONE >= 4096


# --- findings on defective devices ----------------------------------------------------------------


def _execute_on(defect: str, chain: ChainSpec):
    target = open_target(ref_with(defect))
    s = FuzzSession(target, QueueSetup(), quiet=0.0)
    try:
        return s.execute(chain)
    finally:
        s.close()
        target.close()


def test_status_into_a_readable_buffer_is_corruption():
    chain = blk_chain(OUT, 5, data=b"\x22" * S, status_len=0)
    _obs, finding = _execute_on("status-into-readable-tail", chain)
    assert finding is not None and finding.kind == "corruption"
    assert "which no device-writable descriptor covers" in finding.summary


def test_wrapped_byte_offset_corrupting_the_disk_is_found():
    chain = blk_chain(OUT, (1 << 55) + 5, data=b"\x96" * S, disk_writes=())
    _obs, finding = _execute_on("byte-offset-wraps", chain)
    assert finding is not None
    assert (finding.kind, finding.summary) == (
        "corruption", "disk sector 5 changed, outside the request's range (data loss)")


def test_defect_free_device_handles_the_same_chains(session):
    for chain in (blk_chain(OUT, 5, data=b"\x22" * S, status_len=0),
                  blk_chain(OUT, (1 << 55) + 5, data=b"\x96" * S, disk_writes=())):
        _obs, finding = session.execute(chain)
        assert finding is None


# --- the loop, reproducers, replay ------------------------------------------------------------


def test_fuzzing_finds_a_planted_bug_and_writes_a_replayable_reproducer(tmp_path):
    report = fuzz(ref_with("status-into-readable-tail"), seconds=120, seed=3, out=tmp_path,
                  max_executions=20000, max_findings=1)
    assert report.findings, report.summary()
    finding, path = report.findings[0]
    assert finding.kind == "corruption" and path is not None and path.exists()
    rep = load_reproducer(path)
    assert rep.seed == 3 and rep.target["device"]["defects"] == ["status-into-readable-tail"]
    assert 1 <= len(rep.chains) <= 3, "the shrinker left more chains than the bug needs"
    again = replay(rep)
    assert again.reproduced and again.finding.kind == "corruption"
    clean = replay(rep, REF)
    assert not clean.reproduced, clean.observation


def test_reproducer_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(ReproducerError) as info:
        load_reproducer(bad)
    assert str(info.value) == (f"{bad}: format: expected 'vblk-conformance-fuzz/1', "
                               f"got 'something-else'")
    rep = Reproducer(Finding("crash", "x"), {"kind": "reference"}, QueueSetup(),
                     [blk_chain(IN, 0, read_len=S)])
    data = rep.to_json()
    del data["chains"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ReproducerError) as info:
        load_reproducer(bad)
    assert str(info.value) == f"{bad}: missing field 'chains'"


def test_cli_fuzz_and_replay(tmp_path, capsys):
    target = tmp_path / "t.yaml"
    target.write_text("kind: reference\nname: planted\ndevice:\n  defects: "
                      "[status-into-readable-tail]\n")
    out = tmp_path / "found"
    code = fuzz_cli.cmd_fuzz(fuzz_cli_args(target, out), [])
    text = capsys.readouterr().out
    assert code == 3, text
    files = sorted(out.glob("*.json"))
    assert files and "corruption" in text
    args = type("A", (), {"file": str(files[0]), "target_config": None})()
    assert fuzz_cli.cmd_replay(args, []) == 1
    assert "reproduced: corruption" in capsys.readouterr().out


def fuzz_cli_args(target, out):
    return type("A", (), {"target": None, "target_config": str(target), "seconds": 60.0,
                          "seed": 11, "out": str(out), "packed": False, "queue_size": 16,
                          "max_findings": 1})()


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    args = fuzz_cli_args(tmp_path / "missing.yaml", tmp_path)
    assert fuzz_cli.cmd_fuzz(args, []) == 4
    assert "missing.yaml: cannot read the target file" in capsys.readouterr().err
    args.target_config, args.queue_size = None, 12
    assert fuzz_cli.cmd_fuzz(args, []) == 4
    assert "--queue-size: expected a power of 2" in capsys.readouterr().err


# --- the reference device survives fuzzing ---------------------------------------------------


@pytest.mark.parametrize("packed", [False, True], ids=["split", "packed"])
def test_reference_device_survives_fuzzed_chains(packed):
    """20,000 fuzzed chains (split) / 5,000 (packed): no exception inside the device, no
    byte written outside a request's buffers, no sector changed outside its range, no
    wedge.  The million-chain run is benchmarks/bench_fuzz.py."""
    count = 5000 if packed else 20000
    report = fuzz(REF, seconds=600, seed=20261127 + packed, out=None,
                  setup=QueueSetup(packed=packed), max_executions=count)
    assert report.executions >= count
    assert report.findings == [], report.summary()
