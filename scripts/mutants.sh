#!/usr/bin/env bash
# Mutation testing (cargo-mutants) of the modules where a silent bug costs most; the scope is
# .cargo/mutants.toml, the scores and every missed mutant are in tests/MUTANTS.md.
#
#   scripts/mutants.sh [slice...]     slices: lifecycle tokens store router vfs console (default: all)
#   scripts/mutants.sh summary        the score per file of the slices run (tests/MUTANTS.md's table)
#
# Each slice mutates its files only and runs only the unit tests that cover them (no Docker).
# What is measured is the committed tree at HEAD (exported once, so edits made while it runs
# change nothing); uncommitted changes are not part of it.
# One job at a time (-j 1): a mutant builds in ~20-40 s, and the console slice's ring stress
# tests take ~30 s a mutant; all slices take some hours on 2 cores, so run it in the background:
#   nohup scripts/mutants.sh > target/mutants.log 2>&1 &
# Results: target/mutants/<slice>/mutants.out/{outcomes.json,caught.txt,missed.txt,...}.
# Needs cargo-mutants 27 (`cargo install cargo-mutants --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/mutants"

# Caught / missed / timeout / unviable per file, from every slice's outcomes.json.
summary() {
    python3 - "$out"/*/mutants.out/outcomes.json <<'PY'
import collections, json, sys
rows = collections.defaultdict(collections.Counter)
for path in sys.argv[1:]:
    for o in json.load(open(path))["outcomes"]:
        if isinstance(o["scenario"], dict):
            rows[o["scenario"]["Mutant"]["name"].split(":")[0]][o["summary"]] += 1
print("| file | caught | missed | timeout | unviable | detected of viable |")
print("|---|---|---|---|---|---|")
for f, c in sorted(rows.items()):
    caught, missed, timeout = c["CaughtMutant"], c["MissedMutant"], c["Timeout"]
    viable = caught + missed + timeout
    print(f"| {f} | {caught} | {missed} | {timeout} | {c['Unviable']} | {(caught + timeout) / viable:.0%} of {viable} |")
PY
}
if [[ ${1:-} == summary ]]; then
    summary
    exit
fi
commit=$(git rev-parse HEAD)
snapshot="$out/tree-$commit"
if [[ ! -d $snapshot ]]; then
    mkdir -p "$snapshot.tmp"
    git archive HEAD | tar -x -C "$snapshot.tmp"
    mv "$snapshot.tmp" "$snapshot"
fi
echo "measuring $commit"

# The slices build in copies of the snapshot; one target directory shared by all of them
# means the dependencies build once (each copy rebuilds only lightd).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$out/build}"
# No debug info: a mutant's build and link take about half the time, and no test reads it.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-0}"

# slice name, regex for its files, the unit tests (`cargo test --lib` filter and options,
# split on spaces) that cover them, then any more cargo-mutants options.
slice() {
    local name=$1 files=$2 tests=$3
    shift 3
    echo "== $name: $files, tests $tests"
    # Exit code 2 means some mutants were missed and 3 that some timed out: both are results.
    cargo mutants --dir "$snapshot" -j 1 --no-shuffle --output "$out/$name" --re "^src/($files)\.rs:" "$@" \
        -- $tests || {
        rc=$?
        [[ $rc == 2 || $rc == 3 ]] || exit $rc
    }
}

run() {
    case $1 in
    lifecycle) slice lifecycle 'lifecycle/(supervisor|action|power)' lifecycle:: ;;
    tokens) slice tokens tokens tokens:: ;;
    # A store that never answers fails its tests after 10 s each (not a hang): give the
    # slowest case, every async test waiting its 10 s two at a time, the time to say so.
    store) slice store store store:: --minimum-test-timeout 90 ;;
    router) slice router http/router http:: ;;
    vfs) slice vfs 'vfs/(resolve|path)' vfs:: ;;
    # The ring's two stress tests (1M lines, 8 reader threads: ~15 s a mutant here) are left
    # out: they exist for the memory orderings and fences, which cargo-mutants does not mutate;
    # every mutant it makes of the ring is one a deterministic test can see.
    console) slice console 'console/(ring|viewer)' 'console:: --skip console::ring::tests::stress_' ;;
    *) echo "unknown slice $1" >&2 && exit 64 ;;
    esac
}

if [[ $# == 0 ]]; then
    set -- lifecycle tokens store router vfs console
fi
for s in "$@"; do
    run "$s"
done
