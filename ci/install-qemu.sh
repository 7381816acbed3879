#!/usr/bin/env bash
# Install the QEMU the qtest target drives, if it is not there yet.
# Idempotent: does nothing when qemu-system-x86_64 is already on PATH.
# Debian/Ubuntu only (apt-get); runs as root or through sudo.
set -euo pipefail

if command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "install-qemu: $(qemu-system-x86_64 --version | head -n1) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends qemu-system-x86 qemu-utils

echo "install-qemu: $(qemu-system-x86_64 --version | head -n1) installed"
