"""The fuzz loop: Hypothesis generates and shrinks, a FuzzSession executes.

The run is a sequence of Hypothesis ``find`` searches, each with its own
seed drawn from the run's seed: generate up to ``batch`` hostile chains, stop
at the first one that produces a *new* finding (a finding whose signature was
seen before counts, but does not stop the search), shrink it to a minimal
chain that still produces it, write it as a reproducer file.  The run ends
when its time is up; the seed makes the sequence of chains repeatable (the
device's answers, and so the shrinking, are as repeatable as the device).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis.errors import Flaky, NoSuchExample

from conformance.fuzz.chain import ChainSpec, QueueSetup
from conformance.fuzz.reproducer import Reproducer, target_to_json
from conformance.fuzz.session import Finding, FuzzSession
from conformance.fuzz.strategies import Context, choice_bytes, chunks, decode_chain
from conformance.targets import TargetSpec, open_target

#: Reproducers kept per kind of finding (crash, corruption, ...).
PER_KIND = 3


@dataclass
class FuzzReport:
    seconds: float = 0.0
    executions: int = 0
    restarts: int = 0
    resets: int = 0
    findings: list[tuple[Finding, Path | None]] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)  # signature -> times hit

    def is_new(self, finding: Finding) -> bool:
        """Worth a reproducer: an unseen signature, and not yet ``PER_KIND`` reproducers
        of its kind (variants of one bug differ in detail; the first few are enough)."""
        sig = finding.signature()
        if any(f.signature() == sig for f, _ in self.findings):
            return False
        return sum(f.kind == finding.kind for f, _ in self.findings) < PER_KIND

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [f"{self.executions} executions in {self.seconds:.0f}s "
                 f"({self.rate:.0f}/s), {self.resets} device resets, "
                 f"{self.restarts} fresh devices, {len(self.findings)} finding(s)"]
        for f, path in self.findings:
            lines.append(f"  {f.kind} ({f.severity}): {f.summary[:150]}"
                         + (f"\n    reproducer: {path}" if path else "")
                         + f"\n    hit {self.seen[f.signature()]} time(s)")
        return "\n".join(lines)


def _stem(finding: Finding, n: int) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", finding.summary.lower())[:48].strip("-")
    return f"{n:02d}-{finding.kind}-{words}"


def fuzz(spec: TargetSpec, seconds: float, seed: int, out: Path | None,
         setup: QueueSetup | None = None, batch: int = 40, quiet: float | None = None,
         progress: Callable[[str], None] | None = None,
         max_executions: int | None = None, max_findings: int | None = None) -> FuzzReport:
    """Fuzz the target of ``spec`` for ``seconds`` (or until ``max_executions`` or
    ``max_findings``); write reproducers to ``out``."""
    setup = setup or QueueSetup()
    target = open_target(spec)
    if quiet is None:
        # The reference device answers inside the notification write; a real one
        # gets a moment before a request counts as left alone.
        quiet = 0.0 if spec.kind == "reference" else 0.1
    report = FuzzReport()
    start = time.monotonic()
    deadline = start + seconds
    master = random.Random(seed)
    session = FuzzSession(target, setup, quiet=quiet)
    last_progress = start

    def over() -> bool:
        if max_executions is not None and session.executions >= max_executions:
            return True
        if max_findings is not None and len(report.findings) >= max_findings:
            return True
        return time.monotonic() >= deadline

    try:
        blk = session.blk
        ctx = Context(blk.config.capacity, setup.queue_size,  # type: ignore[union-attr]
                      tuple(sorted(blk.virtio.bars)), setup.packed)  # type: ignore[union-attr]
        while not over():
            batch_seed = master.getrandbits(32)
            hit = _search(session, ctx, report, batch, batch_seed, over)
            if hit is not None:
                chains, finding = hit
                path = None
                if out is not None:
                    rep = Reproducer(finding, target_to_json(spec), setup, chains, seed,
                                     batch_seed, session.executions)
                    path = rep.write(out, _stem(finding, len(report.findings) + 1))
                report.findings.append((finding, path))
                if progress:
                    progress(f"finding: {finding.kind}: {finding.summary[:120]}"
                             + (f" -> {path}" if path else ""))
            now = time.monotonic()
            if progress and now - last_progress >= 30:
                last_progress = now
                rate = session.executions / (now - start)
                progress(f"{now - start:.0f}s: {session.executions} executions "
                         f"({rate:.0f}/s), {len(report.findings)} finding(s)")
    finally:
        report.seconds = time.monotonic() - start
        report.executions = session.executions
        report.restarts = session.restarts
        report.resets = session.resets
        session.close()
        target.close()
    return report


def _search(session: FuzzSession, ctx: Context, report: FuzzReport, batch: int,
            batch_seed: int, over: Callable[[], bool]
            ) -> tuple[list[ChainSpec], Finding] | None:
    """One Hypothesis search: up to ``batch`` examples; the shrunk new finding, if any."""
    found: dict[tuple[bytes, ...], tuple[list[ChainSpec], Finding]] = {}

    def condition(example: list[bytes]) -> bool:
        session.fresh()  # every example starts from a just-initialized device
        chains: list[ChainSpec] = []
        for part in chunks(example):
            if over():
                return False
            chain = decode_chain(part, ctx)
            chains.append(chain)
            _obs, finding = session.execute(chain)
            if finding is None:
                continue
            sig = finding.signature()
            report.seen[sig] += 1
            if not report.is_new(finding):
                return False  # a known bug: look for new ones
            found[tuple(example)] = (chains, finding)
            return True
        return False

    budget = settings(max_examples=batch, database=None, deadline=None,
                      phases=[Phase.generate, Phase.shrink],
                      suppress_health_check=list(HealthCheck))
    try:
        minimal = find(choice_bytes(), condition, settings=budget,
                       random=random.Random(batch_seed))
    except NoSuchExample:
        return None
    except Flaky:
        # The device answered the same chains differently on a second try: keep the
        # last sequence that showed the finding.
        if not found:
            return None
        chains, finding = found[next(reversed(found))]
        finding.triage["flaky"] = "did not reproduce on every run while shrinking"
        return chains, finding
    return found.get(tuple(minimal))
