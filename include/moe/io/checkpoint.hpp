#pragma once
// Training checkpoints with cereal (portable binary or JSON): what a run needs to go on as if it had never
// stopped. The model's state dict (parameters and buffers, the aux-loss-free biases among them) and the
// generators its modules own, by name; the optimizer's options (the scheduled lr and momentum too) and
// state; the training loop's generator; the epoch and the step, which is all a schedule needs, schedules
// being functions of the step. Gradients are not saved: a loop zeroes them before each step.
//
// A save writes a temporary file in the same directory, syncs it to the disk and renames it over `path`
// (write_file_atomically), so a crash leaves the old checkpoint or the new one, never a broken one. A load reads and checks the whole file
// (version, scalar type, optimizer kind, every name and shape) before it changes anything. It trusts no
// length in the file (CheckedBinaryInputArchive), lets RapidJSON parse only JSON it is safe on (nesting and
// number lengths: check_checkpoint_json), and refuses a name given twice and counts below zero.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <istream>
#include <iterator>
#include <locale>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/archives/json.hpp>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>


#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/io/binary_archive.hpp"
#include "moe/io/input_file.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/io/tensor.hpp"
#include "moe/optim/optimizer.hpp"

namespace moe {

/// Portable binary is compact; JSON is readable. Both are exact: numbers round-trip bit for bit.
enum class CheckpointFormat { Binary, JSON };

/// Where the training loop is: the epoch, and the step about to be taken (what apply_schedule takes next).
struct TrainingProgress {
  Index epoch = 0;
  Index step = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(CEREAL_NVP(epoch), CEREAL_NVP(step));
  }
};

/// Several modules seen as one model, each under a name: ModelRef<float>{{"moe", layer}, {"head", head}}
/// calls the head's weight "head.weight"; an empty name adds no prefix. It holds pointers into the modules,
/// which must outlive it and stay where they are.
template <class ScalarT>
class ModelRef {
 public:
  using Scalar = ScalarT;

  struct Part {
    template <class M>
    Part(const std::string& name, M& module)
        : prefix(name.empty() ? name : name + "."),
          parameters(module.named_parameters()),
          buffers(buffers_of(module)),
          generators(generators_of(module)) {
      static_assert(std::is_same_v<typename M::Scalar, Scalar>, "ModelRef: every module must have its Scalar type");
    }

    std::string prefix;
    ParameterList<Scalar> parameters;
    BufferList<Scalar> buffers;
    GeneratorList generators;
  };

  ModelRef(std::initializer_list<Part> parts) {
    for (const Part& part : parts) {
      append_prefixed(parameters_, part.parameters, part.prefix);
      append_prefixed(buffers_, part.buffers, part.prefix);
      append_prefixed(generators_, part.generators, part.prefix);
    }
  }

  ParameterList<Scalar> named_parameters() const { return parameters_; }
  BufferList<Scalar> named_buffers() const { return buffers_; }
  GeneratorList named_generators() const { return generators_; }

 private:
  ParameterList<Scalar> parameters_;
  BufferList<Scalar> buffers_;
  GeneratorList generators_;
};

/// cereal's view of a Tensor: its shape and its elements (raw bytes in a binary archive, numbers in JSON).
template <class Archive, class Scalar>
void save(Archive& archive, const Tensor<Scalar>& tensor) {
  archive(cereal::make_nvp("shape", tensor.shape),
          cereal::make_nvp("values", std::vector<Scalar>(tensor.data.data(), tensor.data.data() + tensor.data.size())));
}

template <class Archive, class Scalar>
void load(Archive& archive, Tensor<Scalar>& tensor) {
  std::vector<Scalar> values;
  archive(cereal::make_nvp("shape", tensor.shape), cereal::make_nvp("values", values));
  tensor.data = Eigen::Map<const VectorX<Scalar>>(values.data(), static_cast<Index>(values.size()));
}

/// A JSON checkpoint nests 6 levels deep; cereal's JSON parser (RapidJSON) recurses once per level, so a
/// file of a million '[' would overflow the stack.
inline constexpr std::size_t checkpoint_max_json_depth = 64;

/// A generator's state as text (the standard's form, in the classic locale so that a global locale's digit
/// grouping stays out): what a checkpoint stores, and parse_generator reads back exactly.
inline std::string generator_text(const Rng& rng) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << rng;
  return out.str();
}

/// The generator whose state generator_text wrote; a moe::Error naming `name` when `text` is not one.
inline Rng parse_generator(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  in.imbue(std::locale::classic());
  Rng rng;
  in >> rng;
  detail::require(!in.fail() && (in >> std::ws).eof(), "generator '", name, "' does not hold the state of a moe::Rng");
  return rng;
}

