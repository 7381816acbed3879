"""ci/install-qemu.sh builds its backports source from the machine's own apt sources."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "ci" / "install-qemu.sh"
BACKPORTS = "http://mirror.example/debian bookworm-backports main"


def print_source(etc: Path, codename: str = "bookworm") -> subprocess.CompletedProcess:
    env = {**os.environ, "APT_ETC": str(etc), "QEMU_CODENAME": codename}
    return subprocess.run(["bash", str(SCRIPT), "--print-source"], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def key(tmp_path) -> str:
    """A keyring file (the script keeps Signed-By only when the file exists)."""
    path = tmp_path / "example-archive-keyring.gpg"
    path.write_bytes(b"")
    return str(path)


def apt_etc(tmp_path, sources_list: str = "", parts: dict[str, str] | None = None) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (etc / "sources.list.d" / name).write_text(text)
    return etc


def test_deb822_sources(tmp_path, key):
    etc = apt_etc(tmp_path, parts={"debian.sources": (
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        f"Signed-By: {key}\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        f"Suites: bookworm-security\nComponents: main\nSigned-By: {key}\n")})
    r = print_source(etc)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"deb [signed-by={key}] {BACKPORTS}\n"


def test_one_line_sources_list(tmp_path, key):
    etc = apt_etc(tmp_path, sources_list=(
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://mirror.example/debian-security bookworm-security main\n"
        f"deb [arch=amd64 signed-by={key}] http://mirror.example/debian bookworm main contrib\n"))
    r = print_source(etc)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"deb [signed-by={key}] {BACKPORTS}\n"


def test_missing_keyring_file_is_left_out(tmp_path):
    etc = apt_etc(tmp_path, sources_list=(
        "deb [signed-by=/nonexistent/key.gpg] http://mirror.example/debian bookworm main\n"))
    r = print_source(etc)
    assert r.stdout == "deb http://mirror.example/debian bookworm-backports main\n"


def test_disabled_and_foreign_entries_are_ignored(tmp_path):
    etc = apt_etc(tmp_path, sources_list="deb http://plain.example/debian bookworm main\n", parts={
        "a.sources": ("Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
                      "Components: main\nEnabled: no\n"),
        "b.sources.disabled": "Types: deb\nURIs: http://never.example\nSuites: bookworm\n",
    })
    r = print_source(etc)
    assert r.returncode == 0, r.stderr
    # No keyring named: apt's default trusted keys apply.
    assert r.stdout == "deb http://plain.example/debian bookworm-backports main\n"


@pytest.mark.parametrize("codename", ["bookworm", "trixie"])
def test_no_entry_for_the_release_is_one_line(tmp_path, codename):
    etc = apt_etc(tmp_path, sources_list="deb http://mirror.example/debian bullseye main\n")
    r = print_source(etc, codename)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.strip() == (f"install-qemu: error: no 'deb' entry for suite {codename} in "
                                f"{etc}/sources.list{{,.d}} to build the {codename}-backports "
                                "source from")
