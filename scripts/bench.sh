#!/usr/bin/env bash
# Every benchmark, each printing its figures beside a baseline measured in the same run and
# writing them to BENCHMARKS.md: REST, console fan-out/tail/streams, footprint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo bench --bench rest --bench console --bench footprint
