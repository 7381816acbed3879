"""``vblk-conformance vm start|stop``: a test VM that outlives the command.

``vm start`` boots a VM the way the qemu-vm target does, leaves it running
and writes an ssh target file for it; ``vm stop`` ends it and removes its
directory.  Useful to run several suites (or an interactive session) against
one boot.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from conformance.targets.base import TargetConfigError, TargetError

from .config import KEYS, vm_spec_from_mapping
from .machine import STATE_FILE, VirtualMachine, stop_saved

DEFAULT_DIR = "/tmp/vblk-vm"


def add_parsers(sub) -> None:
    vm = sub.add_parser("vm", help="boot or stop a test VM for the ssh target",
                        description=__doc__.splitlines()[0])
    vm_sub = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    start = vm_sub.add_parser("start", help="boot a VM with the device under test")
    start.add_argument("--qemu", help=KEYS["qemu"])
    start.add_argument("--device", help=KEYS["device"])
    start.add_argument("--disk-size", help=KEYS["disk_size"])
    start.add_argument("--memory", help=KEYS["memory"])
    start.add_argument("--cpus", type=int, help=KEYS["cpus"])
    start.add_argument("--kernel", help=KEYS["kernel"])
    start.add_argument("--kvm", choices=("off", "on", "auto"), help=KEYS["kvm"])
    start.add_argument("--boot-timeout", type=float, help=KEYS["boot_timeout"])
    start.add_argument("--lifetime", type=float, help=KEYS["lifetime"])
    start.add_argument("--dir", default=DEFAULT_DIR,
                       help=f"the VM's directory: keys, disk, state (default {DEFAULT_DIR})")
    start.set_defaults(func=cmd_vm_start)
    stop = vm_sub.add_parser("stop", help="stop a VM started with vm start")
    stop.add_argument("--dir", default=DEFAULT_DIR, help=f"the VM's directory (default "
                                                         f"{DEFAULT_DIR})")
    stop.set_defaults(func=cmd_vm_stop)


def _err(message: str) -> int:
    print(f"vblk-conformance: error: {message}", file=sys.stderr)
    return 4


def cmd_vm_start(args: argparse.Namespace, extra) -> int:
    options = {key: getattr(args, key) for key in KEYS if getattr(args, key, None) is not None}
    try:
        spec = vm_spec_from_mapping(options, "vm start")
    except TargetConfigError as exc:
        return _err(str(exc))
    workdir = os.path.abspath(args.dir)
    if Path(workdir, STATE_FILE).exists():
        return _err(f"vm start: {workdir} already holds a VM (vblk-conformance vm stop "
                    f"--dir {workdir} first)")
    if os.path.exists(workdir) and os.listdir(workdir):
        return _err(f"vm start: {workdir} exists and is not empty")
    try:
        vm = VirtualMachine(spec, workdir=workdir, detach=True).start()
    except TargetError as exc:
        return _err(str(exc))
    if vm.qmp is not None:  # this command ends; the VM goes on without its monitor client
        vm.qmp.close()
        vm.qmp = None
    target = Path(workdir, "target.yaml")
    lines = ["kind: ssh", f"name: vm-{vm.port}"]
    lines += [f"{k}: {v}" for k, v in vm.ssh_options().items()]
    target.write_text("\n".join(lines) + "\n")
    print(f"VM up in {vm.boot_seconds:.0f}s ({vm.facts()['vm_accel']}): ssh root@127.0.0.1 -p "
          f"{vm.port} -i {vm.key_file}")
    print(f"target file: {target}")
    print(f"run:  vblk-conformance run --target-config {target}")
    print(f"stop: vblk-conformance vm stop --dir {workdir}")
    return 0


def cmd_vm_stop(args: argparse.Namespace, extra) -> int:
    try:
        print(stop_saved(os.path.abspath(args.dir)))
    except TargetError as exc:
        return _err(str(exc))
    return 0
