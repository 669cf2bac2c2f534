#!/usr/bin/env bash
# Checks dist/lightd.service with `systemd-analyze verify`, which works offline (no systemd as
# PID 1 needed) but wants ExecStart's binary to exist: the unit is checked as a copy whose
# ExecStart points at BINARY (default: target/release/lightd, else target/debug/lightd).
# Fails on a non-zero exit of systemd-analyze or on any line it prints about the unit.
# Usage: scripts/verify-unit.sh [BINARY]
set -euo pipefail

cd "$(dirname "$0")/.."
unit=dist/lightd.service
binary=${1:-}
if [ -z "$binary" ]; then
    for candidate in target/release/lightd target/debug/lightd; do
        [ -x "$candidate" ] && binary=$candidate && break
    done
fi
[ -n "$binary" ] || { echo "verify-unit: no binary given and none built (cargo build)" >&2; exit 2; }
[ -x "$binary" ] || { echo "verify-unit: $binary is not an executable file" >&2; exit 2; }
binary=$(realpath "$binary")
command -v systemd-analyze >/dev/null || { echo "verify-unit: systemd-analyze missing (apt-get install systemd)" >&2; exit 2; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
grep -q '^ExecStart=/usr/local/bin/lightd ' "$unit" || {
    echo "verify-unit: $unit has no 'ExecStart=/usr/local/bin/lightd ...' line to point at $binary" >&2
    exit 1
}
sed "s|^ExecStart=/usr/local/bin/lightd |ExecStart=$binary |" "$unit" >"$dir/lightd.service"

status=0
out=$(systemd-analyze verify "$dir/lightd.service" 2>&1) || status=$?
[ -z "$out" ] || printf '%s\n' "$out" >&2
if [ "$status" != 0 ]; then
    echo "verify-unit: systemd-analyze verify exited $status" >&2
    exit 1
fi
if grep -q 'lightd\.service' <<<"$out"; then
    echo "verify-unit: systemd-analyze verify warned about the unit (above)" >&2
    exit 1
fi
echo "verify-unit: $unit verified (ExecStart=$binary)"
