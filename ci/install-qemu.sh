#!/usr/bin/env bash
# Provide the QEMU builds the qtest target is compared on, side by side:
#
#   QEMU 7.2   Debian 12's qemu-system-x86 + qemu-utils, installed with apt
#              (gives /usr/bin/qemu-system-x86_64 and qemu-storage-daemon).
#   QEMU 10.0  Debian's <codename>-backports build, downloaded with apt-get
#              download and unpacked with dpkg-deb -x into a private prefix,
#              never installed system-wide:
#                  $QEMU_PREFIX/usr/bin/qemu-system-x86_64
#                  $QEMU_PREFIX/usr/share/qemu        (firmware, -L)
#              It runs with the shared libraries 7.2's package installed.
#
# The backports source is built at run time from the mirror already
# configured in this machine's apt sources (/etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list|*.sources): the same URI and keyring as the
# entry for the release itself, suite <codename>-backports.  It lives in a
# temporary directory with its own package lists and cache and is used only
# through -o Dir::Etc::SourceList/SourceParts, Dir::State::Lists, Dir::Cache,
# so the system's apt configuration and state are left as they were.
#
# Idempotent: each part is skipped when its binary already answers --version.
# Debian only; runs as root or through sudo.
#
# Environment:
#   QEMU_PREFIX            where 10.0 goes (default /opt/vblk-conformance/qemu-10.0)
#   QEMU_BACKPORTS_SERIES  the backports version series wanted (default 10.0)
#   QEMU_BACKPORTS=0       skip the backports build (only 7.2)
#   APT_ETC                where the apt sources are read (default /etc/apt)
#   QEMU_CODENAME          the release (default: VERSION_CODENAME of /etc/os-release)
#
# bash ci/install-qemu.sh --print-source prints the backports source line it
# would use, and does nothing else.
#
# Exit status: 0 when every requested build is there, 1 otherwise, with one
# line saying which step failed.
set -euo pipefail

SERIES="${QEMU_BACKPORTS_SERIES:-10.0}"
PREFIX="${QEMU_PREFIX:-/opt/vblk-conformance/qemu-${SERIES}}"
WANT_BACKPORTS="${QEMU_BACKPORTS:-1}"
APT_ETC="${APT_ETC:-/etc/apt}"
PRINT_SOURCE=0
[ "${1:-}" = "--print-source" ] && PRINT_SOURCE=1
PACKAGES_10=(qemu-system-x86 qemu-system-common qemu-system-data)

say() { echo "install-qemu: $*"; }
die() { echo "install-qemu: error: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

# --- QEMU 7.2 from the release itself ------------------------------------------------
if [ "$PRINT_SOURCE" = 1 ]; then
    :  # only the backports source line, below
elif command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v qemu-storage-daemon >/dev/null 2>&1
then
    say "$(qemu-system-x86_64 --version | head -n1) already installed"
else
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends qemu-system-x86 qemu-utils
    say "$(qemu-system-x86_64 --version | head -n1) installed"
fi
[ "$PRINT_SOURCE" = 1 ] || say "QEMU (apt): $(command -v qemu-system-x86_64)"

[ "$WANT_BACKPORTS" = "0" ] && exit 0

# --- QEMU from <codename>-backports into a private prefix ------------------------------
BIN="$PREFIX/usr/bin/qemu-system-x86_64"
if [ "$PRINT_SOURCE" = 0 ] && [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    say "$("$BIN" --version | head -n1) already in $PREFIX"
    say "QEMU $SERIES: $BIN (firmware: -L $PREFIX/usr/share/qemu)"
    exit 0
fi

codename="${QEMU_CODENAME:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}"
[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release (not Debian?)"

# Print "URI KEYRING" of the first enabled 'deb' entry for suite $codename.
# deb822 stanzas (*.sources) and one-line entries (sources.list, *.list).
release_source() {
    local f
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") \
                    && enabled != "no" && uri != "") { print uri, key; found = 1; exit }
                types = suites = uri = key = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                field = tolower($1); sub(/:$/, "", field)
                value = $0; sub(/^[^:]*:[ \t]*/, "", value)
                if (field == "types") types = value
                else if (field == "suites") suites = value
                else if (field == "uris") { split(value, u, /[ \t]+/); uri = u[1] }
                else if (field == "signed-by") key = value
                else if (field == "enabled") enabled = tolower(value)
            }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$codename" '
            $1 != "deb" { next }
            {
                key = ""; i = 2
                if ($2 ~ /^\[/) {
                    while (i <= NF) {
                        if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) }
                        if ($i ~ /\]$/) { i++; break }
                        i++
                    }
                }
                if ($(i + 1) == suite) { print $i, key; exit }
            }
        ' "$f"
    done
}

read -r mirror keyring < <(release_source | head -n1) || true
[ -n "${mirror:-}" ] || die "no 'deb' entry for suite $codename in $APT_ETC/sources.list{,.d} \
to build the $codename-backports source from"
# A keyring that is inline key material (deb822 allows it) cannot go into a one-line entry.
if [ -n "${keyring:-}" ] && [ ! -f "$keyring" ]; then
    keyring=""
fi

opts="${keyring:+[signed-by=$keyring] }"
source_line="deb ${opts}${mirror} ${codename}-backports main"
if [ "$PRINT_SOURCE" = 1 ]; then
    echo "$source_line"
    exit 0
fi

work="$(mktemp -d /tmp/vbc-backports-XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "$source_line" > "$work/sources.list"
APT=(apt-get -q
     -o "Dir::Etc::SourceList=$work/sources.list"
     -o "Dir::Etc::SourceParts=$work/parts"
     -o "Dir::State::Lists=$work/lists"
     -o "Dir::Cache=$work/cache"
     -o "APT::Sandbox::User=root")

say "fetching the $codename-backports package lists (mirror from the machine's apt sources)"
"${APT[@]}" update >"$work/update.log" 2>&1 \
    || die "apt-get update of $codename-backports failed: $(tail -n1 "$work/update.log")"

# The newest $SERIES.x version the suite has, e.g. 1:10.0.2+ds-1~bpo12+1.
version="$("${APT[@]/apt-get/apt-cache}" madison qemu-system-x86 2>/dev/null \
    | awk -F'|' -v s="$SERIES" '{ gsub(/ /, "", $2) } $2 ~ ("^([0-9]+:)?" s "[.]") { print $2; exit }')"
[ -n "$version" ] || die "$codename-backports has no qemu-system-x86 $SERIES.x"

say "downloading ${PACKAGES_10[*]} $version"
(cd "$work/debs" && "${APT[@]}" download "${PACKAGES_10[@]/%/=$version}" >"$work/download.log" 2>&1) \
    || die "apt-get download failed: $(tail -n1 "$work/download.log")"

$SUDO mkdir -p "$PREFIX"
for deb in "$work"/debs/*.deb; do
    $SUDO dpkg-deb -x "$deb" "$PREFIX"
done

[ -x "$BIN" ] || die "$BIN missing after unpacking"
if missing="$(ldd "$BIN" | grep 'not found')"; then
    die "$BIN needs libraries this machine lacks: $(echo "$missing" | awk '{print $1}' | xargs)"
fi
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run: $("$BIN" --version 2>&1 | head -n1)"
say "$("$BIN" --version | head -n1) unpacked into $PREFIX"
say "QEMU $SERIES: $BIN (firmware: -L $PREFIX/usr/share/qemu)"