namespace detail {

inline constexpr std::uint32_t checkpoint_version = 1;
inline constexpr const char* checkpoint_magic = "moe checkpoint";

/// What a load checks before it reads on: a version this build reads, the same scalar type and optimizer.
struct CheckpointHeader {
  std::string dtype;
  std::string optimizer;
  TrainingProgress progress;

  template <class Archive>
  void serialize(Archive& archive, std::uint32_t version) {
    if constexpr (Archive::is_loading::value)
      require(version >= 1 && version <= checkpoint_version, "checkpoint version ", version,
              ", this build reads versions up to ", checkpoint_version);
    archive(CEREAL_NVP(dtype), CEREAL_NVP(optimizer), CEREAL_NVP(progress));
  }
};

/// How a checkpoint stores each optimizer, under torch.optim's names: its kind, its options, the counters
/// of its state and the state's tensors (one per parameter).
template <class Opt>
struct OptimizerFields {
  static_assert(sizeof(Opt) == 0, "moe checkpoints hold moe::SGD, moe::Adam or moe::AdamW optimizers");
};

template <class S>
struct OptimizerFields<SGD<S>> {
  static constexpr const char* kind = "SGD";
  static constexpr std::array<const char*, 1> tensor_names{"momentum_buffer"};

  template <class Archive>
  static void options(Archive& archive, typename SGD<S>::Options& o) {
    archive(cereal::make_nvp("lr", o.lr), cereal::make_nvp("momentum", o.momentum),
            cereal::make_nvp("dampening", o.dampening), cereal::make_nvp("weight_decay", o.weight_decay),
            cereal::make_nvp("nesterov", o.nesterov));
  }
  template <class Archive>
  static void counters(Archive& archive, typename SGD<S>::State& s) {
    archive(cereal::make_nvp("step", s.step), cereal::make_nvp("has_momentum_buffer", s.has_momentum_buffer));
  }
  template <class State>
  static auto tensors(State& s) {
    return std::array{&s.momentum_buffer};
  }
};

template <class S, bool Decoupled>
struct OptimizerFields<AdamBase<S, Decoupled>> {
  static constexpr const char* kind = AdamBase<S, Decoupled>::name;
  static constexpr std::array<const char*, 2> tensor_names{"exp_avg", "exp_avg_sq"};

  template <class Archive>
  static void options(Archive& archive, typename AdamBase<S, Decoupled>::Options& o) {
    archive(cereal::make_nvp("lr", o.lr), cereal::make_nvp("beta1", o.beta1), cereal::make_nvp("beta2", o.beta2),
            cereal::make_nvp("eps", o.eps), cereal::make_nvp("weight_decay", o.weight_decay));
  }
  template <class Archive>
  static void counters(Archive& archive, typename AdamBase<S, Decoupled>::State& s) {
    archive(cereal::make_nvp("step", s.step));
  }
  template <class State>
  static auto tensors(State& s) {
    return std::array{&s.exp_avg, &s.exp_avg_sq};
  }
};

/// A map stored as cereal stores one (a length, then key-value items), read refusing a key given twice,
/// which cereal's own reader keeps once, silently. `what` names the map in the error ("model").
template <class Map>
struct UniqueKeys {
  Map& map;
  const char* what;

  template <class Archive>
  void save(Archive& archive) const {
    archive(cereal::make_size_tag(static_cast<cereal::size_type>(map.size())));
    for (const auto& [key, value] : map) archive(cereal::make_map_item(key, value));
  }

  template <class Archive>
  void load(Archive& archive) {
    cereal::size_type size = 0;
    archive(cereal::make_size_tag(size));
    map.clear();
    for (cereal::size_type i = 0; i < size; ++i) {
      typename Map::key_type key;
      typename Map::mapped_type value;
      archive(cereal::make_map_item(key, value));
      const auto [at, added] = map.try_emplace(key, std::move(value));
      require(added, what, " holds two entries named '", at->first, "'");
    }
  }
};

template <class Map>
UniqueKeys<Map> unique_keys(Map& map, const char* what) {
  return {map, what};
}

template <class Opt>
struct OptimizerRecord {
  using Fields = OptimizerFields<Opt>;

  typename Opt::Options options;
  typename Opt::State state;  // the counters only: the tensors travel in `tensors`, by parameter name
  std::array<StateDict<typename Opt::Scalar>, Fields::tensor_names.size()> tensors;

