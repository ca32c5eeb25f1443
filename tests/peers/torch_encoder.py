#!/usr/bin/python3
"""Cross-check of moe::TransformerEncoder against PyTorch's nn.TransformerEncoder.

    torch_encoder.py DIR

DIR holds what tests/peers/encoder_crosscheck.cpp wrote ("encoder_crosscheck write DIR"): for each config,
encoder_<config>_inputs.safetensors (the encoder's state dict, x and dy [batch x seq x d], the sequence
lengths; the config in the metadata) and encoder_<config>_outputs.safetensors (y, dx, grad.<parameter>).

Builds nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0,
activation, batch_first=True, norm_first), num_layers, norm=LayerNorm if final_norm), loads the state dict
(strict), runs sum(y * dy) with src_key_padding_mask (True after each sequence's length) and, for causal
configs, the mask of nn.Transformer.generate_square_subsequent_mask, in float32 and in float64, and compares
every tensor. The error of a against the reference b is max|a - b| / max(max|b|, 1e-30), as in
torch_moe.py. Exits 1 if an error exceeds the tolerance (1e-5) or a tensor is missing.
"""

import argparse
import pathlib
import sys

try:
    import torch
    import torch.nn as nn
except ImportError as error:  # a failure, not a skip: CI installs python3-torch (scripts/install-deps.sh)
    print(f"torch_encoder.py: PyTorch is missing ({error}); install python3-torch (scripts/install-deps.sh)",
          file=sys.stderr)
    sys.exit(1)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402

TINY = 1e-30


def build(meta):
    layer = nn.TransformerEncoderLayer(int(meta["d_model"]), int(meta["num_heads"]), int(meta["dim_feedforward"]),
                                       dropout=0.0, activation=meta["activation"], batch_first=True,
                                       norm_first=meta["norm_first"] == "true")
    norm = nn.LayerNorm(int(meta["d_model"])) if meta["final_norm"] == "true" else None
    return nn.TransformerEncoder(layer, int(meta["num_layers"]), norm=norm, enable_nested_tensor=False)


def run(model, x, dy, lengths, causal, dtype):
    m = model.to(dtype)
    m.train()  # dropout is 0; training mode keeps PyTorch off its inference fast path
    m.zero_grad(set_to_none=True)
    xx = x.to(dtype).clone().requires_grad_(True)
    seq_len = x.shape[1]
    padding = torch.arange(seq_len)[None, :] >= lengths.to(torch.int64)[:, None]
    mask = torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=1) if causal else None
    y = m(xx, mask=mask, src_key_padding_mask=padding)
    (y * dy.to(dtype)).sum().backward()
    out = {"y": y.detach(), "dx": xx.grad}
    for name, p in m.named_parameters():
        out["grad." + name] = p.grad if p.grad is not None else torch.zeros_like(p)
    return out


def rel_err(a, b):
    if tuple(a.shape) != tuple(b.shape):
        return float("inf")
    a, b = a.double(), b.double()
    return (a - b).abs().max().item() / max(b.abs().max().item(), TINY)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted(args.dir.glob("encoder_*_inputs.safetensors"))
    if not paths:
        print(f"torch_encoder.py: no encoder_*_inputs.safetensors in {args.dir}; run `encoder_crosscheck write "
              f"{args.dir}` first", file=sys.stderr)
        return 1
    ok = True
    summary = []
    print(f"{'config':<26} {'tensor':<42} {'vs torch f32':>12} {'vs torch f64':>12}")
    for path in paths:
        tensors, meta = safetensors_io.load(path)
        name = meta["config"]
        outputs, _ = safetensors_io.load(path.with_name(f"encoder_{name}_outputs.safetensors"))
        x, dy, lengths = tensors.pop("x"), tensors.pop("dy"), tensors.pop("lengths")
        model = build(meta)
        model.load_state_dict(tensors, strict=True)
        causal = meta["causal"] == "true"
        results = {dtype: run(model, x, dy, lengths, causal, dtype) for dtype in (torch.float32, torch.float64)}
        failures = []
        expected = set(results[torch.float64])
        failures += [f"encoder_crosscheck wrote no {n}" for n in sorted(expected - set(outputs))]
        failures += [f"torch has no counterpart of {n}" for n in sorted(set(outputs) - expected)]
        worst = {dtype: 0.0 for dtype in results}
        for tensor_name in sorted(expected & set(outputs)):
            errors = {dtype: rel_err(outputs[tensor_name], results[dtype][tensor_name]) for dtype in results}
            for dtype, e in errors.items():
                worst[dtype] = max(worst[dtype], e)
            flag = "" if max(errors.values()) <= args.tolerance else "  FAIL"
            if tensor_name in ("y", "dx") or flag:
                print(f"{name:<26} {tensor_name:<42} {errors[torch.float32]:12.3e} {errors[torch.float64]:12.3e}{flag}")
            if flag:
                failures.append(f"{tensor_name}: error {max(errors.values()):.3e} > {args.tolerance:g}")
        for failure in failures:
            print(f"{name}: {failure}")
        ok = ok and not failures
        summary.append((name, len(expected), worst[torch.float32], worst[torch.float64], not failures))
    print()
    print(f"{'config':<26} {'tensors':>7} {'max err f32':>12} {'max err f64':>12}  result")
    for name, count, w32, w64, passed in summary:
        print(f"{name:<26} {count:7d} {w32:12.3e} {w64:12.3e}  {'ok' if passed else 'FAIL'}")
    print("torch_encoder.py:", "all configs agree" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
