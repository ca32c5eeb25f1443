#pragma once
// moe: Mixture-of-Experts layers on Eigen. This header brings in everything that needs only Eigen and
// the C++ standard library. Outside it, each needing more: moe/io/checkpoint.hpp (cereal),
// moe/train/checkpoint.hpp (cereal), moe/io/safetensors.hpp and moe/io/strict_json.hpp (nlohmann/json),
// moe/data/idx.hpp, cifar10.hpp (zlib), moe/data/gpt2_tokenizer.hpp (ICU, nlohmann/json),
// moe/analysis/heatmap.hpp, line_plot.hpp and moe/train/load_diagnostics.hpp (cairo).

#include "moe/core/error.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/memory.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/core/utf8.hpp"

#include "moe/nn/activation.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/conv2d.hpp"
#include "moe/nn/dropout.hpp"
#include "moe/nn/embedding.hpp"
#include "moe/nn/encoder.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/layer_norm.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/loss.hpp"
#include "moe/nn/pool.hpp"
#include "moe/nn/rms_norm.hpp"
#include "moe/nn/sequential.hpp"
#include "moe/nn/softmax.hpp"
#include "moe/nn/transformer.hpp"

#include "moe/routing/expert_choice.hpp"
#include "moe/routing/mlp_router.hpp"
#include "moe/routing/random_router.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/balancing/entropy_regularization.hpp"
#include "moe/balancing/router_z_loss.hpp"

#include "moe/backend.hpp"
#include "moe/layer/deepseek_v3.hpp"
#include "moe/layer/expert_bank.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/layer/upcycle.hpp"
#include "backends/cpu/cpu_backend.hpp"

#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"

#include "moe/train/callbacks.hpp"
#include "moe/train/progress.hpp"
#include "moe/train/trainer.hpp"

#include "moe/analysis/csv.hpp"
#include "moe/analysis/label_table.hpp"
#include "moe/analysis/load.hpp"
#include "moe/analysis/load_diagnostics.hpp"
#include "moe/analysis/sequence_routing.hpp"

#include "moe/io/state_dict.hpp"

#include "moe/data/image_dataset.hpp"
