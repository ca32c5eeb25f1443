"""Small random checkpoints in the published layouts of Mixtral, OLMoE, Qwen3-MoE, Qwen2-MoE, DeepSeek-V2 (with
group-limited routing, and as V2-Lite with plain top-K) and DeepSeek-V3, and each family's MoE block output from an
independent PyTorch reimplementation of its forward.

Usage: hf_checkpoints.py DIR. For each family DIR/<name>/ (the model_type, or deepseek_v2_lite) gets what a
Hugging Face checkpoint holds
(config.json with the family's routing fields, model.safetensors.index.json, three BF16 shards: layer 0 in
the first, layer 1's MoE block split over the other two, DeepSeek-V3's correction bias in F32 as released) and
probe.safetensors: inputs x [T x hidden_size] (F32), the block's output y (F32, computed in float32 from the
BF16 weights), and metadata naming the layer and the shards that loading it needs. hf_crosscheck loads the
block with moe::load_hf_moe_block and compares.

DIR/bf16_rounding.safetensors holds float32 values ("source": random magnitudes, exact ties between two
bfloat16 values, infinities, the largest float, subnormals) and PyTorch's bfloat16 of each ("rounded"), which
hf_crosscheck compares with moe's float_to_bfloat16.

hf_checkpoints.py --many-shards DIR LAYERS SHARDS writes a larger DeepSeek-V3-shaped checkpoint (hidden 512,
64 experts of width 256, no reference output) of LAYERS MoE layers spread over SHARDS shards, to time loading
one layer with moe-inspect --probe.
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

HIDDEN = 16
TOKENS = 32
SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
          "model-00003-of-00003.safetensors"]


def swiglu(x, gate, up, down):
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def routed(x, experts, idx, weights):
    """sum over the K chosen experts of weight * expert(x), token by token's chosen experts."""
    y = torch.zeros_like(x)
    for e, expert in enumerate(experts):
        rows, slot = torch.nonzero(idx == e, as_tuple=True)
        if rows.numel():
            y[rows] += weights[rows, slot, None] * swiglu(x[rows], *expert)
    return y


