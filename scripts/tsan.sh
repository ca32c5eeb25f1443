#!/usr/bin/env bash
# ThreadSanitizer over moe's threaded code: scripts/tsan.sh [CATCH2_TEST_SPEC...] builds the Catch2 tests with
# clang++ -fsanitize=thread into build/tsan and runs them at two threads (all of them by default; a spec such
# as "[parallel]" or "[moe]" picks some). Any data race fails the run. moe's loops run on std::thread, which
# TSan follows; oneDNN and OpenMP are left out of this build, since TSan cannot see the synchronisation inside
# uninstrumented libraries (it would report their threads' work as races): the products run on Eigen, and the
# Thrust backend's tests run on its sequential system, or not at all. A full build of the tests, like
# scripts/test.sh's sanitized phase, so not part of CI (2 cores, AMD EPYC: 4.5 min to build, 43 s to run).
set -euo pipefail
cd "$(dirname "$0")/.."

build=build/tsan
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DCMAKE_CXX_COMPILER=clang++ -DMOE_WARNINGS_AS_ERRORS=ON -DMOE_SANITIZE=thread -DMOE_ONEDNN=OFF \
  -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON -DMOE_BUILD_EXAMPLES=OFF -DMOE_BUILD_BENCHMARKS=OFF \
  -DMOE_TEST_SINGLE_HEADER=OFF -DMOE_INSTALL=OFF -DMOE_UNITY_BUILD=ON >/dev/null
cmake --build "$build" -j "$(nproc)" --target moe_tests
# Two threads whatever the machine has: the races to find are between moe's threads, not between tests.
OMP_NUM_THREADS=2 TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
  "$build/bin/moe_tests" --reporter compact --order decl "$@"
