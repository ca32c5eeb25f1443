#!/usr/bin/env python3
"""Checks what `domain_overlap --preset smoke` wrote into OUT_DIR.

Every PNG decodes; every CSV has its header and one row per (seed, variant, domain, expert) it promises; losses
are finite and positive; routing weights and top-expert shares lie in [0, 1] and each domain's row sums to 1;
routing_mean.csv is the mean of routing.csv over the seeds and representative_samples.csv agrees with both;
samples/ holds each seed's corpus with the smoke preset's counts; report.md has its sections.

Usage: check_smoke.py OUT_DIR   (PYTHONPATH must hold tools/, for check_outputs)
"""

import math
import os
import sys
from collections import defaultdict

from check_outputs import CheckError, check_png, read_csv, run_check

DOMAINS = ("psychology", "history", "medicine", "business")
VARIANTS = ("no_entropy", "entropy")
# The smoke preset (examples/domain_overlap/main.cpp): samples per domain and epochs.
PRETRAIN, MOE, VALIDATION, REPRESENTATIVE = 16, 16, 6, 5
PRETRAIN_EPOCHS, MOE_EPOCHS = 2, 1


def number(row, column, path, low=-math.inf, high=math.inf):
    value = float(row[column])
    if not (math.isfinite(value) and low <= value <= high):
        raise CheckError(f"{path}: {column} = {value} in {row}, expected a finite value in [{low}, {high}]")
    return value


def close(a, b, what):
    if abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b)):
        raise CheckError(f"{what}: {a} against {b}")


def check_rows_sum_to_one(groups, path, column):
    for key, experts in groups.items():
        if sorted(experts) != sorted(DOMAINS):
            raise CheckError(f"{path}: {key} has experts {sorted(experts)}, expected {sorted(DOMAINS)}")
        total = sum(e[column] for e in experts.values())
        if abs(total - 1.0) > 1e-6:
            raise CheckError(f"{path}: {column} of {key} sums to {total}, expected 1")


