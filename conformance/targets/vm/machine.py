"""Booting the test VM with virtme-ng, and stopping it.

Why virtme-ng: it boots the host's own Debian kernel with the host's root
filesystem shared read-only (writable overlays on /tmp, /etc, ...), so the
guest has python3, sshd and SFTP without any image to build or download, and
its ``--ssh --ssh-tcp`` mode runs sshd behind user-mode networking with a
``hostfwd`` on 127.0.0.1.  The device under test is added with
``--qemu-opts`` as ``-drive``/``-device``; ``hugepages=N`` on the kernel
command line reserves the agent's DMA memory at boot, when 2 MiB pages are
still easy to find.

Each VM gets its own directory: virtme-ng runs with HOME pointing there, so
its SSH client key and host keys are generated fresh for this VM, and the
host key goes into a known_hosts file, so the connection is checked strictly
even for a throwaway VM.  The disk is a file filled with the suite's sector
pattern (``conformance.pattern``), read back directly for ``backing_read``.
The guest runs ``sleep LIFETIME`` and powers off after it, so even a VM whose
owner was killed does not run forever; ``stop()`` ends the whole process
group and removes the directory.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from conformance.driver.platform import PlatformError
from conformance.targets.base import TargetError
from conformance.targets.qtest.backing import create_pattern_file
from conformance.targets.qtest.errors import TargetStartError
from conformance.targets.qtest.process import prefix_data_dir, resolve_binary
from conformance.targets.qtest.qmp import QmpError, QmpSession

from .config import VmSpec

STATE_FILE = "state.json"
LOG_FILE = "vng.log"
KVM_PROBE_TIMEOUT = 25.0

_running: set[VirtualMachine] = set()


@atexit.register
def _stop_all() -> None:
    for vm in list(_running):
        vm.stop()


def guest_script(lifetime: float) -> str:
    """What the guest runs once it is up: make sure sshd is reachable, then live ``lifetime``.

    virtme-ng configures the NIC with udhcpc, but under a slow TCG boot udev
    may rename the interface (eth0 -> enp0sN) after virtme-ng picked its
    name, and the guest then has no address.  Give every NIC user-mode
    networking's fixed guest address (10.0.2.15, where hostfwd forwards to)
    and route; where DHCP already did, these commands change nothing.
    """
    return ("IP=$(command -v ip || echo busybox ip); "
            # The guest shares the host's /root: its .bashrc (e.g. a pyenv set-up)
            # would run in every SSH session, seconds each under TCG.  Blank the
            # guest's view of it (a bind mount inside the guest only).
            "[ -f /root/.bashrc ] && : > /run/vblk-bashrc && "
            "mount --bind /run/vblk-bashrc /root/.bashrc; "
            "for n in /sys/class/net/*; do d=${n##*/}; [ \"$d\" = lo ] && continue; "
            "$IP link set \"$d\" up; $IP addr add 10.0.2.15/24 dev \"$d\" 2>/dev/null; done; "
            "$IP route add default via 10.0.2.2 2>/dev/null; "
            f"exec sleep {int(lifetime)}")


def newest_kernel(pattern: str) -> str:
    matches = sorted(glob.glob(pattern), key=lambda p: os.path.getmtime(p))
    if not matches:
        raise TargetError(f"qemu-vm: no guest kernel matches {pattern} (bash ci/install-vm.sh "
                          "installs linux-image-amd64)")
    kernel = matches[-1]
    if not os.access(kernel, os.R_OK):
        raise TargetError(f"qemu-vm: cannot read the kernel {kernel} (chmod a+r it; "
                          "ci/install-vm.sh does)")
    return kernel


def preflight(spec: VmSpec) -> tuple[str, str]:
    """(kernel, QEMU binary) for ``spec``, checked before anything boots; TargetError if not."""
    kernel = newest_kernel(spec.kernel)
    try:
        qemu = resolve_binary(spec.qemu)
    except TargetStartError as exc:
        raise TargetError(f"qemu-vm: {exc}") from None
    vng_command()
    return kernel, qemu


def vng_command() -> list[str]:
    """virtme-ng's entry point, run by this interpreter (its virtme-run must be on PATH)."""
    try:
        import virtme_ng  # noqa: F401
    except ImportError:
        raise TargetError("qemu-vm: virtme-ng is not installed (pip install virtme-ng, or "
                          "bash ci/install-vm.sh)") from None
    return [sys.executable, "-m", "virtme_ng.run"]


