#!/usr/bin/env bash
# The project's test command (README: "Running the tests").  It installs what
# the tests need when it is missing, then runs, in order: ruff, the project's
# own tests (device, driver, targets, self-validation), and the conformance
# suite on the embedded reference device.  Exit status is non-zero on any
# failure, including "no tests collected".
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
die() { printf 'ci/test.sh: %s\n' "$*" >&2; exit 1; }

step "install: system packages (QEMU for the qtest target)"
bash ci/install-qemu.sh || die "installing QEMU failed"

step "install: headless Chromium for the HTML report's browser test"
bash ci/install-browser.sh \
    || echo "ci/test.sh: warning: Chromium could not be installed; the browser test will be skipped"

step "install: the suite and its test dependencies"
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]' \
    || die "pip install -e .[test] failed"

step "lint: ruff"
python3 -m ruff check . || die "ruff found problems"

step "tests: the project's own tests"
python3 -m pytest tests -q -p no:cacheprovider "$@"
rc=$?
[ "$rc" -eq 5 ] && die "pytest collected no tests under tests/"
[ "$rc" -eq 0 ] || die "the project's tests failed (pytest exit status $rc)"

step "conformance: the suite on the reference device"
vblk-conformance run -q
rc=$?
[ "$rc" -eq 0 ] || die "the conformance run on the reference device failed (exit status $rc)"
# The read-only variant: the VIRTIO_BLK_F_RO and GET_LIFETIME cases run only there.
vblk-conformance run -q --target-config examples/reference-ro.yaml
rc=$?
[ "$rc" -eq 0 ] || die "the conformance run on the read-only reference device failed (exit status $rc)"

echo
echo "ci/test.sh: all steps passed"
