"""The CI templates in ci/github and ci/gitlab: valid YAML, sound structure, and every
``vblk-conformance`` command they run is one the README documents and the CLI accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conformance.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / "ci" / "github" / "virtio-blk-conformance.yml"
GITLAB = ROOT / "ci" / "gitlab" / "virtio-blk-conformance.gitlab-ci.yml"
README = ROOT / "README.md"


def shell_lines(script: str) -> list[str]:
    """Logical shell lines of a script (backslash continuations joined)."""
    return [ln.strip() for ln in script.replace("\\\n", " ").splitlines() if ln.strip()]


def suite_commands(scripts: list[str]) -> list[str]:
    out = []
    for script in scripts:
        for line in shell_lines(script):
            if line.startswith("vblk-conformance "):
                line = line.split(" || ", 1)[0]  # "|| [ $? -eq 1 ]" is shell, not ours
                # A GitHub expression ${{ matrix.target }} stands for one word.
                out.append(re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", r"\1", line))
    return out


def signature(command: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """(subcommand words, option names): what a command does, whatever its values."""
    words = shlex.split(command, comments=True)[1:]
    sub = []
    for w in words:
        if w.startswith("-"):
            break
        sub.append(w)
        if len(sub) == (2 if sub[0] == "baseline" else 1):
            break
    options = frozenset(w.split("=", 1)[0] for w in words if w.startswith("-"))
    return tuple(sub), options


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:sh|bash|console)\n(.*?)```", README.read_text(), re.S)
    return suite_commands(blocks)


def github_scripts() -> list[str]:
    data = yaml.safe_load(GITHUB.read_text())
    return [step["run"] for job in data["jobs"].values() for step in job["steps"]
            if "run" in step]


def gitlab_scripts() -> list[str]:
    data = yaml.safe_load(GITLAB.read_text())
    return [line for name, job in data.items() if isinstance(job, dict)
            for key in ("before_script", "script") for line in job.get(key, [])]


def test_github_workflow_structure():
    data = yaml.safe_load(GITHUB.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    jobs = data["jobs"]
    assert set(jobs) == {"conformance", "qemu-matrix", "compare"}
    for job in jobs.values():
        assert job["runs-on"].startswith("ubuntu")
        assert all(("uses" in s) != ("run" in s) for s in job["steps"])
    assert [m["name"] for m in jobs["qemu-matrix"]["strategy"]["matrix"]["include"]] == \
        ["distro", "tree"]
    assert jobs["compare"]["needs"] == "qemu-matrix"
    uploads = [s["with"]["path"] for j in jobs.values() for s in j["steps"]
               if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads == ["results/", "results/${{ matrix.name }}.json", "results/compare.html"]
    # The uploads of the gating job run even when the suite failed.
    assert [s.get("if") for s in jobs["conformance"]["steps"][3:]] == [None, "always()",
                                                                        "always()"]


def test_gitlab_pipeline_structure():
    data = yaml.safe_load(GITLAB.read_text())
    stages = data["stages"]
    jobs = {k: v for k, v in data.items() if isinstance(v, dict) and not k.startswith(".")
            and k != "variables"}
    assert set(jobs) == {"conformance", "qemu-matrix", "compare"}
    for name, job in jobs.items():
        assert job["stage"] in stages, name
        assert job["extends"] in data, name
        for need in job.get("needs", []):
            assert need in jobs, name
    assert jobs["conformance"]["artifacts"]["reports"]["junit"] == "results/junit.xml"
    assert jobs["conformance"]["artifacts"]["when"] == "always"
    assert jobs["qemu-matrix"]["parallel"]["matrix"] == [{"QEMU_NAME": ["distro", "tree"]}]
    assert "results/compare.html" in jobs["compare"]["artifacts"]["paths"]


@pytest.mark.parametrize("scripts", [github_scripts, gitlab_scripts], ids=["github", "gitlab"])
def test_ci_runs_only_documented_commands(scripts):
    commands = suite_commands(scripts())
    assert [signature(c)[0] for c in commands] == [("run",), ("run",), ("compare",)]
    documented = {signature(c) for c in readme_commands()}
    for command in commands:
        sig = signature(command)
        # The matrix job's target is a CI variable; its options are what must match.
        assert sig in documented, f"not documented in README.md: {command}"


@pytest.mark.parametrize("source", ["github", "gitlab", "readme"])
def test_commands_are_accepted_by_the_cli(source, tmp_path):
    """The CLI parses its own options; the rest must be options pytest (with the plugins)
    accepts: a collect-only run with them on a trivial test exits 0."""
    scripts = {"github": github_scripts, "gitlab": gitlab_scripts,
               "readme": lambda: [c for c in readme_commands()]}[source]
    commands = suite_commands(scripts())
    assert commands
    parser = build_parser()
    passed_on = set()
    for command in commands:
        args, extra = parser.parse_known_args(shlex.split(command, comments=True)[1:])
        if args.command != "run":
            assert extra == [], command
        elif extra:
            passed_on.add(tuple(extra))
    (tmp_path / "test_trivial.py").write_text("def test_nothing():\n    pass\n")
    for extra in sorted(passed_on):
        r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-p",
                            "no:cacheprovider", "--rootdir", str(tmp_path), *extra,
                            "test_trivial.py"], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
        assert r.returncode == 0, f"pytest rejects {' '.join(extra)}: {r.stderr.strip()}"


def test_signature():
    assert signature("vblk-conformance run --target-config a.yaml --junitxml=x -q") == \
        (("run",), frozenset({"--target-config", "--junitxml", "-q"}))
    assert signature("vblk-conformance baseline update --results r --baseline b") == \
        (("baseline", "update"), frozenset({"--results", "--baseline"}))
