"""How many qtest primitives per second, one round trip each vs pipelined.

Run: ``python benchmarks/bench_qtest_roundtrip.py [--n 2000] [--machine q35]``.
Starts one QEMU (see conformance/targets/qtest), prints a table, stops it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conformance.driver.platform import ConfigRead, MemRead, MemWrite
from conformance.targets.qtest import QtestPlatform, QtestSpec
from conformance.targets.qtest import protocol as qt


def rate(fn, n: int) -> float:
    fn(min(n, 50))  # warm up
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="primitives per measurement")
    ap.add_argument("--machine", default="q35", choices=["q35", "pc"])
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    args = ap.parse_args()
    n = args.n
    with QtestPlatform(QtestSpec(qemu=args.qemu, machine=args.machine)) as p:
        c = p.qtest
        buf = p.dma_alloc(4096 * 64)
        page = os.urandom(4096)
        rows = [
            ("readl (guest RAM)",
             lambda k: [c.readl(buf) for _ in range(k)],
             lambda k: c.pipeline([qt.read_cmd(4, buf)] * k)),
            ("inl 0xcfc",
             lambda k: [c.inl(0xCFC) for _ in range(k)],
             lambda k: c.pipeline([qt.in_cmd(4, 0xCFC)] * k)),
            ("b64read 4 KiB",
             lambda k: [c.memread(buf, 4096) for _ in range(k)],
             lambda k: c.pipeline([qt.b64read_cmd(buf, 4096)] * k)),
            ("b64write 4 KiB",
             lambda k: [c.memwrite(buf, page) for _ in range(k)],
             lambda k: c.pipeline([qt.b64write_cmd(buf, page)] * k)),
            ("Platform ConfigRead (2 cmds)",
             lambda k: [p.execute([ConfigRead(0x100 - 4 * (i & 1) - 4, 4)]) for i in range(k)],
             lambda k: p.execute([ConfigRead(0x100 - 4 * (i & 1) - 4, 4) for i in range(k)])),
            ("Platform MemRead 16 B",
             lambda k: [p.execute([MemRead(buf, 16)]) for _ in range(k)],
             lambda k: p.execute([MemRead(buf, 16)] * k)),
            ("Platform MemWrite 4 KiB",
             lambda k: [p.execute([MemWrite(buf, page)]) for _ in range(k)],
             lambda k: p.execute([MemWrite(buf, page)] * k)),
        ]
        d = p.describe()
        print(f"QEMU {d['qemu_version']} ({d['qemu_binary']}), machine {d['machine']}, n={n}")
        print(f"{'primitive':30} {'unbatched/s':>12} {'us each':>8} {'batched/s':>12} "
              f"{'us each':>8} {'speed-up':>8}")
        for name, single, batched in rows:
            r1, r2 = rate(single, n), rate(batched, n)
            print(f"{name:30} {r1:12,.0f} {1e6 / r1:8.1f} {r2:12,.0f} {1e6 / r2:8.1f} "
                  f"{r2 / r1:7.1f}x")


if __name__ == "__main__":
    main()
