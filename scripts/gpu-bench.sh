#!/usr/bin/env bash
# Builds and runs the matrix benchmark on a machine with a GPU (an NVIDIA
# one with its Vulkan driver, or any other Vulkan device): prints the
# adapter, then W4 through dfut on CPU and GPU workers next to direct faer,
# and the matrix example's batched and tiled products. Well under 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    echo "installing the Vulkan loader"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1
fi
command -v vulkaninfo >/dev/null && vulkaninfo --summary 2>/dev/null | grep -E "deviceName|deviceType" || true
cargo build --release --example workloads --example matrix
echo "== W4 (2 CPU workers + 1 GPU worker) =="
DFUT_GPU_WORKERS=1 timeout 180 ./target/release/examples/workloads w4
echo "== matrix example =="
timeout 120 ./target/release/examples/matrix --n 2048 --batch 4 --tiled 4096 --tile 1024
