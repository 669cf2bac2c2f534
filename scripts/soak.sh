#!/usr/bin/env bash
# The soak: 100 containers, 1000 viewers, a REST loop, LIGHTD_SOAK_SECS seconds (default 600).
# Prints errors, RSS over time and Docker streams; writes them to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests' Docker network goes when they end (left in place while another run uses it).
trap 'docker network rm lightd-test-net >/dev/null 2>&1 || true' EXIT
cargo bench --bench soak
