#!/usr/bin/env bash
# Fuzzes one reader of outside bytes: scripts/fuzz.sh TARGET SECONDS, TARGET one of tests/fuzz/fuzz_TARGET.cpp
# (or `all`: every seed and regression replayed, then every target for SECONDS, as many at once as there are
# cores). Builds build/fuzz with clang++ (-DMOE_FUZZ=ON: libFuzzer, ASan,
# UBSan) and runs the target from its committed seeds (tests/fuzz/seeds/TARGET) and what earlier runs found
# (build/fuzz/corpus/TARGET), with its dictionary. A crash, a sanitizer finding, a leak, one input running
# over 5 s, one allocation over 256 MiB or 2 GiB in all fails the run and leaves the input in
# build/fuzz/findings/: fix the reader, then commit the input to tests/fuzz/regressions/TARGET/ (ctest in
# build/fuzz replays every seed and regression). scripts/fuzz.sh --seeds rewrites the seeds with the
# library's writers (tests/fuzz/make_seeds.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."

build=build/fuzz
usage="usage: scripts/fuzz.sh TARGET SECONDS | all SECONDS | --seeds"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DMOE_FUZZ=ON \
    -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_EXAMPLES=OFF -DMOE_BUILD_BENCHMARKS=OFF -DMOE_INSTALL=OFF \
    -DMOE_WARNINGS_AS_ERRORS=ON
fi
targets=$(sed -n 's/^moe_add_fuzz_target(\([a-z0-9_]*\).*/\1/p' tests/fuzz/CMakeLists.txt)

if [ "${1:-}" = "--seeds" ]; then
  cmake --build "$build" --target make_fuzz_seeds
  rm -rf tests/fuzz/seeds
  "$build/bin/make_fuzz_seeds" tests/fuzz/seeds
  exit 0
fi
[ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
[[ "$2" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
if [ "$1" = all ]; then
  selected=$targets
  every=1
  # Every target, then every seed and past finding once (ctest), before any fuzzing.
  cmake --build "$build"
  (cd "$build" && ctest --output-on-failure)
  [ "$2" -gt 0 ] || exit 0
else
  grep -qx "$1" <<<"$targets" || { echo "fuzz.sh: no target $1; the targets: $(echo $targets)" >&2; exit 2; }
  selected=$1
  every=0
fi

fuzz() {
  local target=$1 seconds=$2 corpus="$build/corpus/$1" dictionary=()
  mkdir -p "$corpus" "$build/findings"
  if [ -f "tests/fuzz/dictionaries/$target.dict" ]; then dictionary=(-dict="tests/fuzz/dictionaries/$target.dict"); fi
  ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions="$PWD/tests/ubsan.supp" \
    "$build/bin/fuzz_$target" -max_total_time="$seconds" -timeout=5 -malloc_limit_mb=256 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/findings/$target-" "${dictionary[@]}" \
    "$corpus" "tests/fuzz/seeds/$target"
}

if [ $every -eq 1 ]; then
  # All targets: as many at once as there are cores, each one's output in build/fuzz/logs/TARGET.log, shown
  # in full when it fails (its final stats otherwise).
  mkdir -p "$build/logs"
  export -f fuzz
  export build
  status=0
  # shellcheck disable=SC2086
  printf '%s\n' $selected | xargs -P "$(nproc)" -I{} bash -c \
    'echo "fuzz.sh: fuzz_{} for '"$2"' s"; fuzz {} '"$2"' >"$build/logs/{}.log" 2>&1 || { echo "fuzz.sh: fuzz_{} failed:"; cat "$build/logs/{}.log"; exit 1; }' ||
    status=1
  for target in $selected; do
    echo "fuzz.sh: fuzz_$target: $(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$build/logs/$target.log" | tr '\n' ' ')"
  done
  exit $status
fi
cmake --build "$build" --target "fuzz_$selected"
echo "fuzz.sh: fuzz_$selected for $2 s"
fuzz "$selected" "$2"
