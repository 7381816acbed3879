"""``vblk-conformance fuzz`` and ``vblk-conformance replay``.

    vblk-conformance fuzz (--target KIND | --target-config FILE) --seconds N
                          [--seed S] [--out DIR] [--packed] [--queue-size N]
    vblk-conformance replay FILE [--target-config FILE]

``fuzz`` exits 0 when nothing was found, 3 when it wrote reproducers (one per
distinct finding, under ``--out``, default ``fuzz-findings/``), 4 on bad
usage; a CI job against a device with known findings accepts 0 and 3.
``replay`` sends a reproducer's chains to a fresh device and says what
happened; it exits 1 when the device misbehaves again, 0 when it does not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXIT_FINDINGS = 3
EXIT_USAGE = 4


def _err(message: str) -> int:
    print(f"vblk-conformance: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _target_spec(args: argparse.Namespace):
    from conformance.targets import load_target_file, spec_from_mapping

    if args.target_config:
        spec = load_target_file(args.target_config)
        if args.target and args.target != spec.kind:
            raise ValueError(f"--target {args.target} contradicts kind {spec.kind!r} in "
                             f"{args.target_config}")
        return spec
    kind = args.target or "reference"
    return spec_from_mapping({"kind": kind}, f"--target {kind}", kind)


def cmd_fuzz(args: argparse.Namespace, extra: list[str]) -> int:
    from conformance.fuzz.chain import QueueSetup
    from conformance.fuzz.engine import fuzz
    from conformance.targets import TargetConfigError, TargetError, open_target

    if args.seconds <= 0:
        return _err(f"--seconds: expected a positive number, got {args.seconds}")
    size = args.queue_size
    if size < 2 or (not args.packed and size & (size - 1)):
        return _err(f"--queue-size: expected a power of 2 of at least 2 (any size >= 2 with "
                    f"--packed), got {size}")
    try:
        spec = _target_spec(args)
        open_target(spec).close()  # options checked before anything starts
    except (TargetConfigError, TargetError, ValueError) as exc:
        return _err(str(exc))
    seed = args.seed if args.seed is not None else int(time.time()) & 0xFFFFFFFF
    out = Path(args.out)
    setup = QueueSetup(packed=args.packed, queue_size=size)
    print(f"fuzzing {spec.name} ({spec.kind}) for {args.seconds:g}s, seed {seed}, "
          f"{'packed' if args.packed else 'split'} queue of {size}; findings go to {out}/",
          flush=True)
    try:
        report = fuzz(spec, args.seconds, seed, out, setup,
                      progress=lambda line: print(line, flush=True),
                      max_findings=args.max_findings)
    except TargetError as exc:
        return _err(str(exc))
    print(report.summary())
    return EXIT_FINDINGS if report.findings else 0


def cmd_replay(args: argparse.Namespace, extra: list[str]) -> int:
    from conformance.fuzz.reproducer import ReproducerError, load_reproducer, replay
    from conformance.targets import TargetConfigError, TargetError, load_target_file

    try:
        rep = load_reproducer(args.file)
        spec = load_target_file(args.target_config) if args.target_config else None
    except (ReproducerError, TargetConfigError) as exc:
        return _err(str(exc))
    f = rep.finding
    print(f"reproducer: {f.kind} ({f.severity}): {f.summary}")
    where = spec.name if spec else rep.target.get("name")
    print(f"  {len(rep.chains)} chain(s), found on {rep.target.get('name')} "
          f"({rep.target.get('kind')}), seed {rep.seed}; replaying on {where}")
    try:
        result = replay(rep, spec)
    except (TargetConfigError, TargetError) as exc:
        return _err(str(exc))
    print(f"device: {result.observation}")
    if result.finding is None:
        print(f"not reproduced: the device handled the chain(s) ({result.seconds:.1f}s)")
        return 0
    g = result.finding
    print(f"reproduced: {g.kind} ({g.severity}): {g.summary}")
    for key in ("exit", "flaky"):
        if key in g.triage:
            print(f"  {key}: {g.triage[key]}")
    for line in g.triage.get("stderr_tail", []):
        print(f"  stderr: {line}")
    return 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fz = sub.add_parser(
        "fuzz", help="send generated hostile descriptor chains to a target",
        description="Generate request and descriptor-chain mutations (Hypothesis), send them "
                    "to the target, keep a minimal reproducer for each crash, hang, "
                    "corruption or wedge.")
    fz.add_argument("--target", metavar="KIND", help="reference (default) or qtest")
    fz.add_argument("--target-config", metavar="FILE", help="YAML target file")
    fz.add_argument("--seconds", type=float, required=True, help="how long to fuzz")
    fz.add_argument("--seed", type=int, default=None, help="seed (default: from the clock)")
    fz.add_argument("--out", default="fuzz-findings", metavar="DIR",
                    help="where reproducer files go (default: fuzz-findings)")
    fz.add_argument("--max-findings", type=int, default=None, metavar="N",
                    help="stop after N distinct findings")
    fz.add_argument("--packed", action="store_true", help="fuzz a packed virtqueue")
    fz.add_argument("--queue-size", type=int, default=16, metavar="N",
                    help="queue size (default 16)")
    fz.set_defaults(func=cmd_fuzz)
    rp = sub.add_parser("replay", help="replay a fuzz reproducer file",
                        description="Send a reproducer's chains to a fresh device of its "
                                    "target and report what happens.")
    rp.add_argument("file", help="reproducer JSON file")
    rp.add_argument("--target-config", metavar="FILE",
                    help="another target file (e.g. a different QEMU) instead of the "
                         "reproducer's own")
    rp.set_defaults(func=cmd_replay)
