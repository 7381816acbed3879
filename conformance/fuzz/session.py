"""One device under fuzzing: execute chains, notice findings, recover, go on.

A :class:`FuzzSession` owns a Platform from a Target, an initialized device
and a :class:`RawQueue`.  :meth:`FuzzSession.execute` sends one
:class:`ChainSpec` and returns a :class:`Finding` when the device

* **crashed or hung** (the Platform raised: on qtest QEMU died or stopped
  answering; the triage keeps the exit status, QEMU's last stderr lines and
  the last primitives the suite sent), after which the target gives a fresh
  device (on qtest: a new QEMU);
* **corrupted** memory (a byte outside the request's device-writable buffers)
  or a disk sector outside the request's range;
* published a **used** entry the driver cannot match (unknown id, length
  beyond the buffer, used idx running ahead);
* is **wedged**: after a reset and re-initialization a well-formed read does
  not complete correctly;
* (reference device only) hit an **internal error**: an exception inside
  the model, which its public calls swallow and record.

Everything else (error statuses, DEVICE_NEEDS_RESET, a request left alone) is
an allowed reaction to a malformed request and not a finding.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.driver.blk import BlkDevice
from conformance.driver.platform import Op, Platform, PlatformError, Result, Unsupported
from conformance.fuzz.chain import ChainSpec, QueueSetup
from conformance.fuzz.rawring import Observation, RawQueue, parsed_disk_writes
from conformance.robustness import DiskProbe, health_check, in_ranges, probe_sectors
from conformance.targets.base import Target

SEVERITY = {"corruption": "corruption", "crash": "crash-or-hang", "hang": "crash-or-hang",
            "wedged": "wedged", "used-ring": "corruption", "internal-error": "wedged"}


@dataclass
class Finding:
    kind: str  # crash | hang | corruption | used-ring | wedged | internal-error
    summary: str  # one line
    detail: str = ""
    triage: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "none")

    def signature(self) -> str:
        """What makes two findings the same bug: the kind and the first problem,
        without the numbers that vary from one chain to the next."""
        if self.kind == "hang":
            return "hang"  # which command timed out says nothing about the cause
        text = self.triage.get("exit", self.summary) if self.kind == "crash" else self.summary
        text = re.sub(r"0x[0-9a-f]+|\d+", "N", text.lower())
        return f"{self.kind}: {text[:160]}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "summary": self.summary,
                "detail": self.detail, "triage": self.triage}


class RecordingPlatform(Platform):
    """Passes everything to ``inner`` and keeps the last primitives sent (for triage)."""

    def __init__(self, inner: Platform, keep: int = 48):
        self.inner = inner
        self.last: collections.deque[Op] = collections.deque(maxlen=keep)
        self.mmio_window = inner.mmio_window

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def execute(self, ops: Sequence[Op]) -> list[Result]:
        self.last.extend(ops)
        return self.inner.execute(ops)

    def dma_alloc(self, size: int, align: int = 4096) -> int:
        return self.inner.dma_alloc(size, align)

    def intx_level(self) -> bool:
        return self.inner.intx_level()

    def resize(self, capacity_bytes: int) -> None:
        self.inner.resize(capacity_bytes)

    def backing_read(self, offset: int, n: int) -> bytes:
        return self.inner.backing_read(offset, n)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()

    def last_ops(self, n: int = 24) -> list[str]:
        return [_op_text(op) for op in list(self.last)[-n:]]


def _op_text(op: Op) -> str:
    text = repr(op)
    return text if len(text) <= 160 else text[:157] + "..."


#: How the qtest target words QEMU's state in its errors (process.describe_exit and
#: the hang diagnosis): the part a triage keeps.
_QEMU_STATE = re.compile(r"QEMU (was killed by [A-Z0-9]+|exited with status -?\d+"
                         r"|is still running( \(process state \w\))?"
                         r"|is stopped( \([^)]*\))?)")


def triage(exc: Exception, platform: RecordingPlatform) -> tuple[str, dict[str, Any]]:
    """Kind (crash or hang) and what is known about it."""
    from conformance.targets.qtest.errors import QemuDiedError, QtestTimeoutError

    text = str(exc)
    kind = "hang" if isinstance(exc, QtestTimeoutError) or "did not answer" in text else "crash"
    if isinstance(exc, QemuDiedError):
        kind = "crash"
    lines = text.splitlines()
    info: dict[str, Any] = {
        "error": type(exc).__name__,
        "message": lines[0] if lines else text,
        "last_primitives": platform.last_ops(),
    }
    state = _QEMU_STATE.search(text)
    if state:
        info["exit"] = state.group(0).strip()
    stderr = [ln.strip() for ln in lines[1:] if ln.startswith("  ")]
    if stderr:
        info["stderr_tail"] = stderr
    return kind, info


class FuzzSession:
    """A device under fuzzing on ``target``; restarts it after a crash or wedge."""

    def __init__(self, target: Target, setup: QueueSetup, quiet: float = 0.05,
                 disk_every: int = 1):
        self.target = target
        self.setup = setup
        self.quiet = quiet
        self.disk_every = disk_every
        self.platform: RecordingPlatform | None = None
        self.blk: BlkDevice | None = None
        self.raw: RawQueue | None = None
        self.probe: DiskProbe | None = None
        self.executions = 0
        self.restarts = 0
        self.resets = 0
        self._direct = True  # backing_read works (checked on start)
        self.start()

    # --- bring-up -----------------------------------------------------------------------
    def _init_kw(self) -> dict[str, Any]:
        from conformance import spec

        exclude = []
        if not self.setup.indirect:
            exclude.append(spec.VIRTIO_F_INDIRECT_DESC)
        if not self.setup.event_idx:
            exclude.append(spec.VIRTIO_F_EVENT_IDX)
        return {"packed": self.setup.packed, "queue_size": self.setup.queue_size,
                "exclude": exclude}

    def start(self) -> None:
        self.platform = RecordingPlatform(self.target.platform())
        self.blk = BlkDevice(self.platform, timeout=self.target.timeout)
        self._reinit()
        cap = self.blk.config.capacity  # type: ignore[union-attr]
        self.probe = DiskProbe(probe_sectors(cap, [cap // 3, 2 * cap // 3]))
        self._baseline()
        self._fresh_queue()

    def _reinit(self) -> None:
        blk = self.blk
        assert blk is not None
        if self.raw is not None:
            self.raw.release()
        pool = blk.virtio.pool
        for q in blk.queues:
            if q is not None:
                for addr in {q.layout.desc, q.layout.driver, q.layout.device}:
                    try:
                        pool.free(addr)
                    except KeyError:
                        pass
        self.raw = None
        blk.init(**self._init_kw())

    def _fresh_queue(self) -> None:
        """Take over queue 0 where the well-formed requests left it."""
        assert self.blk is not None
        self.raw = RawQueue(self.blk, 0, self.quiet)

    def _baseline(self) -> None:
        assert self.probe is not None and self.blk is not None
        try:
            self.probe.before = self._direct_read() if self._direct else {}
        except Unsupported:
            self._direct = False
        if not self._direct:
            self.probe.baseline(self.blk)

    def _direct_read(self) -> dict[int, bytes]:
        assert self.probe is not None and self.platform is not None
        return {s: self.platform.backing_read(s * 512, 512) for s in self.probe.sectors}

    def fresh(self) -> None:
        """Reset and initialize the device again, so what follows does not depend
        on what came before."""
        assert self.probe is not None
        try:
            self._reinit()
            self._fresh_queue()
        except PlatformError:
            self.restart()

    def restart(self) -> None:
        """A fresh device after a crash or a wedge (qtest: a new QEMU)."""
        if self.platform is not None:
            try:
                self.target.release(self.platform.inner, broken=True)
            except Exception:
                pass
        self.platform = None
        self.blk = None
        self.raw = None
        self.restarts += 1
        self.start()

    def close(self) -> None:
        if self.platform is not None:
            try:
                self.target.release(self.platform.inner, broken=False)
            except Exception:
                pass
            self.platform = None

    # --- one execution -----------------------------------------------------------------
    def execute(self, chain: ChainSpec) -> tuple[Observation | None, Finding | None]:
        self.executions += 1
        assert self.raw is not None and self.platform is not None
        try:
            obs = self.raw.run(chain)
        except ValueError:
            return None, None  # does not fit the queue: not an input this setup can send
        except PlatformError as exc:
            return None, self._died(exc)
        finding = self._judge(chain, obs)
        if finding is not None:
            return obs, finding
        # The sectors the device may write follow from the header it read, which a
        # hostile layout can take from anywhere; unknown -> no disk verdict this time.
        parsed = parsed_disk_writes(chain, self.raw.last_arena, self.raw.packed)
        writes = None if parsed is None else chain.disk_writes + parsed
        try:
            finding = self._after(chain, obs, writes)
        except PlatformError as exc:
            return obs, self._died(exc)
        return obs, finding

    def _died(self, exc: PlatformError) -> Finding:
        assert self.platform is not None
        kind, info = triage(exc, self.platform)
        finding = Finding(kind, info["message"], str(exc), info)
        self.restart()
        return finding

    def _internal_errors(self) -> list[str]:
        device = getattr(self.platform.inner, "device", None) if self.platform else None
        errors = getattr(device, "internal_errors", None)
        if not errors:
            return []
        out = list(errors)
        errors.clear()
        return out

    def _judge(self, chain: ChainSpec, obs: Observation) -> Finding | None:
        if obs.memory:
            return Finding("corruption", obs.memory[0], "\n".join(obs.memory))
        if obs.ring:
            return Finding("used-ring", obs.ring[0], "\n".join(obs.ring))
        errors = self._internal_errors()
        if errors:
            last = errors[-1].strip().splitlines()
            return Finding("internal-error", f"{errors[0].split(':')[0]}: {last[-1]}",
                           "\n".join(errors))
        return None

    def _after(self, chain: ChainSpec, obs: Observation,
               writes: tuple[tuple[int, int], ...] | None) -> Finding | None:
        """Recover the device when needed and check the disk (``writes`` None: the
        request the device saw is unknown, so every sector is fair game)."""
        assert self.blk is not None and self.probe is not None
        allowed = writes if writes is not None else ((0, 1 << 64),)
        done = len(obs.used) >= self.raw.expected(chain) and not obs.needs_reset
        if not done:
            self.resets += 1
            health = health_check(self.blk, self._reinit, self.probe, allowed)
            if not health.healthy:
                finding = Finding("crash" if health.severity == "crash-or-hang" else "wedged",
                                  health.reason, health.reason)
                self.restart()
                return finding
            disk = health.disk
            self._rebase(health_now=None, writes=allowed)
            self._fresh_queue()
        else:
            disk = self._disk_check(allowed)
        if disk:
            finding = Finding("corruption", disk[0], "\n".join(disk))
            self.restart()
            return finding
        return None

    def _disk_check(self, writes: Sequence[tuple[int, int]]) -> list[str]:
        assert self.probe is not None and self.blk is not None
        if not self._direct and self.executions % self.disk_every:
            return []
        now = self._direct_read() if self._direct else self.probe.read(self.blk)
        problems = self.probe.changed(now, writes)
        self._rebase(now, writes)
        return problems

    def _rebase(self, health_now: dict[int, bytes] | None, writes: Sequence[tuple[int, int]]
                ) -> None:
        """Sectors the request may have changed get their new content as the reference."""
        assert self.probe is not None
        touched = [s for s in self.probe.sectors if in_ranges(s, writes)]
        if not touched:
            return
        now = health_now
        if now is None:
            now = self._direct_read() if self._direct else self.probe.read(self.blk)
        for s in touched:
            self.probe.before[s] = now[s]
