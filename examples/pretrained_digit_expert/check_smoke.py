#!/usr/bin/env python3
"""Checks what `pretrained_digit_expert --preset smoke` wrote into OUT_DIR.

Usage: check_smoke.py OUT_DIR   (PYTHONPATH must hold tools/, for check_outputs)

Both runs (expert 0 pretrained, control) must be present; the digit-by-expert tables are 10 x 4 with rows
that sum to 1 (mean gate weights, top-1 shares); the expert-0 shares are consistent with their ratio and
difference and their share over all digits; the PNG figures decode; report.md holds the main table and the verdicts.
"""

import math
import os
import sys

from check_outputs import CheckError, check_png, read_csv, run_check

DIGITS = [str(d) for d in range(10)]
EXPERTS = [f"expert {e}" for e in range(4)]
RUNS = ["pretrained", "control"]
TOLERANCE = 1e-4


def check_digit_table(path):
    rows = read_csv(path, ["digit"] + EXPERTS, min_rows=10)
    if [row["digit"] for row in rows] != DIGITS:
        raise CheckError(f"{path}: digits {[row['digit'] for row in rows]}, expected {DIGITS}")
    for row in rows:
        values = [float(row[e]) for e in EXPERTS]
        if any(not (0.0 <= v <= 1.0) for v in values):
            raise CheckError(f"{path}: digit {row['digit']} has a value outside [0, 1]: {values}")
        if abs(sum(values) - 1.0) > TOLERANCE:
            raise CheckError(f"{path}: digit {row['digit']} sums to {sum(values)}, expected 1")
    return rows


def check_shares(path):
    columns = ["seed", "run", "measure", "digits_0_7", "other_digits", "all_digits", "ratio", "difference"]
    rows = read_csv(path, columns, min_rows=4)
    present = {(row["run"], row["measure"]) for row in rows}
    for run in RUNS:
        for measure in ("mean_gate", "top1_share"):
            if (run, measure) not in present:
                raise CheckError(f"{path}: no row for run {run}, measure {measure}")
    for row in rows:
        zero_seven, other = float(row["digits_0_7"]), float(row["other_digits"])
        if abs(float(row["difference"]) - (zero_seven - other)) > TOLERANCE:
            raise CheckError(f"{path}: difference {row['difference']} is not {zero_seven} - {other}")
        everything = float(row["all_digits"])
        if not min(zero_seven, other) - TOLERANCE <= everything <= max(zero_seven, other) + TOLERANCE:
            raise CheckError(f"{path}: all_digits {everything} is not between {zero_seven} and {other}")
        ratio = float(row["ratio"])
        if other > 0 and not math.isclose(ratio, zero_seven / other, rel_tol=1e-6):
            raise CheckError(f"{path}: ratio {ratio} is not {zero_seven} / {other}")


def main(out):
    for run in RUNS:
        check_digit_table(os.path.join(out, f"gate_by_digit_{run}.csv"))
        check_digit_table(os.path.join(out, f"top1_by_digit_{run}.csv"))
    check_shares(os.path.join(out, "expert0_share.csv"))

    phase2 = read_csv(os.path.join(out, "phase2_metrics.csv"),
                      ["seed", "run", "epoch", "train_loss", "train_accuracy", "test_accuracy"], min_rows=2)
    missing = set(RUNS) - {row["run"] for row in phase2}
    if missing:
        raise CheckError(f"phase2_metrics.csv: no epochs for run(s) {sorted(missing)}")
    read_csv(os.path.join(out, "phase1_metrics.csv"),
             ["seed", "epoch", "train_loss", "train_accuracy", "validation_accuracy"])
    read_csv(os.path.join(out, "seed_summary.csv"),
             ["seed", "pretrain_binary_test_accuracy", "pretrained_test_accuracy", "control_test_accuracy",
              "pretrained_gate_ratio", "control_gate_ratio", "pretrained_top1_ratio", "control_top1_ratio"])

    for name in ("gate_by_digit.png", "top1_by_digit.png"):
        check_png(os.path.join(out, name), min_width=200, min_height=300)

    if not any(name.startswith("pretrained_expert_seed") and name.endswith(".safetensors") for name in os.listdir(out)):
        raise CheckError(f"{out}: no pretrained_expert_seed*.safetensors")

    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needed in ("## Phase 2: main table", "| pretrained expert 0 | control", "## The document's findings beside ours"):
        if needed not in report:
            raise CheckError(f"report.md: missing '{needed}'")
    print(f"{out}: outputs of both runs check out")


if __name__ == "__main__":
    run_check(main, sys.argv, "pretrained_digit_expert")
