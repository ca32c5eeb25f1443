#!/usr/bin/env bash
# Installs the dependencies, builds everything and runs every test: with g++ into build/ (programs in
# build/bin/; the suite also runs against the single header), then the tests again with clang++ into
# build/clang/. Warnings are errors in both.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/fetch-data.sh  # the tokenizer's tests compare with the JavaScript encoder on the real vocabulary
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ -DMOE_WARNINGS_AS_ERRORS=ON
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs")

cmake -S . -B build/clang -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ \
  -DMOE_WARNINGS_AS_ERRORS=ON -DMOE_BUILD_EXAMPLES=OFF -DMOE_BUILD_BENCHMARKS=OFF -DMOE_TEST_SINGLE_HEADER=OFF
cmake --build build/clang -j "$jobs"
(cd build/clang && ctest --output-on-failure -j "$jobs")
