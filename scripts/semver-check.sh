#!/usr/bin/env bash
# Checks the public API of dfut, dfut-macros and dfut-net against the last
# release for changes that need a new major (or, before 1.0, minor)
# version, with cargo-semver-checks. Slow to build the first time, so it is
# not part of every CI run: run it before tagging a release.
#
# The last release is the newest git tag named v<major>.<minor>.<patch>
# (override with SEMVER_BASELINE=<rev>). With no release yet there is
# nothing to compare against, and the script says so and exits 0.
#
# Usage: bash scripts/semver-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

baseline="${SEMVER_BASELINE:-$(git tag --list 'v[0-9]*.[0-9]*.[0-9]*' --sort=-v:refname | head -n 1)}"
if [ -z "$baseline" ]; then
    echo "semver-check: no release tag (v*.*.*) yet, nothing to compare against"
    exit 0
fi

if ! cargo semver-checks --version >/dev/null 2>&1; then
    echo "semver-check: installing cargo-semver-checks (once; several minutes)"
    cargo install --locked cargo-semver-checks
fi

echo "semver-check: comparing the working tree against $baseline"
for crate in dfut-net dfut-macros dfut; do
    cargo semver-checks check-release --package "$crate" --baseline-rev "$baseline" --all-features
done
