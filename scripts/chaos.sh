#!/usr/bin/env bash
# The fault suite: a real scheduler, worker processes and driver processes,
# with workers killed, paused and cut off, a driver paused 15 s, the
# scheduler restarted, an owner killed, and 5 % packet loss on every link.
# Faults hit processes by process id only. Pass criteria are in
# tests/src/bin/chaos/main.rs; every wait is bounded.
#
#   scripts/chaos.sh                      # every scenario, 10,000-task jobs
#   scripts/chaos.sh --tasks 2000 lossy   # some scenarios, smaller jobs
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dfut --bin dfut -p dfut-tests --bin dfut-test-worker --bin dfut-chaos
exec target/release/dfut-chaos "$@"
