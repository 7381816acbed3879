"""Fuzz executions per second, per target; and the million-chain run on the reference device.

Run::

    python benchmarks/bench_fuzz.py [--seconds N] [TARGET.yaml ...]
    python benchmarks/bench_fuzz.py --million          # 1,000,000 chains, reference device

The first form fuzzes each target (default: the reference device, then
examples/qemu-7.2.yaml and examples/qemu-10.0.yaml where their QEMU exists)
for N seconds (default 60) with a fixed seed and prints executions, executions
per second, device resets, fresh devices (QEMU restarts) and findings.  The
second sends one million fuzzed chains (split ring, then it reports packed
separately with ``--packed``) to the reference device and fails (exit 1) on
any finding: an exception inside the device, a byte written outside a
request's buffers, a sector changed outside its range, or a wedge.  That is
the long form of tests/test_fuzz.py::test_reference_device_survives_fuzzed_chains.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conformance.fuzz.chain import QueueSetup  # noqa: E402
from conformance.fuzz.engine import fuzz  # noqa: E402
from conformance.targets import load_target_file, spec_from_mapping  # noqa: E402

DEFAULT_TARGETS = ("examples/qemu-7.2.yaml", "examples/qemu-10.0.yaml")
SEED = 20261127


def _available(path: str) -> bool:
    spec = load_target_file(os.path.join(ROOT, path))
    qemu = spec.options.get("qemu", "qemu-system-x86_64")
    return os.path.exists(qemu) or shutil.which(qemu) is not None


def rate(spec, seconds: float, packed: bool) -> str:
    report = fuzz(spec, seconds, SEED, None, QueueSetup(packed=packed))
    return (f"{spec.name:<16} {'packed' if packed else 'split':<6} {report.executions:>9} "
            f"{report.rate:>9.0f} {report.resets:>8} {report.restarts:>6} "
            f"{len(report.findings):>8}")


def million(packed: bool) -> int:
    ref = spec_from_mapping({"kind": "reference", "name": "reference"}, "bench", "reference")
    report = fuzz(ref, 24 * 3600, SEED, None, QueueSetup(packed=packed),
                  max_executions=1_000_000,
                  progress=lambda line: print(line, flush=True))
    print(report.summary())
    return 1 if report.findings else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="target files (default: reference + QEMUs)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--packed", action="store_true", help="fuzz a packed queue")
    parser.add_argument("--million", action="store_true",
                        help="1,000,000 chains on the reference device; exit 1 on a finding")
    args = parser.parse_args()
    if args.million:
        return million(args.packed)
    specs = [spec_from_mapping({"kind": "reference", "name": "reference"}, "bench",
                               "reference")]
    paths = args.targets or [p for p in DEFAULT_TARGETS if _available(p)]
    specs += [load_target_file(p if os.path.isabs(p) else os.path.join(ROOT, p))
              for p in paths]
    print(f"{'target':<16} {'ring':<6} {'execs':>9} {'execs/s':>9} {'resets':>8} "
          f"{'fresh':>6} {'findings':>8}")
    for spec in specs:
        print(rate(spec, args.seconds, args.packed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
