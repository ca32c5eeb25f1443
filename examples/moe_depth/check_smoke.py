#!/usr/bin/env python3
"""Checks moe_depth's smoke output: 10 x 10 covariance matrices that a 2-expert routing table can give
(symmetric, non-negative diagonal, |cov(a, b)| <= sqrt(var a var b) <= 0.5), figures that decode, one row per
model and trial with shares in [0, 1], the report."""

import math
import os
import sys

from check_outputs import CheckError, check_png, read_csv, run_check

CLASSES = 10
TRIALS = ["model", "trial", "seed", "test_accuracy", "off_diagonal_covariance_norm", "class_spread",
          "busiest_expert_share", "within_minus_between_correlation", "expert1_share_by_class"]


def check(out):
    names = None
    for model in ("base", "short"):
        path = os.path.join(out, f"covariance_{model}.csv")
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        if len(header) != CLASSES + 1 or header[0] != "class":
            raise CheckError(f"{path}: header {header}, expected 'class' and {CLASSES} class names")
        rows = read_csv(path, header, CLASSES)
        if len(rows) != CLASSES or [r["class"] for r in rows] != header[1:]:
            raise CheckError(f"{path}: rows must be the {CLASSES} classes of the header, in order")
        names = header[1:]
        cov = [[float(r[c]) for c in names] for r in rows]
        for i in range(CLASSES):
            if not 0.0 <= cov[i][i] <= 0.5 + 1e-12:
                raise CheckError(f"{path}: variance of {names[i]} is {cov[i][i]}, expected in [0, 0.5]")
            for j in range(CLASSES):
                if not math.isclose(cov[i][j], cov[j][i], rel_tol=1e-12, abs_tol=1e-15):
                    raise CheckError(f"{path}: not symmetric at ({i}, {j})")
                if abs(cov[i][j]) > math.sqrt(cov[i][i] * cov[j][j]) + 1e-9:
                    raise CheckError(f"{path}: |cov({i}, {j})| = {abs(cov[i][j])} exceeds sqrt(var var)")
        check_png(os.path.join(out, f"covariance_{model}.png"))
    trials = read_csv(os.path.join(out, "trials.csv"), TRIALS, 2)
    per_model = {m: [r for r in trials if r["model"] == m] for m in ("base", "short")}
    if len(per_model["base"]) != len(per_model["short"]) or len(per_model["base"]) == 0:
        raise CheckError(f"trials.csv: {len(per_model['base'])} base and {len(per_model['short'])} short rows")
    for row in trials:
        shares = [float(x) for x in row["expert1_share_by_class"].split()]
        if len(shares) != CLASSES or any(not 0.0 <= s <= 1.0 for s in shares):
            raise CheckError(f"trials.csv: expert1_share_by_class '{row['expert1_share_by_class']}'")
        if not 0.0 <= float(row["off_diagonal_covariance_norm"]) <= math.sqrt(90) / 2 + 1e-9:
            raise CheckError(f"trials.csv: off_diagonal_covariance_norm {row['off_diagonal_covariance_norm']}")
        if not 0.5 <= float(row["busiest_expert_share"]) <= 1.0:
            raise CheckError(f"trials.csv: busiest_expert_share {row['busiest_expert_share']} outside [0.5, 1]")
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needle in ("## Strength of class-based routing", "| base |", "| short |", "## Findings"):
        if needle not in report:
            raise CheckError(f"report.md: no '{needle}'")


if __name__ == "__main__":
    run_check(check, sys.argv, "moe_depth")
