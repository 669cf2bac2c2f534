#!/usr/bin/env bash
# The whole test suite from a fresh machine: Docker reachable, test image built,
# then fmt, clippy, unit and integration tests against the real daemon and engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Unit and integration tests (the benches are programs of their own: scripts/bench.sh).
cargo test --lib --bins --tests -- --test-threads "${LIGHTD_TEST_THREADS:-4}"
