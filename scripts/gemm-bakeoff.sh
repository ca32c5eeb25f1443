#!/usr/bin/env bash
# The GEMM bake-off of issue 14 (benchmarks/gemm_bakeoff.cpp): Eigen, Eigen with EIGEN_USE_BLAS, oneDNN and
# Debian's OpenBLAS (OpenMP, pthreads, serial) and BLIS (OpenMP, serial) builds on the MoE layer's products,
# one expert per thread on all threads at once, with the thread-safety check. The BLAS builds are fetched with
# `apt-get download` and unpacked into the build folder (nothing is installed, the system's libblas.so.3
# stays as it is) and loaded side by side with dlopen.
#
#   scripts/gemm-bakeoff.sh [BUILD_DIR [gemm_bakeoff options...]]     (BUILD_DIR: build)
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the run, so that OpenBLAS picks its kernel for this CPU
# (the table's header names it).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
cmake --build "$build" --target gemm_bakeoff gemm_bakeoff_eigen_blas

blas=$build/blas
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
packages=(libopenblas0-openmp libopenblas0-pthread libopenblas0-serial libblis4-openmp libblis4-serial)
mkdir -p "$blas"
for package in "${packages[@]}"; do
  if [ ! -d "$blas/$package" ]; then
    (cd "$blas" && apt-get download "$package" >/dev/null)
    dpkg-deb -x "$blas/${package}"_*.deb "$blas/$package"
  fi
done
lib=usr/lib/$multiarch
libraries=(
  "openblas-openmp=$blas/libopenblas0-openmp/$lib/openblas-openmp/libopenblas.so.0"
  "openblas-pthread=$blas/libopenblas0-pthread/$lib/openblas-pthread/libopenblas.so.0"
  "openblas-serial=$blas/libopenblas0-serial/$lib/openblas-serial/libopenblas.so.0"
  "blis-openmp=$blas/libblis4-openmp/$lib/blis-openmp/libblis.so.4"
  "blis-serial=$blas/libblis4-serial/$lib/blis-serial/libblis.so.4"
)
run=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
echo "## Every engine"
"${run[@]}" "$build/bin/gemm_bakeoff" "$@" "${libraries[@]}"
echo
echo "## Eigen with EIGEN_USE_BLAS, its BLAS Debian's OpenBLAS for OpenMP (libblas.so.3 through LD_LIBRARY_PATH)"
"${run[@]}" LD_LIBRARY_PATH="$blas/libopenblas0-openmp/$lib/openblas-openmp" "$build/bin/gemm_bakeoff_eigen_blas" \
  "$@" --trials 0
