#!/usr/bin/env bash
# Every benchmark, each printing its figures beside a baseline measured in the same run and
# writing them to docs/benchmarks.md: REST (wrk), console (fan-out, tail-on-connect, memory,
# streams), volume data (upload, download, backup, restore), a real game server (freeciv),
# footprint, the node report and usage meters, SFTP beside OpenSSH's sshd, the firewall. Run on an otherwise idle machine: the figures are only as quiet as it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests' Docker network goes when they end (left in place while another run uses it).
trap 'docker network rm lightd-test-net >/dev/null 2>&1 || true' EXIT
ulimit -n "$(ulimit -Hn)"
cargo bench --bench rest --bench console --bench journal --bench data --bench game --bench footprint --bench node --bench sftp --bench firewall
