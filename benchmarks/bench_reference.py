"""Throughput of the reference device in process, and the wall time of a full run.

    python benchmarks/bench_reference.py [--requests N] [--repeat K] [--skip-run]

Prints 4 KiB reads and writes per second through the driver and the in-process
reference device (queue of 256, bursts that fill the ring), and the wall time
of ``vblk-conformance run`` on the reference target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from conformance.driver.blk import BlkDevice, read_request, write_request
from conformance.targets import open_target, spec_from_mapping

S4K = 4096


def requests_per_second(kind: str, n: int, queue_size: int) -> float:
    target = open_target(spec_from_mapping({"kind": "reference"}, "bench", "bench"))
    platform = target.platform()
    try:
        blk = BlkDevice(platform).init(queue_size=queue_size)
        sectors = blk.config.capacity // 8
        payload = bytes(range(256)) * 16
        if kind == "read":
            reqs = [read_request((i % sectors) * 8, S4K) for i in range(n)]
        else:
            reqs = [write_request((i % sectors) * 8, payload) for i in range(n)]
        start = time.perf_counter()
        done = blk.submit(reqs)
        elapsed = time.perf_counter() - start
        assert all(c.status == 0 for c in done)
        return n / elapsed
    finally:
        target.release(platform, broken=False)
        target.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--queue-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-run", action="store_true")
    args = ap.parse_args()
    for kind in ("read", "write"):
        # The median of a few runs: one run on a shared VM swings by 10 %.
        rates = sorted(requests_per_second(kind, args.requests, args.queue_size)
                       for _ in range(args.repeat))
        print(f"4 KiB {kind:5}: {statistics.median(rates):10,.0f} requests/s median of "
              f"{args.repeat} (range {rates[0]:,.0f}-{rates[-1]:,.0f}; {args.requests} "
              f"requests, queue size {args.queue_size})")
    if not args.skip_run:
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "conformance.cli", "run", "-q"],
                             stdout=subprocess.DEVNULL)
        print(f"vblk-conformance run (reference): {time.perf_counter() - start:.1f} s, "
              f"exit status {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