  template <class Archive>
  void serialize(Archive& archive) {
    Fields::options(archive, options);
    Fields::counters(archive, state);
    for (std::size_t k = 0; k < tensors.size(); ++k)
      archive(cereal::make_nvp(Fields::tensor_names[k], unique_keys(tensors[k], Fields::tensor_names[k])));
  }
};

/// The whole file. Its serialize is called directly, not through the archive, so that its fields are the
/// top level of the file.
template <class Scalar, class Opt>
struct CheckpointFile {
  CheckpointHeader header;
  StateDict<Scalar> model;
  std::map<std::string, std::string> generators;  // each in the engine's standard text representation
  OptimizerRecord<Opt> optimizer;
  std::string rng;

  template <class Archive>
  void serialize(Archive& archive) {
    std::string format = checkpoint_magic;
    archive(cereal::make_nvp("format", format));
    require(format == checkpoint_magic, "not a moe checkpoint");
    archive(cereal::make_nvp("header", header));
    if constexpr (Archive::is_loading::value) {
      const std::string_view dtype = dtype_name(dtype_of<Scalar>());
      require(header.dtype == dtype, "the checkpoint holds ", header.dtype, " tensors, this model ", dtype);
      require(header.optimizer == OptimizerFields<Opt>::kind, "the optimizer is ", header.optimizer,
              " in the checkpoint, ", OptimizerFields<Opt>::kind, " here");
    }
    archive(cereal::make_nvp("model", unique_keys(model, "model")),
            cereal::make_nvp("generators", unique_keys(generators, "generators")),
            cereal::make_nvp("optimizer", optimizer), cereal::make_nvp("rng", rng));
  }

  /// What the types allow but no run writes: a negative count (a negative Adam step makes its bias
  /// correction divide by a negative number, and the weights NaN).
  void check_counts() const {
    for (const auto& [field, count] : {std::pair{"header.progress.epoch", header.progress.epoch},
                                       std::pair{"header.progress.step", header.progress.step},
                                       std::pair{"optimizer.step", optimizer.state.step}})
      require(count >= 0, field, " is ", count, ", expected a count >= 0");
  }
};

/// The most digits before an exponent that cereal's JSON writer produces: 17 significant digits after "0." and up
/// to 5 zeros ("-0.000012345678901234567"); its exponents have at most 3 digits ("-1.2345678901234567e-308").
inline constexpr std::size_t checkpoint_max_json_digits = 23;
inline constexpr std::size_t checkpoint_max_json_exponent_digits = 4;

/// Refuses a JSON number unlike any the writer produces, on which RapidJSON's full-precision conversion has
/// undefined behaviour: a zero with an exponent ("0e-300", "0.0e5") or a fraction of 23 zeros passes zero to
/// clz; a thousand digits overflow an int exponent.
inline void check_checkpoint_json_number(std::string_view number, std::size_t at) {
  const std::size_t e = number.find_first_of("eE");
  const std::string_view mantissa = number.substr(0, e);
  const auto digits = static_cast<std::size_t>(std::count_if(mantissa.begin(), mantissa.end(), [](char c) {
    return c >= '0' && c <= '9';
  }));
  const bool zero = mantissa.find_first_of("123456789") == std::string_view::npos;
  const std::size_t exponent_digits = e == std::string_view::npos ? 0 : number.size() - e - 1;
  require(digits <= checkpoint_max_json_digits && exponent_digits <= checkpoint_max_json_exponent_digits &&
              !(zero && e != std::string_view::npos),
          "the number '", number.substr(0, 40), number.size() > 40 ? "...'" : "'", " at byte ", at,
          " is not one a checkpoint holds (at most ", checkpoint_max_json_digits, " digits and a ",
          checkpoint_max_json_exponent_digits, "-digit exponent; no exponent on a zero)");
}

inline void check_checkpoint_json(std::string_view text) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      require(++depth <= checkpoint_max_json_depth, "JSON nested deeper than ", checkpoint_max_json_depth,
              " levels");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      const std::size_t end = text.find_first_not_of("+-.0123456789eE", i);
      const std::size_t length = (end == std::string_view::npos ? text.size() : end) - i;
      check_checkpoint_json_number(text.substr(i, length), i);
      i += length - 1;
    }
  }
}

inline std::map<std::string, std::string> generator_texts(const GeneratorList& list) {
  std::map<std::string, std::string> texts;
  for (const auto& [name, rng] : list)
    require(texts.emplace(name, generator_text(*rng)).second, "the model has two generators named '", name, "'");
  return texts;
}

