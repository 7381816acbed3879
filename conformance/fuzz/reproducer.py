"""Reproducer files: one finding, replayable on its own.

A reproducer is a JSON document::

    {
      "format": "vblk-conformance-fuzz/1",
      "finding": {"kind": "crash", "severity": "crash-or-hang", "summary": "...",
                  "detail": "...", "triage": {"exit": "...", "stderr_tail": [...],
                                              "last_primitives": [...]}},
      "target": {"kind": "qtest", "name": "qemu-7.2", "timeout": 10, ...},
      "setup": {"packed": false, "queue_size": 16, "indirect": true, "event_idx": true},
      "seed": 1234, "batch_seed": 987654321, "executions": 5120,
      "chains": [{ ... conformance.fuzz.chain.chain_to_json ... }, ...]
    }

``chains`` are the requests sent one after the other to a freshly
initialized device, the last one showing the finding: each a high-level
description (buffers, descriptors exactly as written, tables, available ring
entries), already shrunk by Hypothesis;
``target`` the target file's content (``--target-config`` on replay
overrides it, e.g. another QEMU binary path); ``seed``/``batch_seed`` the
run's seeds.  :func:`replay` sends the chain once to a fresh device and says
what happened.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.fuzz.chain import (
    ChainFormatError,
    ChainSpec,
    QueueSetup,
    chain_from_json,
    chain_to_json,
)
from conformance.fuzz.session import Finding
from conformance.targets import TargetSpec, spec_from_mapping

FORMAT = "vblk-conformance-fuzz/1"


def target_to_json(spec: TargetSpec) -> dict[str, Any]:
    return {"kind": spec.kind, "name": spec.name, "timeout": spec.timeout, **spec.options}


@dataclass
class Reproducer:
    finding: Finding
    target: dict[str, Any]
    setup: QueueSetup
    chains: list[ChainSpec]
    seed: int | None = None
    batch_seed: int | None = None
    executions: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "finding": self.finding.to_json(),
            "target": self.target,
            "setup": self.setup.to_json(),
            "seed": self.seed,
            "batch_seed": self.batch_seed,
            "executions": self.executions,
            "chains": [chain_to_json(c) for c in self.chains],
        }

    def write(self, directory: Path, stem: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}.json"
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path


class ReproducerError(ValueError):
    """A reproducer file cannot be used; the message names the file and the field."""


def load_reproducer(path: str | Path) -> Reproducer:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ReproducerError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ReproducerError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReproducerError(f"{path}: format: expected {FORMAT!r}, got "
                              f"{data.get('format') if isinstance(data, dict) else data!r}")
    try:
        f = data["finding"]
        finding = Finding(str(f["kind"]), str(f["summary"]), str(f.get("detail", "")),
                          dict(f.get("triage", {})))
        target = data["target"]
        if not isinstance(target, dict):
            raise ReproducerError(f"{path}: target: expected an object")
        chains = data["chains"]
        if not isinstance(chains, list) or not chains:
            raise ReproducerError(f"{path}: chains: expected a non-empty list")
        return Reproducer(finding, target, QueueSetup.from_json(data.get("setup", {})),
                          [chain_from_json(c, f"{path}: chains[{i}]")
                           for i, c in enumerate(chains)],
                          data.get("seed"), data.get("batch_seed"),
                          int(data.get("executions", 0)))
    except KeyError as exc:
        raise ReproducerError(f"{path}: missing field {exc}") from None
    except ChainFormatError as exc:
        raise ReproducerError(str(exc)) from None


@dataclass
class ReplayResult:
    finding: Finding | None
    observation: str
    seconds: float

    @property
    def reproduced(self) -> bool:
        return self.finding is not None


def replay(rep: Reproducer, target_spec: TargetSpec | None = None, quiet: float = 0.2
           ) -> ReplayResult:
    """Send the reproducer's chain once to a fresh device of its (or the given) target."""
    from conformance.fuzz.session import FuzzSession
    from conformance.targets import open_target

    spec = target_spec or spec_from_mapping(rep.target, "reproducer target", "reproducer")
    target = open_target(spec)
    start = time.monotonic()
    try:
        session = FuzzSession(target, rep.setup, quiet=quiet)
        obs, finding = None, None
        try:
            for chain in rep.chains:
                obs, finding = session.execute(chain)
                if finding is not None:
                    break
        finally:
            session.close()
    finally:
        target.close()
    text = obs.summary() if obs is not None else "no observation (the target failed)"
    return ReplayResult(finding, text, time.monotonic() - start)
