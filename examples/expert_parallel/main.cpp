// expert_parallel: the headline language model (DeepSeek-V3 Appendix C's DeepSeekMoE decoder, run B:
// aux-loss-free balancing; examples/expert_load_heatmaps) trained with its MoE layers' routed experts spread
// over MPI processes (moe::backends::ExpertParallel): every process holds one block of each layer's experts
// and a replica of everything else, and takes its share of each batch. Run as
//
//   mpirun -np 2 build/bin/expert_parallel --preset smoke --out out/expert_parallel
//
// Writes metrics.csv (step, loss, lr), model.safetensors (the whole model with one process's names, assembled
// from every process's experts) and report.md, which also evaluates that file in one process: the loss must
// be the sharded model's.

#include <mpi.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "backends/mpi/comm.hpp"
#include "backends/mpi/data_parallel.hpp"
#include "backends/mpi/expert_parallel.hpp"
#include "backends/mpi/run_or_abort.hpp"
#include "common/check.hpp"
#include "common/cli.hpp"
#include "expert_load_heatmaps/data.hpp"
#include "expert_load_heatmaps/model.hpp"
#include "expert_load_heatmaps/training.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/train/progress.hpp"
#include "moe/train/trainer.hpp"

namespace {

using moe::Index;
using namespace moe::examples;
using moe::backends::MpiComm;

using ShardedMoE = moe::MoELayer<moe::SwiGLUFeedForward<float>, moe::SigmoidTopK, routed_per_token, moe::AuxLossFree,
                                 moe::backends::ExpertParallel<>>;
using ShardedLM = moe::CausalLM<DenseFFN, ShardedMoE>;
using OneProcessLM = AuxLossFreeLM;

struct Preset {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  Index eval_batches = 0;  // validation batches of train.batch windows
};

Preset preset(const std::string& name) {
  Preset p;
  if (name == "smoke") {
    p.model = {.d_model = 32, .num_heads = 2, .num_moe_layers = 2, .dense_hidden = 64, .expert_hidden = 16,
               .seq_len = 32};
    p.data = {.max_chars_per_domain = 120'000, .max_vocabulary = 512, .max_validation_windows = 16};
    p.train = {.batch = 8, .steps = 12, .warmup_steps = 2};
    p.eval_batches = 2;
  } else {  // quick
    p.model = {.d_model = 64, .num_heads = 4, .num_moe_layers = 4, .dense_hidden = 256, .expert_hidden = 32,
               .seq_len = 64};
    p.data = {.max_chars_per_domain = 1'500'000, .max_vocabulary = 2048, .max_validation_windows = 96};
    p.train = {.batch = 16, .steps = 300, .warmup_steps = 30};
    p.eval_batches = 6;
  }
  return p;
}

/// Calls the callback's members on rank 0 only: one progress line for the run.
template <class Callback>
struct OnRankZero {
  Callback callback;
  bool active;

  template <class T>
  void on_fit_begin(T& trainer) {
    if (active) callback.on_fit_begin(trainer);
  }
  template <class T>
  void on_step_end(T& trainer) {
    if (active) callback.on_step_end(trainer);
  }
  template <class T>
  void on_fit_end(T& trainer) {
    if (active) callback.on_fit_end(trainer);
  }
};

/// Every routed expert parameter this process holds, over the MoE blocks (1, 2, ...).
moe::ParameterList<float> held_experts(ShardedLM& lm) {
  moe::ParameterList<float> list;
  for (Index layer = 1; layer < lm.num_layers(); ++layer) {
    const auto experts = lm.layer(layer).ffn().experts().named_parameters();
    list.insert(list.end(), experts.begin(), experts.end());
  }
  return list;
}

/// The windows a process takes of a batch of `batch` windows: its share, in rank order.
std::vector<Index> share_of(std::span<const Index> windows, const MpiComm& comm) {
  const auto per_process = windows.size() / static_cast<std::size_t>(comm.size());
  const auto first = windows.begin() + static_cast<std::ptrdiff_t>(per_process * static_cast<std::size_t>(comm.rank()));
  return {first, first + static_cast<std::ptrdiff_t>(per_process)};
}

/// The mean cross-entropy over `batches` batches of the validation windows (in order), each process taking
/// its share of each batch, or one process all of it when comm is null.
template <class LM>
double validation_loss(LM& lm, const TokenWindows& windows, Index batches, Index batch, const MpiComm* comm) {
  const Index length = windows.window_length - 1;
  moe::CrossEntropyLoss<float> cross_entropy;
  std::vector<Index> all(static_cast<std::size_t>(batch)), inputs, targets;
  lm.eval();
  double sum = 0.0;
  for (Index b = 0; b < batches; ++b) {
    for (Index i = 0; i < batch; ++i) all[static_cast<std::size_t>(i)] = (b * batch + i) % windows.count();
    const std::vector<Index> picked = comm ? share_of(all, *comm) : all;
    fill_batch(windows, picked, inputs, targets);
    const double loss = cross_entropy.forward(lm.forward(inputs, static_cast<Index>(picked.size()), length), targets);
    sum += comm ? moe::backends::mean_over_processes(*comm, loss) : loss;
  }
  lm.train();
  return sum / static_cast<double>(batches);
}

int run(const Args& args) {
  const MpiComm comm;
  const Preset p = preset(args.preset);
  const bool writer = comm.rank() == 0;
  require(p.train.batch % comm.size() == 0, "expert_parallel: the batch of ", p.train.batch,
          " windows cannot be split evenly over ", comm.size(), " processes");
  require(p.model.num_experts % comm.size() == 0, "expert_parallel: ", p.model.num_experts,
          " experts per layer cannot be split evenly over ", comm.size(), " processes");

  moe::Rng data_rng(args.seed);
  const PreparedData data = prepare_data(args.data_dir, p.data, p.model.seq_len, data_rng);
  const Index vocab = data.vocabulary.size(), length = p.model.seq_len;
  moe::Rng model_rng(args.seed + 1);
  ShardedLM lm(lm_options<ShardedLM>(p.model, vocab), model_rng);
  const moe::ParameterList<float> held = held_experts(lm);
  moe::AdamW<float> optimizer(lm.named_parameters(), {.lr = p.train.lr, .weight_decay = p.train.weight_decay});
  moe::Rng order_rng(args.seed + 2);
  const std::vector<Index> order = training_order(data.train.count(), p.train.steps, p.train.batch, order_rng);
  moe::Rng unused;  // the order is `order`: the trainer draws nothing
  // Clipping is done in the step, by the norm over every process (clip_grad_norm of backends/mpi).
  moe::Trainer trainer(lm, optimizer, unused, {.batch_size = p.train.batch, .shuffle = moe::Shuffle::None},
                       moe::CosineWithWarmup(p.train.lr, p.train.warmup_steps, p.train.steps, p.train.min_lr));
  moe::CrossEntropyLoss<float> cross_entropy;
  std::vector<Index> picked, local, inputs, targets;
  const auto step = [&](std::span<const Index> positions) {
    picked.resize(positions.size());
    for (std::size_t b = 0; b < positions.size(); ++b) picked[b] = order[static_cast<std::size_t>(positions[b])];
    local = share_of(picked, comm);
    fill_batch(data.train, local, inputs, targets);
    const double loss =
        cross_entropy.forward(lm.forward(inputs, static_cast<Index>(local.size()), length), targets) + lm.aux_loss();
    lm.backward(cross_entropy.backward());
    moe::backends::average_gradients(comm, lm.named_parameters(), held);
    moe::backends::clip_grad_norm(comm, lm.named_parameters(), held, p.train.max_grad_norm);
    return moe::StepResult{.loss = moe::backends::mean_over_processes(comm, loss),
                           .samples = static_cast<Index>(positions.size()) * length};
  };
  std::ofstream metrics;
  if (writer) {
    metrics.open(args.out / "metrics.csv");
    require(metrics.is_open(), "expert_parallel: cannot write ", (args.out / "metrics.csv").string());
    metrics << "step,loss,lr\n";
  }
  const auto record = [&](auto& t) {
    if (writer) metrics << t.step() << ',' << fmt::format("{:.6f}", t.loss()) << ',' << t.state().lr << '\n';
  };
  const auto start = std::chrono::steady_clock::now();
  trainer.fit(p.train.steps * p.train.batch, step, moe::OnStepEnd{record},
              OnRankZero<moe::ProgressBar>{moe::ProgressBar("expert_parallel", {.unit = "tokens"}), writer});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (writer) {
    metrics.close();
    require(static_cast<bool>(metrics), "expert_parallel: writing metrics.csv failed");
  }

  const double sharded_loss = validation_loss(lm, data.validation, p.eval_batches, p.train.batch, &comm);
  const moe::StateDict<float> whole = moe::backends::gather_state_dict(comm, moe::state_dict(lm));
  if (!writer) return 0;
  const auto model_path = args.out / "model.safetensors";
  moe::save_safetensors(model_path, whole, config_metadata(p.model, "aux-loss-free, experts over processes"));
  moe::Rng one_rng(args.seed + 1);
  OneProcessLM one(lm_options<OneProcessLM>(p.model, vocab), one_rng);
  moe::load_state_dict(one, moe::load_safetensors<float>(model_path).tensors);
  const double one_loss = validation_loss(one, data.validation, p.eval_batches, p.train.batch, nullptr);

  const Index tokens = p.train.steps * p.train.batch * length;
  std::ofstream report(args.out / "report.md");
  report << "# Expert parallelism over MPI: the headline language model with its experts spread over processes\n\n"
         << "DeepSeek-V3 Appendix C's DeepSeekMoE decoder (run B of `expert_load_heatmaps`: aux-loss-free "
            "balancing), preset `" << args.preset << "`: " << p.model.num_moe_layers << " MoE blocks of "
         << p.model.num_experts << " routed experts (K = " << routed_per_token << ") and "
         << p.model.num_shared_experts << " shared ones, d_model " << p.model.d_model << ", vocabulary " << vocab
         << ".\n\n"
         << "- Processes: " << comm.size() << "; each holds " << p.model.num_experts / comm.size()
         << " routed experts of every MoE block and a replica of everything else, and takes "
         << p.train.batch / comm.size() << " of the " << p.train.batch << " windows of each batch.\n"
         << "- Routed rows go to the process that holds their expert and back by MPI_Alltoallv; gradients of the "
            "replicated parameters are averaged over the processes (summed in rank order) and the aux-loss-free "
            "bias update sees the load of every process.\n\n"
         << "| | |\n|---|---|\n"
         << "| steps | " << p.train.steps << " |\n"
         << "| tokens | " << tokens << " |\n"
         << "| time | " << fmt::format("{:.1f}", seconds) << " s |\n"
         << "| tokens/s | " << fmt::format("{:.0f}", static_cast<double>(tokens) / seconds) << " |\n"
         << "| last training loss | " << fmt::format("{:.4f}", trainer.loss()) << " |\n"
         << "| validation loss, sharded over " << comm.size() << " processes | " << fmt::format("{:.6f}", sharded_loss)
         << " |\n"
         << "| validation loss, `model.safetensors` in one process | " << fmt::format("{:.6f}", one_loss) << " |\n"
         << "| relative difference | " << fmt::format("{:.2e}", std::abs(one_loss - sharded_loss) / one_loss)
         << " |\n\n"
         << "The validation loss is over the first " << p.eval_batches * p.train.batch
         << " validation windows. `model.safetensors` holds the whole model under the names one process gives it, "
            "assembled from every process's experts; loaded into the same model on one process (the CPU backend), "
            "it gives the loss in the last rows.\n";
  report.close();
  require(static_cast<bool>(report), "expert_parallel: writing report.md failed");
  std::printf("wrote %s\n", (args.out / "report.md").string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  Args args;
  CLI::App app("expert_parallel: the headline DeepSeekMoE language model with its experts spread over MPI "
               "processes (run under mpirun)");
  add_common_options(app, args, {.name = "expert_parallel", .presets = {"smoke", "quick"},
                                 .default_out = "out/expert_parallel"});
  // A failure on one process ends every process (run_or_abort); one on all (the command line) is reported
  // by each as the other examples do.
  const int code =
      run_main(app, args, argc, argv, [&] { return moe::backends::run_or_abort(MPI_COMM_WORLD, [&] { return run(args); }); });
  MPI_Finalize();
  return code;
}
