"""The pytest plugin: target options, per-case fixtures, clause markers, the area summary.

Loaded through the ``pytest11`` entry point, so ``pytest --pyargs
conformance.cases --target-config FILE`` works as well as ``vblk-conformance
run``.  Hooks live here; the work they do is in plain functions elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.driver.blk import BlkDevice
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import Platform
from conformance.outcomes import CaseOutcome
from conformance.recorder import Recorder
from conformance.summary import EXTRA_OUTCOMES, format_area_summary, is_case_path
from conformance.targets import (
    Target,
    TargetConfigError,
    TargetError,
    TargetSpec,
    load_target_file,
    open_target,
    spec_from_mapping,
)

_SPEC_KEY = pytest.StashKey[TargetSpec]()
_TARGET_KEY = pytest.StashKey[Target]()
_CASES_KEY = pytest.StashKey[set[str]]()
_RECORDER_KEY = pytest.StashKey["Recorder"]()
_OUTCOME_KEY = pytest.StashKey["CaseOutcome"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vblk-conformance", "virtio-blk conformance")
    group.addoption("--target", default=None, metavar="KIND",
                    help="target kind with its defaults: reference (default), qtest")
    group.addoption("--target-config", default=None, metavar="FILE",
                    help="YAML target file (see README: Target files)")
    group.addoption("--clause", action="append", default=[], metavar="ID",
                    help="run only the cases that check this clause (repeatable; "
                         "a trailing '*' matches a prefix, e.g. 'blk.*')")
    group.addoption("--results", default=None, metavar="FILE",
                    help="write the run's results file (JSON, docs/results-schema.md)")
    group.addoption("--baseline", default=None, metavar="FILE",
                    help="known deviations of this target (YAML): listed failures do not "
                         "fail the run, listed cases that now pass do")
    group.addoption("--strict-should", action="store_true", default=False,
                    help="a deviation (a failed SHOULD/MAY-only case) fails the run")
    group.addoption("--spec-url", default=None, metavar="TEMPLATE",
                    help="allure link to a clause's spec section: {section} and {title} "
                         "are filled in (default: the VIRTIO 1.2 cs01 HTML)")


def target_spec_from_options(config: pytest.Config) -> TargetSpec:
    path = config.getoption("--target-config")
    kind = config.getoption("--target")
    if path:
        spec = load_target_file(path)
        if kind and kind != spec.kind:
            raise TargetConfigError(f"--target {kind} contradicts kind {spec.kind!r} in {path}")
        return spec
    kind = kind or "reference"
    return spec_from_mapping({"kind": kind}, f"--target {kind}", kind)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "clause(*ids): the spec requirement(s) a conformance case checks")
    config.addinivalue_line(
        "markers", "robustness: a hostile-driver case (select with -m robustness, leave "
                   "out with -m 'not robustness')")
    try:
        spec = target_spec_from_options(config)
        # Building a target checks its options; only qemu-vm starts something here
        # (its VM, so that a boot failure is one line before any case).
        config.stash[_TARGET_KEY] = open_target(spec)
        config.stash[_SPEC_KEY] = spec
    except (TargetConfigError, TargetError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_RECORDER_KEY] = _register_recorder(config)


def _register_recorder(config: pytest.Config) -> Recorder:
    """Outcomes, baseline verdicts, progress and the results file (conformance.recorder)."""
    from conformance.allure import SPEC_URL_TEMPLATE
    from conformance.baseline import BaselineError, load_baseline
    from conformance.clauses import load_registry

    registry = load_registry()
    baseline = None
    if config.getoption("--baseline"):
        try:
            baseline = load_baseline(config.getoption("--baseline"), registry)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None
    recorder = Recorder(config, baseline=baseline, results_path=config.getoption("--results"),
                        strict_should=config.getoption("--strict-should"),
                        alluredir=config.getoption("allure_report_dir", None),
                        spec_url=config.getoption("--spec-url") or SPEC_URL_TEMPLATE,
                        registry=registry, target=config.stash.get(_TARGET_KEY, None))
    config.pluginmanager.register(recorder, "vblk-conformance-recorder")
    return recorder


def pytest_unconfigure(config: pytest.Config) -> None:
    tgt = config.stash.get(_TARGET_KEY, None)
    if tgt is not None:
        tgt.close()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Every case names at least one clause, and every clause it names exists."""
    from conformance.clauses import load_registry

    cases = [item for item in items if is_case_path(item.path)]
    config.stash[_CASES_KEY] = {item.nodeid for item in cases}
    if not cases:
        return
    registry = load_registry()
    problems = []
    for item in cases:
        ids = [cid for m in item.iter_markers("clause") for cid in m.args]
        if not ids:
            problems.append(f"{item.nodeid}: no @pytest.mark.clause(...) marker")
        for cid in ids:
            if cid not in registry:
                problems.append(f"{item.nodeid}: clause {cid!r} is not in the clause registry")
    if problems:
        raise pytest.UsageError("conformance cases without a valid clause:\n  "
                                + "\n  ".join(problems))
    wanted = config.getoption("--clause")
    if wanted:
        unknown = [w for w in wanted if not w.endswith("*") and w not in registry]
        if unknown:
            raise pytest.UsageError(f"--clause: unknown clause ID(s): {', '.join(unknown)}")
        keep, drop = [], []
        for item in items:
            ids = [cid for m in item.iter_markers("clause") for cid in m.args]
            (keep if is_case_path(item.path) and any(clause_matches(c, wanted) for c in ids)
             else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


def clause_matches(clause_id: str, patterns: list[str]) -> bool:
    return any(clause_id == p or (p.endswith("*") and clause_id.startswith(p[:-1]))
               for p in patterns)


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Iterator[Target]:
    tgt = pytestconfig.stash[_TARGET_KEY]
    try:
        yield tgt
    finally:
        tgt.close()


@pytest.fixture
def platform(target: Target, request: pytest.FixtureRequest) -> Iterator[Platform]:
    try:
        plat = target.platform()
    except TargetError as exc:
        if getattr(target, "starts", None) == 0:
            # The target never came up (e.g. QEMU refused its options): one line, once,
            # instead of the same error for every case.
            pytest.exit(str(exc), returncode=4)
        raise
    try:
        yield plat
    finally:
        # The call's own failure, before a deviation or baseline verdict rewrote it.
        target.release(plat, broken=bool(getattr(request.node, "_vblk_call_failed", False)))


@pytest.fixture
def device(platform: Platform, target: Target) -> BlkDevice:
    """The device under test, probed (BARs, capabilities) but not initialized."""
    return BlkDevice(platform, timeout=target.timeout)


@pytest.fixture
def blk(device: BlkDevice) -> BlkDevice:
    """The device initialized with every feature the driver knows, one split queue."""
    return device.init()


@pytest.fixture
def robust(device: BlkDevice, request: pytest.FixtureRequest):
    """The hostile-driver harness (conformance.robustness): raw chains, health check, verdict."""
    from conformance.robustness import Robust, pytest_recorder

    return Robust(device, record=pytest_recorder(request))


@pytest.fixture
def case_outcome(request: pytest.FixtureRequest) -> CaseOutcome:
    """Lets a negative case declare ``reject`` or ``wedged`` (conformance.outcomes)."""
    outcome = CaseOutcome()
    request.node.stash[_OUTCOME_KEY] = outcome
    return outcome


# --- outcomes -----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(FeatureNotOffered):
        # A case that needs a feature the device does not offer is a skip, not a failure.
        report.outcome = "skipped"
        path, lineno, _ = item.reportinfo()
        report.longrepr = (str(path), (lineno or 0) + 1, f"Skipped: {call.excinfo.value}")
    if call.when == "call":
        item._vblk_call_failed = report.failed  # type: ignore[attr-defined]
    recorder = item.config.stash.get(_RECORDER_KEY, None)
    if recorder is not None:
        declared = item.stash.get(_OUTCOME_KEY, None)
        report = recorder.classify(item, call, report, declared.mark if declared else None)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    cases = config.stash.get(_CASES_KEY, set())
    reports = [r for key in ("passed", "failed", "skipped", "error", *EXTRA_OUTCOMES)
               for r in terminalreporter.stats.get(key, [])
               if hasattr(r, "when") and r.nodeid in cases]
    if not reports:
        return
    spec = config.stash.get(_SPEC_KEY, None)
    title = f"conformance summary: target {spec.name} ({spec.kind})" if spec else "conformance"
    terminalreporter.write_sep("=", title)
    for line in format_area_summary(reports).splitlines():
        terminalreporter.write_line(line)