def prefix_module_dir(binary: str) -> str | None:
    """``PREFIX/lib/<multiarch>/qemu`` for a QEMU in a private ``PREFIX/bin``, if it exists."""
    if not prefix_data_dir(binary):
        return None
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(binary)))
    for candidate in sorted(glob.glob(os.path.join(prefix, "lib", "*", "qemu"))):
        if glob.glob(os.path.join(candidate, "*.so")):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh_banner(port: int, timeout: float = 3.0) -> bool:
    """True once sshd answers on ``port`` (user-mode networking accepts before it does)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class VirtualMachine:
    """One test VM: its directory, its virtme-ng process group, its SSH endpoint."""

    def __init__(self, spec: VmSpec, workdir: str | None = None, detach: bool = False):
        self.spec = spec
        self.detach = detach
        self.workdir = workdir or tempfile.mkdtemp(prefix="vblk-vm-")
        os.makedirs(self.workdir, exist_ok=True)
        self.home = os.path.join(self.workdir, "home")
        self.disk = os.path.join(self.workdir, "disk.raw")
        self.log = os.path.join(self.workdir, LOG_FILE)
        self.known_hosts = os.path.join(self.workdir, "known_hosts")
        self.qmp_path = os.path.join(self.workdir, "qmp.sock")
        self.qmp: QmpSession | None = None
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.kvm = False
        self.kernel = ""
        self.qemu = ""
        self.boot_seconds = 0.0
        self.kvm_probe = ""
        self._t0 = 0.0
        self._reaper: subprocess.Popen | None = None

    # --- command line -------------------------------------------------------------------
    def qemu_opts(self) -> list[str]:
        spec = self.spec
        path = self.disk.replace(",", ",,")  # QEMU's option-value escaping
        opts = ["-drive", f"file={path},if=none,id={spec.drive_id},format=raw",
                "-device", spec.device_arg(),
                # QMP: liveness after a case that may have hung QEMU, and block_resize.
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                # No sound: q35's PC speaker would otherwise make QEMU probe audio
                # driver modules (QEMU 10.0 in a prefix aborts on 7.2's audio-pa.so).
                "-audiodev", "none,id=vblknoaudio", "-machine", "pcspk-audiodev=vblknoaudio",
                # No default devices: q35's empty default DVD drive makes SeaBIOS
                # 1.16 wait 32 s for an AHCI command timeout under QEMU 10.0
                # (QEMU 7.2 answers at once); virtme-ng names every device it needs.
                "-nodefaults"]
        data_dir = prefix_data_dir(self.qemu)
        if data_dir:
            opts += ["-L", data_dir]
        return opts

    def command(self, kvm: bool, exec_cmd: str, port: int | None) -> list[str]:
        spec = self.spec
        cmd = vng_command() + [
            "--run", self.kernel, "--qemu", self.qemu, "--disable-microvm",
            "--memory", spec.memory, "--cpus", str(spec.cpus),
            "--append", f"hugepages={spec.hugepages}", "--exec", exec_cmd,
            "--verbose",  # the guest console goes to the log: the boot error shows its tail
        ]
        if not kvm:
            cmd.append("--disable-kvm")
        if port is not None:
            # "=" form: the value starts with "-", which argparse would take for an option.
            cmd += ["--ssh", str(port), "--ssh-tcp",
                    f"--qemu-opts={shlex.join(self.qemu_opts())}"]
        return cmd

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOME"] = self.home
        env["TMPDIR"] = self.workdir  # virtme-run's own temp files go with the VM's directory
        modules = prefix_module_dir(self.qemu)
        if modules:
            # A QEMU in a private prefix would load the system QEMU's modules
            # (audio, display) from its compiled-in directory and abort.
            env["QEMU_MODULE_DIR"] = modules
        # vng runs virtme-run through the shell: it must find this interpreter's copy.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        return env

    # --- start / stop --------------------------------------------------------------------
    def start(self) -> VirtualMachine:
        """Boot the VM and wait until its sshd and QEMU's monitor answer."""
        return self.launch().wait_ready()

    def launch(self, kvm: bool | None = None) -> VirtualMachine:
        """Start booting and return at once; :meth:`wait_ready` waits for the guest.

        ``kvm`` is a decision already taken (by an earlier VM of the same spec),
        so a second VM does not run the KVM boot probe again.
        """
        spec = self.spec
        self.kernel, self.qemu = preflight(spec)
        os.makedirs(self.home, exist_ok=True)
        create_pattern_file(self.disk, spec.disk_size)
        if kvm is None:
            self.kvm = self._choose_kvm()
        else:
            self.kvm, self.kvm_probe = kvm, f"{'KVM' if kvm else 'TCG'}, as the first VM"
        self.port = free_port()
        self._t0 = time.monotonic()
        cmd = self.command(self.kvm, guest_script(spec.lifetime), self.port)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self._env(), cwd=self.workdir,
                                         start_new_session=True)
        if not self.detach:
            _running.add(self)
            self._reaper = start_reaper(self.proc.pid, self.workdir)
        return self

    def wait_ready(self) -> VirtualMachine:
        """Wait (boot_timeout from the launch) for sshd and QMP; stop the VM if they fail."""
        if self.proc is None:
            raise TargetError("qemu-vm: wait_ready() on a VM that was not launched")
        try:
            self._wait_for_ssh(self._t0)
            self._write_known_hosts()
            self._connect_qmp()
        except BaseException:
            self.stop()
            raise
        # For a spare VM launched long before it is needed, this is an upper bound.
        self.boot_seconds = time.monotonic() - self._t0
        self.save_state()
        return self

    def _choose_kvm(self) -> bool:
        mode = self.spec.kvm
        if mode == "off":
            self.kvm_probe = "off (kvm: off)"
            return False
        usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
        if mode == "on":
            if not usable:
                raise TargetError("qemu-vm: kvm: on, but /dev/kvm is missing or not accessible")
            self.kvm_probe = "on (kvm: on)"
            return True
        if not usable:
            self.kvm_probe = "auto: /dev/kvm not usable, TCG"
            return False
        # Nested KVM can hang a Linux guest early in boot: only a guest that
        # boots and runs a command within the probe time earns KVM.
        probe = self.command(True, "true", None)
        t0 = time.monotonic()
        try:
            done = subprocess.run(probe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=self._env(), cwd=self.workdir,
                                  timeout=KVM_PROBE_TIMEOUT, start_new_session=True)
            ok = done.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        self.kvm_probe = (f"auto: KVM boot probe {'passed' if ok else 'failed'} in "
                          f"{time.monotonic() - t0:.0f}s, {'KVM' if ok else 'TCG'}")
        return ok

    def _log_tail(self, n: int = 3) -> str:
        try:
            lines = [x for x in Path(self.log).read_text(errors="replace").splitlines()
                     if x.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def _wait_for_ssh(self, t0: float) -> None:
        deadline = t0 + self.spec.boot_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetError(f"qemu-vm: the VM exited during boot (status "
                                  f"{self.proc.returncode}): {self._log_tail() or 'no output'}")
            if ssh_banner(self.port):
                return
            time.sleep(0.5)
        raise TargetError(f"qemu-vm: sshd in the VM did not answer on 127.0.0.1:{self.port} "
                          f"within {self.spec.boot_timeout:g}s"
                          + (f"; last output: {self._log_tail()}" if self._log_tail() else ""))

    def _connect_qmp(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.qmp_path)
            self.qmp = QmpSession(sock, timeout=10.0, name="vblk-vm")
        except (OSError, QmpError) as exc:
            sock.close()
            raise TargetError(f"qemu-vm: QEMU's monitor ({self.qmp_path}) did not answer: "
                              f"{exc}") from None

    def alive(self, timeout: float = 3.0) -> bool:
        """QEMU runs and its main loop answers QMP (a hung device model stops both)."""
        if self.proc is None or self.proc.poll() is not None or self.qmp is None:
            return False
        try:
            self.qmp.command("query-status", timeout=timeout)
            return True
        except QmpError:
            return False

    def resize(self, capacity_bytes: int) -> None:
        """block_resize: the device sends a configuration change (5.2.4)."""
        if self.qmp is None:
            raise PlatformError("qemu-vm: no QMP connection to resize the disk")
        try:
            self.qmp.command("block_resize", device=self.spec.drive_id, size=capacity_bytes)
        except QmpError as exc:
            raise PlatformError(f"resize to {capacity_bytes} bytes failed: {exc}") from None

    def restore_disk(self) -> None:
        """The disk's first size and pattern again (between cases, the device quiesced)."""
        if os.path.getsize(self.disk) != self.spec.disk_size:
            self.resize(self.spec.disk_size)
        create_pattern_file(self.disk, self.spec.disk_size, truncate=False)

    @property
    def ssh_dir(self) -> str:
        return os.path.join(self.home, ".cache", "virtme-ng", ".ssh")

    @property
    def key_file(self) -> str:
        return os.path.join(self.ssh_dir, "id_virtme")

    def _write_known_hosts(self) -> None:
        lines = []
        for pub in sorted(glob.glob(os.path.join(self.ssh_dir, "etc", "ssh", "ssh_host_*.pub"))):
            fields = Path(pub).read_text().split()
            if len(fields) >= 2:
                lines.append(f"[127.0.0.1]:{self.port} {fields[0]} {fields[1]}")
        if not lines:
            raise TargetError(f"qemu-vm: virtme-ng left no host keys in {self.ssh_dir}")
        Path(self.known_hosts).write_text("\n".join(lines) + "\n")

    def ssh_options(self) -> dict[str, Any]:
        """The ssh target's keys for this VM."""
        return {
            "host": "127.0.0.1", "port": self.port, "user": "root", "key_file": self.key_file,
            "known_hosts": self.known_hosts, "serial": self.spec.serial,
            # The host's own interpreter, seen through the shared root (no PATH shims).
            "python": "/usr/bin/python3", "hugepages": self.spec.hugepages,
            "backing_file": self.disk, "connect_timeout": 30,
        }

    def facts(self) -> dict[str, Any]:
        return {
            "vm_qemu": self.qemu, "vm_device": self.spec.device_arg(), "vm_kernel": self.kernel,
            "vm_accel": "kvm" if self.kvm else "tcg", "vm_kvm_probe": self.kvm_probe,
            "vm_boot_seconds": round(self.boot_seconds, 1), "vm_memory": self.spec.memory,
            "vm_cpus": self.spec.cpus,
        }

    def save_state(self) -> None:
        state = {"pgid": self.proc.pid if self.proc else None, "port": self.port,
                 "workdir": self.workdir, "ssh": self.ssh_options(), "facts": self.facts()}
        Path(self.workdir, STATE_FILE).write_text(json.dumps(state, indent=1))

    def stop(self, grace: float = 3.0) -> None:
        """End the VM's process group and remove its directory; idempotent.

        SIGTERM first, SIGKILL after ``grace`` seconds (a hung QEMU never
        answers SIGTERM, so there is no point waiting long for one).
        """
        _running.discard(self)
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            kill_group(self.proc.pid, grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._reaper is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.close()  # nothing left for it to do: it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(5)
            self._reaper = None


#: Run by a helper process that waits for its stdin to close: that happens when
#: the suite stops the VM, and also when the suite dies in any way (SIGTERM,
#: SIGKILL), which atexit alone would miss.  Then the VM's process group is
#: ended and its directory removed.
_REAPER = """
import os, shutil, signal, sys, time
pgid, workdir = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except OSError:
        break
    time.sleep(2)
shutil.rmtree(workdir, ignore_errors=True)
"""


def start_reaper(pgid: int, workdir: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _REAPER, str(pgid), workdir],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_group(pgid: int, grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_saved(workdir: str) -> str:
    """Stop a VM that ``vm start`` left running; return what was done (one line)."""
    path = Path(workdir, STATE_FILE)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        raise TargetError(f"vm stop: no VM state in {path}") from None
    pgid = state.get("pgid")
    if isinstance(pgid, int) and _group_is_vm(pgid, workdir):
        kill_group(pgid)
        what = f"stopped the VM (process group {pgid}) and removed {workdir}"
    else:
        what = f"no VM was running; removed {workdir}"
    shutil.rmtree(workdir, ignore_errors=True)
    return what


def _group_is_vm(pgid: int, workdir: str) -> bool:
    """Whether ``pgid`` still leads a process started for ``workdir`` (pids get reused)."""
    try:
        cwd = os.readlink(f"/proc/{pgid}/cwd")
    except OSError:
        return False
    return os.path.realpath(cwd) == os.path.realpath(workdir)
