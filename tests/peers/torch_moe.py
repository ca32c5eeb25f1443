#!/usr/bin/python3
"""Cross-check of moe::MoELayer against an MoE layer written the plain way in PyTorch.

    torch_moe.py DIR

DIR holds what tests/peers/moe_crosscheck.cpp wrote ("moe_crosscheck write DIR"): for each config,
<config>_inputs.safetensors (the layer's state dict, x, dy, the experts the layer selected for each unpadded
row, as float; the config in the metadata, padding included) and <config>_outputs.safetensors (y, dx, grad.<parameter>, aux, and for configs
with an aux loss aux_only.dx and aux_only.grad.router.weight: the gradients of the aux loss alone).

1. Forward direction: loads the state dict into the PyTorch module (load_state_dict strict=True), runs
   forward and backward of  sum(y * dy) + aux  in float32 and in float64, checks that the selected
   experts are ours (else it reports a routing difference, not a numeric one) and compares every tensor.
2. Reverse direction: for each config, initialises the PyTorch module with PyTorch's own initialisation,
   draws x and dy, and writes torch_<config>_model.safetensors (its state_dict) and
   torch_<config>_data.safetensors (x, dy, selected experts and the float64 results, rounded to float32),
   for "moe_crosscheck check-torch DIR", which loads the model with moe::load_module and compares.

The error of a tensor a against the reference b is  max|a - b| / max(max|b|, 1e-30): a norm-wise error in
units of the tensor's own scale. Element-wise relative errors are meaningless where an element is near
zero (most gradients have such elements, and float32 rounding scales with the magnitude of the terms
summed, not of the sum); the aux loss, whose gradient is small beside the task gradient in
router.weight, is compared on its own through the aux_only tensors. Exits 1 if an error exceeds the
tolerance (1e-5), a selection differs, or a tensor is missing.
"""

import argparse
import copy
import math
import pathlib
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as error:  # a failure, not a skip: CI installs python3-torch (scripts/install-deps.sh)
    print(f"torch_moe.py: PyTorch is missing ({error}); install python3-torch (scripts/install-deps.sh)",
          file=sys.stderr)
    sys.exit(1)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402

TINY = 1e-30
# The reverse direction redraws x until every row's selection is this far from a tie: 100 times the float32
# rounding of scores <= 1, and reachable with 256 experts (DeepSeek-V3's), whose best scores lie close together.
NEAR_TIE = 1e-5


class Config:
    """The layer's hyper-parameters, from the metadata moe_crosscheck writes."""

    def __init__(self, meta):
        self.name = meta["config"]
        self.router = meta["router"]  # softmax | sigmoid | expert_choice
        self.router_capacity_factor = float(meta["router_capacity_factor"])  # expert_choice only
        self.num_experts = int(meta["num_experts"])
        self.k = int(meta["k"])
        self.renormalize = meta["renormalize"] == "true"
        self.num_shared = int(meta["num_shared_experts"])
        self.d_model = int(meta["d_model"])
        self.hidden = int(meta["hidden"])
        self.tokens = int(meta["tokens"])
        self.balancer = meta["balancer"]  # none | switch | sequence | sequence_bias (+ aux-loss-free bias)
        self.alpha = float(meta["alpha"])
        self.sequence_length = int(meta["sequence_length"])
        self.scaling = float(meta["routed_scaling_factor"])
        self.n_group = int(meta["n_group"])
        self.topk_group = int(meta["topk_group"])
        self.fraction = meta["fraction"]  # of_assignments | of_tokens
        self.count = meta["count"]  # dispatched | score_top_k
        self.capacity_factor = float(meta["capacity_factor"])
        self.drop_policy = meta["drop_policy"]  # token_order | choice_order
        self.left_padding = [int(p) for p in meta["left_padding"].split(",")] if meta["left_padding"] else []
        if (self.router not in ("softmax", "sigmoid", "expert_choice")
                or self.balancer not in ("none", "switch", "sequence", "sequence_bias")
                or self.fraction not in ("of_assignments", "of_tokens")
                or self.count not in ("dispatched", "score_top_k")
                or self.drop_policy not in ("token_order", "choice_order")):
            raise ValueError(f"{self.name}: unknown router, balancer, fraction, count or drop policy in {meta}")

    def kept_rows(self):
        """The rows the padding mask leaves: each sequence starts with left_padding[s] pads."""
        if not self.left_padding:
            return torch.arange(self.tokens)
        return torch.tensor([s * self.sequence_length + i for s, pads in enumerate(self.left_padding)
                             for i in range(pads, self.sequence_length)])


