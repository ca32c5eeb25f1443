#!/usr/bin/env bash
# Installs the dependencies and the data, builds moe in Release and runs the headline experiment:
# expert_load_heatmaps --preset quick, DeepSeek-V3's Appendix C on this machine (an aux-loss-based and an
# aux-loss-free MoE language model trained on three domains, their expert load drawn as Figure 10).
# Extra arguments go to the program (say, --threads 2 or --aux-alpha 1e-2).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/fetch-data.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target expert_load_heatmaps
out=out/expert_load_heatmaps
build/bin/expert_load_heatmaps --preset quick --out "$out" --data-dir data "$@"
echo
echo "report:  $out/report.md"
echo "figure:  $out/figure10.png (one layer per panel pair: $out/heatmaps/layer_NN.png)"
