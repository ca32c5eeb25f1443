#!/usr/bin/env python3
"""Checks router_ablation's smoke output: Table 1's shape, accuracies in [0, 1], the figure, the report."""

import math
import os
import sys

from check_outputs import CheckError, check_png, read_csv, run_check

SUMMARY = ["experts", "trials", "learned_accuracy", "random_accuracy", "decrease_percent",
           "document_learned_accuracy", "document_random_accuracy", "document_decrease_percent"]
TRIALS = ["experts", "trial", "seed", "learned_accuracy", "random_accuracy", "decrease_percent", "mean_gate",
          "busiest_expert_share", "experts_in_use", "class_majority_share", "final_train_loss",
          "validation_accuracy", "seconds"]


def check(out):
    summary = read_csv(os.path.join(out, "summary.csv"), SUMMARY, 3)
    if [int(r["experts"]) for r in summary] != [2, 3, 5]:
        raise CheckError(f"summary.csv: experts {[r['experts'] for r in summary]}, expected 2, 3, 5")
    trials_per_model = int(summary[0]["trials"])
    trials = read_csv(os.path.join(out, "trials.csv"), TRIALS, 3 * trials_per_model)
    if len(trials) != 3 * trials_per_model:
        raise CheckError(f"trials.csv: {len(trials)} rows, expected {3 * trials_per_model}")
    for row in summary + trials:
        for key in ("learned_accuracy", "random_accuracy"):
            value = float(row[key])
            if not 0.0 <= value <= 1.0:
                raise CheckError(f"{key} {value} outside [0, 1]")
        learned, random = float(row["learned_accuracy"]), float(row["random_accuracy"])
        if learned > 0 and not math.isclose(float(row["decrease_percent"]), 100 * (learned - random) / learned,
                                            rel_tol=1e-6, abs_tol=1e-9):
            raise CheckError(f"decrease_percent {row['decrease_percent']} does not match the accuracies")
    for row in trials:
        if not 0.0 < float(row["mean_gate"]) <= 1.0:
            raise CheckError(f"trials.csv: mean_gate {row['mean_gate']} outside (0, 1]")
        experts = int(row["experts"])
        if not 1.0 / experts - 1e-9 <= float(row["busiest_expert_share"]) <= 1.0:
            raise CheckError(f"trials.csv: busiest_expert_share {row['busiest_expert_share']} outside [1/N, 1]")
        if not 1 <= int(row["experts_in_use"]) <= experts:
            raise CheckError(f"trials.csv: experts_in_use {row['experts_in_use']} outside [1, {experts}]")
        if not 1.0 / experts - 1e-9 <= float(row["class_majority_share"]) <= 1.0 + 1e-9:
            raise CheckError(f"trials.csv: class_majority_share {row['class_majority_share']} outside [1/N, 1]")
    check_png(os.path.join(out, "routing_by_class.png"))
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needle in ("## Table 1", "| Learned |", "| Random |", "| % Decrease |", "## Findings"):
        if needle not in report:
            raise CheckError(f"report.md: no '{needle}'")


if __name__ == "__main__":
    run_check(check, sys.argv, "router_ablation")
