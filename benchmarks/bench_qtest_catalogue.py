"""Wall time of the whole case catalogue on the qtest target, per QEMU version.

Run: ``python benchmarks/bench_qtest_catalogue.py [TARGET.yaml ...] [--repeat N]``
(default: examples/qemu-7.2.yaml and examples/qemu-10.0.yaml, each where its
QEMU binary exists).  For every target file it runs all cases in this process
and reports the wall time, how many QEMUs were started and how many system
resets reused one, the seconds spent in each, and their share of the wall
time.  Goal: the whole catalogue in at most 60 s per QEMU on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from conformance.runargs import case_run_args  # noqa: E402
from conformance.summary import case_outcomes  # noqa: E402
from conformance.targets import load_target_file  # noqa: E402

GOAL_SECONDS = 60.0
DEFAULT_TARGETS = ("examples/qemu-7.2.yaml", "examples/qemu-10.0.yaml")


class _Probe:
    """Keeps the run's target (for its start/reset counters) and every report."""

    def __init__(self) -> None:
        self.target = None
        self.reports: list = []

    @pytest.fixture(autouse=True)
    def _vbc_bench_target(self, target):
        self.target = target

    def pytest_runtest_logreport(self, report) -> None:
        self.reports.append(report)


@dataclass
class Run:
    name: str
    qemu: str
    wall: float
    cases: int
    outcomes: Counter
    starts: int
    start_s: float
    resets: int
    reset_s: float

    @property
    def overhead_share(self) -> float:
        return (self.start_s + self.reset_s) / self.wall if self.wall else 0.0


def run_catalogue(target_file: str) -> Run:
    probe = _Probe()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = pytest.main([*case_run_args(), "-q", "--target-config", target_file],
                           plugins=[probe])
    wall = time.perf_counter() - t0
    if code not in (0, 1) or probe.target is None:
        raise SystemExit(f"{target_file}: the run did not complete (pytest exit status {code}):\n"
                         + out.getvalue()[-2000:])
    t = probe.target
    outcomes = case_outcomes(probe.reports)
    return Run(
        name=t.name, qemu=t.describe().get("qemu_version") or "?", wall=wall,
        cases=len(outcomes), outcomes=Counter(o for o, _ in outcomes.values()),
        starts=t.starts, start_s=t.start_seconds, resets=t.resets, reset_s=t.reset_seconds,
    )


def available(path: str) -> bool:
    try:
        spec = load_target_file(path)
    except Exception:
        return False
    qemu = spec.options.get("qemu", "qemu-system-x86_64")
    return os.path.exists(qemu) if os.sep in qemu else True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help="qtest target files")
    ap.add_argument("--repeat", type=int, default=1, help="runs per target (best is reported)")
    args = ap.parse_args()
    targets = args.targets or [os.path.join(ROOT, t) for t in DEFAULT_TARGETS
                               if available(os.path.join(ROOT, t))]
    if not targets:
        raise SystemExit("no target file with an installed QEMU (run ci/install-qemu.sh)")
    print(f"{'target':<24} {'QEMU':>7} {'cases':>5} {'wall s':>7} {'starts':>6} {'start s':>7} "
          f"{'resets':>6} {'reset s':>7} {'start+reset':>11}  outcomes")
    for path in targets:
        best = min((run_catalogue(path) for _ in range(max(1, args.repeat))),
                   key=lambda r: r.wall)
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(best.outcomes.items()))
        verdict = "ok" if best.wall <= GOAL_SECONDS else f"OVER the {GOAL_SECONDS:g} s goal"
        print(f"{best.name:<24} {best.qemu:>7} {best.cases:>5} {best.wall:>7.1f} "
              f"{best.starts:>6} {best.start_s:>7.2f} {best.resets:>6} {best.reset_s:>7.2f} "
              f"{best.overhead_share:>10.0%}  {outcomes}  [{verdict}]")


if __name__ == "__main__":
    main()
