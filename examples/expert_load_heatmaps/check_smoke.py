#!/usr/bin/env python3
"""Checks what `expert_load_heatmaps --preset smoke` wrote into OUT_DIR.

Every PNG decodes; the CSV files have their headers; both models are there with the same layers, three
domains and 64 experts per (model, layer, domain); each (model, layer, domain)'s relative load averages 1;
summary.csv agrees with expert_load.csv and its values are in range; the load diagnostics of each model
(diagnostics/MODEL.csv, .png) have a row per training step and MoE layer with values that agree with each
other; report.md and the two models exist.

Usage: check_smoke.py OUT_DIR   (PYTHONPATH must hold tools/, for check_outputs)
"""

import json
import math
import os
import struct
import sys
from collections import defaultdict

from check_outputs import CheckError, check_png, read_csv, run_check

MODELS = ("aux_loss_based", "aux_loss_free")
DOMAINS = ("prose", "code", "math")
EXPERTS = 64  # the smoke preset keeps the documents' 64 routed experts
K = 6
SMOKE_STEPS, SMOKE_TOKENS = 12, 8 * 32  # steps, and windows x tokens per step, of the smoke preset
DIAGNOSTICS = ["step", "layer", "tokens", "load_min", "load_median", "load_max", "overload", "max_violation",
               "score_entropy", "load_entropy", "dropped_fraction", "margin"]


def check_diagnostics(out, model, layers):
    """diagnostics/MODEL.csv (moe::LoadDiagnosticsLog): a row per step and MoE layer, loads that sum as K
    assignments per token allow, overload = MaxVio + 1, entropies within [0, log N], no drops (no capacity),
    margins >= 0 (plain top-K); and its PNG decodes."""
    path = os.path.join(out, "diagnostics", f"{model}.csv")
    rows = read_csv(path, DIAGNOSTICS)
    keys = [(int(r["step"]), int(r["layer"])) for r in rows]
    expected = [(step, layer) for step in range(1, SMOKE_STEPS + 1) for layer in layers]
    if keys != expected:
        raise CheckError(f"{path}: rows of (step, layer) {keys[:4]}..., expected {expected[:4]}... ({len(expected)})")
    for r in rows:
        v = {c: float(r[c]) for c in DIAGNOSTICS}
        where = f"{path}: step {r['step']} layer {r['layer']}"
        mean = v["tokens"] * K / EXPERTS
        if v["tokens"] != SMOKE_TOKENS or not 0 <= v["load_min"] <= v["load_median"] <= v["load_max"]:
            raise CheckError(f"{where}: tokens {v['tokens']}, loads {v['load_min']} {v['load_median']} {v['load_max']}")
        if abs(v["overload"] - v["load_max"] / mean) > 1e-9 or abs(v["max_violation"] - (v["overload"] - 1)) > 1e-9:
            raise CheckError(f"{where}: overload {v['overload']}, MaxVio {v['max_violation']}, max load {v['load_max']}")
        for column in ("score_entropy", "load_entropy"):
            if not 0 <= v[column] <= math.log(EXPERTS) + 1e-9:
                raise CheckError(f"{where}: {column} {v[column]} outside [0, log {EXPERTS}]")
        if v["dropped_fraction"] != 0 or not v["margin"] >= 0:
            raise CheckError(f"{where}: dropped_fraction {v['dropped_fraction']}, margin {v['margin']}")
    check_png(os.path.join(out, "diagnostics", f"{model}.png"), min_width=900, min_height=600)


def check_model(path, moe_layers):
    """The safetensors header: the vocabulary map in the metadata, one embedding row per compact id, and
    the expert weights of every MoE layer (blocks 1..L after the dense block 0)."""
    with open(path, "rb") as f:
        (header_bytes,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_bytes))
    metadata = header.get("__metadata__", {})
    vocabulary = metadata.get("vocabulary", "")
    if not vocabulary.startswith("moe.VocabularyMap/1 source_size=50257 ids="):
        raise CheckError(f"{path}: no GPT-2 vocabulary map in __metadata__.vocabulary")
    size = len(vocabulary.split("ids=", 1)[1].split(",")) + 1  # + <unk>
    embedding = header.get("embed_tokens.weight", {}).get("shape")
    if not embedding or embedding[0] != size:
        raise CheckError(f"{path}: embed_tokens.weight has shape {embedding}, expected {size} rows (the map's ids)")
    if "layers.0.ffn.gate_proj.weight" not in header:
        raise CheckError(f"{path}: block 0 is not the dense SwiGLU block")
    for layer in range(1, moe_layers + 1):
        names = [f"layers.{layer}.ffn.experts.{EXPERTS - 1}.down_proj.weight"]
        if path.endswith("aux_loss_free.safetensors"):
            names.append(f"layers.{layer}.ffn.balancer.expert_bias")  # AuxLossFree's state
        for name in names:
            if name not in header:
                raise CheckError(f"{path}: no {name}")


