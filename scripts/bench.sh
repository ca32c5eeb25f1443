#!/usr/bin/env bash
# Builds the benchmarks (Release, in build/bench/: programs in build/bench/bin/), runs them and the PyTorch
# peer, profiles reduced runs, and writes docs/PERFORMANCE.md and docs/performance.csv. About 10 minutes
# on two idle cores. Raw results (Google Benchmark JSON, PyTorch JSON, profiles) stay in build/bench/results/.
#
#   scripts/bench.sh [--quick]      --quick: configs C3, N8, N256 only, one short repetition (a check
#                                   that it all works, in about two minutes; it writes the docs too)
#
# Environment: MOE_BENCH_THREADS (2), MOE_BENCH_REPETITIONS (3), MOE_BENCH_MIN_TIME (0.3 s per
# repetition), MOE_PEER_BLAS (openblas | system; see below), MOE_BENCH_BUILD_DIR (build/bench),
# MOE_BENCH_WAIT_IDLE (0): seconds in all that the script may wait, before each measured phase, for other
# processes to leave the CPUs idle. Whether or not it waits, the report states how much CPU other
# processes took during every phase: on two cores any other work distorts the numbers.
# MOE_BENCH_NICE (unset): a niceness for this script and everything it runs, e.g. -20 (root only) so that
# the scheduler gives the benchmarks the CPUs ahead of other work on a shared machine.
#
# Compiler flags: the library adds no -march, so Release code targets baseline x86-64 (SSE2). The
# benchmarks are built twice, portable and -march=native (MOE_NATIVE=ON); both variants' GEMM and
# layer-forward rates are measured (best of 2) and the faster one runs the full suite, since PyTorch's
# kernels use the machine's vector units too.
#
# The peer's BLAS: Debian's python3-torch calls libblas.so.3 for its GEMMs, which is netlib's reference
# BLAS unless an optimised one is installed (2-3 GFLOP/s here). MOE_PEER_BLAS=openblas (the default) runs
# PyTorch with Debian's OpenBLAS built for OpenMP instead, through LD_LIBRARY_PATH: the system's copy when
# libopenblas0-openmp is installed, else the package fetched with `apt-get download` and unpacked into
# the build folder (nothing is installed). The OpenMP build shares PyTorch's libgomp threads; the
# pthread build (MOE_PEER_BLAS=openblas-pthread) fights them (libgomp's spinning threads and OpenBLAS's
# own take turns on two cores) and runs PyTorch 2-3x slower on the small configs. The reference-BLAS
# peer is measured too, on small configs (MOE_PEER_BLAS=system: on every config but C4).
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which this environment may export for the tests (they pin
# OpenBLAS to older kernels), are unset for the peer's command alone, so OpenBLAS picks its kernel for this
# CPU; the report names the kernel (openblas_get_corename), the library and its threads.
#
# The check: before timing a config, build/bench/bin/moe_reference writes our layer's weights, an input, an
# output gradient and what our layer computed from them; the peer loads the same weights and inputs, times
# its layer on them and compares its output and gradients with ours (the report's "check" column).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh  # compilers, Eigen, Google Benchmark, python3-torch: a fresh machine has none of them

quick=0
[ "${1:-}" = "--quick" ] && quick=1

build=${MOE_BENCH_BUILD_DIR:-build/bench}
results=$build/results
bin=$build/bin
export MOE_BENCH_THREADS=${MOE_BENCH_THREADS:-2}
threads=$MOE_BENCH_THREADS
repetitions=${MOE_BENCH_REPETITIONS:-3}
min_time=${MOE_BENCH_MIN_TIME:-0.3}
peer_repeats=3
lm_steps=20  # training steps of the whole-model figure (lm_bench, pytorch_lm.py)
if [ $quick -eq 1 ]; then
  repetitions=1
  min_time=0.05
  peer_repeats=1
  lm_steps=3
fi
peer_blas=${MOE_PEER_BLAS:-openblas}
wait_budget=${MOE_BENCH_WAIT_IDLE:-0}
python=/usr/bin/python3  # Debian's python3-torch is installed for the system interpreter
configs=(C1 C2 C3 C4 N8 N256)
[ $quick -eq 1 ] && configs=(C3 N8 N256)
config_regex=$(IFS='|'; echo "${configs[*]}")
mkdir -p "$results/profile"
rm -f "$results"/*.json "$results"/*.safetensors "$results"/phases.tsv "$results"/profile/*

if [ -n "${MOE_BENCH_NICE:-}" ]; then
  renice -n "$MOE_BENCH_NICE" -p $$ >/dev/null
fi
started=$(date +%s)
log() { echo "bench: [$(($(date +%s) - started)) s] $*" >&2; }

# --- CPU accounting ------------------------------------------------------------------------------------
hz=$(getconf CLK_TCK)
# Ticks the whole machine spent busy, and ticks this script and its waited-for children spent.
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
our_busy() { awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat; }
# CPUs other processes keep busy, averaged over $1 seconds (this script sleeps meanwhile).
others_now() {
  local before after
  before=$(machine_busy)
  sleep "$1"
  after=$(machine_busy)
  awk -v b="$before" -v a="$after" -v s="$1" -v hz="$hz" 'BEGIN{printf "%.2f", (a - b) / hz / s}'
}
waited=0
# Waits (within the budget) until other processes use less than 0.2 CPUs, then starts accounting.
phase_begin() {
  phase=$1
  local others
  while :; do
    others=$(others_now 2)
    awk -v o="$others" 'BEGIN{exit !(o < 0.2)}' && break
    [ "$waited" -lt "$wait_budget" ] || break
    log "other processes keep $others CPUs busy; waiting before $phase ($waited of $wait_budget s waited)"
    sleep 5
    waited=$((waited + 7))
  done
  phase_start=$(date +%s.%N)
  phase_machine=$(machine_busy)
  phase_ours=$(our_busy)
  log "$phase (others at start: $others CPUs)"
}
# Records the phase: seconds, and the CPUs other processes took on average during it.
phase_end() {
  local seconds others
  seconds=$(awk -v a="$phase_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
  others=$(awk -v m="$(($(machine_busy) - phase_machine))" -v o="$(($(our_busy) - phase_ours))" -v s="$seconds" \
    -v hz="$hz" 'BEGIN{v = (m - o) / hz / (s > 0 ? s : 1); printf "%.2f", v < 0 ? 0 : v}')
  printf '%s\t%s\t%s\n' "$phase" "$seconds" "$others" >>"$results/phases.tsv"
}

# --- build -------------------------------------------------------------------------------------------
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF \
  -DMOE_BUILD_EXAMPLES=OFF -DMOE_BUILD_BENCHMARKS=ON -DMOE_INSTALL=OFF -DMOE_NATIVE=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
compiler_version=$("$compiler" --version | head -1)
cxx_flags="$(sed -n 's/^CMAKE_CXX_FLAGS_RELEASE:[A-Z]*=//p' "$build/CMakeCache.txt")"
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
measure_started=$(date +%s)

# --- compiler flags: portable vs native ----------------------------------------------------------------
variants=(portable)
[ -x "$bin/moe_bench_native" ] && variants+=(native)
for variant in "${variants[@]}"; do
  suffix=$([ "$variant" = native ] && echo _native || true)
  phase_begin "variant $variant: GEMM and layer forward"
  "$bin/moe_bench$suffix" --benchmark_filter="^gemm_square/|^(gemm/[a-z_]+|moe_layer/fwd)/($config_regex)(/|\$)" \
    --benchmark_min_time="$min_time" \
    --benchmark_repetitions=2 --benchmark_format=json --benchmark_out_format=json \
    --benchmark_out="$results/variant_$variant.json" >/dev/null
  phase_end
done
# Best of the repetitions (other work only ever slows a run down), geometric mean over the GEMM benchmarks.
variant=$($python - "$results" "${variants[@]}" <<'EOF'
import json, math, sys
def rate(variant):
    best = {}
    for b in json.load(open(f"{sys.argv[1]}/variant_{variant}.json"))["benchmarks"]:
        if b["name"].startswith("gemm/") and b.get("run_type") != "aggregate":
            best[b["run_name"]] = max(best.get(b["run_name"], 0.0), b["gflops"])
    return math.exp(sum(math.log(v) for v in best.values()) / len(best))
print(max(sys.argv[2:], key=rate))
EOF
)
suffix=$([ "$variant" = native ] && echo _native || true)
log "using the $variant build for the full run"

# --- our benchmarks, one config at a time --------------------------------------------------------------
common_args=(--benchmark_repetitions="$repetitions" --benchmark_min_time="$min_time" --benchmark_format=json
             --benchmark_out_format=json)
[ "$repetitions" -gt 1 ] && common_args+=(--benchmark_report_aggregates_only=true)
for c in "${configs[@]}"; do
  phase_begin "moe_bench $c"
  "$bin/moe_bench$suffix" "${common_args[@]}" --benchmark_filter="/$c(/|\$)" \
    --benchmark_out="$results/moe_bench_$c.json" >/dev/null
  phase_end
done
phase_begin "moe_bench gemm_square, stream_copy, fma_peak"
"$bin/moe_bench$suffix" "${common_args[@]}" --benchmark_filter='^(gemm_square|stream_copy|fma_peak)' \
  --benchmark_out="$results/moe_bench_machine.json" >/dev/null
phase_end
phase_begin "lm_bench (whole model, $lm_steps steps)"
"$bin/lm_bench$suffix" "$lm_steps" >"$results/lm_moe.json"
phase_end
phase_begin "nn_bench"
"$bin/nn_bench$suffix" "${common_args[@]}" --benchmark_out="$results/nn_bench.json" >/dev/null
phase_end

# --- PyTorch -------------------------------------------------------------------------------------------
# The peer gets the allocator settings our benchmarks set with moe::retain_freed_memory (freed blocks up to
# 32 MiB stay in the heap, no trimming), so both sides run with the same malloc.
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647
openblas_dir=""
case "$peer_blas" in
  openblas) openblas_variant=openmp ;;
  openblas-pthread) openblas_variant=pthread ;;
  *) openblas_variant="" ;;
esac
if [ -n "$openblas_variant" ]; then
  system_dir=/usr/lib/x86_64-linux-gnu/openblas-$openblas_variant
  local_dir=$build/peer-blas/usr/lib/x86_64-linux-gnu/openblas-$openblas_variant
  if [ -e "$system_dir/libblas.so.3" ]; then
    openblas_dir=$system_dir
  elif [ -e "$local_dir/libblas.so.3" ]; then
    openblas_dir=$local_dir
  else
    log "fetching libopenblas0-$openblas_variant for the peer (apt-get download; unpacked into $build/peer-blas, not installed)"
    if (cd "$build" && apt-get download "libopenblas0-$openblas_variant" >/dev/null 2>&1); then
      dpkg-deb -x "$build"/libopenblas0-"$openblas_variant"_*.deb "$build/peer-blas"
      openblas_dir=$local_dir
    else
      log "could not fetch OpenBLAS: PyTorch runs with the system BLAS"
    fi
  fi
fi
peer_args=(--threads "$threads" --repeats "$peer_repeats" --min-time "$min_time")
if [ -n "$openblas_dir" ]; then
  for c in "${configs[@]}"; do
    "$bin/moe_reference$suffix" "$c" "$results/reference_$c.safetensors"
    phase_begin "PyTorch $c (OpenBLAS, $openblas_variant)"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
      LD_LIBRARY_PATH="$openblas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      $python benchmarks/peers/pytorch_moe.py "${peer_args[@]}" --configs "$c" --gemm --reference "$results" \
      --out "$results/peer_$c.json"
    phase_end
    rm -f "$results/reference_$c.safetensors"
  done
  phase_begin "PyTorch whole model (OpenBLAS, $openblas_variant, $lm_steps steps)"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" \
    LD_LIBRARY_PATH="$openblas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    $python benchmarks/peers/pytorch_lm.py --threads "$threads" --steps "$lm_steps" --out "$results/lm_peer.json"
  phase_end
  # The peer as installed: reference BLAS is ~30x slower, so small configs only, one repeat.
  phase_begin "PyTorch C3,N8 (system BLAS)"
  OMP_NUM_THREADS=$threads $python benchmarks/peers/pytorch_moe.py --threads "$threads" --repeats 1 --min-time 0 \
    --configs C3,N8 --out "$results/peer_system_blas.json"
  phase_end
else
  for c in "${configs[@]}"; do
    [ "$c" = C4 ] && continue  # minutes per call on reference BLAS
    "$bin/moe_reference$suffix" "$c" "$results/reference_$c.safetensors"
    phase_begin "PyTorch $c (system BLAS)"
    OMP_NUM_THREADS=$threads $python benchmarks/peers/pytorch_moe.py "${peer_args[@]}" --configs "$c" \
      --reference "$results" --out "$results/peer_$c.json"
    phase_end
    rm -f "$results/reference_$c.safetensors"
  done
fi

# --- profiles of reduced runs --------------------------------------------------------------------------
# perf samples the chosen build on the software cpu-clock event (no hardware counters in this VM);
# callgrind counts instructions of the portable build (valgrind 3.19 decodes no AVX-512), one thread.
profiles=("C1 fwd_bwd 1024" "C2 fwd_bwd 1024" "C4 fwd_bwd 256" "N256 fwd_bwd 4096")
[ $quick -eq 1 ] && profiles=("N256 fwd_bwd 1024")
if command -v perf >/dev/null && perf record -q -e cpu-clock -o /dev/null true >/dev/null 2>&1; then
  for p in "${profiles[@]}"; do
    read -r config mode tokens <<<"$p"
    phase_begin "perf $config $mode T=$tokens"
    perf record -q -e cpu-clock -o "$results/profile/perf.data" "$bin/moe_profile$suffix" "$config" "$mode" "$tokens" 5 \
      >"$results/profile/${config}_${mode}.perf.run.txt" 2>/dev/null
    perf report -i "$results/profile/perf.data" --no-children --stdio --sort dso,symbol 2>/dev/null \
      >"$results/profile/${config}_${mode}.perf.txt"
    rm -f "$results/profile/perf.data"
    phase_end
  done
fi
if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
  for p in "${profiles[@]}"; do
    read -r config mode tokens <<<"$p"
    [ "$config" = C4 ] && tokens=128
    log "callgrind $config $mode T=$tokens"
    MOE_BENCH_THREADS=1 valgrind --tool=callgrind --toggle-collect='*measured_steps*' \
      --callgrind-out-file="$results/profile/callgrind.out" "$bin/moe_profile" "$config" "$mode" "$tokens" 1 \
      >"$results/profile/${config}_${mode}.callgrind.run.txt" 2>/dev/null
    callgrind_annotate --inclusive=no "$results/profile/callgrind.out" >"$results/profile/${config}_${mode}.callgrind.txt"
    rm -f "$results/profile/callgrind.out"
  done
fi

# --- report --------------------------------------------------------------------------------------------
cat >"$results/machine.json" <<EOF
{
  "cpu": "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)",
  "logical_cpus": $(nproc),
  "threads": $threads,
  "date": "$(date -u +%Y-%m-%dT%H:%MZ)",
  "compiler": "$compiler_version",
  "release_flags": "$cxx_flags",
  "variant": "$variant",
  "variants": "${variants[*]}",
  "build_dir": "$build",
  "repetitions": $repetitions,
  "min_time": $min_time,
  "loadavg_before": "$loadavg_before",
  "loadavg_after": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "waited_for_idle": $waited,
  "niceness": $(ps -o ni= -p $$),
  "measure_seconds": $(($(date +%s) - measure_started)),
  "seconds": $(($(date +%s) - started))
}
EOF
$python tools/perf_report.py --results "$results" --md docs/PERFORMANCE.md --csv docs/performance.csv
log "wrote docs/PERFORMANCE.md and docs/performance.csv"
