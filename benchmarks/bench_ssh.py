"""The ssh target against a VM the suite boots: boot, round trips, throughput, wall times.

    python benchmarks/bench_ssh.py [--qemu BIN] [--requests N] [--catalogue] [--codec]

Reports, for QEMU's virtio-blk-pci in a qemu-vm (TCG unless --kvm):

- boot time: from launching virtme-ng to sshd answering, and to the agent
  holding the device;
- SSH round trips per 1,000 requests (512-byte reads, queue size 8: two
  requests per burst, as in the wraparound case) and requests per second
  through the agent, plus 4 KiB reads on a 256-entry queue;
- the 65,536-request wraparound case over SSH, per queue size (8: two
  requests per burst; 2 and 1: one request per burst, latency-bound);
- with --catalogue, the wall time of the whole catalogue on qemu-vm (boot
  included) and on qtest with the same QEMU and -device string;
- with --codec, the cost of the protocol's binary batch encoding against the
  same ops as JSON lines (decode on this host; the guest runs the same Python).

Targets (issue 6): <= 10 round trips per 1,000 requests, wraparound <= 60 s,
whole run including boot <= 5 min.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

from conformance.driver.blk import BlkDevice, read_request
from conformance.targets.ssh.config import ssh_spec_from_mapping
from conformance.targets.ssh.target import SshTarget
from conformance.targets.vm.config import vm_spec_from_mapping
from conformance.targets.vm.machine import VirtualMachine
from guest_agent import protocol as p

S = 512


def through_agent(target: SshTarget, n: int, queue_size: int, nbytes: int) -> tuple[float, float]:
    """(round trips per 1,000 requests, requests per second) for ``n`` reads."""
    platform = target.platform()
    blk = BlkDevice(platform, timeout=30).init(queue_size=queue_size)
    client = target.session.client
    sectors = max(1, blk.config.capacity // (nbytes // S) - 1)
    reqs = [read_request((i % sectors) * (nbytes // S), nbytes) for i in range(n)]
    rt0 = client.round_trips
    t0 = time.perf_counter()
    done = blk.submit(reqs)
    elapsed = time.perf_counter() - t0
    bad = [c for c in done if c.status != 0]
    if bad:
        raise SystemExit(f"{len(bad)} of {n} reads failed; first status {bad[0].status_name}")
    target.release(platform, broken=False)
    return (client.round_trips - rt0) * 1000 / n, n / elapsed


def run_cli(args: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "conformance.cli", "run", "-q", "--no-results",
                          *args], stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, rc


def codec(n_requests: int = 4096) -> None:
    """Binary frames vs JSON lines for the ops of ``n_requests`` wraparound requests."""
    ops: list[tuple] = []
    for i in range(n_requests):
        ops += [(p.OP_MEM_WRITE, 0x100000 + 64 * i, bytes(16)),
                (p.OP_MEM_WRITE, 0x200000 + 600 * i, b"\xde\xad\xbe\xef" * 4 + b"\xa5" * 513
                 + b"\xde\xad\xbe\xef" * 4),
                (p.OP_MEM_WRITE, 0x300000 + 16 * i, bytes(16)),
                (p.OP_MEM_WRITE, 0x300010 + 16 * i, bytes(16)),
                (p.OP_MEM_WRITE, 0x300020 + 16 * i, bytes(16)),
                (p.OP_MEM_WRITE, 0x400000 + 2 * i, bytes(2))]
        if i % 2:
            ops += [(p.OP_MEM_WRITE, 0x400002, bytes(2)), (p.OP_BAR_WRITE, 4, 0x3000, 2, 0),
                    (p.OP_POLL, 0x500002, 2, 0xFFFF, i, 1, 10.0), (p.OP_MEM_READ, 0x500000, 68),
                    (p.OP_MEM_READ, 0x200000, 545), (p.OP_MEM_READ, 0x200300, 545)]
    t0 = time.perf_counter()
    binary = p.encode_batch(ops)
    t_enc = time.perf_counter() - t0
    body = memoryview(binary)[6:]
    t0 = time.perf_counter()
    pos = 0
    while pos < len(body):
        code = body[pos]
        st = p.OP_STRUCTS[code]
        fields = st.unpack_from(body, pos)
        pos += st.size + (fields[2] if code == p.OP_MEM_WRITE else 0)
    t_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    lines = "\n".join(json.dumps([o[0], o[1], base64.b64encode(o[2]).decode()]
                                 if o[0] == p.OP_MEM_WRITE else list(o)) for o in ops)
    t_jenc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for line in lines.splitlines():
        o = json.loads(line)
        if o[0] == p.OP_MEM_WRITE:
            base64.b64decode(o[2])
    t_jdec = time.perf_counter() - t0
    print(f"codec, {len(ops)} ops of {n_requests} wraparound requests: binary {len(binary):,} B "
          f"(encode {t_enc * 1e3:.0f} ms, decode {t_dec * 1e3:.0f} ms); JSON lines "
          f"{len(lines):,} B (encode {t_jenc * 1e3:.0f} ms, decode {t_jdec * 1e3:.0f} ms)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--device", default="virtio-blk-pci,disable-legacy=on,serial=VMDUT0001")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--kvm", default="off")
    ap.add_argument("--catalogue", action="store_true")
    ap.add_argument("--codec", action="store_true")
    ap.add_argument("--skip-wrap", action="store_true")
    args = ap.parse_args()
    if args.codec:
        codec()
    vm_spec = vm_spec_from_mapping({"qemu": args.qemu, "device": args.device, "kvm": args.kvm,
                                    "boot_timeout": 600}, "bench")
    t0 = time.perf_counter()
    vm = VirtualMachine(vm_spec).start()
    try:
        print(f"boot: sshd answered {vm.boot_seconds:.1f} s after launch "
              f"({vm.facts()['vm_accel']}, {vm.qemu})")
        target = SshTarget("bench", 30, ssh_spec_from_mapping(vm.ssh_options(), "bench"))
        target.platform()
        print(f"boot: agent holds the device {time.perf_counter() - t0:.1f} s after launch")
        for n, qsize, nbytes in ((args.requests, 8, S), (args.requests, 256, 4096)):
            per_k, rate = through_agent(target, n, qsize, nbytes)
            print(f"{n} reads of {nbytes} B, queue size {qsize}: {per_k:.1f} round trips per "
                  f"1,000 requests, {rate:,.0f} requests/s through the agent")
        target.close()
        if not args.skip_wrap:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "vm.yaml")
                with open(path, "w") as f:
                    json.dump({"kind": "ssh", "name": "bench", **vm.ssh_options()}, f)
                for qsize in (8, 2, 1):
                    wall, rc = run_cli(["--target-config", path, "-k",
                                        f"test_index_wraparound and {qsize}"])
                    print(f"wraparound case over SSH, queue size {qsize} (65,536+ requests, "
                          f"connect included): {wall:.1f} s, exit status {rc}")
    finally:
        vm.stop()
    if args.catalogue:
        with tempfile.TemporaryDirectory() as d:
            vm_file = os.path.join(d, "qemu-vm.yaml")
            qtest_file = os.path.join(d, "qtest.yaml")
            with open(vm_file, "w") as f:
                json.dump({"kind": "qemu-vm", "name": "bench-vm", "qemu": args.qemu,
                           "device": args.device, "kvm": args.kvm, "boot_timeout": 600}, f)
            with open(qtest_file, "w") as f:
                json.dump({"kind": "qtest", "name": "bench-qtest", "qemu": args.qemu,
                           "device": args.device + ",drive=dut"}, f)
            wall, rc = run_cli(["--target-config", vm_file])
            print(f"catalogue on qemu-vm (boot included): {wall:.1f} s, exit status {rc}")
            wall, rc = run_cli(["--target-config", qtest_file])
            print(f"catalogue on qtest, same QEMU and device: {wall:.1f} s, exit status {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
