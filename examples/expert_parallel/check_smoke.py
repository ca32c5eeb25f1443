#!/usr/bin/env python3
"""Checks what `mpirun -np P expert_parallel --preset smoke` wrote into OUT_DIR.

Usage: check_smoke.py OUT_DIR   (PYTHONPATH must hold tools/, for check_outputs)

metrics.csv has a finite loss and lr for each of the smoke preset's steps, in order; model.safetensors is a
safetensors file whose tensors carry one process's names (every routed expert of every MoE block once);
report.md gives the sharded and the one-process validation loss, which agree to 1e-5 relative.
"""

import json
import math
import os
import re
import struct
import sys

from check_outputs import CheckError, read_csv, run_check

STEPS = 12
MOE_BLOCKS = (1, 2)
EXPERTS = 64


def check_metrics(out):
    rows = read_csv(os.path.join(out, "metrics.csv"), ["step", "loss", "lr"], STEPS)
    if [int(r["step"]) for r in rows] != list(range(1, STEPS + 1)):
        raise CheckError(f"metrics.csv: steps {[r['step'] for r in rows]}, expected 1..{STEPS}")
    for r in rows:
        if not all(math.isfinite(float(r[c])) for c in ("loss", "lr")):
            raise CheckError(f"metrics.csv: a value that is not finite in {r}")


def check_model(out):
    path = os.path.join(out, "model.safetensors")
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    names = set(header) - {"__metadata__"}
    for block in MOE_BLOCKS:
        for e in range(EXPERTS):
            prefix = f"layers.{block}.ffn.experts.{e}."
            if not any(n.startswith(prefix) for n in names):
                raise CheckError(f"{path}: no tensor of routed expert {e} of block {block} ({prefix}*)")


def check_report(out):
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        text = f.read()
    sharded = re.search(r"\| validation loss, sharded over \d+ processes \| ([0-9.]+) \|", text)
    one = re.search(r"\| validation loss, `model.safetensors` in one process \| ([0-9.]+) \|", text)
    if not sharded or not one:
        raise CheckError("report.md: the two validation losses are missing")
    a, b = float(sharded.group(1)), float(one.group(1))
    if abs(a - b) > 1e-5 * abs(b):
        raise CheckError(f"report.md: sharded validation loss {a}, one process {b}")


def check(out):
    check_metrics(out)
    check_model(out)
    check_report(out)


if __name__ == "__main__":
    run_check(check, sys.argv, "expert_parallel")
