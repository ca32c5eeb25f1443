#!/usr/bin/env python3
"""The MoE layers of benchmarks/common.hpp as an eager PyTorch module written the usual way.

Router nn.Linear (no bias), softmax, topk; a loop over the experts that indexes the tokens routed to
each, runs the expert (fc1, GELU, fc2, with biases) on them, scales by the gates and index_add_s the
result into the output. float32, torch.set_num_threads(THREADS) (default 2).

Timing: untimed warm-up calls (at least `warmup` of them and `min_time` seconds), then `repeats` timed repeats, each running whole calls until at least
`min_time` seconds have passed; the rate of a repeat is tokens * calls / seconds, and the result is the
median repeat. fwd runs under torch.no_grad() (the peer's fastest forward); fwd_bwd runs forward with
autograd and out.backward(dy), gradients accumulating as the C++ layer's do.

With --gemm, also the GEMM reference of benchmarks/moe_bench.cpp in torch: per expert, exactly T*K/N
rows, its own weights, H = X W1^T, Y = H W2^T (fwd_bwd adds dW2 += dY^T H, dH = dY W2, dW1 += dH^T X,
dX = dH W1), experts one after the other, each product on all threads of the BLAS: what PyTorch's BLAS
reaches on the experts' shapes (records with mode gemm_fwd, gemm_fwd_bwd).

With --reference DIR, a config whose DIR/reference_<config>.safetensors exists (written by
build/bench/bin/moe_reference: our layer's weights, one input batch, output gradient, and what our layer
computed from them) runs on those weights and inputs, and its output, input gradient and router weight
gradient are checked against ours (record "check"): neither side may be fast by computing less.

Prints one JSON document: the machine and library facts (torch version, threads, the BLAS library
loaded, read from /proc/self/maps, and OpenBLAS's own report of its kernel, threads and build when that is
the BLAS) and one record per (config, mode) with tokens_per_s, gflops (the active expert FLOPs of
benchmarks/common.hpp: 4*T*K*d*h forward, 3x that forward+backward) and faults_per_call (minor page
faults of the timed calls, getrusage).

With --device cuda the model and the data live on the GPU and every call ends with
torch.cuda.synchronize() (scripts/gpu-check.sh): no host transfers are timed.

    /usr/bin/python3 benchmarks/peers/pytorch_moe.py [--configs C1,C2] [--modes fwd,fwd_bwd] [--out FILE]
                                                     [--device cpu|cuda]
"""

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch
from torch import nn

# name, T, d, h, N, K: the same list as benchmarks/common.hpp.
CONFIGS = [
    ("C1", 4096, 512, 1024, 8, 2),
    ("C2", 4096, 256, 128, 64, 6),
    ("C3", 256, 512, 512, 2, 1),
    ("C4", 4096, 768, 3072, 4, 4),
    ("N8", 4096, 256, 256, 8, 2),
    ("N256", 4096, 256, 256, 256, 2),
]


