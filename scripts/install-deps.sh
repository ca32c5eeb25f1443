#!/usr/bin/env bash
# Installs what building and testing moe needs, with apt-get, when it is missing. Safe to run again.
set -euo pipefail

packages=(
  g++ clang cmake ninja-build make pkg-config python3
  libclang-rt-14-dev  # libFuzzer for clang 14 (Debian 12's clang): the fuzz targets of tests/fuzz
  libeigen3-dev libcereal-dev catch2 libbenchmark-dev libomp-dev
  nlohmann-json3-dev  # JSON: the safetensors header, vocabularies, configs
  libcli11-dev  # the examples' command lines
  libfmt-dev  # the examples' number formatting (examples/common/format.hpp)
  libopenmpi-dev openmpi-bin  # MPI: expert parallelism over processes (backends/mpi) and its tests under mpirun
  libthrust-dev  # Thrust where no CUDA toolkit brings it: the thrust-omp tests of the GPU backend
  zlib1g-dev libcairo2-dev fonts-dejavu-core libicu-dev
  libdnnl-dev ocl-icd-opencl-dev  # oneDNN: the float GEMMs of moe/core/gemm.hpp (optional: CMake falls back to
                                  # Eigen without it); its CMake package needs OpenCL's headers, only recommended
  python3-torch  # the peer of the cross-checks and benchmarks, run with /usr/bin/python3
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# node and npm run the reference GPT-2 encoder and install npm data packages; any install of them will do.
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
