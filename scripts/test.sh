#!/usr/bin/env bash
# The whole test suite from a fresh machine: Docker reachable, test images and tools set up,
# then fmt, clippy, unit tests, and every integration test against the real daemon and engine.
# The tests that restart the Docker engine run last, each alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests' Docker network goes when they end (left in place while another run uses it).
trap 'docker network rm lightd-test-net >/dev/null 2>&1 || true' EXIT
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Tests that stop the engine, run one at a time after everything else.
ALONE=(engine_restart model node firewall_restart)
together=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    [[ " ${ALONE[*]} " == *" $name "* ]] || together+=(--test "$name")
done
threads=${LIGHTD_TEST_THREADS:-4}
cargo test --no-fail-fast --lib --bins "${together[@]}" -- --test-threads "$threads"
for name in "${ALONE[@]}"; do
    cargo test --test "$name" -- --test-threads 1
done