class Expert(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class MoE(nn.Module):
    def __init__(self, d, h, n, k):
        super().__init__()
        self.k = k
        self.router = nn.Linear(d, n, bias=False)
        self.experts = nn.ModuleList(Expert(d, h) for _ in range(n))

    def forward(self, x):
        scores = torch.softmax(self.router(x), dim=-1)
        gates, chosen = torch.topk(scores, self.k, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)
            if token.numel() == 0:
                continue
            y = expert(x[token]) * gates[token, slot].unsqueeze(-1)
            out.index_add_(0, token, y)
        return out


def blas_libraries():
    """The BLAS/LAPACK shared objects this process has mapped (which one PyTorch's GEMMs call)."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path)
                if ("blas" in name or "blis" in name or "mkl" in name) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def openblas_info():
    """OpenBLAS's own account of itself, when it is the BLAS this process loaded: the kernel it picked
    for this CPU (openblas_get_corename), its threads and threading model, and its build options."""
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # the BLAS is loaded by the first product
    for path in blas_libraries():
        if "openblas" not in os.path.basename(path):
            continue
        library = ctypes.CDLL(path)
        library.openblas_get_corename.restype = ctypes.c_char_p
        library.openblas_get_config.restype = ctypes.c_char_p
        return {
            "library": path,
            "corename": library.openblas_get_corename().decode(),
            "config": library.openblas_get_config().decode().strip(),
            "num_threads": library.openblas_get_num_threads(),
            "parallel": {0: "sequential", 1: "pthreads", 2: "OpenMP"}.get(library.openblas_get_parallel(), "unknown"),
        }
    return None


def read_safetensors(path):
    """name -> float32 tensor; the files moe_reference writes (F32 only)."""
    with open(path, "rb") as f:
        header_bytes = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_bytes))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"pytorch_moe.py: {path}: tensor {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32).reshape(info["shape"])
    return tensors


CHECK_TOLERANCE = 1e-3  # largest difference over the largest magnitude; a skipped product is O(1) off


def relative_error(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()


def check_against(model, reference):
    """Runs the model on the reference's input and output gradient and compares its output, input gradient
    and router weight gradient with ours. Tokens whose top-K sets differ (a near tie of two scores rounded
    differently) are left out of the output and input gradient comparison and counted; the router gradient
    sums over all tokens, so it is compared only when every token's set agrees."""
    x = reference["input"].clone().requires_grad_(True)
    out = model(x)
    out.backward(reference["grad_output"])
    with torch.no_grad():
        scores = torch.softmax(model.router(reference["input"]), dim=-1)
        chosen = torch.topk(scores, model.k, dim=-1).indices.sort(dim=-1).values
        ours_chosen = reference["routing.experts"].long().sort(dim=-1).values
        same = (chosen == ours_chosen).all(dim=-1)
        check = {
            "tokens": int(same.numel()),
            "tokens_routed_differently": int((~same).sum()),
            "output": relative_error(out.detach()[same], reference["output"][same]),
            "grad_input": relative_error(x.grad[same], reference["grad_input"][same]),
            "grad_router_weight": relative_error(model.router.weight.grad, reference["grad.router.weight"])
            if bool(same.all()) else None,
            "tolerance": CHECK_TOLERANCE,
        }
    model.zero_grad(set_to_none=True)
    errors = [check[k] for k in ("output", "grad_input", "grad_router_weight") if check[k] is not None]
    # A handful of near ties is rounding; more means the two layers route differently.
    check["passed"] = max(errors) <= CHECK_TOLERANCE and check["tokens_routed_differently"] <= check["tokens"] // 100
    return check


def gemm_reference(t, d, h, n, k, backward):
    """A call running the expert products of the GEMM reference (see the module docstring)."""
    r = t * k // n
    experts = [dict(x=torch.randn(r, d), dy=torch.randn(r, d), w1=torch.randn(h, d) / d ** 0.5,
                    w2=torch.randn(d, h) / h ** 0.5, dw1=torch.zeros(h, d), dw2=torch.zeros(d, h))
               for _ in range(n)]

    def call():
        with torch.no_grad():
            for e in experts:
                hidden = torch.mm(e["x"], e["w1"].t())
                torch.mm(hidden, e["w2"].t())
                if backward:
                    e["dw2"].addmm_(e["dy"].t(), hidden)
                    dhidden = torch.mm(e["dy"], e["w2"])
                    e["dw1"].addmm_(dhidden.t(), e["x"])
                    torch.mm(dhidden, e["w1"])

    return call


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_calls(call, tokens, warmup, repeats, min_time):
    """The rates of the repeats, and the minor page faults per timed call."""
    start = time.perf_counter()
    calls = 0
    while calls < warmup or time.perf_counter() - start < min_time:  # warm-up: both at least
        call()
        calls += 1
    rates = []
    faults, timed_calls = minor_faults(), 0
    for _ in range(repeats):
        calls = 0
        start = time.perf_counter()
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rates.append(tokens * calls / elapsed)
        timed_calls += calls
    return rates, (minor_faults() - faults) / timed_calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(c[0] for c in CONFIGS))
    parser.add_argument("--modes", default="fwd,fwd_bwd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per repeat, at least one call")
    parser.add_argument("--gemm", action="store_true", help="also time the GEMM reference in torch")
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    parser.add_argument("--reference", help="folder of moe_reference's reference_<config>.safetensors")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    torch.set_num_threads(args.threads)
    openblas = openblas_info()
    if openblas:
        print(f"pytorch: OpenBLAS {openblas['library']}, core {openblas['corename']}, {openblas['parallel']}, "
              f"{openblas['num_threads']} threads", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    wanted = args.configs.split(",")
    unknown = [name for name in wanted if name not in {c[0] for c in CONFIGS}]
    if unknown:
        sys.exit(f"pytorch_moe.py: unknown config(s) {unknown}")
    modes = args.modes.split(",")

    results = []
    for name, t, d, h, n, k in CONFIGS:
        if name not in wanted:
            continue
        model = MoE(d, h, n, k)
        x = torch.randn(t, d)
        dy = torch.randn(t, d)
        check = None
        reference_path = os.path.join(args.reference, f"reference_{name}.safetensors") if args.reference else None
        if reference_path and os.path.exists(reference_path):
            reference = read_safetensors(reference_path)
            model.load_state_dict({key: value for key, value in reference.items() if key in model.state_dict()},
                                  strict=True)
            x, dy = reference["input"], reference["grad_output"]
            check = check_against(model, reference)
            del reference
            print(f"pytorch {name} check against moe: {'passed' if check['passed'] else 'FAILED'} "
                  f"(relative error: output {check['output']:.1e}, grad_input {check['grad_input']:.1e}, "
                  f"router grad {check['grad_router_weight'] if check['grad_router_weight'] is None else format(check['grad_router_weight'], '.1e')}; "
                  f"{check['tokens_routed_differently']} of {check['tokens']} tokens routed differently)",
                  file=sys.stderr, flush=True)
        model, x, dy = model.to(device), x.to(device), dy.to(device)
        forward_flops = 4.0 * t * k * d * h

        def forward():
            with torch.no_grad():
                model(x)
            synchronize()

        def forward_backward():
            model(x).backward(dy)
            synchronize()

        for mode in modes:
            call = {"fwd": forward, "fwd_bwd": forward_backward}[mode]
            flops = forward_flops * (3.0 if mode == "fwd_bwd" else 1.0)
            rates, faults_per_call = time_calls(call, t, args.warmup, args.repeats, args.min_time)
            tokens_per_s = statistics.median(rates)
            record = {
                "config": name, "mode": mode, "tokens": t, "d": d, "h": h, "experts": n, "k": k,
                "tokens_per_s": tokens_per_s, "gflops": tokens_per_s / t * flops * 1e-9,
                "repeats_tokens_per_s": rates, "faults_per_call": faults_per_call, "check": check,
            }
            results.append(record)
            print(f"pytorch {name} {mode}: {tokens_per_s:.1f} tokens/s, {record['gflops']:.2f} GFLOP/s",
                  file=sys.stderr, flush=True)
        if args.gemm:
            del model
            for mode in modes:
                backward = mode == "fwd_bwd"
                call = gemm_reference(t, d, h, n, k, backward)
                flops = forward_flops * (3.0 if backward else 1.0)
                rates, _ = time_calls(call, t, args.warmup, args.repeats, args.min_time)
                tokens_per_s = statistics.median(rates)
                results.append({
                    "config": name, "mode": "gemm_" + mode, "tokens": t, "d": d, "h": h, "experts": n, "k": k,
                    "tokens_per_s": tokens_per_s, "gflops": tokens_per_s / t * flops * 1e-9,
                    "repeats_tokens_per_s": rates,
                })
                print(f"pytorch GEMM reference {name} {mode}: {results[-1]['gflops']:.2f} GFLOP/s",
                      file=sys.stderr, flush=True)

    document = {
        "context": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "blas": blas_libraries(),
            "openblas": openblas,
            "environment": {key: os.environ.get(key) for key in
                            ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                             "GLIBC_TUNABLES")},
            "cpu_capability": torch.backends.cpu.get_cpu_capability()
            if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability") else None,
            "warmup": args.warmup, "repeats": args.repeats, "min_time": args.min_time,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        },
        "results": results,
    }
    text = json.dumps(document, indent=1)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