template <class Opt>
OptimizerRecord<Opt> optimizer_record(const Opt& optimizer) {
  using Fields = OptimizerFields<Opt>;
  using Scalar = typename Opt::Scalar;
  OptimizerRecord<Opt> record{optimizer.options(), optimizer.state(), {}};
  const auto sources = Fields::tensors(record.state);
  for (std::size_t k = 0; k < sources.size(); ++k) {
    for (std::size_t i = 0; i < optimizer.parameters().size(); ++i) {
      const auto& [name, p] = optimizer.parameters()[i];
      const MatrixX<Scalar>& value = (*sources[k])[i];
      require(record.tensors[k]
                  .emplace(name, Tensor<Scalar>{p->shape, Eigen::Map<const VectorX<Scalar>>(value.data(), value.size())})
                  .second,
              "the optimizer has two parameters named '", name, "'");
    }
    sources[k]->clear();
  }
  return record;
}

/// A copy of each of the model's generators with the checkpoint's state; names must match both ways.
inline std::vector<std::pair<Rng*, Rng>> stage_generators(const std::map<std::string, std::string>& texts,
                                                          const GeneratorList& list) {
  std::vector<std::pair<Rng*, Rng>> staged;
  std::set<std::string> names;
  for (const auto& [name, rng] : list) {
    require(names.insert(name).second, "the model has two generators named '", name, "'");
    const auto found = texts.find(name);
    require(found != texts.end(), "generator '", name, "' is missing from the checkpoint");
    staged.emplace_back(rng, parse_generator(found->second, name));
  }
  for (const auto& [name, text] : texts)
    require(names.contains(name), "generator '", name, "' is in the checkpoint but not in the model");
  return staged;
}

/// A copy of `optimizer` with the checkpoint's options and state: its constructor checks the options.
template <class Opt>
Opt stage_optimizer(OptimizerRecord<Opt>& record, const Opt& optimizer) {
  using Fields = OptimizerFields<Opt>;
  using Scalar = typename Opt::Scalar;
  const auto& parameters = optimizer.parameters();
  const auto targets = Fields::tensors(record.state);
  for (std::size_t k = 0; k < targets.size(); ++k) {
    const StateDict<Scalar>& tensors = record.tensors[k];
    const char* what = Fields::tensor_names[k];
    require(tensors.size() == parameters.size(), "the optimizer has ", parameters.size(),
            " parameters, the checkpoint's ", what, " has ", tensors.size());
    targets[k]->reserve(parameters.size());
    for (const auto& [name, p] : parameters) {
      const auto found = tensors.find(name);
      require(found != tensors.end(), "optimizer ", what, " of '", name, "' is missing from the checkpoint");
      const Tensor<Scalar>& tensor = found->second;
      require(tensor.shape == p->shape && tensor.data.size() == p->value.size(), "optimizer ", what, " of '", name,
              "' has shape ", shape_to_string(tensor.shape), " and ", tensor.data.size(),
              " values in the checkpoint, the parameter ", shape_to_string(p->shape));
      targets[k]->push_back(Eigen::Map<const MatrixX<Scalar>>(tensor.data.data(), p->value.rows(), p->value.cols()));
    }
  }
  Opt staged(parameters, record.options);
  staged.state() = std::move(record.state);
  return staged;
}

/// How a binary checkpoint starts: the archive's endianness byte and the magic string. Checked before the
/// archive reads any length, so that another file is not taken for one with a huge string in it.
inline std::string binary_signature() {
  std::ostringstream out;
  {
    cereal::PortableBinaryOutputArchive archive(out);
    archive(std::string(checkpoint_magic));
  }
  return out.str();
}

/// Reads a checkpoint of either format from `in`, which holds `size` bytes.
template <class Scalar, class Opt>
CheckpointFile<Scalar, Opt> read_checkpoint(std::istream& in, std::uint64_t size) {
  CheckpointFile<Scalar, Opt> file;
  if (in.peek() == '{') {
    const std::string text(std::istreambuf_iterator<char>(in), {});
    check_checkpoint_json(text);
    std::istringstream json(text);
    cereal::JSONInputArchive archive(json);
    file.serialize(archive);
  } else {
    const std::string signature = binary_signature();
    std::string start(signature.size(), '\0');
    in.read(start.data(), static_cast<std::streamsize>(start.size()));
    require(in.gcount() == static_cast<std::streamsize>(start.size()) && start == signature, "not a moe checkpoint");
    in.seekg(0);
    CheckedBinaryInputArchive archive(in, size);
    file.serialize(archive);
    require(archive.bytes_left() == 0, archive.bytes_left(), " unexpected bytes after the checkpoint");
  }
  file.check_counts();
  return file;
}

