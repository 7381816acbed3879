"""Wall time of the mutant run: every injectable defect against the cases of its clauses.

    python benchmarks/bench_mutants.py [-j JOBS]

Prints the kill table's last line and the wall time.  Target: all defects in
at most 5 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time

from conformance.mutants import kill_table
from reference_device.defects import DEFECTS


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--jobs", type=int, default=None)
    args = ap.parse_args()
    start = time.perf_counter()
    results = kill_table(sorted(DEFECTS), jobs=args.jobs)
    elapsed = time.perf_counter() - start
    killed = sum(r.killed for r in results)
    print(f"{killed}/{len(results)} defects killed in {elapsed:.1f} s "
          f"({elapsed / len(results):.2f} s per defect)")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