def check(out):
    training = read_csv(os.path.join(out, "training.csv"),
                        ["seed", "phase", "run", "epoch", "train_loss", "router_term", "val_loss", "seconds"])
    seeds = sorted({int(row["seed"]) for row in training})
    if len(seeds) < 2:
        raise CheckError(f"training.csv: seeds {seeds}, expected at least two (the averages need them)")
    expected = {(s, "1", d, e) for s in seeds for d in DOMAINS for e in range(1, PRETRAIN_EPOCHS + 1)}
    expected |= {(s, "2", v, e) for s in seeds for v in VARIANTS for e in range(1, MOE_EPOCHS + 1)}
    found = {(int(r["seed"]), r["phase"], r["run"], int(r["epoch"])) for r in training}
    if found != expected or len(training) != len(expected):
        raise CheckError(f"training.csv: rows {sorted(found)}, expected {sorted(expected)}")
    for row in training:
        for column in ("train_loss", "val_loss"):
            number(row, column, "training.csv", 0.0, 20.0)
        router_term = number(row, "router_term", "training.csv", -2.0, 0.0)
        if row["run"] != "entropy" and router_term != 0.0:
            raise CheckError(f"training.csv: router_term {router_term} in a run without the entropy term: {row}")
        number(row, "seconds", "training.csv", 0.0)

    phase1 = read_csv(os.path.join(out, "phase1_loss.csv"), ["seed", "expert", "best_epoch", "domain", "val_loss"])
    if len(phase1) != len(seeds) * len(DOMAINS) ** 2:
        raise CheckError(f"phase1_loss.csv: {len(phase1)} rows, expected seeds x experts x domains")
    for row in phase1:
        number(row, "val_loss", "phase1_loss.csv", 0.0, 20.0)
        if not 1 <= int(row["best_epoch"]) <= PRETRAIN_EPOCHS:
            raise CheckError(f"phase1_loss.csv: best_epoch {row['best_epoch']}")

    validation = read_csv(os.path.join(out, "validation.csv"),
                          ["seed", "variant", "entropy_beta", "domain", "val_loss", "routing_entropy"])
    if {(int(r["seed"]), r["variant"], r["domain"]) for r in validation} != \
            {(s, v, d) for s in seeds for v in VARIANTS for d in DOMAINS} or len(validation) != len(seeds) * 8:
        raise CheckError("validation.csv: expected one row per seed, variant and domain")
    for row in validation:
        number(row, "val_loss", "validation.csv", 0.0, 20.0)
        number(row, "routing_entropy", "validation.csv", 0.0, math.log(len(DOMAINS)) + 1e-9)
        beta = number(row, "entropy_beta", "validation.csv", 0.0)
        if (beta == 0.0) != (row["variant"] == "no_entropy"):
            raise CheckError(f"validation.csv: entropy_beta {beta} for the variant {row['variant']}")

    columns = ("representative_weight", "mean_weight", "top_share")
    routing = read_csv(os.path.join(out, "routing.csv"), ["seed", "variant", "domain", "expert", *columns])
    groups = defaultdict(dict)
    for row in routing:
        key = (int(row["seed"]), row["variant"], row["domain"])
        groups[key][row["expert"]] = {c: number(row, c, "routing.csv", 0.0, 1.0) for c in columns}
    if set(groups) != {(s, v, d) for s in seeds for v in VARIANTS for d in DOMAINS}:
        raise CheckError("routing.csv: expected every seed, variant and domain")
    for column in columns:
        check_rows_sum_to_one(groups, "routing.csv", column)

    mean_rows = read_csv(os.path.join(out, "routing_mean.csv"),
                         ["variant", "domain", "expert", *columns, "top_share_sd", "top_share_min", "top_share_max"])
    if len(mean_rows) != len(VARIANTS) * len(DOMAINS) ** 2:
        raise CheckError(f"routing_mean.csv: {len(mean_rows)} rows, expected variants x domains x experts")
    for row in mean_rows:
        per_seed = [groups[(s, row["variant"], row["domain"])][row["expert"]] for s in seeds]
        for column in columns:
            close(float(row[column]), sum(p[column] for p in per_seed) / len(seeds),
                  f"routing_mean.csv: {column} of {row['variant']}, {row['domain']}, {row['expert']} "
                  "against routing.csv")
        shares = [p["top_share"] for p in per_seed]
        close(float(row["top_share_min"]), min(shares), "routing_mean.csv: top_share_min")
        close(float(row["top_share_max"]), max(shares), "routing_mean.csv: top_share_max")
        mean = sum(shares) / len(shares)
        sd = math.sqrt(sum((x - mean) ** 2 for x in shares) / (len(shares) - 1))
        close(float(row["top_share_sd"]), sd, "routing_mean.csv: top_share_sd (n - 1)")

    weight_columns = [f"weight_{d}" for d in DOMAINS]
    samples = read_csv(os.path.join(out, "representative_samples.csv"),
                       ["seed", "variant", "domain", "sample", "tokens", *weight_columns, "text"])
    by_group = defaultdict(list)
    for row in samples:
        weights = [number(row, c, "representative_samples.csv", 0.0, 1.0) for c in weight_columns]
        if abs(sum(weights) - 1.0) > 1e-6:
            raise CheckError(f"representative_samples.csv: weights sum to {sum(weights)}: {row}")
        if not row["text"] or int(row["tokens"]) < 2:
            raise CheckError(f"representative_samples.csv: an empty sample: {row}")
        by_group[(int(row["seed"]), row["variant"], row["domain"])].append(weights)
    for key, rows in by_group.items():
        if len(rows) != REPRESENTATIVE:
            raise CheckError(f"representative_samples.csv: {len(rows)} samples for {key}, expected {REPRESENTATIVE}")
        for i, domain in enumerate(DOMAINS):
            close(sum(r[i] for r in rows) / len(rows), groups[key][domain]["representative_weight"],
                  f"representative_samples.csv: the mean weight of the {domain} expert for {key} against routing.csv")
    if set(by_group) != set(groups):
        raise CheckError("representative_samples.csv: expected every seed, variant and domain")

    pngs = [f"{kind}_{tag}.png" for kind in ("routing_weights", "top_expert_share")
            for tag in [f"seed{s}" for s in seeds] + ["mean"]]
    for name in pngs:
        check_png(os.path.join(out, name), min_width=300, min_height=200)

    for seed in seeds:
        directory = os.path.join(out, "samples", f"seed_{seed}")
        texts = set()
        for part, count in (("pretrain", PRETRAIN), ("moe", MOE), ("validation", VALIDATION)):
            for domain in DOMAINS:
                path = os.path.join(directory, f"{part}_{domain}.txt")
                with open(path, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                if len(lines) != count or not all(lines):
                    raise CheckError(f"{path}: {len(lines)} lines, expected {count} non-empty samples")
                texts.update(lines)
        if len(texts) != len(DOMAINS) * (PRETRAIN + MOE + VALIDATION):
            raise CheckError(f"{directory}: the samples are not all distinct")

    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needed in ("## The document's experiment and this run", "## Phase 1: light pretraining",
                   "## Phase 2: validation loss per domain", "## Matching share",
                   "## Routing weights of representative",
                   "## Finding", "causal mask", "post-norm"):
        if needed not in report:
            raise CheckError(f"report.md: no '{needed}'")
    print(f"{out}: seeds {seeds}; {len(pngs)} PNGs decode; routing tables sum to 1 and their means agree; "
          f"samples distinct with the smoke counts")


if __name__ == "__main__":
    run_check(check, sys.argv, "domain_overlap")
