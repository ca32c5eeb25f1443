#!/usr/bin/env python3
"""Checks what `code_expert --preset smoke` wrote into OUT_DIR.

Usage: check_smoke.py OUT_DIR   (PYTHONPATH must hold tools/, for check_outputs)

The four sample files hold their samples under numbered headers; the loss tables cover every domain with finite
losses; routing weights per sample and per domain lie in [0, 1] and sum to 1 over the experts; top-expert shares
too; the per-domain means of the representative samples are the means of their per-sample rows; the token table
names a valid top expert, the largest weight of its row; the heatmap decodes; both safetensors files are there
with the vocabulary in their metadata; report.md holds its sections and the verdict.
"""

import json
import math
import os
import struct
import sys

from check_outputs import CheckError, check_png, read_csv, run_check

DOMAINS = ["code", "math", "story", "science"]
EXPERTS = 4
TOLERANCE = 1e-4
WEIGHTS = [f"weight_expert_{e}" for e in range(EXPERTS)]
TOP_SHARES = [f"top_share_expert_{e}" for e in range(EXPERTS)]


def check_distribution(path, row, columns):
    values = [float(row[c]) for c in columns]
    if any(not (-TOLERANCE <= v <= 1.0 + TOLERANCE) for v in values):
        raise CheckError(f"{path}: a value outside [0, 1] in {row}")
    if abs(sum(values) - 1.0) > TOLERANCE:
        raise CheckError(f"{path}: {columns} sum to {sum(values)}, expected 1, in {row}")
    return values


def check_samples(out):
    for domain in DOMAINS:
        path = os.path.join(out, "samples", f"{domain}.txt")
        with open(path, encoding="utf-8") as f:
            headers = [line for line in f if line.startswith("=== ")]
        if len(headers) < 5:
            raise CheckError(f"{path}: {len(headers)} samples, expected at least 5")
        for i, header in enumerate(headers):
            if not header.startswith(f"=== {domain} sample {i} ("):
                raise CheckError(f"{path}: header {i} reads {header.strip()!r}")
        if "(validation)" not in headers[-1] or "(train)" not in headers[0]:
            raise CheckError(f"{path}: the first sample should be a training one and the last a validation one")


def check_losses(out):
    path = os.path.join(out, "validation_loss.csv")
    rows = read_csv(path, ["domain", "phase1_loss", "phase2_before_training_loss", "phase2_loss"], min_rows=4)
    if [r["domain"] for r in rows] != DOMAINS:
        raise CheckError(f"{path}: domains {[r['domain'] for r in rows]}, expected {DOMAINS}")
    for r in rows:
        for key in ("phase1_loss", "phase2_before_training_loss", "phase2_loss"):
            if not (math.isfinite(float(r[key])) and float(r[key]) > 0):
                raise CheckError(f"{path}: {key} of {r['domain']} is {r[key]}")
    phase1 = read_csv(os.path.join(out, "phase1_metrics.csv"),
                      ["epoch", "step", "train_loss", "val_loss_code", "kept"], min_rows=1)
    if sum(int(r["kept"]) for r in phase1) != 1:
        raise CheckError("phase1_metrics.csv: exactly one epoch must be marked as kept")
    phase2 = read_csv(os.path.join(out, "phase2_metrics.csv"),
                      ["epoch", "step", "train_loss"] + [f"val_loss_{d}" for d in DOMAINS] +
                      [f"expert0_weight_{d}" for d in DOMAINS], min_rows=2)
    if phase2[0]["epoch"] != "0" or phase2[0]["train_loss"] != "nan":
        raise CheckError("phase2_metrics.csv: the first row must be the evaluation before training (epoch 0)")


def check_routing(out):
    path = os.path.join(out, "representative_routing.csv")
    samples = read_csv(path, ["domain", "sample", "tokens"] + WEIGHTS, min_rows=4 * 5)
    per_domain = {d: [check_distribution(path, r, WEIGHTS) for r in samples if r["domain"] == d] for d in DOMAINS}
    if any(len(rows) != 5 for rows in per_domain.values()):
        raise CheckError(f"{path}: expected 5 samples per domain, got { {d: len(v) for d, v in per_domain.items()} }")

    path = os.path.join(out, "routing_by_domain.csv")
    rows = read_csv(path, ["samples_set", "domain", "samples", "tokens"] + WEIGHTS + TOP_SHARES, min_rows=12)
    sets = {}
    for r in rows:
        check_distribution(path, r, WEIGHTS)
        check_distribution(path, r, TOP_SHARES)
        sets.setdefault(r["samples_set"], []).append(r)
    if sorted(sets) != ["representative", "validation", "validation_before_training"]:
        raise CheckError(f"{path}: sample sets {sorted(sets)}")
    for r in sets["representative"]:
        means = [sum(v[e] for v in per_domain[r["domain"]]) / 5 for e in range(EXPERTS)]
        if any(abs(float(r[WEIGHTS[e]]) - means[e]) > TOLERANCE for e in range(EXPERTS)):
            raise CheckError(f"{path}: the representative means of {r['domain']} are not those of "
                             f"representative_routing.csv ({means})")
        if int(r["samples"]) != 5:
            raise CheckError(f"{path}: representative {r['domain']} has {r['samples']} samples")

    path = os.path.join(out, "token_routing.csv")
    tokens = read_csv(path, ["domain", "sample", "position", "token", "top_expert"] + WEIGHTS, min_rows=4)
    if {r["domain"] for r in tokens} != {"code", "story"}:
        raise CheckError(f"{path}: expected tokens of a code and a story sample")
    for r in tokens:
        weights = check_distribution(path, r, WEIGHTS)
        top = int(r["top_expert"])
        if not 0 <= top < EXPERTS or weights[top] < max(weights) - 1e-6:
            raise CheckError(f"{path}: top expert {top} is not the largest weight of {weights}")


def check_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    metadata = header.get("__metadata__", {})
    if not metadata.get("vocabulary", "").startswith("moe.VocabularyMap/1 "):
        raise CheckError(f"{path}: no vocabulary map in the metadata")
    if "lm_head.weight" not in header or "embed_positions.weight" not in header:
        raise CheckError(f"{path}: no lm_head.weight or embed_positions.weight")
    return header


def main(out):
    check_samples(out)
    check_losses(out)
    check_routing(out)
    check_png(os.path.join(out, "routing_heatmap.png"), min_width=300, min_height=200)
    expert = check_safetensors(os.path.join(out, "code_expert.safetensors"))
    moe = check_safetensors(os.path.join(out, "moe.safetensors"))
    if "encoder.layers.1.linear1.weight" not in expert or "moe.experts.3.layers.1.linear1.weight" not in moe:
        raise CheckError("the safetensors files lack the expected encoder tensors")
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needed in ("## Validation loss per domain", "## Routing per domain", "## Does the code expert attract code?",
                   "## Token-level routing", "**causal**", "## Timing"):
        if needed not in report:
            raise CheckError(f"report.md: missing '{needed}'")
    if "**Yes**" not in report and "**No**" not in report:
        raise CheckError("report.md: no verdict")
    print(f"{out}: code_expert outputs check out")


if __name__ == "__main__":
    run_check(main, sys.argv, "code_expert")
