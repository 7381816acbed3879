#!/usr/bin/env bash
# Install what the qemu-vm target needs to boot its own test VM, if missing:
#   - a Debian kernel in /boot (linux-image-amd64) for the guest,
#   - openssh-server (the guest runs the host's sshd binary from the read-only
#     root virtme-ng shares) and busybox-static (virtme-ng's init helpers),
#   - virtme-ng (vng), which turns "kernel + host root filesystem" into a VM.
# QEMU itself comes from ci/install-qemu.sh.  Idempotent: every step checks
# first.  Debian/Ubuntu only (apt-get); runs as root or through sudo.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

need=()
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ "${#need[@]}" -gt 0 ]; then
    $SUDO apt-get update -q
    # policy-rc.d keeps the package scripts from starting sshd on the host.
    prc=/usr/sbin/policy-rc.d
    made_prc=0
    if [ ! -e "$prc" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$prc" >/dev/null
        $SUDO chmod +x "$prc"
        made_prc=1
    fi
    $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
    [ "$made_prc" -eq 1 ] && $SUDO rm -f "$prc"
fi

if ! python3 -c 'import virtme_ng' >/dev/null 2>&1 || ! command -v vng >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'virtme-ng>=1.30'
fi

# Kernel images are 0600 on Debian; vng runs as the invoking user and must read one.
for k in /boot/vmlinuz-*; do
    [ -r "$k" ] || $SUDO chmod a+r "$k"
done

echo "install-vm: kernel $(ls /boot/vmlinuz-* | head -n1), $(vng --version 2>&1 | head -n1)"
