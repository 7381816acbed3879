"""The reporting side of the command line: results files, baselines, comparisons.

    vblk-conformance run ... [--results FILE | --no-results] [--baseline FILE]
    vblk-conformance run --target-config A.yaml --target-config B.yaml ... [--compare-html F]
    vblk-conformance compare RESULTS RESULTS... [--markdown FILE] [--html FILE]
    vblk-conformance baseline update --results FILE --baseline FILE
    vblk-conformance baseline check FILE...

Exit statuses: ``compare`` 0 (1 with --fail-on-difference when a case
differs); ``baseline update`` 0, or 1 while any entry still says
``explanation: TODO``; ``baseline check`` 0, or 4 for a malformed file or an
unknown case; every command 4 for bad input, with one line on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS_DIR = Path("results")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 4


class UsageProblem(Exception):
    """Bad input for a reporting command; the message is the one line the user sees."""


def timestamp(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ")


def default_results_path(target_name: str, now: datetime.datetime | None = None) -> Path:
    """``results/<target name>-<UTC timestamp>.json`` (relative to the working directory)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target_name) or "target"
    return RESULTS_DIR / f"{safe}-{timestamp(now)}.json"


# --- run ------------------------------------------------------------------------------


def add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--results", metavar="FILE",
                     help="results file to write (default: results/<target>-<time>.json; "
                          "with several --target-config: a directory)")
    run.add_argument("--no-results", action="store_true", help="write no results file")
    run.add_argument("--baseline", action="append", metavar="FILE",
                     help="known deviations (YAML); with several --target-config, one per "
                          "target in the same order")
    run.add_argument("--compare-markdown", metavar="FILE",
                     help="with several --target-config: the comparison as Markdown "
                          "(default: results/compare-<time>.md)")
    run.add_argument("--compare-html", metavar="FILE",
                     help="with several --target-config: the comparison as HTML "
                          "(default: results/compare-<time>.html)")


def target_name(args: argparse.Namespace) -> str:
    from conformance.targets import load_target_file

    if args.target_config:
        return load_target_file(args.target_config[0]).name
    return args.target or "reference"


def check_baselines(paths: Sequence[str]) -> None:
    from conformance.baseline import BaselineError, load_baseline
    from conformance.clauses import load_registry

    registry = load_registry()
    for path in paths:
        try:
            load_baseline(path, registry)
        except BaselineError as exc:
            raise UsageProblem(str(exc)) from None


def pytest_options(args: argparse.Namespace) -> list[str]:
    """The reporting options of a single-target run, as pytest (plugin) options."""
    argv: list[str] = []
    if args.baseline:
        if len(args.baseline) > 1:
            raise UsageProblem("--baseline: one baseline per target (give several "
                               "--target-config to run several targets)")
        argv += ["--baseline", args.baseline[0]]
    if not args.no_results:
        argv += ["--results", args.results or str(default_results_path(target_name(args)))]
    return argv


def run_many(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """One run per target file (a separate pytest process each), then the comparison."""
    from conformance.targets import TargetConfigError, load_target_file

    configs = list(args.target_config)
    baselines = list(args.baseline or [])
    if args.target:
        raise UsageProblem("--target cannot be combined with several --target-config")
    if args.no_results:
        raise UsageProblem("--no-results: several targets are compared through their "
                           "results files")
    if baselines and len(baselines) != len(configs):
        raise UsageProblem(f"--baseline: {len(baselines)} given for {len(configs)} targets "
                           f"(give one per --target-config, in the same order, or none)")
    check_baselines(baselines)
    names = []
    for path in configs:
        try:
            names.append(load_target_file(path).name)
        except TargetConfigError as exc:
            raise UsageProblem(str(exc)) from None
    stamp = timestamp()
    out_dir = Path(args.results) if args.results else RESULTS_DIR
    paths = []
    for i, name in enumerate(names):
        suffix = f"-{i + 1}" if names.count(name) > 1 else ""
        paths.append(out_dir / f"{name}{suffix}-{stamp}.json")
    codes = []
    for i, (config, path) in enumerate(zip(configs, paths, strict=True)):
        print(f"\n=== target {i + 1} of {len(configs)}: {names[i]} ({config})", flush=True)
        cmd = [sys.executable, "-m", "conformance.cli", "run", "--target-config", config,
               "--results", str(path)]
        if baselines:
            cmd += ["--baseline", baselines[i]]
        codes.append(subprocess.call([*cmd, *extra]))
    present = [p for p in paths if p.is_file()]
    if len(present) >= 2:
        md = Path(args.compare_markdown or out_dir / f"compare-{stamp}.md")
        html = Path(args.compare_html or out_dir / f"compare-{stamp}.html")
        matrix, _ = write_comparison([str(p) for p in present], md, html)
        print(f"\ncomparison of {len(present)} runs: {len(matrix.rows)} cases, "
              f"{len(matrix.differing)} differ\n  {md}\n  {html}")
    else:
        print("\nno comparison: fewer than two runs wrote a results file", file=sys.stderr)
    bad = [c for c in codes if c not in (EXIT_OK, EXIT_FAILED)]
    return bad[0] if bad else max(codes)


# --- compare --------------------------------------------------------------------------


def load_all(paths: Sequence[str]):
    from conformance.results import ResultsError, load_results

    out = []
    for path in paths:
        try:
            out.append(load_results(path))
        except ResultsError as exc:
            raise UsageProblem(str(exc)) from None
    return out


def write_comparison(paths: Sequence[str], markdown: Path | None, html: Path | None,
                     labels: Sequence[str] | None = None, title: str | None = None):
    from conformance.compare import build, to_markdown
    from conformance.report_html import to_html

    matrix = build(load_all(paths), sources=[str(p) for p in paths], labels=labels)
    title = title or "Conformance comparison: " + " vs ".join(r.label for r in matrix.runs)
    for path, text in ((markdown, to_markdown(matrix, title) if markdown else ""),
                       (html, to_html(matrix, title) if html else "")):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"{path}: cannot write: {exc.strerror or exc}") from None
    return matrix, title