class FeedForward(nn.Module):
    def __init__(self, d_model, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU, PyTorch's default


class Balancer(nn.Module):
    """Holds the aux-loss-free bias (DeepSeek-V3), as moe's layer names it: balancer.expert_bias."""

    def __init__(self, num_experts):
        super().__init__()
        self.register_buffer("expert_bias", torch.randn(num_experts) * 0.05)


class MoE(nn.Module):
    """Router, (group-limited) top-K or expert choice, capacity, a loop over experts with index_add_, shared
    experts, the balance loss, over the rows a padding mask leaves."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(cfg.d_model, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(cfg.d_model, cfg.hidden) for _ in range(cfg.num_experts))
        self.shared_experts = nn.ModuleList(FeedForward(cfg.d_model, cfg.hidden) for _ in range(cfg.num_shared))
        if cfg.balancer == "sequence_bias":
            self.balancer = Balancer(cfg.num_experts)

    def select(self, scores):
        """Top-K of score + bias, within the topk_group best groups (a group's score: the sum of its two best
        values with a bias, else its best), the others masked with -inf. Returns the experts and the masked
        values and group scores (for the tie margins)."""
        cfg = self.cfg
        values = scores + self.balancer.expert_bias if cfg.balancer == "sequence_bias" else scores
        group_scores = None
        if cfg.n_group > 1:
            grouped = values.view(values.shape[0], cfg.n_group, -1)
            if cfg.balancer == "sequence_bias":
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
            else:
                group_scores = grouped.max(dim=-1).values
            chosen = group_scores.topk(cfg.topk_group, dim=-1).indices
            allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, chosen, True)
            allowed = allowed.repeat_interleave(cfg.num_experts // cfg.n_group, dim=1)
            values = values.masked_fill(~allowed, -math.inf)
        return values.topk(cfg.k, dim=-1).indices, values, group_scores

    def expert_choice(self, scores):
        """Expert-choice routing (Zhou et al. 2022): expert e takes the C tokens of highest score in column e,
        C = ceil(capacity_factor T K / N) within [1, T], ties to the lower token (a stable descending sort).
        Returns each token's experts, best score first (ties to the lower expert), padded with -1 to the most
        experts any token got, and C."""
        cfg = self.cfg
        tokens, n = scores.shape
        capacity = min(tokens, max(1, math.ceil(cfg.router_capacity_factor * tokens * cfg.k / n)))
        taken = torch.sort(scores.detach().T, dim=1, descending=True, stable=True).indices[:, :capacity]
        chosen = torch.zeros(tokens, n, dtype=torch.bool)
        chosen[taken, torch.arange(n).unsqueeze(1)] = True
        ranked = torch.sort(scores.detach().masked_fill(~chosen, -math.inf), dim=1, descending=True, stable=True)
        width = max(1, int(chosen.sum(dim=1).max()))
        selected = ranked.indices[:, :width].masked_fill(~torch.isfinite(ranked.values[:, :width]), -1)
        return selected, capacity

    def kept_assignments(self, selected):
        """[T x K] booleans: each expert keeps its first `capacity` assignments, in token order or first
        choices first (GShard); all without a capacity factor."""
        cfg = self.cfg
        tokens, k = selected.shape
        keep = torch.ones(tokens, k, dtype=torch.bool)
        if cfg.capacity_factor == 0:
            return keep
        capacity = max(1, math.ceil(cfg.capacity_factor * tokens * k / cfg.num_experts))
        taken = [0] * cfg.num_experts
        order = ([(t, j) for t in range(tokens) for j in range(k)] if cfg.drop_policy == "token_order"
                 else [(t, j) for j in range(k) for t in range(tokens)])
        for t, j in order:
            e = int(selected[t, j])
            keep[t, j] = taken[e] < capacity
            taken[e] += 1
        return keep

    def forward(self, x_all):
        cfg = self.cfg
        rows = cfg.kept_rows()
        x = x_all[rows]
        logits = self.router(x)
        scores = logits.sigmoid() if cfg.router == "sigmoid" else logits.softmax(dim=-1)
        if cfg.router == "expert_choice":
            selected, capacity = self.expert_choice(scores)
            values, group_scores = scores, None
        else:
            selected, values, group_scores = self.select(scores)
            capacity = None
        top = scores.gather(1, selected.clamp(min=0)) * (selected >= 0)  # an empty slot (-1) has gate 0
        gates = top / top.sum(dim=-1, keepdim=True) if cfg.renormalize else top
        gates = gates * cfg.scaling
        keep = self.kept_assignments(selected)
        y = torch.zeros(x.shape[0], cfg.d_model, dtype=x.dtype)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where((selected == e) & keep)
            if token.numel():
                y.index_add_(0, token, gates[token, slot].unsqueeze(1) * expert(x[token]))
        for shared in self.shared_experts:
            y = y + shared(x)
        y_all = torch.zeros(x_all.shape[0], cfg.d_model, dtype=x.dtype).index_put((rows,), y)
        margins = {"scores": scores.detach(), "values": values.detach(), "groups": group_scores, "capacity": capacity}
        return y_all, selected, self.balance_loss(scores, selected, rows), margins

    def balance_loss(self, scores, selected, rows):
        """alpha N sum_i f_i P_i per sequence of the unpadded rows (Switch: the batch is one sequence), averaged
        over the sequences that have rows: f_i the share of the sequence's assignments (L K of them, or L with
        f_i = c_i / T) that went to i, counted over the selection or the unbiased top-K of the scores
        (DeepSeek-V3 eq. 18), P_i its mean normalised score."""
        cfg = self.cfg
        if cfg.balancer == "none":
            return torch.zeros((), dtype=scores.dtype)
        length = cfg.tokens if cfg.balancer == "switch" else cfg.sequence_length
        n = scores.shape[1]
        sequences = cfg.tokens // length
        sequence = rows // length
        counted = scores.topk(cfg.k, dim=-1).indices if cfg.count == "score_top_k" else selected
        counts = torch.zeros(sequences, n, dtype=scores.dtype).index_add_(
            0, sequence, F.one_hot(counted, n).to(scores.dtype).sum(dim=1))
        lengths = torch.bincount(sequence, minlength=sequences).to(scores.dtype)
        present = lengths > 0
        per_row = cfg.k if cfg.fraction == "of_assignments" else 1
        f = counts[present] / (per_row * lengths[present].unsqueeze(1))
        p = scores / scores.sum(dim=-1, keepdim=True)
        big_p = torch.zeros(sequences, n, dtype=scores.dtype).index_add(0, sequence, p)[present]
        big_p = big_p / lengths[present].unsqueeze(1)
        return cfg.alpha * n * (f * big_p).sum(dim=1).mean()


def run(model, x, dy, dtype):
    """Forward and backward of sum(y * dy) + aux in `dtype`; the results, the selection and the scores."""
    m = copy.deepcopy(model).to(dtype)
    xx = x.to(dtype).clone().requires_grad_(True)
    y, selected, aux, margins = m(xx)
    ((y * dy.to(dtype)).sum() + aux).backward()
    out = {"y": y.detach(), "dx": xx.grad, "aux": aux.detach()}
    for name, p in m.named_parameters():
        out["grad." + name] = p.grad if p.grad is not None else torch.zeros_like(p)
    if model.cfg.balancer != "none":
        m.zero_grad(set_to_none=True)
        xx = x.to(dtype).clone().requires_grad_(True)
        _, _, aux, _ = m(xx)
        aux.backward()
        out["aux_only.dx"] = xx.grad
        out["aux_only.grad.router.weight"] = m.router.weight.grad
    return out, selected, margins["scores"]


def run_margins(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double())[3]


def gap(values, count):
    """The smallest gap, over rows, between consecutive values among each row's best min(count + 1, N),
    ignoring masked (-inf) values."""
    ranked = values.sort(dim=-1, descending=True).values[:, : min(count + 1, values.shape[1])]
    if ranked.shape[1] < 2:
        return math.inf
    gaps = ranked[:, :-1] - ranked[:, 1:]
    gaps = gaps[torch.isfinite(gaps)]
    return gaps.min().item() if gaps.numel() else math.inf


def tie_margin(margins, cfg):
    """How far the selection and its order are from a tie: in the scores (the unbiased top-K), in score + bias
    within the chosen groups, and in the group scores."""
    if cfg.router == "expert_choice":  # each expert's top C + 1 tokens, and each token's order of experts
        n = margins["scores"].shape[1]
        return min(gap(margins["scores"].T, margins["capacity"]), gap(margins["scores"], n - 1))
    margin = min(gap(margins["scores"], cfg.k), gap(margins["values"], cfg.k))
    if margins["groups"] is not None:
        margin = min(margin, gap(margins["groups"], cfg.topk_group))
    return margin


def rel_err(a, b):
    if tuple(a.shape) != tuple(b.shape):
        return math.inf
    if b.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    return (a - b).abs().max().item() / max(b.abs().max().item(), TINY)


def selection_report(ours, theirs, scores):
    """None if equal, else where the first difference is."""
    ours = ours.to(torch.int64)
    if torch.equal(ours, theirs):
        return None
    if ours.shape != theirs.shape:
        return f"moe selected {list(ours.shape)} experts, torch {list(theirs.shape)}"
    t = int((ours != theirs).any(dim=1).nonzero()[0])
    return f"token {t}: moe selected {ours[t].tolist()}, torch {theirs[t].tolist()}, scores {scores[t].tolist()}"


def forward_direction(directory, tolerance):
    inputs = sorted(directory.glob("*_inputs.safetensors"))
    if not inputs:
        print(f"torch_moe.py: no *_inputs.safetensors in {directory}; run `moe_crosscheck write {directory}` first",
              file=sys.stderr)
        return False, []
    ok = True
    configs = []
    summary = []
    print(f"{'config':<22} {'tensor':<34} {'shape':<10} {'vs torch f32':>12} {'vs torch f64':>12}")
    for path in inputs:
        tensors, meta = safetensors_io.load(path)
        cfg = Config(meta)
        configs.append((cfg, meta))
        outputs, _ = safetensors_io.load(path.with_name(f"{cfg.name}_outputs.safetensors"))
        x, dy, selected = tensors.pop("x"), tensors.pop("dy"), tensors.pop("selected")
        model = MoE(cfg)
        model.load_state_dict(tensors, strict=True)

        worst = {torch.float32: 0.0, torch.float64: 0.0}
        failures = []
        results = {}
        for dtype in (torch.float32, torch.float64):
            results[dtype], theirs, scores = run(model, x, dy, dtype)
            difference = selection_report(selected, theirs, scores)
            if difference:
                failures.append(f"routing difference ({dtype}): {difference}")
        margin = tie_margin(run_margins(model, x), cfg)
        expected = set(results[torch.float64])
        for name in sorted(expected - set(outputs)):
            failures.append(f"moe_crosscheck wrote no {name}")
        for name in sorted(set(outputs) - expected):
            failures.append(f"torch has no counterpart of {name}")
        for name in sorted(expected & set(outputs)):
            errors = {dtype: rel_err(outputs[name], results[dtype][name]) for dtype in results}
            for dtype, e in errors.items():
                worst[dtype] = max(worst[dtype], e)
            flag = "" if max(errors.values()) <= tolerance else "  FAIL"
            shape = "x".join(map(str, outputs[name].shape))
            print(f"{cfg.name:<22} {name:<34} {shape:<10} {errors[torch.float32]:12.3e} "
                  f"{errors[torch.float64]:12.3e}{flag}")
            if flag:
                failures.append(f"{name}: error {max(errors.values()):.3e} > {tolerance:g}")
        for failure in failures:
            print(f"{cfg.name}: {failure}")
        ok = ok and not failures
        summary.append((cfg.name, margin, worst[torch.float32], worst[torch.float64], not failures))
    print()
    print(f"{'config':<22} {'tie margin':>10} {'max err f32':>12} {'max err f64':>12}  result")
    for name, margin, w32, w64, passed in summary:
        print(f"{name:<22} {margin:10.2e} {w32:12.3e} {w64:12.3e}  {'ok' if passed else 'FAIL'}")
    return ok, configs


def reverse_direction(directory, configs):
    """PyTorch-initialised models and PyTorch's results, for moe_crosscheck check-torch."""
    for index, (cfg, meta) in enumerate(configs):
        torch.manual_seed(20240 + index)
        model = MoE(cfg)
        for _ in range(100):
            x = torch.randn(cfg.tokens, cfg.d_model)
            if tie_margin(run_margins(model, x), cfg) > NEAR_TIE:
                break
        else:
            raise RuntimeError(f"{cfg.name}: no draw of x without a near tie in 100 tries")
        dy = torch.randn(cfg.tokens, cfg.d_model)
        reference, selected, _ = run(model, x, dy, torch.float64)
        data = {name: t.detach().float() for name, t in reference.items()}
        data.update(x=x, dy=dy, selected=selected.float())
        safetensors_io.save(directory / f"torch_{cfg.name}_model.safetensors", model.state_dict(), meta)
        safetensors_io.save(directory / f"torch_{cfg.name}_data.safetensors", data, meta)
    print(f"\nwrote torch_<config>_{{model,data}}.safetensors for {len(configs)} configs "
          f"(check with `moe_crosscheck check-torch {directory}`)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ok, configs = forward_direction(args.dir, args.tolerance)
    if configs:
        reverse_direction(args.dir, configs)
    print("torch_moe.py:", "all configs agree" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
