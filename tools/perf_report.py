#!/usr/bin/env python3
"""Writes docs/PERFORMANCE.md and docs/performance.csv from the results scripts/bench.sh leaves.

    python3 tools/perf_report.py --results build/bench/results --md docs/PERFORMANCE.md --csv docs/performance.csv

The results folder holds machine.json (written by bench.sh), moe_bench.json and nn_bench.json (Google
Benchmark, the chosen build), variant_<portable|native>.json (GEMM and layer forward of each build),
peer_<config>.json and optionally peer_system_blas.json (benchmarks/peers/pytorch_moe.py, with the
peer's OpenBLAS and its output check), lm_moe.json and lm_peer.json (the whole-model figure: lm_bench and
benchmarks/peers/pytorch_lm.py), and profile/ with perf and callgrind_annotate outputs. Python 3 standard library only.
"""

import argparse
import csv
import json
import os
import re
import sys

CONFIG_ORDER = ["C1", "C2", "C3", "C4", "N8", "N256"]
MODES = ["fwd", "fwd_bwd"]
# The targets of issue 14, as ratios measured in one run.
PEAK_LIMIT = 0.85     # T1: past 85% of the FMA peak, 1.3x PyTorch is not asked
SPEEDUP = 1.3         # T1: tokens/s over PyTorch's
SHARE_TARGETS = {"C1": 0.75, "C4": 0.75, "C2": 0.50}  # T2: peak_share, active-FLOP rate over the FMA peak
SCALING_TARGET = 0.80  # T3: tokens/s with N=256 over N=8
# T4: no allocation and no page fault per call in steady state.


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def gbench_runs(document):
    """name (without /real_time) -> record; the median aggregate when there are repetitions."""
    if document is None:
        return {}
    runs, iterations = {}, {}
    for b in document["benchmarks"]:
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                runs[name] = b
        else:
            iterations.setdefault(name, []).append(b)
    for name, items in iterations.items():
        if name not in runs:
            runs[name] = items[len(items) // 2] if len(items) > 1 else items[0]
    return runs


def best_runs(document):
    """name -> the repetition with the highest gflops (other work only ever slows a run down)."""
    best = {}
    for b in document["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        if name not in best or b.get("gflops", 0) > best[name].get("gflops", 0):
            best[name] = b
    return best


def ms(record):
    """Real time of one call in milliseconds."""
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[record.get("time_unit", "ns")]
    return record["real_time"] * scale


def fmt(value, digits=0):
    if value is None:
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def pct(value):
    return "n/a" if value is None else f"{100 * value:.0f}%"


def short_name(name):
    """A C++ symbol without template arguments and parameter lists, for tables."""
    name = re.sub(r"\s*\[clone [^\]]*\]", "", name)
    out, depth = [], 0
    for ch in name:
        if ch == "<":
            if depth == 0:
                out.append("<>")
            depth += 1
        elif ch == ">" and depth > 0:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    name = "".join(out)
    name = re.sub(r"operator\(\)\([^)]*\)", "operator()", name)
    name = re.sub(r"(?<!operator)\((?:[^()]|\([^()]*\))*\)(\s*const)?$", "", name)
    return name.strip()


def bucket(function, library=""):
    """Coarse kind of a profiled function."""
    f, lib = function.lower(), library.lower()
    if "libgomp" in lib or "gomp" in f:
        return "OpenMP runtime (oneDNN's calls)"
    if "threadpool" in f or "spin_then_wait" in f or "cpu_relax" in f:
        return "moe's threads (waits, idle threads)"
    if any(k in f for k in ("gebp", "gemm_pack", "general_matrix_matrix", "gemv")):
        return "Eigen GEMM"
    if "erf" in f or "exp" in f or "gelu" in f or "elementwise" in f:
        return "GELU (erf, exp)"
    if any(k in f for k in ("memcpy", "memmove", "memset", "dense_assignment", "call_assignment", "clear_page",
                            "page_fault", "copy_")):
        return "copies, zeroing, page faults"
    if "kallsyms" in lib or lib.startswith("[kernel"):
        return "kernel (page faults, allocation)"
    if any(k in f for k in ("feedforward", "linear", "moelayer", "cpu::", "backends", "select_top_k",
                            "softmax", "gather", "combine", "scatter", "gates")):
        return "moe code (bias, copies, routing, dispatch)"
    return "other"


def parse_perf(path):
    rows = []
    with open(path) as f:
        for line in f:
            m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*(?:-\s+-\s*)?$", line)
            if m:
                rows.append((float(m.group(1)), m.group(2), m.group(4).strip()))
    return rows


def parse_callgrind(path):
    rows, total, started = [], None, False
    with open(path) as f:
        for line in f:
            if "PROGRAM TOTALS" in line:
                total = int(line.split()[0].replace(",", ""))
            if re.match(r"^Ir\s+file:function", line):
                started = True
                continue
            if not started:
                continue
            m = re.match(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$", line)
            if not m:
                continue
            where = m.group(3)
            library = ""
            lib = re.search(r"\s\[([^\]]*)\]$", where)
            if lib:
                library = os.path.basename(lib.group(1))
                where = where[:lib.start()]
            fm = re.match(r"^([^:\s]*):(?!:)(.*)$", where)
            function = fm.group(2) if fm else where
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), library, function))
    return total, rows


