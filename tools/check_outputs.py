#!/usr/bin/env python3
"""Checks what an example wrote: PNG figures that decode, CSV tables with the expected header.

Used by the examples' smoke tests (examples/CMakeLists.txt), both as a command and as a module: an
example's own check script imports `check_png` and `read_csv` and adds the invariants of its tables.

A PNG is decoded in full with the standard library (signature, chunk CRCs, IHDR, the zlib stream of all
IDAT chunks, one valid filter byte per row, the exact byte count for width x height at its colour type and
bit depth), so a figure that a viewer would refuse fails here.

Usage:
  check_outputs.py png FILE...                      every file decodes; prints width x height
  check_outputs.py csv FILE COLUMN,COLUMN,... [MIN_ROWS]   header matches, every row has that many fields
"""

import csv
import struct
import sys
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel for each PNG colour type.
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class CheckError(Exception):
    pass


def check_png(path, min_width=16, min_height=16):
    """Decodes the PNG at `path` in full; returns (width, height). Raises CheckError naming what is wrong."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(PNG_SIGNATURE):
        raise CheckError(f"{path}: not a PNG (signature missing)")
    pos = len(PNG_SIGNATURE)
    header = None
    idat = bytearray()
    seen_end = False
    while pos < len(data):
        if pos + 8 > len(data):
            raise CheckError(f"{path}: truncated chunk header at offset {pos}")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc_at = pos + 8 + length
        if crc_at + 4 > len(data):
            raise CheckError(f"{path}: chunk {kind!r} at offset {pos} runs past the end of the file")
        (crc,) = struct.unpack(">I", data[crc_at:crc_at + 4])
        if zlib.crc32(kind + body) != crc:
            raise CheckError(f"{path}: CRC mismatch in chunk {kind!r} at offset {pos}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            seen_end = True
            break
        pos = crc_at + 4
    if header is None:
        raise CheckError(f"{path}: no IHDR chunk")
    if not seen_end:
        raise CheckError(f"{path}: no IEND chunk")
    width, height, depth, colour, _, _, interlace = header
    if colour not in CHANNELS:
        raise CheckError(f"{path}: unknown colour type {colour}")
    if interlace != 0:
        raise CheckError(f"{path}: interlaced PNGs are not expected here")
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as e:
        raise CheckError(f"{path}: image data does not inflate: {e}") from e
    row_bytes = (width * CHANNELS[colour] * depth + 7) // 8
    if len(raw) != height * (row_bytes + 1):
        raise CheckError(f"{path}: {len(raw)} bytes of image data, expected {height * (row_bytes + 1)} "
                         f"for {width} x {height}")
    for row in range(height):
        if raw[row * (row_bytes + 1)] > 4:
            raise CheckError(f"{path}: row {row} has filter type {raw[row * (row_bytes + 1)]}")
    if width < min_width or height < min_height:
        raise CheckError(f"{path}: {width} x {height} is smaller than {min_width} x {min_height}")
    return width, height


def read_csv(path, columns, min_rows=1):
    """Reads a CSV whose header must equal `columns`; returns its rows as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise CheckError(f"{path}: empty")
    if rows[0] != list(columns):
        raise CheckError(f"{path}: header {rows[0]}, expected {list(columns)}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            raise CheckError(f"{path}: line {i} has {len(row)} fields, expected {len(columns)}")
    if len(rows) - 1 < min_rows:
        raise CheckError(f"{path}: {len(rows) - 1} rows, expected at least {min_rows}")
    return [dict(zip(columns, row)) for row in rows[1:]]


def run_check(check, argv, name):
    """The command line of an example's check_smoke.py: `check_smoke.py OUT_DIR` runs check(OUT_DIR) and
    exits 1 with the error, or prints that NAME's outputs are fine."""
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        sys.exit(2)
    try:
        check(argv[1])
    except (CheckError, OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{name} outputs: ok")


def main(argv):
    if len(argv) >= 3 and argv[1] == "png":
        for path in argv[2:]:
            width, height = check_png(path)
            print(f"{path}: {width} x {height}")
    elif len(argv) in (4, 5) and argv[1] == "csv":
        rows = read_csv(argv[2], argv[3].split(","), int(argv[4]) if len(argv) == 5 else 1)
        print(f"{argv[2]}: {len(rows)} rows")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (CheckError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
