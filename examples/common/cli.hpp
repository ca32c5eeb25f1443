#pragma once
// The command line every example shares, on CLI11: add_common_options declares --preset, --out, --data-dir,
// --seed, --threads, --resume and --max-steps (common/resume.hpp) on a CLI::App, beside which each example
// declares its own; run_main parses, sets the threads, keeps freed memory in the process
// (moe::retain_freed_memory), checks that --out can be written, and runs the program's body. Every error, of
// the command line or of the run, ends in a message on stderr that starts with `error: ` and names the
// option or file, and exit status 1.
//
//   int main(int argc, char** argv) {
//     moe::examples::Args args;
//     CLI::App app("name: what it does");
//     moe::examples::add_common_options(app, args, {.name = "name", .presets = {"quick", "smoke", "paper"},
//                                                   .default_out = "out/name"});
//     app.add_option("--aux-alpha", aux_alpha, "...");  // the example's own options
//     return moe::examples::run_main(app, args, argc, argv, [&] { return run(args); });
//   }

#include <charconv>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "common/args.hpp"
#include "common/check.hpp"
#include "moe/core/memory.hpp"
#include "moe/core/parallel.hpp"

namespace moe::examples {

/// What add_common_options needs to know about the program.
struct Program {
  std::string name;                  // as the user types it, for messages
  std::vector<std::string> presets;  // the first is the default
  std::string default_out;
  bool reads_data = true;  // declares --data-dir
  /// Whether --resume and --max-steps work (the example keeps a RunState, common/resume.hpp); otherwise
  /// --resume is hidden from --help and is an error that says so.
  bool resumable = false;
};

namespace detail {

/// A CLI11 check that the value is an integer >= 0 (CLI11 reads "-3" into an unsigned as 2^64 - 3).
inline CLI::Validator non_negative_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || error != std::errc{} || end != text.data() + text.size())
          return "expects a non-negative integer, got '" + text + "'";
        return {};
      },
      "");
}

/// --help as CLI11 writes it, with each option's type and default but not the options it excludes, and
/// descriptions wrapped to fit 100 columns.
class HelpFormatter : public CLI::Formatter {
 public:
  HelpFormatter() { column_width(description_column); }

  std::string make_option_opts(const CLI::Option* option) const override {
    std::string text;
    if (option->get_type_size() == 0) return text;
    if (!option->get_type_name().empty()) text += " " + option->get_type_name();
    if (!option->get_default_str().empty()) text += "=" + option->get_default_str();
    return text;
  }

  std::string make_option_desc(const CLI::Option* option) const override {
    std::string wrapped, line, word;
    std::istringstream words(option->get_description());
    while (words >> word) {
      if (!line.empty() && line.size() + 1 + word.size() > 100 - description_column) {
        wrapped += line + "\n";
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
    }
    return wrapped + line;
  }

 private:
  static constexpr std::size_t description_column = 30;
};

inline void prepare_out_dir(const std::filesystem::path& out) {
  std::error_code error;
  std::filesystem::create_directories(out, error);
  require(!error, "--out ", out.string(), ": cannot create the directory (", error.message(), ")");
  const std::filesystem::path probe = out / (".write-test-" + std::to_string(::getpid()));
  {
    std::ofstream file(probe);
    file << "moe";
    file.close();
    require(static_cast<bool>(file), "--out ", out.string(), ": cannot write files there");
  }
  std::filesystem::remove(probe, error);
}

}  // namespace detail

/// A CLI11 check that the value is a number >= 0 (for an example's own options).
inline CLI::Validator non_negative_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || error != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
            value < 0)
          return "expects a non-negative number, got '" + text + "'";
        return {};
      },
      "");
}

/// A CLI11 check that the value is an integer >= 0 (for an example's own options).
inline CLI::Validator non_negative_integer() { return detail::non_negative_integer(); }

