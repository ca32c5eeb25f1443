#!/usr/bin/env bash
# Installs the dependencies, builds moe in Release and runs the demo: an MoE trained on the synthetic
# mixture task (quick preset), printing loss, accuracy and expert load per epoch.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target synthetic_mixture
out=out/synthetic_mixture
build/bin/synthetic_mixture --preset quick --out "$out" "$@"
echo
echo "report: $out/report.md"
