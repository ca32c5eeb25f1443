// Demo: an MoE of linear experts learns a task whose input regions each need their own expert.
// Prints loss, accuracy and expert load per epoch; writes report.md, metrics.csv and
// region_by_expert.csv into --out.

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/cli.hpp"
#include "common/format.hpp"
#include "common/progress.hpp"
#include "common/resume.hpp"
#include "moe/analysis/csv.hpp"
#include "synthetic_mixture/synthetic_training.hpp"

namespace {

using moe::examples::percent;

moe::examples::SyntheticRouter router_of(const std::string& name) {
  return name == "expert-choice" ? moe::examples::SyntheticRouter::expert_choice : moe::examples::SyntheticRouter::top1;
}

moe::examples::SyntheticRunOptions preset_options(const std::string& preset, std::uint64_t seed,
                                                  const std::string& router) {
  moe::examples::SyntheticRunOptions options;
  options.seed = seed;
  options.router = router_of(router);
  if (preset == "smoke") {
    options.task.samples = 1024;
    options.test_samples = 256;
    options.epochs = 2;
  }
  return options;
}

int run(moe::examples::Args args, const std::string& router_option) {
  // --router decides the results, so a resumed run takes it from the run's own settings.
  moe::examples::RunState run(args, "synthetic_mixture", {{"router", router_option}});
  const auto router = run.settings().find("router");
  const std::string router_name = router != run.settings().end() ? router->second : "top1";
  const auto options = preset_options(args.preset, args.seed, router_name);
  const moe::Index steps_per_epoch = options.task.samples / options.batch;

  std::printf("synthetic mixture: %lld samples, %lld features, %lld regions; %lld linear experts, %s; %d epochs, "
              "%d threads\n\n",
              static_cast<long long>(options.task.samples), static_cast<long long>(options.task.features),
              static_cast<long long>(options.task.regions), static_cast<long long>(options.experts),
              moe::examples::router_description(options).c_str(), options.epochs, moe::num_threads());
  std::printf("%5s %10s %9s %9s %9s %7s  %s\n", "epoch", "train_loss", "aux_loss", "train_acc", "test_acc",
              "MaxVio", "relative load per expert");

  moe::examples::Progress progress("train", steps_per_epoch * options.epochs, 5.0);
  progress.set_done(run.steps_before());
  // One unit: the training, checkpointed every epoch.
  const auto result = run.unit("train", steps_per_epoch, [&](moe::examples::UnitCheckpoint& checkpoint) {
    return moe::examples::train_synthetic_mixture(
        options,
        [](const moe::examples::EpochRecord& r) {
          std::printf("%5d %10.4f %9.5f %9s %9s %7.3f ", r.epoch, r.train_loss, r.aux_loss,
                      percent(r.train_accuracy).c_str(), percent(r.test_accuracy).c_str(), r.max_violation);
          for (moe::Index e = 0; e < r.relative_load.size(); ++e) std::printf(" %.2f", r.relative_load(e));
          std::printf("\n");
          std::fflush(stdout);
        },
        [&](moe::Index samples, double loss) { progress.step(samples, loss); }, checkpoint);
  });
  moe::CsvWriter metrics(args.out / "metrics.csv");
  metrics.row("epoch", "train_loss", "aux_loss", "train_accuracy", "test_accuracy", "max_violation");
  for (const auto& r : result.epochs)
    metrics.row(r.epoch, r.train_loss, r.aux_loss, r.train_accuracy, r.test_accuracy, r.max_violation);
  metrics.close();

  const Eigen::MatrixXd fractions = result.region_by_expert.fractions();
  std::vector<std::string> regions, experts;
  for (moe::Index r = 0; r < fractions.rows(); ++r) regions.push_back("region " + std::to_string(r));
  for (moe::Index e = 0; e < fractions.cols(); ++e) experts.push_back("expert " + std::to_string(e));
  moe::write_matrix_csv(args.out / "region_by_expert.csv", fractions, regions, experts, "region");

  std::ostringstream table;
  table << "| region |";
  for (const auto& e : experts) table << ' ' << e << " |";
  table << "\n|---|";
  for (std::size_t e = 0; e < experts.size(); ++e) table << "---|";
  table << '\n';
  for (moe::Index r = 0; r < fractions.rows(); ++r) {
    table << "| " << regions[static_cast<std::size_t>(r)] << " |";
    for (moe::Index e = 0; e < fractions.cols(); ++e) table << ' ' << percent(fractions(r, e)) << " |";
    table << '\n';
  }
  std::cout << "\nshare of each region's test points routed to each expert:\n" << table.str();

  const auto& last = result.epochs.back();
  std::ofstream report(args.out / "report.md");
  report << "# Synthetic mixture: does each region get its own expert?\n\n"
         << "Command: `synthetic_mixture --preset " << args.preset << " --seed " << args.seed << " --router "
         << router_name << "`\n\n"
         << "Points lie in " << options.task.regions << " clusters; inside each, the class is the side of a "
         << "cluster-specific hyperplane, so no single linear map solves the task. The model is one MoE layer of "
         << options.experts << " linear experts with " << moe::examples::router_description(options);
  if (options.router == moe::examples::SyntheticRouter::top1) report << " (alpha " << options.aux_alpha << ")";
  report << ", trained " << options.epochs << " epochs with Adam (lr " << options.lr << ").\n\n"
         << "Final test accuracy: " << percent(last.test_accuracy) << " (train loss " << last.train_loss
         << ", MaxVio over the last epoch " << last.max_violation << ").\n\n"
         << "Share of each region's test points routed to each expert:\n\n"
         << table.str() << "\nPer-epoch figures are in metrics.csv; the table above is region_by_expert.csv.\n";
  report.close();
  if (!report) {
    std::cerr << "error: could not write " << (args.out / "report.md") << '\n';
    return 1;
  }
  std::printf("\nwall time %.2f s\n", run.elapsed_seconds());
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::examples::Args args;
  std::string router = "top1";
  CLI::App app("synthetic_mixture: an MoE learns a task whose input regions need different experts");
  moe::examples::add_common_options(app, args,
                                    {.name = "synthetic_mixture", .presets = {"quick", "smoke"},
                                     .default_out = "out/synthetic_mixture", .reads_data = false,
                                     .resumable = true});
  app.add_option("--router", router,
                 "top1: softmax top-1 with the Switch aux loss; expert-choice: each expert takes its top-C points "
                 "of the batch (Zhou et al. 2022), no aux loss (not with --resume)")
      ->check(CLI::IsMember({"top1", "expert-choice"}))
      ->capture_default_str()
      ->excludes("--resume");
  return moe::examples::run_main(app, args, argc, argv, [&] { return run(args, router); });
}
