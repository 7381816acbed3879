"""The hostile-driver tier: allowed outcomes, the health check, verdicts and severity.

A robustness case plays a driver that breaks a rule (a header cut short, a
descriptor loop, a sector past the end of the disk, DRIVER_OK without
FEATURES_OK, ...).  The spec rarely says what the device must then do, but it
bounds it: the request may complete with one of a few status bytes, the device
may enter DEVICE_NEEDS_RESET (2.1.2), or it may leave the request alone.  Each
case declares exactly that set (:class:`Allowed`, with the section that allows
each member); an observation outside it fails the case.  Whatever happened,
the device must not write a byte outside the request's device-writable
buffers nor change a disk sector outside the request's range, and afterwards
it must still work:

* **health check** (:func:`health_check`): reset (needed after
  DEVICE_NEEDS_RESET), initialize again, and one well-formed read must complete
  with status OK, the exact used length and the right data, without the device
  setting DEVICE_NEEDS_RESET on its own.  A device that fails it is *wedged*.
* **verdict** (:func:`decide`): ``passed`` (the request completed as
  required), ``reject`` (the device refused the malformed input and stayed
  healthy), ``failed`` (an outcome outside the allowed set, or corruption) or
  ``wedged`` (the health check failed, or the target died or hung).  A failed
  or wedged verdict carries a severity: ``corruption`` (memory or disk outside
  the request) > ``crash-or-hang`` > ``wedged`` > ``none``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance import spec
from conformance.driver.blk import POISON, BlkDevice, read_request
from conformance.driver.platform import PlatformError, Unsupported
from conformance.driver.virtqueue import QueueTimeout
from conformance.fuzz.chain import ChainSpec
from conformance.fuzz.rawring import Observation, RawQueue, write_desc_bytes

OK = spec.VIRTIO_BLK_S_OK
IOERR = spec.VIRTIO_BLK_S_IOERR
UNSUPP = spec.VIRTIO_BLK_S_UNSUPP
S = spec.SECTOR_SIZE

# Verdicts (the words of conformance.outcomes) and severities, worst last.
PASSED = "passed"
REJECT = "reject"
FAILED = "failed"
WEDGED = "wedged"
SEVERITIES = ("none", "wedged", "crash-or-hang", "corruption")

#: How long the device may stay silent before a request counts as left alone.
QUIET = 0.2


def worse(a: str, b: str) -> str:
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b


# --- allowed outcomes -------------------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """The outcomes a robustness case accepts.

    ``statuses``: the request may complete with one of these status bytes.
    ``needs_reset``: the device may set DEVICE_NEEDS_RESET instead (2.1.2).
    ``unused``: the device may leave the request unused (and not set
    DEVICE_NEEDS_RESET).  ``ok_len``: with status OK the used length must be
    exactly this (data written + the status byte, 2.7.8.2); ``None`` = any
    length up to the writable size.  With an error status the used length
    must be 1 (the status byte alone) or the whole writable size (a device
    that reports the buffer it was given), nothing else.
    """

    statuses: frozenset[int] = frozenset()
    needs_reset: bool = False
    unused: bool = False
    ok_len: int | None = None
    why: str = ""
    lost_status: bool = False  # the status byte lies where the device cannot write

    def describe(self) -> str:
        parts = [f"complete with {'/'.join(_status(s) for s in sorted(self.statuses))}"
                 ] if self.statuses else []
        if self.needs_reset:
            parts.append("set DEVICE_NEEDS_RESET")
        if self.unused:
            parts.append("leave the request unused")
        return " or ".join(parts) or "nothing"


def allowed(*statuses: int, needs_reset: bool = False, unused: bool = False,
            ok_len: int | None = None, why: str = "", lost_status: bool = False) -> Allowed:
    return Allowed(frozenset(statuses), needs_reset, unused, ok_len, why, lost_status)


#: A chain the device cannot even parse (no header, no status byte, a loop...):
#: there is nothing to answer, so 2.1.2's DEVICE_NEEDS_RESET is the one reaction.
UNANSWERABLE = allowed(needs_reset=True, why="2.1.2: an error state only a reset clears")
#: A request the device can parse but must not carry out: an error status (5.2.6:
#: IOERR for a driver error, UNSUPP for what it does not support) or NEEDS_RESET.
REFUSE = allowed(IOERR, UNSUPP, needs_reset=True)


def data_is(expected: bytes, what: str) -> Callable[[Observation], list[str]]:
    """A check for a request that completed OK: its device-writable buffers, in
    order, start with ``expected``."""
    from conformance.pattern import describe_mismatch

    def check(obs: Observation) -> list[str]:
        if not obs.used or obs.status != OK:
            return []
        got = b"".join(obs.writable[i] for i in sorted(obs.writable))[:len(expected)]
        if got != expected:
            return [f"{what}: {describe_mismatch(expected, got)}"]
        return []
    return check


def _status(s: int) -> str:
    return spec.BLK_STATUS_NAMES.get(s, f"{s:#x}")


def judge(obs: Observation, allow: Allowed, writable_len: int) -> list[str]:
    """What in ``obs`` lies outside ``allow`` (empty: the outcome is allowed)."""
    problems = list(obs.ring)
    if obs.used:
        if not allow.statuses and not obs.needs_reset:
            problems.append(f"the device used the request ({obs.status_name()}); allowed: "
                            f"{allow.describe()}")
        elif allow.lost_status and obs.status == POISON:
            pass  # used, its status written where the driver cannot see it (or nowhere)
        elif allow.statuses:
            if obs.status not in allow.statuses:
                problems.append(f"completed with {obs.status_name()}; allowed: "
                                f"{allow.describe()}")
            else:
                length = obs.used[0][1]
                if obs.status == OK and allow.ok_len is not None and length != allow.ok_len:
                    problems.append(f"status OK with used len {length}, expected "
                                    f"{allow.ok_len} (bytes written + status, 2.7.8.2)")
                elif obs.status != OK and length not in (1, writable_len):
                    problems.append(f"{_status(obs.status)} with used len {length}: expected 1 "
                                    f"(the status byte) or {writable_len} (2.7.8.2)")
    elif obs.needs_reset:
        if not allow.needs_reset:
            problems.append(f"the device set DEVICE_NEEDS_RESET; allowed: {allow.describe()}")
    elif not allow.unused:
        problems.append(f"the device left the request unused and did not set "
                        f"DEVICE_NEEDS_RESET (2.1.2); allowed: {allow.describe()}")
    return problems


def device_writable(chain: ChainSpec) -> int:
    """Bytes the chain's device-writable descriptors describe (what a device reporting
    "the whole buffer" gives as used length)."""
    return write_desc_bytes(chain) or chain.writable_total()


def refused(obs: Observation) -> bool:
    """The device turned the request down (error status, NEEDS_RESET, or left it)."""
    return not obs.used or obs.needs_reset or obs.status != OK


# --- the disk ---------------------------------------------------------------------------


def in_ranges(sector: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(start <= sector < start + count for start, count in ranges)


@dataclass
class DiskProbe:
    """Sectors read before a hostile request and compared afterwards.

    Read through the device with well-formed requests, so it works on every
    target; sectors inside the request's own range may change.
    """

    sectors: list[int]
    before: dict[int, bytes] = field(default_factory=dict)

    def read(self, blk: BlkDevice) -> dict[int, bytes]:
        """Each probe sector with one well-formed IN; one that does not complete
        exactly (status OK, used length 513, guard bytes intact) raises QueueTimeout."""
        done = blk.submit([read_request(s, S) for s in self.sectors])
        out = {}
        for s, c in zip(self.sectors, done):
            if c.status != OK or c.used_len != S + 1 or not c.guards_intact:
                raise QueueTimeout(
                    f"IN of probe sector {s} completed with {c.status_name}, used len "
                    f"{c.used_len} (expected OK, {S + 1})"
                    + ("" if c.guards_intact else ", bytes written outside its buffers"))
            out[s] = c.data
        return out

    def baseline(self, blk: BlkDevice) -> None:
        self.before = self.read(blk)

    def changed(self, now: dict[int, bytes], allowed_ranges: Sequence[tuple[int, int]]
                ) -> list[str]:
        bad = [s for s in self.sectors
               if s in self.before and now.get(s) != self.before[s]
               and not in_ranges(s, allowed_ranges)]
        return [f"disk sector {s} changed, outside the request's range (data loss)"
                for s in bad]


def probe_sectors(capacity: int, extra: Iterable[int] = ()) -> list[int]:
    """Start, middle and end of the disk, plus sectors a case suspects."""
    wanted = [0, 1, 5, capacity // 2, capacity - 2, capacity - 1, *extra]
    return sorted({s for s in wanted if 0 <= s < capacity})


# --- the health check ---------------------------------------------------------------------


@dataclass
class Health:
    healthy: bool
    reason: str = ""
    severity: str = "none"
    disk: list[str] = field(default_factory=list)


def health_check(blk: BlkDevice, init: Callable[[], Any], probe: DiskProbe,
                 allowed_writes: Sequence[tuple[int, int]] = ()) -> Health:
    """Reset, initialize again, read; then compare the probe sectors.

    ``init`` brings the device up again (the case's own features and queues);
    a failure anywhere is the reason the device counts as wedged.
    """
    try:
        init()
    except PlatformError as exc:
        return Health(False, f"the target died or hung while re-initializing: {exc}",
                      "crash-or-hang")
    except Exception as exc:  # DeviceInitError, TransportError: the device did not come back
        return Health(False, f"re-initialization after reset failed: {exc}", "wedged")
    try:
        now = probe.read(blk)
        status = blk.transport.device_status
    except PlatformError as exc:
        return Health(False, f"the target died or hung during the health check: {exc}",
                      "crash-or-hang")
    except QueueTimeout as exc:
        return Health(False, f"a well-formed request after reset did not complete "
                             f"correctly: {str(exc).splitlines()[0]}", "wedged")
    if status & spec.STATUS_DEVICE_NEEDS_RESET:
        return Health(False, "the device set DEVICE_NEEDS_RESET for well-formed requests "
                             "after the reset", "wedged")
    disk = probe.changed(now, allowed_writes)
    return Health(True, disk=disk, severity="corruption" if disk else "none")


# --- verdicts ------------------------------------------------------------------------------


@dataclass
class Verdict:
    outcome: str  # PASSED / REJECT / FAILED / WEDGED
    severity: str
    problems: list[str]

    def message(self) -> str:
        head = {FAILED: "outcome not allowed", WEDGED: "device wedged"}.get(self.outcome,
                                                                             self.outcome)
        return f"{head} (severity {self.severity}): " + "; ".join(self.problems)


def decide(obs: Observation | None, allow: Allowed | None, health: Health,
           writable_len: int = 0, extra: Sequence[str] = (), crash: str = "") -> Verdict:
    """Turn what was seen into one verdict with a severity."""
    problems: list[str] = []
    severity = "none"
    if crash:
        return Verdict(WEDGED, "crash-or-hang", [crash])
    if obs is not None and allow is not None:
        problems += judge(obs, allow, writable_len)
    if obs is not None and obs.memory:
        problems += obs.memory
        severity = "corruption"
    problems += list(extra)
    if health.disk:
        problems += health.disk
        severity = "corruption"
    if not health.healthy:
        return Verdict(WEDGED, worse(severity, health.severity), [health.reason] + problems)
    if problems:
        return Verdict(FAILED, severity, problems)
    if obs is None or refused(obs):
        return Verdict(REJECT, "none", [])
    return Verdict(PASSED, "none", [])


class DeviceWedged(Exception):
    """The device stopped serving after a robustness case (not an assertion: no
    SHOULD excuses it)."""


# --- the per-case harness --------------------------------------------------------------------


class Robust:
    """What a robustness case works with (the ``robust`` fixture).

    ``init(**kw)`` brings the device up (kw as :meth:`BlkDevice.init`) and reads
    the probe sectors; ``send(chain)`` puts a hand-made chain into queue 0 and
    observes; ``verdict(...)`` runs the health check and decides.  A case calls
    ``verdict`` (or ``health_only``) exactly once, at its end.
    """

    def __init__(self, device: BlkDevice, record: Callable[[str, str, str], None] | None = None,
                 quiet: float = QUIET):
        self.device = device
        self.platform = device.platform
        self.quiet = quiet
        self.init_kw: dict[str, Any] = {}
        self.probe: DiskProbe | None = None
        self.raw: RawQueue | None = None
        self.decided: Verdict | None = None
        self._record = record or (lambda outcome, severity, detail: None)
        self.extra_probe: list[int] = []

    # --- bring-up ------------------------------------------------------------------------
    def init(self, probe: Iterable[int] = (), **kw: Any) -> BlkDevice:
        self.init_kw = kw
        self.guarded(lambda: self.device.init(**kw))
        self.extra_probe = list(probe)
        self.probe = DiskProbe(probe_sectors(self.capacity, self.extra_probe))
        self.guarded(lambda: self.probe.baseline(self.device))
        return self.device

    @property
    def capacity(self) -> int:
        cfg = self.device.config
        return cfg.capacity if cfg is not None else self.device.read_config().capacity

    def raw_queue(self, queue: int = 0) -> RawQueue:
        if self.raw is None or self.raw.index != queue:
            self.raw = RawQueue(self.device, queue, self.quiet)
        return self.raw

    def send(self, chain: ChainSpec, queue: int = 0, quiet: float | None = None
             ) -> Observation:
        raw = self.raw_queue(queue)
        return self.guarded(lambda: raw.run(chain, quiet))

    def run(self, chain: ChainSpec, allow: Allowed, *, legal: bool = False,
            check: Callable[[Observation], Sequence[str]] | None = None,
            queue: int = 0, quiet: float | None = None) -> Verdict:
        """``send`` then ``verdict``: the whole of most cases."""
        obs = self.send(chain, queue, quiet)
        return self.verdict(obs, allow, chain, check=check, legal=legal)

    def judge(self, obs: Observation, allow: Allowed, chain: ChainSpec) -> list[str]:
        """Problems with one of several requests of a case (for ``verdict(extra=...)``)."""
        return judge(obs, allow, device_writable(chain)) + list(obs.memory)

    def known(self, sector: int) -> bytes:
        """The content of a probe sector, read before the case did anything."""
        if self.probe is None or sector not in self.probe.before:
            raise KeyError(f"sector {sector} is not a probe sector of this case")
        return self.probe.before[sector]

    def guarded(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; a target that dies or hangs meanwhile ends the case as wedged
        (crash-or-hang)."""
        try:
            return action()
        except PlatformError as exc:
            if isinstance(exc, Unsupported):
                raise
            v = Verdict(WEDGED, "crash-or-hang", [f"the target died or hung: {exc}"])
            self._finish(v)
            raise DeviceWedged(v.message()) from None

    # --- the end of a case -------------------------------------------------------------
    def health(self, allowed_writes: Sequence[tuple[int, int]] = ()) -> Health:
        if self.probe is None:
            raise RuntimeError("robust.init() was not called before the health check")
        return health_check(self.device, lambda: self.device.init(**self.init_kw), self.probe,
                            allowed_writes)

    def verdict(self, obs: Observation | None, allow: Allowed | None,
                chain: ChainSpec | None = None, extra: Sequence[str] = (),
                check: Callable[[Observation], Sequence[str]] | None = None,
                legal: bool = False, writes: Sequence[tuple[int, int]] = ()) -> Verdict:
        """Judge ``obs`` against ``allow``, check health and disk, record, raise on failure.

        ``check`` adds case-specific problems for a completed request (e.g. wrong
        data).  ``legal``: the input broke no driver rule (a stress case), so a
        healthy device passes rather than rejects.  ``writes``: sector ranges other
        requests of the case may have changed.
        """
        problems = list(extra)
        if check is not None and obs is not None:
            problems += list(check(obs))
        writes = tuple(writes) + (chain.disk_writes if chain is not None else ())
        writable = device_writable(chain) if chain is not None else 0
        health = self.health(writes)
        if self.raw is not None and health.healthy:
            self.raw.release()
        v = decide(obs, allow, health, writable, problems)
        if legal and v.outcome == REJECT:
            v.outcome = PASSED
        self._finish(v)
        if v.outcome == WEDGED:
            raise DeviceWedged(v.message())
        if v.outcome == FAILED:
            raise AssertionError(v.message())
        return v

    def health_only(self, extra: Sequence[str] = (), legal: bool = False) -> Verdict:
        """For cases without a request of their own: the case's own findings
        (``extra``) and the health check decide."""
        return self.verdict(None, None, extra=extra, legal=legal)

    def _finish(self, v: Verdict) -> None:
        self.decided = v
        self._record(v.outcome, v.severity, "; ".join(v.problems))


def pytest_recorder(request: Any) -> Callable[[str, str, str], None]:
    """Record a verdict on the pytest item: user properties for reports, and the
    outcome model's ``case_outcome`` (reject / wedged) where the plugin has it."""
    def record(outcome: str, severity: str, detail: str) -> None:
        node = request.node
        node.user_properties.append(("robustness_verdict", outcome))
        node.user_properties.append(("robustness_severity", severity))
        try:
            marks = request.getfixturevalue("case_outcome")
        except Exception:  # the outcome model is not loaded: the report status hook shows it
            return
        if outcome == REJECT:
            marks.reject(detail or "the device refused the malformed input and stayed healthy")
        elif outcome == WEDGED:
            marks.wedged(detail)
    return record