def softmax_block(x, router, experts, k, renormalize):
    """Mixtral, OLMoE, Qwen: softmax over all experts, top-K, optionally divided by the top-K sum."""
    probs = torch.softmax(F.linear(x, router), dim=-1)
    weights, idx = torch.topk(probs, k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return routed(x, experts, idx, weights)


def deepseek_v2_block(x, router, experts, k, topk_method, n_group, topk_group, scaling, shared):
    """Softmax scores; "greedy": top-K of all; "group_limited_greedy": a group's score is its best score, the
    other experts than those of the topk_group best groups are set to 0 before top-K. Gates are the chosen
    scores times the scaling factor (norm_topk_prob false, as released)."""
    scores = torch.softmax(F.linear(x, router), dim=-1)
    choice = scores
    if topk_method == "group_limited_greedy":
        groups = scores.view(x.shape[0], n_group, -1)
        best_groups = groups.max(dim=-1).values.topk(topk_group, dim=-1).indices
        keep = torch.zeros(x.shape[0], n_group, dtype=torch.bool).scatter(1, best_groups, True)
        choice = scores.masked_fill(~keep[:, :, None].expand_as(groups).reshape(x.shape[0], -1), 0.0)
    weights, idx = torch.topk(choice, k, dim=-1)
    return routed(x, experts, idx, weights * scaling) + swiglu(x, *shared)


def deepseek_v3_block(x, router, bias, experts, k, n_group, topk_group, scaling, shared):
    """Sigmoid scores; a group's score is the sum of its two best score + bias; top-K of score + bias within
    the topk_group best groups; gates are the chosen scores over their sum, times the scaling factor."""
    scores = torch.sigmoid(F.linear(x, router))
    choice = scores + bias
    groups = choice.view(x.shape[0], n_group, -1)
    group_scores = groups.topk(2, dim=-1).values.sum(dim=-1)
    best_groups = group_scores.topk(topk_group, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter(1, best_groups, True)
    keep = keep[:, :, None].expand_as(groups).reshape(x.shape[0], -1)
    idx = choice.masked_fill(~keep, float("-inf")).topk(k, dim=-1).indices
    weights = scores.gather(1, idx)
    weights = weights / weights.sum(dim=-1, keepdim=True) * scaling
    return routed(x, experts, idx, weights) + swiglu(x, *shared)


FAMILIES = {
    "mixtral": {
        "config": {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": HIDDEN,
                   "intermediate_size": 12, "num_local_experts": 8, "num_experts_per_tok": 2,
                   "num_hidden_layers": 2, "hidden_act": "silu", "router_aux_loss_coef": 0.02,
                   "torch_dtype": "bfloat16"},
        "block": "block_sparse_moe.", "experts": 8, "hidden": 12, "names": ("w1", "w3", "w2"), "moe_layers": [0, 1],
    },
    "olmoe": {
        "config": {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "hidden_size": HIDDEN,
                   "intermediate_size": 12, "num_experts": 8, "num_experts_per_tok": 3, "norm_topk_prob": False,
                   "num_hidden_layers": 2, "hidden_act": "silu", "torch_dtype": "bfloat16"},
        "block": "mlp.", "experts": 8, "hidden": 12, "moe_layers": [0, 1],
    },
    "qwen3_moe": {
        "config": {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": HIDDEN,
                   "intermediate_size": 24, "moe_intermediate_size": 10, "num_experts": 8,
                   "num_experts_per_tok": 2, "norm_topk_prob": True, "decoder_sparse_step": 1,
                   "mlp_only_layers": [0], "num_hidden_layers": 2, "hidden_act": "silu", "torch_dtype": "bfloat16"},
        "block": "mlp.", "experts": 8, "hidden": 10, "moe_layers": [1],
    },
    "qwen2_moe": {
        "config": {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": HIDDEN,
                   "intermediate_size": 24, "moe_intermediate_size": 10, "shared_expert_intermediate_size": 20,
                   "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": False, "decoder_sparse_step": 1,
                   "mlp_only_layers": [0], "num_hidden_layers": 2, "hidden_act": "silu", "torch_dtype": "bfloat16"},
        "block": "mlp.", "experts": 8, "hidden": 10, "shared": ("shared_expert.", 20), "moe_layers": [1],
    },
    "deepseek_v2": {
        "config": {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": HIDDEN,
                   "intermediate_size": 24, "moe_intermediate_size": 6, "n_routed_experts": 16,
                   "n_shared_experts": 2, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
                   "topk_method": "group_limited_greedy", "routed_scaling_factor": 16.0, "norm_topk_prob": False,
                   "scoring_func": "softmax", "first_k_dense_replace": 1, "moe_layer_freq": 1,
                   "num_hidden_layers": 2, "hidden_act": "silu", "torch_dtype": "bfloat16"},
        "block": "mlp.", "experts": 16, "hidden": 6, "shared": ("shared_experts.", 12), "moe_layers": [1],
    },
    "deepseek_v2_lite": {
        "config": {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "hidden_size": HIDDEN,
                   "intermediate_size": 24, "moe_intermediate_size": 6, "n_routed_experts": 12,
                   "n_shared_experts": 2, "num_experts_per_tok": 3, "n_group": 1, "topk_group": 1,
                   "topk_method": "greedy", "routed_scaling_factor": 1.0, "norm_topk_prob": False,
                   "scoring_func": "softmax", "first_k_dense_replace": 1, "moe_layer_freq": 1,
                   "num_hidden_layers": 2, "hidden_act": "silu", "torch_dtype": "bfloat16"},
        "block": "mlp.", "experts": 12, "hidden": 6, "shared": ("shared_experts.", 12), "moe_layers": [1],
    },
    "deepseek_v3": {
        "config": {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": HIDDEN,
                   "intermediate_size": 24, "moe_intermediate_size": 8, "n_routed_experts": 16,
                   "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
                   "routed_scaling_factor": 2.5, "norm_topk_prob": True, "scoring_func": "sigmoid",
                   "topk_method": "noaux_tc", "first_k_dense_replace": 1, "moe_layer_freq": 1,
                   "num_hidden_layers": 2, "hidden_act": "silu", "torch_dtype": "bfloat16"},
        "block": "mlp.", "experts": 16, "hidden": 8, "shared": ("shared_experts.", 8), "moe_layers": [1],
    },
}


def bf16(shape, generator, scale):
    return (torch.randn(shape, generator=generator) * scale).to(torch.bfloat16)


def projections(prefix, names, hidden, generator, model_width=HIDDEN):
    gate, up, down = names
    return {f"{prefix}{gate}.weight": bf16((hidden, model_width), generator, model_width ** -0.5),
            f"{prefix}{up}.weight": bf16((hidden, model_width), generator, model_width ** -0.5),
            f"{prefix}{down}.weight": bf16((model_width, hidden), generator, hidden ** -0.5)}


def write_family(root, name, spec, seed):
    generator = torch.Generator().manual_seed(seed)
    config = spec["config"]
    model_type = config["model_type"]
    names = spec.get("names", ("gate_proj", "up_proj", "down_proj"))
    shards = [{}, {}, {}]
    for layer in range(config["num_hidden_layers"]):
        base = f"model.layers.{layer}."
        target = shards[0] if layer == 0 else shards[1]
        # what a decoder layer holds besides its MoE block, so that the loader must pick the block out
        target[base + "input_layernorm.weight"] = bf16((HIDDEN,), generator, 1.0)
        target[base + "self_attn.q_proj.weight"] = bf16((HIDDEN, HIDDEN), generator, 0.25)
        if layer not in spec["moe_layers"]:
            target.update(projections(base + "mlp.", ("gate_proj", "up_proj", "down_proj"),
                                      config["intermediate_size"], generator))
            continue
        block = base + spec["block"]
        target[block + "gate.weight"] = bf16((spec["experts"], HIDDEN), generator, 1.0)
        if model_type == "deepseek_v3":
            target[block + "gate.e_score_correction_bias"] = torch.randn(spec["experts"], generator=generator) * 0.05
        for e in range(spec["experts"]):
            half = shards[1] if layer == 0 or e < spec["experts"] // 2 else shards[2]
            (target if layer == 0 else half).update(
                projections(f"{block}experts.{e}.", names, spec["hidden"], generator))
        if "shared" in spec:
            prefix, width = spec["shared"]
            shards[2].update(projections(block + prefix, ("gate_proj", "up_proj", "down_proj"), width, generator))
            if model_type == "qwen2_moe":
                shards[2][block + "shared_expert_gate.weight"] = bf16((1, HIDDEN), generator, HIDDEN ** -0.5)
    shards[0]["model.embed_tokens.weight"] = bf16((64, HIDDEN), generator, 1.0)

    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    weight_map = {}
    for file, tensors in zip(SHARDS, shards):
        safetensors_io.save(os.path.join(directory, file), tensors, {"format": "pt"})
        weight_map.update({name: file for name in tensors})
    total = sum(t.numel() * t.element_size() for tensors in shards for t in tensors.values())
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    layer = spec["moe_layers"][-1]
    block = f"model.layers.{layer}.{spec['block']}"
    tensors = {name: t.to(torch.float32) for tensors in shards for name, t in tensors.items()}
    experts = [tuple(tensors[f"{block}experts.{e}.{n}.weight"] for n in names) for e in range(spec["experts"])]
    router = tensors[block + "gate.weight"]
    x = torch.randn(TOKENS, HIDDEN, generator=generator)
    with torch.no_grad():
        if model_type.startswith("deepseek"):
            shared = tuple(tensors[f"{block}shared_experts.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        if model_type == "deepseek_v3":
            y = deepseek_v3_block(x, router, tensors[block + "gate.e_score_correction_bias"], experts,
                                  config["num_experts_per_tok"], config["n_group"], config["topk_group"],
                                  config["routed_scaling_factor"], shared)
        elif model_type == "deepseek_v2":
            y = deepseek_v2_block(x, router, experts, config["num_experts_per_tok"], config["topk_method"],
                                  config["n_group"], config["topk_group"], config["routed_scaling_factor"], shared)
        else:
            renormalize = model_type == "mixtral" or config["norm_topk_prob"]
            y = softmax_block(x, router, experts, config["num_experts_per_tok"], renormalize)
            if model_type == "qwen2_moe":  # the shared expert, scaled by its sigmoid gate
                shared = tuple(tensors[f"{block}shared_expert.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj"))
                y = y + torch.sigmoid(F.linear(x, tensors[block + "shared_expert_gate.weight"])) * swiglu(x, *shared)
    needed = sorted({weight_map[name] for name in weight_map if name.startswith(block)})
    safetensors_io.save(os.path.join(directory, "probe.safetensors"), {"x": x, "y": y},
                        {"layer": str(layer), "shards": ",".join(needed)})


def write_bf16_rounding(path):
    generator = torch.Generator().manual_seed(99)
    magnitudes = torch.randn(4096, generator=generator) * torch.pow(10.0, torch.randint(-30, 30, (4096,),
                                                                                        generator=generator))
    upper = torch.randint(0, 0x7F7F, (1024,), generator=generator, dtype=torch.int32)
    sign = torch.randint(0, 2, (1024,), generator=generator, dtype=torch.int32) << 31
    ties = ((upper << 16) | 0x8000 | sign).view(torch.float32)  # halfway between two bfloat16 values
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3.4028234663852886e38, -3.4028234663852886e38,
                            1e-45, -1e-45, 1.1754942e-38, 1.0, 1.00390625, 1.01171875])
    source = torch.cat([magnitudes, ties, special])
    safetensors_io.save(path, {"source": source, "rounded": source.to(torch.bfloat16)}, {"format": "pt"})


def write_many_shards(directory, layers, shards):
    generator = torch.Generator().manual_seed(0)
    hidden, experts, width = 512, 64, 256
    config = dict(FAMILIES["deepseek_v3"]["config"], hidden_size=hidden, n_routed_experts=experts,
                  moe_intermediate_size=width, n_group=8, topk_group=4, num_experts_per_tok=8,
                  first_k_dense_replace=0, num_hidden_layers=layers)
    os.makedirs(directory, exist_ok=True)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    tensors = {}
    for layer in range(layers):
        block = f"model.layers.{layer}.mlp."
        tensors[block + "gate.weight"] = bf16((experts, hidden), generator, 1.0)
        tensors[block + "gate.e_score_correction_bias"] = torch.zeros(experts)
        for e in range(experts):
            tensors.update(projections(f"{block}experts.{e}.", ("gate_proj", "up_proj", "down_proj"), width, generator,
                                       hidden))
        tensors.update(projections(block + "shared_experts.", ("gate_proj", "up_proj", "down_proj"), width, generator,
                                   hidden))
    ordered = list(tensors)  # in layer order, each shard a consecutive run, as the published shards are
    per_shard = -(-len(ordered) // shards)
    weight_map = {}
    for i, file in enumerate(names):
        part = {name: tensors[name] for name in ordered[i * per_shard:(i + 1) * per_shard]}
        safetensors_io.save(os.path.join(directory, file), part, {"format": "pt"})
        weight_map.update({name: file for name in part})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--many-shards":
        write_many_shards(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) != 2:
        sys.exit("usage: hf_checkpoints.py DIR | hf_checkpoints.py --many-shards DIR LAYERS SHARDS")
    for seed, (name, spec) in enumerate(FAMILIES.items()):
        write_family(sys.argv[1], name, spec, seed)
    write_bf16_rounding(os.path.join(sys.argv[1], "bf16_rounding.safetensors"))


if __name__ == "__main__":
    main()
