#!/usr/bin/env bash
# Installs the dependencies, builds everything and runs every test: with g++ into build/ (programs in build/bin/;
# some of the tests also run against the single header; the MPI tests run under mpirun at 1, 2 and 4 processes);
# then the tests again with clang++ under AddressSanitizer and UndefinedBehaviorSanitizer into build/clang/ (any
# finding fails); the libFuzzer targets of the file readers (scripts/fuzz.sh); and, where nvcc is installed, the CUDA
# backend's tests, example and benchmark compiled by nvcc into build/cuda/, run where there is a GPU. Warnings are
# errors in all. Each test program compiles its sources a batch of files to one translation unit (MOE_UNITY_BUILD):
# the shared headers are parsed, and their templates compiled, once per batch instead of once per file.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's elapsed time, so that CI's whole (kept under 30 minutes on two cores) can be read off its log.
started=$SECONDS
phases=""
phase() {
  echo "test.sh: [$((SECONDS - started)) s] $*"
  phases+="test.sh:   [$((SECONDS - started)) s] $*"$'\n'
}
# The phases' start times again at the very end, where a CI log's tail shows them, whether it passed or failed.
summary() {
  local status=$?
  printf 'test.sh: phases started at\n%s' "$phases"
  echo "test.sh: exit status $status after $((SECONDS - started)) s"
}
trap summary EXIT

scripts/install-deps.sh
scripts/fetch-data.sh  # the tokenizer's tests compare with the JavaScript encoder on the real vocabulary
jobs=$(nproc)
# A Catch2 program that crashes while listing its tests adds none to ctest, silently: fail on that.
require_discovered() {
  local empty
  empty=$(find "$1" \( -path "$1/clang" -o -path "$1/cuda" \) -prune -o -name '*_tests-*.cmake' -print |
    xargs -r grep -L 'add_test' || true)
  if [ -n "$empty" ]; then echo "test.sh: no tests were discovered in $empty" >&2; exit 1; fi
}

phase "g++ build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ -DMOE_WARNINGS_AS_ERRORS=ON \
  -DMOE_MPI=ON -DMOE_UNITY_BUILD=ON
cmake --build build -j "$jobs"
require_discovered build
phase "g++ tests"
(cd build && ctest --output-on-failure -j "$jobs")

# -O1: the sanitizers find the same faults, and the build takes half the time of -O3's.
phase "clang++ AddressSanitizer and UndefinedBehaviorSanitizer build"
cmake -S . -B build/clang -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DCMAKE_CXX_COMPILER=clang++ -DMOE_WARNINGS_AS_ERRORS=ON -DMOE_SANITIZE=address,undefined -DMOE_BUILD_EXAMPLES=OFF \
  -DMOE_BUILD_BENCHMARKS=OFF -DMOE_TEST_SINGLE_HEADER=OFF -DMOE_UNITY_BUILD=ON
cmake --build build/clang -j "$jobs"
require_discovered build/clang
phase "sanitized tests"
(cd build/clang && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  LSAN_OPTIONS=suppressions="$PWD/../../tests/lsan.supp" \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions="$PWD/../../tests/ubsan.supp" \
  ctest --output-on-failure -j "$jobs")

# The readers of outside bytes under libFuzzer with ASan and UBSan (tests/fuzz, built into build/fuzz by
# clang++): every committed seed and past finding replayed, then each target fuzzed for MOE_FUZZ_SECONDS
# (30 by default; 0 replays only). A crash, sanitizer finding, leak, hang or oversized allocation fails.
phase "fuzzing"
scripts/fuzz.sh all "${MOE_FUZZ_SECONDS:-30}"

# The CUDA build needs nvcc, not a GPU: the configuration scripts/gpu-check.sh uses on a GPU machine (the CUDA
# tests, the README's GPU example and the backend benchmark, compiled by nvcc). Its tests run where a GPU is.
# One architecture (Hopper) checks that everything compiles; gpu-check.sh builds for the GPU it finds.
nvcc=$(command -v nvcc || true)
if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [ -n "$nvcc" ]; then
  phase "CUDA build"
  cmake -S . -B build/cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DMOE_CUDA=ON -DMOE_GPU_CHECK=ON -DMOE_WARNINGS_AS_ERRORS=ON \
    -DMOE_BUILD_EXAMPLES=OFF -DMOE_BUILD_BENCHMARKS=ON \
    -DMOE_TEST_SINGLE_HEADER=OFF -DMOE_INSTALL=OFF -DMOE_UNITY_BUILD=ON
  cmake --build build/cuda -j "$jobs" --target moe_cuda_tests readme_gpu_example_cuda backend_bench_cuda
  if nvidia-smi -L >/dev/null 2>&1; then
    (cd build/cuda && ctest --output-on-failure -j "$jobs" -L cuda)
  else
    echo "test.sh: the CUDA build compiled; no GPU here, so its tests run in scripts/gpu-check.sh on a GPU machine"
  fi
else
  echo "test.sh: no nvcc, the CUDA build is left out"
fi
phase "done"