def check(out):
    pngs = [os.path.join(out, "figure10.png")]
    heatmaps = os.path.join(out, "heatmaps")
    if not os.path.isdir(heatmaps):
        raise CheckError(f"{heatmaps}: missing")
    layer_pngs = sorted(f for f in os.listdir(heatmaps) if f.endswith(".png"))
    pngs += [os.path.join(heatmaps, f) for f in layer_pngs]
    for path in pngs:
        check_png(path, min_width=200, min_height=100)

    load = read_csv(os.path.join(out, "expert_load.csv"), ["model", "layer", "domain", "expert", "relative_load"])
    groups = defaultdict(dict)
    for row in load:
        key = (row["model"], int(row["layer"]), row["domain"])
        expert = int(row["expert"])
        if expert in groups[key]:
            raise CheckError(f"expert_load.csv: expert {expert} twice in {key}")
        value = float(row["relative_load"])
        if not (value >= 0 and math.isfinite(value)):
            raise CheckError(f"expert_load.csv: relative_load {value} of {key} expert {expert}")
        groups[key][expert] = value
    models = {m for m, _, _ in groups}
    if models != set(MODELS):
        raise CheckError(f"expert_load.csv: models {sorted(models)}, expected {list(MODELS)}")
    layers = sorted({layer for _, layer, _ in groups})
    if not layers or layers != list(range(1, len(layers) + 1)):
        raise CheckError(f"expert_load.csv: layers {layers}, expected 1..L")
    expected_pngs = [f"layer_{layer:02d}.png" for layer in layers]
    if layer_pngs != expected_pngs:
        raise CheckError(f"heatmaps/: {layer_pngs}, expected {expected_pngs}")
    for model in MODELS:
        for layer in layers:
            for domain in DOMAINS:
                key = (model, layer, domain)
                experts = groups.get(key)
                if experts is None:
                    raise CheckError(f"expert_load.csv: no rows for {key}")
                if sorted(experts) != list(range(1, EXPERTS + 1)):
                    raise CheckError(f"expert_load.csv: {key} has experts {sorted(experts)[:5]}..., "
                                     f"expected 1..{EXPERTS}")
                mean = sum(experts.values()) / len(experts)
                if abs(mean - 1.0) > 1e-6:
                    raise CheckError(f"expert_load.csv: relative load of {key} averages {mean}, expected 1")

    summary = read_csv(os.path.join(out, "summary.csv"),
                       ["model", "layer", "domain", "max_relative_load", "top10_share", "entropy"])
    if len(summary) != len(groups):
        raise CheckError(f"summary.csv: {len(summary)} rows, expected one per (model, layer, domain): {len(groups)}")
    for row in summary:
        key = (row["model"], int(row["layer"]), row["domain"])
        if key not in groups:
            raise CheckError(f"summary.csv: {key} is not in expert_load.csv")
        top10, entropy = float(row["top10_share"]), float(row["entropy"])
        max_load = float(row["max_relative_load"])
        if not 0.1 - 1e-9 <= top10 <= 1 + 1e-9:
            raise CheckError(f"summary.csv: top10_share {top10} of {key} is outside [0.1, 1]")
        if not 0 <= entropy <= math.log(EXPERTS) + 1e-9:
            raise CheckError(f"summary.csv: entropy {entropy} of {key} is outside [0, log {EXPERTS}]")
        if abs(max_load - max(groups[key].values())) > 1e-9 * max(1.0, max_load):
            raise CheckError(f"summary.csv: max_relative_load {max_load} of {key} differs from expert_load.csv")

    metrics = read_csv(os.path.join(out, "metrics.csv"),
                       ["model", "step", "train_loss"] + [f"val_loss_{d}" for d in DOMAINS] + ["maxvio_batch"])
    if {row["model"] for row in metrics} != set(MODELS):
        raise CheckError("metrics.csv: expected rows for both models")
    for row in metrics:
        for column in ["train_loss"] + [f"val_loss_{d}" for d in DOMAINS]:
            value = float(row[column])
            if not (0 < value < 20):
                raise CheckError(f"metrics.csv: {column} = {value} at step {row['step']} of {row['model']}")

    path = os.path.join(out, "report.md")
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise CheckError(f"{path}: missing or empty")
    for model in MODELS:
        check_model(os.path.join(out, f"{model}.safetensors"), len(layers))
        check_diagnostics(out, model, layers)
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        report = f.read()
    for needed in ("## Validation loss and balance", "## Specialization per layer", "## Finding"):
        if needed not in report:
            raise CheckError(f"report.md: no section '{needed}'")
    print(f"{out}: {len(pngs)} PNGs decode; {len(layers)} MoE layers x {len(DOMAINS)} domains x {EXPERTS} "
          f"experts for both models; relative loads average 1; summary and load diagnostics in range")


if __name__ == "__main__":
    run_check(check, sys.argv, "expert_load_heatmaps")