template <class Scalar, class Opt>
CheckpointFile<Scalar, Opt> read_checkpoint_file(const std::filesystem::path& path, const std::string& where) {
  InputFile input = open_input_file(path, where);
  try {
    return read_checkpoint<Scalar, Opt>(input.stream, input.size);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  } catch (const std::exception& e) {
    fail(where, ": truncated or corrupt (", e.what(), ")");
  }
}

}  // namespace detail

/// Saves a training checkpoint to `path` (see the top of this file for what it holds). `model` is a module,
/// a ModelRef over several, or anything with named_parameters() and optionally named_buffers() and
/// named_generators(), with unique names. `optimizer` is SGD, Adam or AdamW. Throws moe::Error naming the
/// file and what went wrong; `path` then still holds what it held before.
template <class Model, class Opt>
void save_checkpoint(const std::filesystem::path& path, const TrainingProgress& progress, Model&& model,
                     const Opt& optimizer, const Rng& rng, CheckpointFormat format = CheckpointFormat::Binary) {
  static_assert(HasNamedParameters<std::remove_cvref_t<Model>>,
                "save_checkpoint: the model must provide `ParameterList<Scalar> named_parameters()`");
  using Scalar = typename std::remove_cvref_t<Model>::Scalar;
  static_assert(std::is_same_v<typename Opt::Scalar, Scalar>,
                "save_checkpoint: the optimizer and the model must have the same Scalar type");
  const std::string where = detail::concat("save_checkpoint: '", path.string(), "'");
  detail::CheckpointFile<Scalar, Opt> file;
  try {
    file = {{std::string(dtype_name(dtype_of<Scalar>())), detail::OptimizerFields<Opt>::kind, progress},
            state_dict(model),
            detail::generator_texts(generators_of(model)),
            detail::optimizer_record(optimizer),
            generator_text(rng)};
  } catch (const Error& e) {
    detail::fail(where, ": ", e.what());
  }
  write_file_atomically(path, where, [&](std::ostream& out) {
    if (format == CheckpointFormat::JSON) {
      cereal::JSONOutputArchive archive(out);  // completes the document when it goes out of scope
      file.serialize(archive);
    } else {
      cereal::PortableBinaryOutputArchive archive(out);
      file.serialize(archive);
    }
  });
}

/// Restores what save_checkpoint saved into objects built the same way (with any seeds) and returns the
/// epoch and step to resume from. The format is read from the file: JSON when its first byte is '{'. Names
/// must match both ways and shapes exactly; the options in the file replace the optimizer's. Throws
/// moe::Error naming the file and the entry, with the model, optimizer and rng left as they were.
template <class Model, class Opt>
TrainingProgress load_checkpoint(const std::filesystem::path& path, Model&& model, Opt& optimizer, Rng& rng) {
  static_assert(HasNamedParameters<std::remove_cvref_t<Model>>,
                "load_checkpoint: the model must provide `ParameterList<Scalar> named_parameters()`");
  using Scalar = typename std::remove_cvref_t<Model>::Scalar;
  static_assert(std::is_same_v<typename Opt::Scalar, Scalar>,
                "load_checkpoint: the optimizer and the model must have the same Scalar type");
  const std::string where = detail::concat("load_checkpoint: '", path.string(), "'");
  auto file = detail::read_checkpoint_file<Scalar, Opt>(path, where);

  const detail::LoadPlan<Scalar> tensors =
      detail::plan_load(detail::module_tensors(model, where), file.model, {.strict = true}, where, "checkpoint");
  std::vector<std::pair<Rng*, Rng>> generators;
  std::optional<Opt> staged_optimizer;
  Rng staged_rng;
  try {
    generators = detail::stage_generators(file.generators, generators_of(model));
    staged_optimizer.emplace(detail::stage_optimizer(file.optimizer, optimizer));
    staged_rng = parse_generator(file.rng, "rng");
  } catch (const Error& e) {
    detail::fail(where, ": ", e.what());
  }
  // Everything is checked: from here on nothing throws.
  tensors.apply();
  for (const auto& [target, value] : generators) *target = value;
  optimizer = std::move(*staged_optimizer);
  rng = staged_rng;
  return file.header.progress;
}

}  // namespace moe

CEREAL_CLASS_VERSION(moe::detail::CheckpointHeader, moe::detail::checkpoint_version)
