#!/usr/bin/env python3
"""The whole-model peer of benchmarks/lm_bench.cpp: expert_load_heatmaps' aux-loss-based DeepSeekMoE decoder
at its `quick` preset, written in PyTorch the usual way, and the same training step.

Model (examples/expert_load_heatmaps/model.hpp, include/moe/nn/transformer.hpp): token embedding; one dense
pre-norm decoder block (RMSNorm, causal multi-head self-attention with RoPE, RMSNorm, SwiGLU feed-forward),
then MoE blocks whose feed-forward is DeepSeek-V3's: a sigmoid router (no bias), top-K of the scores, gates
= the chosen scores over their sum, K of N SwiGLU experts plus always-on shared SwiGLU experts, and the
sequence-wise balance loss (DeepSeek-V3) added to the loss; final RMSNorm and an untied LM head. The step:
zero_grad, forward, cross entropy (+ the balance losses), backward, clip_grad_norm_(1.0), AdamW.

Prints one JSON object: tokens/s over STEPS timed steps after two untimed ones, faults per step, and the
BLAS (OpenBLAS's kernel when it is the BLAS).

    /usr/bin/python3 benchmarks/peers/pytorch_lm.py [--steps 20] [--threads 2] [--out FILE]
"""

import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_moe import minor_faults, openblas_info  # noqa: E402

# lm_bench.cpp's settings (expert_load_heatmaps --preset quick).
VOCABULARY, BATCH, SEQ_LEN = 2048, 16, 64
D_MODEL, HEADS, MOE_LAYERS, DENSE_HIDDEN = 64, 4, 4, 256
EXPERTS, SHARED, K, EXPERT_HIDDEN = 64, 2, 6, 32
AUX_ALPHA, LR, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-2, 3e-3, 0.1, 1.0
NORM_EPS, ROPE_THETA = 1e-6, 10000.0


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        half = self.head_dim // 2
        angle = torch.arange(SEQ_LEN)[:, None] * ROPE_THETA ** (-2 * torch.arange(half) / self.head_dim)
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)
        self.register_buffer("mask", torch.full((SEQ_LEN, SEQ_LEN), float("-inf")).triu(1), persistent=False)

    def rope(self, x):  # [B, H, S, hd], pairs (2i, 2i + 1) turned by position * theta^(-2i / hd)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * self.cos - odd * self.sin, even * self.sin + odd * self.cos), -1).flatten(-2)

    def forward(self, x):  # x: [B, S, d]
        b, s, d = x.shape
        split = lambda t: t.view(b, s, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = self.rope(split(self.q_proj(x))), self.rope(split(self.k_proj(x))), split(self.v_proj(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + self.mask
        return self.o_proj((torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, s, d))


class DeepSeekMoE(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.router = nn.Linear(d, EXPERTS, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d, EXPERT_HIDDEN) for _ in range(EXPERTS))
        self.shared_experts = nn.ModuleList(SwiGLU(d, EXPERT_HIDDEN) for _ in range(SHARED))

    def forward(self, x):  # x: [T, d]; returns the output and the sequence-wise balance loss
        scores = torch.sigmoid(self.router(x))
        chosen_scores, chosen = torch.topk(scores, K, dim=-1)
        gates = chosen_scores / chosen_scores.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)
            if token.numel() == 0:
                continue
            out.index_add_(0, token, expert(x[token]) * gates[token, slot].unsqueeze(-1))
        for shared in self.shared_experts:
            out = out + shared(x)
        # DeepSeek-V3: per sequence, alpha * sum_i f_i P_i, f_i = N / (K L) * picks of i, P_i = mean of the
        # scores normalised over the experts; averaged over the sequences.
        sequences = x.shape[0] // SEQ_LEN
        picks = torch.zeros(sequences, EXPERTS).scatter_add_(
            1, chosen.view(sequences, -1), torch.ones(sequences, SEQ_LEN * K))
        f = picks * EXPERTS / (K * SEQ_LEN)
        p = (scores / scores.sum(-1, keepdim=True)).view(sequences, SEQ_LEN, EXPERTS).mean(1)
        return out, AUX_ALPHA * (f * p).sum(-1).mean()


class Block(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.attn_norm, self.attn, self.ffn_norm, self.ffn = RMSNorm(d), Attention(d, HEADS), RMSNorm(d), ffn

    def forward(self, x):  # x: [B, S, d]
        h = x + self.attn(self.attn_norm(x))
        y = self.ffn(self.ffn_norm(h).view(-1, h.shape[-1]))
        y, aux = y if isinstance(y, tuple) else (y, None)
        return h + y.view_as(h), aux


class CausalLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCABULARY, D_MODEL)
        self.layers = nn.ModuleList([Block(D_MODEL, SwiGLU(D_MODEL, DENSE_HIDDEN))] +
                                    [Block(D_MODEL, DeepSeekMoE(D_MODEL)) for _ in range(MOE_LAYERS)])
        self.norm = RMSNorm(D_MODEL)
        self.lm_head = nn.Linear(D_MODEL, VOCABULARY, bias=False)

    def forward(self, ids):  # ids: [B, S]
        h, aux_total = self.embed_tokens(ids), 0.0
        for layer in self.layers:
            h, aux = layer(h)
            if aux is not None:
                aux_total = aux_total + aux
        return self.lm_head(self.norm(h)).view(-1, VOCABULARY), aux_total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model = CausalLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    batches = [(torch.randint(VOCABULARY, (BATCH, SEQ_LEN)), torch.randint(VOCABULARY, (BATCH * SEQ_LEN,)))
               for _ in range(args.steps + 2)]

    def step(ids, targets):
        optimizer.zero_grad(set_to_none=False)
        logits, aux = model(ids)
        loss = nn.functional.cross_entropy(logits, targets)
        (loss + aux).backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        return loss.item()

    step(*batches[0])
    step(*batches[1])
    faults = minor_faults()
    start = time.perf_counter()
    for ids, targets in batches[2:]:
        loss = step(ids, targets)
    seconds = time.perf_counter() - start
    result = {
        "model": "expert_load_heatmaps AuxLossBasedLM, preset quick (PyTorch)", "torch": torch.__version__,
        "threads": torch.get_num_threads(), "steps": args.steps, "seconds": seconds,
        "tokens_per_s": BATCH * SEQ_LEN * args.steps / seconds,
        "faults_per_step": (minor_faults() - faults) / args.steps, "last_loss": loss, "openblas": openblas_info(),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