/// Declares the shared options on `app`, bound to `args` (which must outlive the parse), with their defaults
/// shown by --help: --preset (one of program.presets, the first by default), --out, --data-dir (when the
/// program reads data), --seed, --threads, --resume and --max-steps. With --resume DIR (a program.resumable
/// one), --out is DIR and --preset, --out, --data-dir and --seed are errors: the run's own are in DIR.
inline void add_common_options(CLI::App& app, Args& args, const Program& program) {
  require(!program.presets.empty(), "add_common_options: no presets");
  args.preset = program.presets.front();
  args.out = program.default_out;
  app.option_defaults()->always_capture_default();
  app.formatter(std::make_shared<detail::HelpFormatter>());
  std::string sizes;
  for (const std::string& name : program.presets) {
    sizes += sizes.empty() ? " (" : "; ";
    sizes += name == "smoke"      ? "smoke: seconds, for the tests"
             : name == "quick"    ? "quick: minutes on two cores"
             : name == "paper"    ? "paper: the document's settings"
             : name == "diagnose" ? "diagnose: the runs that explain a finding of the report"
                                  : name;
  }
  auto* preset = app.add_option("--preset", args.preset, "what to run" + sizes + ")")
                     ->type_name("NAME")
                     ->check(CLI::IsMember(program.presets));
  auto* out = app.add_option("--out", args.out, "where the report, CSV files and figures go")
                  ->type_name("DIR")
                  ->default_str(program.default_out);
  CLI::Option* data_dir = nullptr;
  if (program.reads_data)
    data_dir = app.add_option("--data-dir", args.data_dir, "where scripts/fetch-data.sh put the data")
                   ->type_name("DIR")
                   ->default_str(args.data_dir.string());
  auto* seed =
      app.add_option("--seed", args.seed, "random seed")->type_name("N")->check(detail::non_negative_integer());
  app.add_option("--threads", args.threads, "threads to use (0: every core)")
      ->type_name("N")
      ->check(detail::non_negative_integer());
  if (program.resumable) {
    auto* resume = app.add_option("--resume", args.resume,
                                  "continue the unfinished run whose --out is DIR from its last checkpoint, with "
                                  "that run's options (so not with --preset, --out, --data-dir, --seed)")
                       ->type_name("DIR")
                       ->check(CLI::ExistingDirectory.description(""))
                       ->excludes(preset)
                       ->excludes(out)
                       ->excludes(seed);
    if (data_dir != nullptr) resume->excludes(data_dir);
    app.add_option("--max-steps", args.max_steps,
                   "stop after this many training steps of this invocation (all trainings of the run together), "
                   "leaving a checkpoint to --resume from (0: no limit)")
        ->type_name("N")
        ->check(detail::non_negative_integer());
  } else {
    app.add_option_function<std::string>("--resume",
                                         [message = program.name + " keeps no checkpoints, so it cannot resume a "
                                                                   "run; run it again"](const std::string&) {
                                           throw CLI::ValidationError("--resume", message);
                                         })
        ->group("");  // hidden from --help
  }
}

/// Parses the command line into `app` (and so into `args` and the example's own options), applies the shared
/// options (threads, --out created and writable) and returns body()'s exit status. --help prints the
/// options and exits 0; any error, of the command line or thrown by the body, prints `error: ...` and
/// returns 1.
template <class Body>
int run_main(CLI::App& app, Args& args, int argc, char** argv, Body&& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "error: " << e.what() << "\nrun with --help for the options\n";
    return 1;
  }
  try {
    if (!args.resume.empty()) args.out = args.resume;
    if (args.threads > 0) set_num_threads(args.threads);
    retain_freed_memory();  // expert buffers change size every batch: keep their memory between batches
    detail::prepare_out_dir(args.out);
    return std::forward<Body>(body)();
  } catch (const Stopped& stopped) {
    std::cout << '\n'
              << stopped.what() << "; continue with: " << app.get_name() << " --resume " << args.out.string() << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  } catch (...) {
    std::cout.flush();
    std::cerr << "error: an exception that is not a std::exception\n";
    return 1;
  }
}

}  // namespace moe::examples
