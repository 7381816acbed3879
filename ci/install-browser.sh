#!/usr/bin/env bash
# Install the headless browser the HTML comparison report is tested in:
# Debian's Chromium and its WebDriver (chromium-driver).  Idempotent: does
# nothing when both are already installed.  Debian/Ubuntu only (apt-get); runs
# as root or through sudo.  Python's selenium comes with the test extras.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "install-browser: $(chromium --version 2>/dev/null | head -n1) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver

echo "install-browser: $(chromium --version 2>/dev/null | head -n1) installed"
