#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds the CUDA backend with nvcc (MOE_CUDA=ON; only the Thrust/CUDA
# tests, the README's GPU example and the backend benchmark), runs `ctest -L cuda` (backends::Thrust and the
# device-resident layer on the GPU against backends::Cpu, the thrust-omp tolerances), the README's GPU example
# (a training run resident on the device), and times the MoE layer's forward and forward + backward on C1, C2
# and C4 (tokens/s; on backends::Thrust and resident), with PyTorch's eager MoE on the same GPU beside it when
# `import torch` works there. Writes everything into build/gpu-check/ (and $OUT when it is set).
#
#   scripts/gpu-check.sh --vendor    where Eigen, Catch2 and Google Benchmark are installed (after
#                                    scripts/install-deps.sh): copies their headers, libraries and CMake files
#                                    into build/gpu-deps/, for a GPU machine that has none of them
#   scripts/gpu-check.sh             on the GPU machine, with build/gpu-deps/ carried there if it lacks them
#
# Environment: MOE_CUDA_ARCH (CMake's CUDA architectures, default: the GPU's own, else 90).
set -euo pipefail
cd "$(dirname "$0")/.."
deps=$PWD/build/gpu-deps

if [ "${1:-}" = "--vendor" ]; then
  rm -rf "$deps"
  mkdir -p "$deps/usr/include" "$deps/usr/share/eigen3" "$deps/usr/lib/cmake" "$deps/usr/lib/x86_64-linux-gnu/cmake"
  cp -r /usr/include/eigen3 /usr/include/catch2 /usr/include/benchmark "$deps/usr/include/"
  cp -r /usr/share/eigen3/cmake "$deps/usr/share/eigen3/"
  cp -r /usr/lib/cmake/Catch2 "$deps/usr/lib/cmake/"
  cp /usr/lib/libCatch2WithMain.a "$deps/usr/lib/"  # Catch2's CMake files name it
  cp -r /usr/lib/x86_64-linux-gnu/cmake/benchmark "$deps/usr/lib/x86_64-linux-gnu/cmake/"
  cp -a /usr/lib/x86_64-linux-gnu/libbenchmark* "$deps/usr/lib/x86_64-linux-gnu/"
  echo "gpu-check: dependencies in $deps ($(du -sh "$deps" | cut -f1)); carry build/gpu-deps to the GPU machine"
  exit 0
fi

started=$(date +%s)
log() { echo "gpu-check: [$(($(date +%s) - started)) s] $*"; }
out=build/gpu-check
mkdir -p "$out"

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader |
  sed 's/^/gpu-check: GPU: /'
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "gpu-check: no nvcc (looked on PATH and in /usr/local/cuda/bin)" >&2; exit 1; }
"$nvcc" --version | tail -1 | sed 's/^/gpu-check: /'
arch=${MOE_CUDA_ARCH:-}
if [ -z "$arch" ]; then
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.' || true)
  arch=${arch:-90}
fi

prefix=()
[ -d "$deps/usr" ] && prefix=(-DCMAKE_PREFIX_PATH="$deps/usr")
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

log "configuring (CUDA architectures $arch)"
cmake -S . -B build/gpu "${generator[@]}" "${prefix[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DMOE_CUDA=ON -DMOE_GPU_CHECK=ON -DMOE_BUILD_EXAMPLES=OFF \
  -DMOE_BUILD_BENCHMARKS=ON -DMOE_TEST_SINGLE_HEADER=OFF -DMOE_INSTALL=OFF >"$out/configure.log"
log "building moe_cuda_tests, readme_gpu_example_cuda, backend_bench_cuda"
cmake --build build/gpu -j "$(nproc)" --target moe_cuda_tests readme_gpu_example_cuda backend_bench_cuda \
  >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }

log "ctest -L cuda"
status=0
(cd build/gpu && ctest -L cuda --output-on-failure -j 4) >"$out/ctest.log" 2>&1 || status=1
tail -8 "$out/ctest.log"
# Here a skipped CUDA test means the tests saw no device: that fails the check.
if grep -q "Skipped" "$out/ctest.log"; then echo "gpu-check: CUDA tests skipped: no device seen" >&2; status=1; fi

log "README GPU example"
build/gpu/bin/readme_gpu_example_cuda | tee "$out/readme_example.log" || status=1

log "layer timings (layer/thrust includes the host transfers of the layer's interface; layer/resident none)"
build/gpu/bin/backend_bench_cuda --benchmark_min_time=0.2 --benchmark_format=console \
  --benchmark_out="$out/backend_bench.json" --benchmark_out_format=json 2>&1 | tee "$out/backend_bench.log" ||
  status=1

python=$(command -v python3 || true)
if [ -n "$python" ] && "$python" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  log "PyTorch on the same GPU (eager MoE of benchmarks/peers/pytorch_moe.py, data on the GPU)"
  "$python" benchmarks/peers/pytorch_moe.py --device cuda --configs C1,C2,C4 --repeats 3 --min-time 0.3 \
    --out "$out/pytorch.json" 2>&1 | grep '^pytorch' || status=1
else
  log "no PyTorch with CUDA here: the peer column is left out"
fi

if [ -n "${OUT:-}" ]; then cp "$out"/*.log "$out"/*.json "$OUT"/ 2>/dev/null || true; fi
log "done, status $status"
exit $status