def cmd_compare(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from conformance.compare import to_markdown

    if len(args.results) < 2:
        raise UsageProblem("compare: give two or more results files")
    if args.label and len(args.label) > len(args.results):
        raise UsageProblem(f"--label: {len(args.label)} labels for {len(args.results)} runs")
    to_stdout = args.markdown == "-" or (args.markdown is None and args.html is None)
    md = Path(args.markdown) if args.markdown not in (None, "-") else None
    html = Path(args.html) if args.html else None
    matrix, title = write_comparison(args.results, md, html, args.label, args.title)
    if to_stdout:
        sys.stdout.write(to_markdown(matrix, title))
    else:
        print(f"{len(matrix.rows)} cases, {len(matrix.differing)} differ"
              + "".join(f"; wrote {p}" for p in (md, html) if p))
    return EXIT_FAILED if args.fail_on_difference and matrix.differing else EXIT_OK


# --- baseline ---------------------------------------------------------------------------


def suite_case_ids() -> set[str]:
    from conformance.collect import collect_case_clauses

    return {nodeid for nodes in collect_case_clauses().values() for nodeid in nodes}


def cmd_baseline_update(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from conformance.baseline import BaselineError, load_baseline, update, write_baseline
    from conformance.clauses import load_registry

    results = load_all([args.results])[0]
    path = Path(args.baseline)
    old = None
    if path.exists():
        try:
            old = load_baseline(path, load_registry())
        except BaselineError as exc:
            raise UsageProblem(str(exc)) from None
    cases = [{"id": c.id, "outcome": c.outcome, "clauses": [x.id for x in c.clauses]}
             for c in results.cases]
    new, report = update(old, args.target or results.name, cases, suite_case_ids())
    if old is None:
        new = type(new)(target=new.target, entries=new.entries, path=str(path),
                        header=f"# Known deviations of target {new.target}: see the README, "
                               f"'Baselines and CI gating'.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_baseline(path, new)
    except OSError as exc:
        raise UsageProblem(f"{path}: cannot write: {exc.strerror or exc}") from None
    parts = [f"{len(report.added)} added", f"{len(report.changed)} changed",
             f"{len(report.removed)} removed (now pass)",
             f"{len(report.kept)} kept (not exercised)",
             f"{len(report.dropped)} dropped (no longer in the suite)"]
    print(f"{path}: {len(new.entries)} entries: " + ", ".join(parts))
    for case in report.removed:
        print(f"  removed {case}")
    for case in report.dropped:
        print(f"  dropped {case}")
    if new.todo:
        print(f"{path}: {len(new.todo)} entries say 'explanation: TODO'; write why the device "
              f"does this, then commit the baseline", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_baseline_check(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from conformance.baseline import BaselineError, load_baseline, unknown_cases
    from conformance.clauses import load_registry
    from conformance.summary import CASES_DIR

    registry = load_registry()
    suite = suite_case_ids()
    problems = 0
    for path in args.files:
        try:
            baseline = load_baseline(path, registry)
        except BaselineError as exc:
            print(exc, file=sys.stderr)
            problems += 1
            continue
        unknown = unknown_cases(baseline, suite, CASES_DIR)
        for line in unknown:
            print(line, file=sys.stderr)
        problems += len(unknown)
        if not unknown:
            print(f"{path}: target {baseline.target}: {len(baseline.entries)} entries, "
                  f"{len(baseline.todo)} without an explanation")
    return EXIT_USAGE if problems else EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser(
        "compare", help="compare two or more results files side by side",
        description="Rows: cases by spec area; columns: runs; cells: outcomes. Differences "
                    "first. Markdown to stdout unless --markdown/--html say otherwise.")
    compare.add_argument("results", nargs="+", metavar="RESULTS", help="results files (JSON)")
    compare.add_argument("--markdown", metavar="FILE", help="write Markdown here ('-': stdout)")
    compare.add_argument("--html", metavar="FILE", help="write a self-contained HTML page here")
    compare.add_argument("--label", action="append", metavar="TEXT",
                         help="column label for the Nth results file (repeatable)")
    compare.add_argument("--title", metavar="TEXT", help="report title")
    compare.add_argument("--fail-on-difference", action="store_true",
                         help="exit 1 when any case differs between the runs")
    compare.set_defaults(func=cmd_compare)

    baseline = sub.add_parser("baseline", help="write or check baselines of known deviations")
    bsub = baseline.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    upd = bsub.add_parser(
        "update", help="write or update a baseline from a results file",
        description="Keeps existing explanations, adds new deviations with 'explanation: "
                    "TODO', removes cases that now pass. Exit 1 while any TODO remains.")
    upd.add_argument("--results", required=True, metavar="FILE", help="a results file")
    upd.add_argument("--baseline", required=True, metavar="FILE", help="the baseline to write")
    upd.add_argument("--target", metavar="NAME",
                     help="target name for a new baseline (default: the run's target name)")
    upd.set_defaults(func=cmd_baseline_update)
    chk = bsub.add_parser("check", help="validate baselines against the suite")
    chk.add_argument("files", nargs="+", metavar="FILE")
    chk.set_defaults(func=cmd_baseline_check)
