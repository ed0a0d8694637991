#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration (real worker processes
# over QUIC on loopback), compile-fail (trybuild) and doc tests.
#
# Installs what the tests need when it is missing, so it works on a bare
# machine with a Rust toolchain. Usage: bash scripts/test.sh [cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# The multi-host test puts processes in network namespaces of its own (as
# root; DFUT_SKIP_NETNS=1 skips it elsewhere).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The GPU path's tests run the real WGSL shaders; without a GPU, on Mesa's
# software Vulkan driver (lavapipe).
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || need_apt+=(libvulkan1)
# The dashboard's test loads the page in a real browser, headless.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The RAG workload's corpus: the manual pages of these two packages.
for pkg in manpages manpages-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# The GPU tests run on the software driver installed above, and fail if no
# adapter opens; opt out by name with DFUT_REQUIRE_GPU=0.
export DFUT_REQUIRE_GPU="${DFUT_REQUIRE_GPU:-1}"

# One build for the test binaries, worker programs and doctests.
cargo test --workspace --all-targets --no-fail-fast "$@"
cargo test --workspace --doc --no-fail-fast "$@"
