#!/usr/bin/env bash
# The memory-flat proof at full size: a million small tasks in batches of
# 10,000 (half failing, some retried, a chain with lineage per batch) on a
# local cluster of two worker processes; fails unless every store ends
# empty and the driver's and each worker's resident memory stays within
# 10 % + 20 MiB of its value after the first tenth of the batches.
# The test suite runs the same check with 50,000 tasks.
# Usage: bash scripts/memory-flat.sh [tasks]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dfut-tests --bin dfut-test-worker
out=$(DFUT_WORKERS=2 target/release/dfut-test-worker --memory-flat "${1:-1000000}")
echo "$out"
[ "$(echo "$out" | tail -n 1)" = ok ]
