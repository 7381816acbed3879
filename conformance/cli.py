"""``vblk-conformance``: the command line.

    vblk-conformance run [--target KIND | --target-config FILE] [PYTEST ARGS...]
    vblk-conformance run --target-config A --target-config B ...   (run both, compare)
    vblk-conformance compare RESULTS RESULTS... [--markdown FILE] [--html FILE]
    vblk-conformance baseline update --results FILE --baseline FILE | check FILE...
    vblk-conformance clauses [--uncovered]
    vblk-conformance fuzz --target-config FILE --seconds N [--seed S] [--out DIR]
    vblk-conformance replay FILE
    vblk-conformance vm start [--qemu BIN] [--device STR] ... | vm stop [--dir DIR]

``run`` is pytest over the packaged cases with this project's plugin; any
argument it does not know goes to pytest (``-k``, ``-x``, ``--junitxml``, ...).
Exit status: 0 nothing gated (README: Outcomes), 1 a case failed or the
baseline is stale, 4 bad usage, target file or baseline, 5 no case was collected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from conformance import cli_reports as reports
from conformance.fuzz import cli as fuzz_cli
from conformance.runargs import case_run_args
from conformance.targets.vm import cli as vm_cli

EXIT_OK = 0
EXIT_USAGE = 4
EXIT_NO_TESTS = 5


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"vblk-conformance: error: {message}", file=sys.stderr)
    return code


def pytest_args_for_run(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    argv = case_run_args() + ["-o", "console_output_style=count"]
    if args.target:
        argv += ["--target", args.target]
    if args.target_config:
        argv += ["--target-config", args.target_config[0]]
    return argv + reports.pytest_options(args) + list(extra)


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import pytest

    from conformance.targets import TargetConfigError, TargetError, check_target, load_target_file

    if args.target_config and len(args.target_config) > 1:
        return reports.run_many(args, extra)
    if args.target_config:
        try:
            check_target(load_target_file(args.target_config[0]))
        except (TargetConfigError, TargetError) as exc:
            return _fail(str(exc))
    reports.check_baselines(args.baseline or [])
    code = int(pytest.main(pytest_args_for_run(args, extra)))
    if code == EXIT_NO_TESTS:
        return _fail("no conformance case was collected (check -k / the case selection)",
                     EXIT_NO_TESTS)
    return code


def cmd_clauses(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from conformance.clauses import coverage, format_listing, load_registry
    from conformance.collect import collect_case_clauses

    registry = load_registry()
    covered = collect_case_clauses()
    print(format_listing(coverage(registry, covered), uncovered_only=args.uncovered))
    return EXIT_OK


def cmd_mutants(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from conformance.mutants import false_alarms, format_kill_table, kill_table
    from reference_device.defects import DEFECTS

    names = args.defect or sorted(DEFECTS)
    unknown = [n for n in names if n not in DEFECTS]
    if unknown:
        return _fail(f"--defect: unknown defect(s) {', '.join(unknown)} "
                     f"(known: {', '.join(sorted(DEFECTS))})")
    alarms = [] if args.defect else false_alarms()
    for nodeid, outcome, detail in alarms:
        print(f"FALSE ALARM {outcome}: {nodeid}: {detail}"[:240])
    results = kill_table(names, jobs=args.jobs)
    print(format_kill_table(results, markdown=args.markdown))
    if not args.defect:
        print(f"defect-free device: {len(alarms)} false alarm(s)")
    return 0 if all(r.killed and not r.error for r in results) and not alarms else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vblk-conformance",
        description="VIRTIO 1.2 conformance suite for virtio-blk-pci devices")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the conformance cases against a target",
                         description="Run the conformance cases; unknown options go to pytest.",
                         allow_abbrev=False)  # "--co" is pytest's, not --compare-*'s
    run.add_argument("--target", metavar="KIND", help="reference (default) or qtest")
    run.add_argument("--target-config", metavar="FILE", action="append",
                     help="YAML target file; repeat it to run several targets and compare them")
    reports.add_run_options(run)
    run.set_defaults(func=cmd_run)
    clauses = sub.add_parser("clauses", help="list the spec requirements and their coverage")
    clauses.add_argument("--uncovered", action="store_true",
                         help="only requirements no case checks")
    clauses.set_defaults(func=cmd_clauses)
    mutants = sub.add_parser(
        "mutants", help="run the cases against each injectable defect of the reference device",
        description="For each defect, run the cases citing its clauses against a reference "
                    "device with that defect; print the kill table; exit 1 if any survives.")
    mutants.add_argument("--defect", action="append", metavar="NAME",
                         help="only this defect (repeatable; default: all)")
    mutants.add_argument("-j", "--jobs", type=int, default=None,
                         help="parallel runs (default: number of CPUs)")
    mutants.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    mutants.set_defaults(func=cmd_mutants)
    reports.add_parsers(sub)
    fuzz_cli.add_parsers(sub)
    vm_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except reports.UsageProblem as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