def check_cell(check):
    """The peer's output check as a table cell."""
    if not check:
        return "not run"
    errors = [check[k] for k in ("output", "grad_input", "grad_router_weight") if check.get(k) is not None]
    verdict = "pass" if check["passed"] else "**FAIL**"
    text = f"{verdict} ({max(errors):.0e}"
    if check["tokens_routed_differently"]:
        text += f"; {check['tokens_routed_differently']} of {check['tokens']} tokens routed differently"
    return text + ")"


def read_run_line(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read().strip()


def main():
    parser = argparse.ArgumentParser(description="Writes PERFORMANCE.md and performance.csv")
    parser.add_argument("--results", default="build/bench/results")
    parser.add_argument("--md", default="docs/PERFORMANCE.md")
    parser.add_argument("--csv", default="docs/performance.csv")
    args = parser.parse_args()
    r = args.results

    machine = load_json(os.path.join(r, "machine.json")) or {}
    files = sorted(os.listdir(r)) if os.path.isdir(r) else []
    moe_docs = [load_json(os.path.join(r, f)) for f in files if re.match(r"moe_bench.*\.json$", f)]
    if not moe_docs:
        sys.exit(f"perf_report.py: no {r}/moe_bench*.json: run scripts/bench.sh")
    ours = {}
    for doc in moe_docs:
        ours.update(gbench_runs(doc))
    ctx = moe_docs[0]["context"]
    nn = gbench_runs(load_json(os.path.join(r, "nn_bench.json")))
    variants = {}
    for v in ("portable", "native"):
        doc = load_json(os.path.join(r, f"variant_{v}.json"))
        if doc is not None:
            variants[v] = (doc["context"], best_runs(doc))
    peer_doc = {"context": {}, "results": []}
    for f in files:
        if re.match(r"peer_.*\.json$", f) and f != "peer_system_blas.json":
            doc = load_json(os.path.join(r, f))
            peer_doc["context"] = doc["context"]
            peer_doc["results"] += doc["results"]
    peer = {(x["config"], x["mode"]): x for x in peer_doc["results"]}
    system_doc = load_json(os.path.join(r, "peer_system_blas.json"))
    phases = []
    if os.path.exists(os.path.join(r, "phases.tsv")):
        with open(os.path.join(r, "phases.tsv")) as f:
            for line in f:
                name, seconds, others = line.rstrip("\n").split("\t")
                phases.append((name, float(seconds), float(others)))

    # The FMA peak on every thread (moe_bench's fma_peak): the best of its runs in this run.
    peaks = [b.get("gflops") for doc in moe_docs for b in doc["benchmarks"]
             if b["name"].startswith("fma_peak") and b.get("gflops")]
    peak_gf = max(peaks) if peaks else None

    def get(name, counter="gflops"):
        run = ours.get(name)
        return None if run is None else run.get(counter)

    configs = [c for c in CONFIG_ORDER if f"moe_layer/fwd/{c}" in ours]

    # ---- per config and mode -------------------------------------------------------------------------
    table = {}
    for c in configs:
        for mode in MODES:
            moe_tps, moe_gf = get(f"moe_layer/{mode}/{c}", "tokens_per_s"), get(f"moe_layer/{mode}/{c}")
            gemm_gf = get(f"gemm/{mode}/{c}")
            p = peer.get((c, mode))
            pt_tps, pt_gf = (p["tokens_per_s"], p["gflops"]) if p else (None, None)
            row = {
                "moe_tps": moe_tps, "moe_gf": moe_gf, "gemm_gf": gemm_gf, "pt_tps": pt_tps, "pt_gf": pt_gf,
                "ratio": moe_tps / pt_tps if moe_tps and pt_tps else None,
                "share": moe_gf / gemm_gf if moe_gf and gemm_gf else None,
                "pt_share": pt_gf / gemm_gf if pt_gf and gemm_gf else None,
                "peak_share": moe_gf / peak_gf if moe_gf and peak_gf else None,
                "pt_peak_share": pt_gf / peak_gf if pt_gf and peak_gf else None,
                "allocs": get(f"moe_layer/{mode}/{c}", "allocs_per_call"),
                "faults": get(f"moe_layer/{mode}/{c}", "faults_per_call"),
                "pt_faults": p.get("faults_per_call") if p else None,
                "check": p.get("check") if p else None,
                "dense_gf": get(f"dense/{mode}/{c}"), "dense_split_gf": get(f"dense_split/{mode}/{c}"),
                "dense_tps": get(f"dense/{mode}/{c}", "tokens_per_s"),
                "dense_split_tps": get(f"dense_split/{mode}/{c}", "tokens_per_s"),
                "load": get(f"moe_layer/{mode}/{c}", "load_max_over_mean"),
            }
            # T1: 1.3x PyTorch, unless that passes 85% of the FMA peak; then 85% of the peak.
            if pt_gf is not None and peak_gf is not None:
                if SPEEDUP * pt_gf > PEAK_LIMIT * peak_gf:
                    row["need_gf"], row["clause"] = PEAK_LIMIT * peak_gf, "85% peak"
                else:
                    row["need_gf"], row["clause"] = SPEEDUP * pt_gf, "1.3x PyTorch"
                row["t1"] = moe_gf >= row["need_gf"]
            else:
                row["need_gf"], row["clause"], row["t1"] = None, "no peer", None
            table[(c, mode)] = row

    # ---- CSV -----------------------------------------------------------------------------------------
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["config", "impl", "mode", "tokens_per_s", "gflops", "gemm_share", "peak_share", "faults_per_call",
                    "allocs_per_call"])

        def cell(value, digits):
            return "" if value is None else f"{value:.{digits}f}"

        for c in configs:
            for impl in ("moe", "pytorch"):
                for mode in MODES:
                    row = table[(c, mode)]
                    if impl == "moe":
                        values = (row["moe_tps"], row["moe_gf"], row["share"], row["peak_share"], row["faults"],
                                  row["allocs"])
                    else:  # the peer's allocations are Python's and its allocators': not counted
                        values = (row["pt_tps"], row["pt_gf"], row["pt_share"], row["pt_peak_share"],
                                  row["pt_faults"], None)
                    tps, gf, share, peak_share, faults, allocs = values
                    if tps is None:
                        continue
                    w.writerow([c, impl, mode, f"{tps:.1f}", f"{gf:.3f}", cell(share, 4), cell(peak_share, 4),
                                cell(faults, 1), cell(allocs, 1)])

    # ---- Markdown ------------------------------------------------------------------------------------
    md = []
    add = md.append
    add("# Performance")
    add("")
    add("Generated by `scripts/bench.sh` (`tools/perf_report.py`); do not edit by hand. Raw results: "
        f"`{machine.get('build_dir', 'build/bench')}/results/`.")
    add("")
    add("## Machine and settings")
    add("")
    peer_ctx = peer_doc.get("context", {})
    blas = peer_ctx.get("blas") or []
    blas_name = ", ".join(os.path.basename(b) for b in blas if "libblas" not in os.path.basename(b)) or \
        ", ".join(os.path.basename(b) for b in blas) or "unknown"
    add("| | |")
    add("| --- | --- |")
    add(f"| CPU | {machine.get('cpu', 'unknown')} ({machine.get('logical_cpus', ctx.get('num_cpus'))} logical CPUs, "
        f"{ctx.get('mhz_per_cpu', '?')} MHz reported) |")
    add(f"| threads | {machine.get('threads', ctx.get('moe_threads'))} (moe: `parallel_for` on its own threads; PyTorch: "
        f"`torch.set_num_threads({peer_ctx.get('threads', '?')})`, OpenBLAS threads as many) |")
    add(f"| date | {machine.get('date', ctx.get('date'))} |")
    add(f"| compiler | {machine.get('compiler', ctx.get('compiler'))}, Release `{machine.get('release_flags', '-O3')}` |")
    add(f"| build used | `{machine.get('variant', ctx.get('moe_variant'))}` (Eigen SIMD: {ctx.get('eigen_simd')}) |")
    retained = ctx.get("retain_freed_memory") == "yes"
    add(f"| allocator | glibc malloc; {'freed blocks up to 32 MiB kept in the heap, no trimming, for moe (`moe::retain_freed_memory()`) and PyTorch (the same through `GLIBC_TUNABLES`)' if retained else 'default settings'} |")
    add(f"| repetitions | {machine.get('repetitions', '?')} x at least {machine.get('min_time', '?')} s "
        "(median); every benchmark on real time |")
    add(f"| PyTorch | {peer_ctx.get('torch', '?')} eager, float32, BLAS: {blas_name}; "
        f"{peer_ctx.get('warmup', '?')} warm-up + median of {peer_ctx.get('repeats', '?')} repeats of at least "
        f"{peer_ctx.get('min_time', '?')} s; fwd under `torch.no_grad()` |")
    openblas = peer_ctx.get("openblas")
    if openblas:
        env = peer_ctx.get("environment") or {}
        unset = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if env.get(k) is None]
        pinned = [f"{k}={env[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if env.get(k) is not None]
        add(f"| PyTorch's OpenBLAS | `{openblas['library']}`; kernel **{openblas['corename']}** "
            f"(`openblas_get_corename`), {openblas['parallel']} threading, {openblas['num_threads']} threads "
            f"(torch: {peer_ctx.get('threads', '?')}); "
            + (f"{', '.join(unset)} unset for the peer" if unset else "")
            + (f"; pinned: {', '.join(pinned)}" if pinned else "")
            + f"; build: `{openblas['config']}` |")
    if peak_gf:
        add(f"| FMA peak | {fmt(peak_gf, 1)} GFLOP/s on {machine.get('threads', ctx.get('moe_threads'))} threads "
            "(`fma_peak`: a register-only FMA loop built -march=native, every thread at once; best run) |")
    measured = sum(p[1] for p in phases)
    others_mean = sum(p[1] * p[2] for p in phases) / measured if measured else None
    add(f"| other processes | {fmt(others_mean, 2)} CPUs busy on average during the {fmt(measured)} s of timed "
        f"phases (worst phase {fmt(max((p[2] for p in phases), default=None), 2)}); waited "
        f"{machine.get('waited_for_idle', 0)} s for idle CPUs; benchmarks at niceness {machine.get('niceness', 0)}; load average {machine.get('loadavg_before', '?')} "
        f"before, {machine.get('loadavg_after', '?')} after |")
    add(f"| run time | {machine.get('seconds', '?')} s for the whole script |")
    add("")
    busy = [p for p in phases if p[2] >= 0.1]
    niceness = machine.get("niceness", 0)
    if busy and isinstance(niceness, int) and niceness < 0:
        add(f"**Note:** other processes were busy during {len(busy)} of the {len(phases)} timed phases (table below). "
            f"The benchmarks ran at niceness {niceness}, so the scheduler ran those processes only on CPU time our "
            "threads left (single-threaded benchmarks, serial parts, waits); they still shared the caches and "
            "the memory bandwidth, so treat the rates as slightly low.")
        add("")
    elif busy:
        add(f"**Warning:** other processes shared the CPUs during {len(busy)} of the {len(phases)} timed phases: "
            + "; ".join(f"{name} ({others:.2f} CPUs)" for name, _, others in busy)
            + ". Every parallel region waits for its slowest thread, so short parallel steps lose whole "
            "scheduler time slices when a thread is preempted; treat those phases' numbers as lower bounds "
            "of the rates.")
        add("")
    if phases:
        add("<details><summary>Timed phases: seconds, and CPUs other processes kept busy meanwhile</summary>")
        add("")
        add("| phase | seconds | other processes (CPUs) |")
        add("|---|---:|---:|")
        for name, seconds, others in phases:
            add(f"| {name} | {seconds:.1f} | {others:.2f} |")
        add("")
        add("</details>")
        add("")
    add("FLOPs are the active expert FLOPs: forward 2 GEMMs of 2·d·h per routed row (4·T·K·d·h), "
        "forward+backward 3x that; biases, GELU, router and dispatch are not counted. tokens/s counts the T "
        "input tokens per call.")
    add("")
    add("**GEMM reference** (`gemm/<mode>/<config>` in `benchmarks/moe_bench.cpp`): the products our experts "
        "run, on exactly T·K/N rows per expert with the expert's own weights, each expert single-threaded, "
        "the experts spread over the threads by `moe::parallel_for(dynamic)` as `backends::cpu::for_each_expert` "
        "does. fwd: H = X W1ᵀ, Y = H W2ᵀ; fwd_bwd adds dW2 += dYᵀH, dH = dY W2, dW1 += dHᵀX, dX = dH W1. "
        "No bias, no activation, no gather, no imbalance: this machine's practical limit for our layout. "
        "gemm_share = our GFLOP/s / that GEMM GFLOP/s, on the same run.")
    add("")

    # compiler flags
    if variants:
        add("## Compiler flags: portable vs -march=native")
        add("")
        add("The library adds no `-march`: a Release build runs Eigen on SSE2. `MOE_NATIVE=ON` builds every "
            "benchmark a second time with `-march=native` (benchmarks only). Rates in GFLOP/s, best of 2 "
            "repetitions:")
        add("")
        names = list(variants)
        add("| benchmark | " + " | ".join(f"{v} ({variants[v][0].get('eigen_simd', '')})" for v in names)
            + (" | native / portable |" if len(names) == 2 else " |"))
        add("|---" * (len(names) + 1 + (1 if len(names) == 2 else 0)) + "|")
        keys = ["gemm_square/1024"] + [f"gemm/{m}/{c}" for c in configs for m in MODES] + \
               [f"moe_layer/fwd/{c}" for c in configs]
        for k in keys:
            vals = [variants[v][1].get(k, {}).get("gflops") for v in names]
            if all(x is None for x in vals):
                continue
            line = f"| `{k}` | " + " | ".join(fmt(x, 1) for x in vals)
            if len(names) == 2 and vals[0] and vals[1]:
                line += f" | {vals[1] / vals[0]:.2f}x"
            add(line + " |")
        add("")
        add(f"The full run below uses the **{machine.get('variant', ctx.get('moe_variant'))}** build, the one with "
            "the higher GEMM rate (geometric mean over the `gemm/` rows). PyTorch's own kernels and OpenBLAS dispatch on the CPU at run time, so "
            "this is the fair comparison.")
        add("")

    # main table
    add("## MoE layer: moe vs PyTorch")
    add("")
    add("peak_share: GFLOP/s over the FMA peak of this run. allocs and faults: heap allocations and minor page "
        "faults per call in steady state (moe: counted in `moe_bench` after one untimed call on each input "
        "batch; PyTorch: faults only, `getrusage` over its timed calls). check: the peer's output, input "
        "gradient and router gradient against ours on the same weights and inputs (largest relative error; "
        "tokens whose top-K set differs, from near ties, are left out and counted).")
    add("")
    add("| config | T, d, h, N, K | mode | moe tokens/s | PyTorch tokens/s | moe / PyTorch | moe GFLOP/s | "
        "GEMM GFLOP/s | gemm_share | peak_share | PyTorch peak_share | allocs / call | faults / call | "
        "PyTorch faults / call | check |")
    add("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    shapes = {"C1": "4096, 512, 1024, 8, 2", "C2": "4096, 256, 128, 64, 6", "C3": "256, 512, 512, 2, 1",
              "C4": "4096, 768, 3072, 4, 4", "N8": "4096, 256, 256, 8, 2", "N256": "4096, 256, 256, 256, 2"}
    for c in configs:
        for mode in MODES:
            row = table[(c, mode)]
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "n/a"
            add(f"| {c} | {shapes.get(c, '')} | {mode} | {fmt(row['moe_tps'])} | {fmt(row['pt_tps'])} | {ratio} | "
                f"{fmt(row['moe_gf'], 1)} | {fmt(row['gemm_gf'], 1)} | {pct(row['share'])} | "
                f"{pct(row['peak_share'])} | {pct(row['pt_peak_share'])} | {fmt(row['allocs'], 1)} | "
                f"{fmt(row['faults'], 1)} | {fmt(row['pt_faults'], 1)} | {check_cell(row['check'])} |")
    add("")
    for mode in MODES:
        a, b = table.get(("N256", mode)), table.get(("N8", mode))
        if a and b and a["moe_tps"] and b["moe_tps"]:
            line = (f"Scaling pair, {mode}: N=256 / N=8 = **{a['moe_tps'] / b['moe_tps']:.2f}** in tokens/s for moe")
            if a["pt_tps"] and b["pt_tps"]:
                line += f", {a['pt_tps'] / b['pt_tps']:.2f} for PyTorch"
            if a["gemm_gf"] and b["gemm_gf"]:
                line += f"; the GEMM reference itself drops to {a['gemm_gf'] / b['gemm_gf']:.2f}"
            add(line + ".")
            add("")

    # GEMM references
    if any((c, "gemm_fwd") in peer for c in configs):
        add("### The GEMM reference in Eigen and in PyTorch's BLAS")
        add("")
        add("The same sequence of products timed in torch (`pytorch_moe.py --gemm`): experts one after the "
            "other, each product threaded by the BLAS. Where the BLAS is faster than Eigen, Eigen's GEMM and "
            "not the machine is the limit our gemm_share is measured against.")
        add("")
        add("| config | rows per expert | Eigen fwd | BLAS fwd | Eigen fwd_bwd | BLAS fwd_bwd |")
        add("|---|---:|---:|---:|---:|---:|")
        for c in configs:
            rows = ours.get(f"gemm/fwd/{c}", {}).get("rows_per_expert")
            cells = []
            for mode in MODES:
                cells.append(fmt(table[(c, mode)]["gemm_gf"], 1))
                cells.append(fmt(peer.get((c, "gemm_" + mode), {}).get("gflops"), 1))
            add(f"| {c} | {fmt(rows)} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
        add("")
        sq = ours.get("gemm_square/1024")
        if sq:
            add(f"Eigen's peak here, one 1024³ product per thread on every thread (`gemm_square/1024`): "
                f"{fmt(sq['gflops'], 1)} GFLOP/s.")
            add("")
        bw = ours.get("stream_copy")
        if bw:
            add(f"Memory bandwidth (`stream_copy`, a 128 MiB copy per thread, read + write): "
                f"{bw['bytes_per_second'] / 1e9:.1f} GB/s.")
            add("")

    # targets
    add("## Targets")
    add("")
    add("| target | config | mode | needed | measured | result |")
    add("|---|---|---|---|---|---|")
    misses = []
    for c in configs:
        for mode in MODES:
            row = table[(c, mode)]
            if row["t1"] is None:
                continue
            need = row["need_gf"]
            verdict = "pass" if row["t1"] else f"**fail** (at {row['moe_gf'] / need:.0%} of the need)"
            if not row["t1"]:
                misses.append((c, mode, "T1"))
            add(f"| T1 ≥ 1.3x PyTorch or ≥ 85% of the FMA peak | {c} | {mode} | {fmt(need, 1)} GFLOP/s "
                f"({row['clause']}: "
                f"{'1.3 x ' + fmt(row['pt_gf'], 1) if row['clause'] == '1.3x PyTorch' else '0.85 x ' + fmt(peak_gf, 1)}) "
                f"| {fmt(row['moe_gf'], 1)} GFLOP/s ({row['ratio']:.2f}x PyTorch, {pct(row['peak_share'])} of peak) "
                f"| {verdict} |")
    for c, need in SHARE_TARGETS.items():
        for mode in MODES:
            row = table.get((c, mode))
            if not row or row["peak_share"] is None:
                continue
            ok = row["peak_share"] >= need
            if not ok:
                misses.append((c, mode, "T2"))
            short = 100 * (need - row["peak_share"])
            verdict = "pass" if ok else f"**fail** (short by {short:.0f} points)"
            add(f"| T2 peak_share ≥ {need:.0%} | {c} | {mode} | {need:.0%} | {pct(row['peak_share'])} "
                f"({fmt(row['moe_gf'], 1)} of {fmt(peak_gf, 1)}) | {verdict} |")
    for mode in MODES:
        a, b = table.get(("N256", mode)), table.get(("N8", mode))
        if a and b and a["moe_tps"] and b["moe_tps"]:
            ratio = a["moe_tps"] / b["moe_tps"]
            ok = ratio >= SCALING_TARGET
            if not ok:
                misses.append(("N256", mode, "T3"))
            short = 100 * (SCALING_TARGET - ratio)
            verdict = "pass" if ok else f"**fail** (short by {short:.0f} points)"
            add(f"| T3 N=256 ≥ 80% of N=8 | N256/N8 | {mode} | 80% | {ratio:.0%} | {verdict} |")
    for c in configs:
        for mode in MODES:
            row = table[(c, mode)]
            if row["allocs"] is None or row["faults"] is None:
                continue
            ok = row["allocs"] == 0 and row["faults"] == 0
            if not ok:
                misses.append((c, mode, "T4"))
            add(f"| T4 no allocation, no page fault per call | {c} | {mode} | 0 / 0 | {fmt(row['allocs'], 1)} / "
                f"{fmt(row['faults'], 1)} | {'pass' if ok else '**fail**'} |")
    add("")

    # whole model
    lm_moe, lm_peer = load_json(os.path.join(r, "lm_moe.json")), load_json(os.path.join(r, "lm_peer.json"))
    if lm_moe:
        add("## Whole model: training the examples' language model")
        add("")
        add(f"`build/bench/bin/lm_bench` against `benchmarks/peers/pytorch_lm.py`: {lm_moe['model']} (vocabulary "
            f"{lm_moe['vocabulary']}, d_model {lm_moe['d_model']}, 1 dense + {lm_moe['moe_layers']} MoE blocks of "
            f"{lm_moe['experts']} experts), batches of {lm_moe['batch']} x {lm_moe['seq_len']} random tokens; one "
            "step is forward, cross entropy with the balance losses, backward, gradient clipping and AdamW. "
            f"{lm_moe['steps']} timed steps after two untimed, {lm_moe['threads']} threads on both sides.")
        add("")
        add("| | tokens/s | moe / PyTorch | allocations / step | minor faults / step | last loss |")
        add("|---|---:|---:|---:|---:|---:|")
        ratio = lm_moe["tokens_per_s"] / lm_peer["tokens_per_s"] if lm_peer else None
        add(f"| moe | {fmt(lm_moe['tokens_per_s'])} | {'n/a' if ratio is None else format(ratio, '.2f') + 'x'} | "
            f"{fmt(lm_moe['allocs_per_step'])} | {fmt(lm_moe['faults_per_step'])} | {lm_moe['last_loss']:.3f} |")
        if lm_peer:
            core = (lm_peer.get("openblas") or {}).get("corename", "system BLAS")
            add(f"| PyTorch {lm_peer['torch']} (BLAS kernel {core}) | {fmt(lm_peer['tokens_per_s'])} | | n/a | "
                f"{fmt(lm_peer['faults_per_step'])} | {lm_peer['last_loss']:.3f} |")
        add("")

    # dense
    add("## Dense feed-forward of the same active FLOPs")
    add("")
    add("`dense`: one `FeedForward<GELU>` with hidden = K·h on all T tokens (single-threaded: moe builds Eigen "
        "with `EIGEN_DONT_PARALLELIZE`, and a module's GEMMs are not split). `dense_split`: the tokens cut in one "
        "block per thread, one module each, run by `parallel_for`.")
    add("")
    add("| config | mode | moe GFLOP/s | dense GFLOP/s | dense_split GFLOP/s | moe / dense_split |")
    add("|---|---|---:|---:|---:|---:|")
    for c in configs:
        for mode in MODES:
            row = table[(c, mode)]
            rel = row["moe_gf"] / row["dense_split_gf"] if row["moe_gf"] and row["dense_split_gf"] else None
            add(f"| {c} | {mode} | {fmt(row['moe_gf'], 1)} | {fmt(row['dense_gf'], 1)} | {fmt(row['dense_split_gf'], 1)} | "
                f"{'n/a' if rel is None else format(rel, '.2f')} |")
    add("")

    # time budget
    add("## Where the time goes")
    add("")
    add("Milliseconds per call, each part measured alone on the same shapes (`router`: the router's Linear "
        "and softmax; `gelu`: moe::GELU on the [T·K x h] hidden activations, two threads; `gemm`: the GEMM "
        "reference; `output_grads`: each expert's output and gate gradients, `scatter`: the input gradients "
        "summed per token). The remainder is what the parts do not explain: bias adds, the copies the "
        "modules make (each expert caches its input, the activation its input and output), allocation, "
        "routing imbalance (`load`: most loaded expert over the mean) and threads waiting at the end of "
        "`for_each_expert`.")
    add("")
    add("| config | mode | layer | gemm | gelu | router | top_k | plan | gather | combine | "
        "output_grads + scatter | remainder | load |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    budget = {}
    for c in configs:
        for mode in MODES:
            def t(name):
                run = ours.get(name)
                return ms(run) if run else 0.0
            layer, gemm_t = t(f"moe_layer/{mode}/{c}"), t(f"gemm/{mode}/{c}")
            gelu_t = t(f"gelu/{mode}/{c}")
            router = t(f"router/{c}") * (3 if mode == "fwd_bwd" else 1)  # backward: two products of the same size
            top, pl, ga, co = t(f"top_k/{c}"), t(f"plan/{c}"), t(f"gather/{c}"), t(f"combine/{c}")
            bwd = t(f"output_grads/{c}") + t(f"scatter/{c}") if mode == "fwd_bwd" else 0.0
            rest = layer - gemm_t - gelu_t - router - top - pl - ga - co - bwd
            budget[(c, mode)] = dict(layer=layer, gemm=gemm_t, gelu=gelu_t, router=router,
                                     dispatch=top + pl + ga + co + bwd, rest=rest)
            load = table[(c, mode)]["load"]
            add(f"| {c} | {mode} | {layer:.2f} | {gemm_t:.2f} | {gelu_t:.2f} | {router:.2f} | {top:.2f} | "
                f"{pl:.2f} | {ga:.2f} | {co:.2f} | {bwd:.2f} | {rest:.2f} | {fmt(load, 2)} |")
    add("")
    add("(router fwd_bwd is counted as 3x its forward: the backward runs two products of the forward's size.)")
    add("")

    # one expert, one thread
    if any(f"expert/fwd/{c}" in ours for c in configs):
        add("### One expert on one thread")
        add("")
        add("`expert/<mode>/<config>`: one `FeedForward<GELU>` on its T·K/N rows, on the calling thread; "
            "`expert_gemm`: the same two (fwd) or six (fwd_bwd) products without bias and activation. No "
            "routing, no dispatch, no threads: what the expert module itself costs over its GEMMs.")
        add("")
        add("| config | mode | rows | expert ms | expert_gemm ms | expert / gemm |")
        add("|---|---|---:|---:|---:|---:|")
        for c in configs:
            for mode in MODES:
                e, g = ours.get(f"expert/{mode}/{c}"), ours.get(f"expert_gemm/{mode}/{c}")
                if not e or not g:
                    continue
                rows = ours.get(f"gemm/fwd/{c}", {}).get("rows_per_expert")
                add(f"| {c} | {mode} | {fmt(rows)} | {ms(e):.2f} | {ms(g):.2f} | {pct(e['gflops'] / g['gflops'])} |")
        add("")

    # profiles
    profile_dir = os.path.join(r, "profile")
    perf_files = sorted(f for f in os.listdir(profile_dir) if f.endswith(".perf.txt")) if os.path.isdir(profile_dir) else []
    cg_files = sorted(f for f in os.listdir(profile_dir) if f.endswith(".callgrind.txt")) if os.path.isdir(profile_dir) else []
    if perf_files or cg_files:
        add("## Profiles of reduced runs")
        add("")
        add("`build/bench/bin/moe_profile CONFIG MODE TOKENS ITERATIONS` runs one layer (fewer tokens than the "
            "config, same d, h, N, K). **perf** (`perf record -e cpu-clock`, the software clock: this VM has no "
            "hardware counters) samples the build used above on both threads; shares are of all samples, "
            "set-up included. **callgrind** counts instructions (Ir) of the measured iterations only "
            "(`--toggle-collect`), on one thread and the portable build, since valgrind 3.19 decodes no AVX-512. "
            "Instruction counts are not time: a 16-wide FMA is one instruction, a scalar erf call dozens, so "
            "callgrind overstates scalar code against GEMM; perf's shares are the time shares.")
        add("")
    for f in perf_files:
        key = f[: -len(".perf.txt")]
        rows = parse_perf(os.path.join(profile_dir, f))
        if not rows:
            continue
        run_line = read_run_line(os.path.join(profile_dir, key + ".perf.run.txt"))
        add(f"### perf: {key.replace('_', ' ', 1)}")
        add("")
        if run_line:
            add(f"`{run_line}`")
            add("")
        buckets = {}
        for share, lib, sym in rows:
            b = bucket(sym, lib)
            buckets[b] = buckets.get(b, 0.0) + share
        add("| kind | samples |")
        add("|---|---:|")
        for b, share in sorted(buckets.items(), key=lambda x: -x[1]):
            add(f"| {b} | {share:.1f}% |")
        add("")
        add("| function | library | samples |")
        add("|---|---|---:|")
        for share, lib, sym in rows[:12]:
            add(f"| `{short_name(sym)[:110]}` | {lib} | {share:.1f}% |")
        add("")
    for f in cg_files:
        key = f[: -len(".callgrind.txt")]
        total, rows = parse_callgrind(os.path.join(profile_dir, f))
        if not rows:
            continue
        run_line = read_run_line(os.path.join(profile_dir, key + ".callgrind.run.txt"))
        add(f"### callgrind: {key.replace('_', ' ', 1)}")
        add("")
        if run_line:
            add(f"`{run_line}` (under valgrind, one thread); {fmt(total)} instructions in the measured iteration.")
            add("")
        buckets = {}
        for ir, share, lib, fn in rows:
            b = bucket(fn, lib)
            buckets[b] = buckets.get(b, 0.0) + share
        add("| kind | Ir |")
        add("|---|---:|")
        for b, share in sorted(buckets.items(), key=lambda x: -x[1]):
            add(f"| {b} | {share:.1f}% |")
        add("")
        add("| function | Ir | share |")
        add("|---|---:|---:|")
        for ir, share, lib, fn in rows[:12]:
            add(f"| `{short_name(fn)[:110]}` | {fmt(ir)} | {share:.1f}% |")
        add("")

    # misses
    add("## Missed targets: by how much and what bounds them")
    add("")
    if not misses:
        add("Every target passes on this run.")
    else:
        add("Measured here; the analysis of causes and the proposed fixes are in the notes below the tables.")
        add("")
        for c, mode, target in misses:
            row, b = table.get((c, mode)), budget.get((c, mode))
            if target == "T3":
                a8 = table[("N8", mode)]
                add(f"- **T3 {mode}**: N=256 runs at {row['moe_tps'] / a8['moe_tps']:.0%} of N=8's tokens/s. "
                    f"The GEMM reference itself runs at {row['gemm_gf'] / a8['gemm_gf']:.0%} of its N=8 rate "
                    f"(32 rows per expert instead of 1024); the layer: {b['layer']:.1f} ms vs "
                    f"{budget[('N8', mode)]['layer']:.1f} ms, of which GEMM {b['gemm']:.1f} vs "
                    f"{budget[('N8', mode)]['gemm']:.1f} ms and remainder {b['rest']:.1f} vs "
                    f"{budget[('N8', mode)]['rest']:.1f} ms.")
                # Two things grow with N at fixed T, d, h, K: the router's product (T x d x N) and the expert
                # weights, which stop fitting in the caches and stream from memory on every pass.
                n8, n256 = budget[("N8", mode)], b
                add(f"  Bound 1, the router: {n256['router']:.1f} ms at N=256 against {n8['router']:.1f} ms at N=8 "
                    f"(2·d·N FLOPs per token against the experts' 4·K·d·h: {2 * 256 / (4 * 2 * 256):.0%} more at N=256, "
                    f"{2 * 8 / (4 * 2 * 256):.1%} at N=8). That alone allows N=256 at most "
                    f"{n8['layer'] / (n8['layer'] + n256['router'] - n8['router']):.0%} of N=8's tokens/s.")
                bw = ours.get("stream_copy")
                if bw:
                    passes = 1 if mode == "fwd" else 4  # fwd reads W; backward reads W again and reads + writes dW
                    weight_bytes = 256 * 2 * 256 * 256 * 4 * passes
                    floor_ms = weight_bytes / bw["bytes_per_second"] * 1e3
                    add(f"  Bound 2, memory: the 256 experts hold {256 * 2 * 256 * 256 * 4 / 2**20:.0f} MiB of weights "
                        f"(N=8: 4 MiB, cache-resident); {mode} moves them {passes} time(s), "
                        f"{weight_bytes / 2**20:.0f} MiB, which at `stream_copy`'s "
                        f"{bw['bytes_per_second'] / 1e9:.1f} GB/s takes {floor_ms:.1f} ms, against "
                        f"{n8['layer'] * 1.25:.1f} ms for the whole call at 80% of N=8's rate.")
                continue
            if target == "T4":
                gemm_allocs = ours.get(f"gemm/{mode}/{c}", {}).get("allocs_per_call")
                add(f"- **T4 {c} {mode}**: {fmt(row['allocs'], 1)} allocations and {fmt(row['faults'], 1)} minor "
                    f"faults per call; the GEMM reference alone (buffers kept, shapes fixed) allocates "
                    f"{fmt(gemm_allocs, 1)} per call: the GEMM engine's packing buffers.")
                continue
            need = row["need_gf"] if target == "T1" else SHARE_TARGETS[c] * peak_gf
            ideal_ms = b["layer"] * row["moe_gf"] / need
            add(f"- **{target} {c} {mode}**: {fmt(row['moe_gf'], 1)} GFLOP/s against {fmt(need, 1)} needed "
                f"({row['moe_gf'] / need:.0%}); a call takes {b['layer']:.1f} ms, the target {ideal_ms:.1f} ms. "
                f"GEMM {b['gemm']:.1f} ms, GELU {b['gelu']:.1f} ms, router "
                f"{b['router']:.1f}, dispatch {b['dispatch']:.1f}, remainder {b['rest']:.1f} ms.")
    add("")

    # nn
    if nn:
        add("## Conv2d and attention")
        add("")
        add("`benchmarks/nn_bench.cpp`. tokens/s counts images for Conv2d, tokens for attention. Conv2d FLOPs: "
            "2·images·out·in·k²·out_h·out_w; attention: the four projections 8·T·d² plus QKᵀ and PV over the "
            "full S x S blocks 4·B·S²·d (the code computes them whole and masks); fwd_bwd 3x.")
        add("")
        add("| benchmark | ms per call | rows/s | GFLOP/s |")
        add("|---|---:|---:|---:|")
        for name, run in nn.items():
            add(f"| `{name}` | {ms(run):.2f} | {fmt(run.get('tokens_per_s'))} | {fmt(run.get('gflops'), 1)} |")
        add("")

    if system_doc:
        add("## PyTorch with the system BLAS")
        add("")
        sblas = ", ".join(os.path.basename(b) for b in system_doc["context"].get("blas", [])) or "unknown"
        add(f"Debian's python3-torch as `scripts/install-deps.sh` installs it calls `libblas.so.3` for its GEMMs; "
            f"here that is: {sblas} (netlib's reference BLAS). The tables above run PyTorch on OpenBLAS "
            "(OpenMP build) instead; this is the peer as installed (one repeat):")
        add("")
        add("| config | mode | PyTorch tokens/s (system BLAS) | GFLOP/s | moe / this |")
        add("|---|---|---:|---:|---:|")
        for x in system_doc["results"]:
            row = table.get((x["config"], x["mode"]))
            rel = row["moe_tps"] / x["tokens_per_s"] if row and row["moe_tps"] else None
            add(f"| {x['config']} | {x['mode']} | {fmt(x['tokens_per_s'])} | {fmt(x['gflops'], 2)} | "
                f"{'n/a' if rel is None else format(rel, '.1f') + 'x'} |")
        add("")

    notes_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "perf_notes.md")
    if os.path.exists(notes_path):
        with open(notes_path) as f:
            add(f.read().rstrip())
        add("")

    add("## Reproduce")
    add("")
    add("```")
    add("scripts/bench.sh            # builds build/bench (Release, MOE_NATIVE=ON), runs everything, writes this file")
    add("scripts/bench.sh --quick    # one short repetition: checks the pipeline")
    add("build/bench/bin/moe_bench_native --benchmark_filter='moe_layer/.*/C1'")
    add("MOE_PEER_BLAS=system scripts/bench.sh   # PyTorch on the system BLAS for every config")
    add("```")
    add("")
    os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
    with open(args.md, "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
