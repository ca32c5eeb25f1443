#!/usr/bin/env python3
"""Checks class_routing's smoke output: routing tables whose class rows sum to 1, correlation matrices in
[-1, 1] with a unit diagonal, figures that decode, per-trial rows, the report."""

import math
import os
import sys

from check_outputs import CheckError, check_png, read_csv, run_check

CLASSES = 10


def read_matrix(path, columns):
    rows = read_csv(path, columns, CLASSES)
    if len(rows) != CLASSES:
        raise CheckError(f"{path}: {len(rows)} rows, expected {CLASSES}")
    return [[float(r[c]) for c in columns[1:]] for r in rows], [r[columns[0]] for r in rows]


def check(out):
    class_names = None
    for experts in (2, 3, 5):
        stem = f"{experts}_experts"
        header = ["class"] + [f"Expert {e + 1}" for e in range(experts)]
        fractions, names = read_matrix(os.path.join(out, f"fractions_{stem}.csv"), header)
        class_names = names
        for name, row in zip(names, fractions):
            if any(not 0.0 <= v <= 1.0 for v in row):
                raise CheckError(f"fractions_{stem}.csv: {name} has a share outside [0, 1]: {row}")
            if not math.isclose(sum(row), 1.0, abs_tol=1e-9):
                raise CheckError(f"fractions_{stem}.csv: {name}'s shares sum to {sum(row)}, expected 1")
        corr, _ = read_matrix(os.path.join(out, f"correlation_{stem}.csv"), ["class"] + names)
        for i in range(CLASSES):
            if corr[i][i] != 1.0:
                raise CheckError(f"correlation_{stem}.csv: diagonal entry {i} is {corr[i][i]}, expected 1")
            for j in range(CLASSES):
                if not -1.0 <= corr[i][j] <= 1.0:
                    raise CheckError(f"correlation_{stem}.csv: entry ({i}, {j}) = {corr[i][j]} outside [-1, 1]")
                if corr[i][j] != corr[j][i]:
                    raise CheckError(f"correlation_{stem}.csv: not symmetric at ({i}, {j})")
        check_png(os.path.join(out, f"correlation_{stem}.png"))
        check_png(os.path.join(out, f"trials_{stem}.png"))
    with open(os.path.join(out, "trials.csv"), encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    trials = read_csv(os.path.join(out, "trials.csv"), header, 3)
    per_model = {e: [r for r in trials if int(r["experts"]) == e] for e in (2, 3, 5)}
    if len({len(v) for v in per_model.values()}) != 1 or not per_model[2]:
        raise CheckError(f"trials.csv: trials per model {[len(v) for v in per_model.values()]}, expected equal")
    for row in trials:
        mapping = sorted(int(x) for x in row["expert_mapping"].split())
        if mapping != list(range(1, int(row["experts"]) + 1)):
            raise CheckError(f"trials.csv: expert_mapping '{row['expert_mapping']}' is not a permutation")
        if not 0.0 <= float(row["test_accuracy"]) <= 1.0:
            raise CheckError(f"trials.csv: test_accuracy {row['test_accuracy']} outside [0, 1]")
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needle in ("## Routing tables", "### 2 experts", "### 3 experts", "### 5 experts", "## Findings"):
        if needle not in report:
            raise CheckError(f"report.md: no '{needle}'")
    if class_names and class_names[0] not in report:
        raise CheckError("report.md: the class names are missing")


if __name__ == "__main__":
    run_check(check, sys.argv, "class_routing")
