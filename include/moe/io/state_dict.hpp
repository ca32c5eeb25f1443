#pragma once
// A module's parameters and buffers by PyTorch name (its state dict), and loading one back: whole, or a
// chosen part into a chosen place, as when one expert slot starts from a pretrained network.

#include <algorithm>
#include <concepts>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"
#include "moe/io/tensor.hpp"

namespace moe {

namespace detail {

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (dots included).
inline bool glob_match(std::string_view pattern, std::string_view name) {
  std::size_t p = 0, n = 0;
  std::size_t star = std::string_view::npos, resume = 0;  // the last `*` seen, and where its match ends
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace detail

/// Which tensors of a state dict to take, by name: all of them (the default), those matching any of a
/// list of patterns where `*` is any run of characters ({"fc1.*"}, {"experts.*.fc2.bias"}), or those a
/// predicate accepts.
class NameFilter {
 public:
  NameFilter() = default;
  NameFilter(std::initializer_list<std::string> patterns) : NameFilter(std::vector<std::string>(patterns)) {}
  explicit NameFilter(std::vector<std::string> patterns)
      : select_([patterns = std::move(patterns)](const std::string& name) {
          return std::ranges::any_of(patterns, [&](const std::string& p) { return detail::glob_match(p, name); });
        }) {}
  template <class Predicate>
    requires(!std::same_as<std::remove_cvref_t<Predicate>, NameFilter> &&
             std::predicate<const Predicate&, const std::string&>)
  NameFilter(Predicate predicate) : select_(std::move(predicate)) {}

  bool selects_all() const { return !select_; }
  bool operator()(const std::string& name) const { return !select_ || select_(name); }

 private:
  std::function<bool(const std::string&)> select_;  // empty: every name
};

struct LoadOptions {
  /// Every selected tensor must land in the module, and every tensor of the module must be loaded.
  bool strict = true;
  /// Source prefix -> destination prefix, the longest matching source prefix winning: {{"", "experts.0."}}
  /// loads a single expert's file into expert 0, {{"experts.1.", ""}} takes expert 1 out of an MoE's file.
  /// Empty: names as they are. Tensors under no source prefix are skipped.
  std::map<std::string, std::string> prefix_map{};
  /// Which source tensors to take, by their name in the state dict (before prefix_map). Set, it is an
  /// explicit choice: each tensor it selects must exist in the module, even when not strict.
  NameFilter only{};
};

/// What load_state_dict did.
struct LoadReport {
  std::vector<std::string> loaded;      // module names written, in the module's order
  std::vector<std::string> skipped;     // source names left out by `only` or prefix_map
  std::vector<std::string> unexpected;  // selected source names the module does not have (not strict only)
  std::vector<std::string> missing;     // module names nothing was loaded into (not strict only)
};

namespace detail {

/// One parameter value or buffer of a module as a save reads it and a load writes it: in place, through
/// its memory (a parameter may be a view into an expert bank, which must never be resized), with its
/// PyTorch shape.
template <class Scalar>
struct TensorSlot {
  std::string name;
  Scalar* data;
  Index rows, cols;
  Shape shape;
};

/// Every parameter value and buffer of `module`, checked to be unique and to hold as many elements as
/// their shape says.
template <HasNamedParameters M>
std::vector<TensorSlot<typename M::Scalar>> module_tensors(M& module, const std::string& context) {
  std::vector<TensorSlot<typename M::Scalar>> list;
  for (const auto& p : module.named_parameters()) {
    auto& value = p.parameter->value;
    list.push_back({p.name, value.data(), value.rows(), value.cols(), p.parameter->shape});
  }
  for (auto& b : buffers_of(module)) {
    auto& value = *b.value;
    if (b.shape.empty()) b.shape = {value.rows(), value.cols()};
    list.push_back({std::move(b.name), value.data(), value.rows(), value.cols(), std::move(b.shape)});
  }
  std::vector<std::string> names;
  for (const auto& t : list) {
    if (numel(t.shape) != t.rows * t.cols)
      fail(context, ": module tensor ", t.name, " has shape ", shape_to_string(t.shape), " but holds ", t.rows, "x",
           t.cols, " values");
    names.push_back(t.name);
  }
  std::ranges::sort(names);
  if (const auto repeated = std::ranges::adjacent_find(names); repeated != names.end())
    fail(context, ": the module has two tensors named ", *repeated);
  return list;
}

/// The destination name of `source` under the longest matching prefix, or nothing if none matches.
inline std::optional<std::string> map_name(const std::string& source,
                                           const std::map<std::string, std::string>& prefix_map) {
  if (prefix_map.empty()) return source;
  const std::pair<const std::string, std::string>* best = nullptr;
  for (const auto& entry : prefix_map)
    if (source.starts_with(entry.first) && (!best || entry.first.size() > best->first.size())) best = &entry;
  if (!best) return std::nullopt;
  return best->second + source.substr(best->first.size());
}

inline std::string describe(const std::string& source, const std::string& destination) {
  return source == destination ? source : source + " (as " + destination + ")";
}

/// A load checked in full and not yet written: which module tensor receives which source tensor.
template <class Scalar>
struct LoadPlan {
  LoadReport report;
  std::vector<std::pair<Scalar*, const Tensor<Scalar>*>> copies;  // into memory of the tensor's size

  /// Writes the planned copies; cannot fail.
  void apply() const {
    for (const auto& [target, tensor] : copies) Eigen::Map<VectorX<Scalar>>(target, tensor->data.size()) = tensor->data;
  }
};

/// Checks a load of `dict` into `slots` (from module_tensors) without writing anything, so a caller can
/// check more (a checkpoint: the optimizer and the generators) before it changes the module. `context`
/// opens every message; `source` names where the tensors come from ("state dict", "checkpoint").
template <class Scalar>
LoadPlan<Scalar> plan_load(const std::vector<TensorSlot<Scalar>>& slots, const StateDict<Scalar>& dict,
                           const LoadOptions& options, const std::string& context,
                           const char* source_kind = "state dict") {
  std::map<std::string, const TensorSlot<Scalar>*> slot_of;
  for (const auto& slot : slots) slot_of.emplace(slot.name, &slot);

  LoadPlan<Scalar> plan;
  std::map<std::string, const std::string*> source_of;  // destination -> source name
  for (const auto& [source, tensor] : dict) {
    const std::optional<std::string> destination = map_name(source, options.prefix_map);
    if (!destination || !options.only(source)) {
      plan.report.skipped.push_back(source);
      continue;
    }
    const auto slot = slot_of.find(*destination);
    if (slot == slot_of.end()) {
      if (options.strict || !options.only.selects_all())
        fail(context, ": tensor ", describe(source, *destination), " is not in the module",
             options.strict ? "" : " (selected by LoadOptions::only)");
      plan.report.unexpected.push_back(source);
      continue;
    }
    const TensorSlot<Scalar>& target = *slot->second;
    if (tensor.shape != target.shape)
      fail(context, ": tensor ", describe(source, *destination), " has shape ", shape_to_string(tensor.shape),
           ", the module expects ", shape_to_string(target.shape));
    if (tensor.data.size() != target.rows * target.cols)
      fail(context, ": tensor ", source, " has shape ", shape_to_string(tensor.shape), " but holds ",
           tensor.data.size(), " values");
    const auto [previous, inserted] = source_of.emplace(*destination, &source);
    require(inserted, context, ": tensors ", *previous->second, " and ", source, " both map to ", *destination);
    plan.copies.emplace_back(target.data, &tensor);
  }
  for (const auto& slot : slots) {
    if (source_of.contains(slot.name)) {
      plan.report.loaded.push_back(slot.name);
    } else {
      if (options.strict)
        fail(context, ": module tensor ", slot.name, " ", shape_to_string(slot.shape), " is missing from the ",
             source_kind);
      plan.report.missing.push_back(slot.name);
    }
  }
  return plan;
}

/// load_state_dict with `context` opening every message (the function, and the file when there is one).
template <HasNamedParameters M>
LoadReport load_state_dict(M& module, const StateDict<typename M::Scalar>& dict, const LoadOptions& options,
                           const std::string& context) {
  const LoadPlan<typename M::Scalar> plan = plan_load(module_tensors(module, context), dict, options, context);
  plan.apply();
  return plan.report;
}

}  // namespace detail

/// Copies of every named parameter and buffer of `module`, with their PyTorch shapes.
template <HasNamedParameters M>
StateDict<typename M::Scalar> state_dict(M& module) {
  using Scalar = typename M::Scalar;
  StateDict<Scalar> dict;
  for (const auto& t : detail::module_tensors(module, "state_dict"))
    dict[t.name] = {t.shape, Eigen::Map<const VectorX<Scalar>>(t.data, t.rows * t.cols)};
  return dict;
}

/// Writes the tensors of `dict` into `module`'s parameters and buffers, by name (see LoadOptions for
/// partial loads). A wrong shape is always an error naming the tensor and both shapes; on any error the
/// module is left unchanged.
template <HasNamedParameters M>
LoadReport load_state_dict(M& module, const StateDict<typename M::Scalar>& dict, const LoadOptions& options = {}) {
  return detail::load_state_dict(module, dict, options, "load_state_dict");
}

/// Copies a pretrained model's tensors into part of `module` by name: prefix_map maps source prefixes to
/// destination prefixes, the longest matching source prefix winning ({{"encoder.", "moe.experts.2."},
/// {"embed_tokens.", "embed_tokens."}} puts a single-expert language model's encoder into expert slot 2 and
/// takes its embedding). Source tensors under no source prefix, or left out by `only`, are skipped. Every
/// other source tensor must exist in the module with the same shape, and every module tensor under a
/// destination prefix must receive one (a pretrained model with fewer layers is an error, not a partial
/// copy); errors name both names and, for a shape, both shapes. On any error the module is unchanged.
template <HasNamedParameters M>
LoadReport transfer_state_dict(M& module, const StateDict<typename M::Scalar>& source,
                               const std::map<std::string, std::string>& prefix_map, const NameFilter& only = {}) {
  const std::string context = "transfer_state_dict";
  detail::require(!prefix_map.empty(), context,
                  ": prefix_map is empty; give source prefix -> destination prefix, as {\"encoder.\", "
                  "\"experts.2.\"}");
  const auto slots = detail::module_tensors(module, context);
  const detail::LoadPlan<typename M::Scalar> plan =
      detail::plan_load(slots, source, LoadOptions{false, prefix_map, only}, context, "source");
  for (const auto& name : plan.report.unexpected)
    detail::fail(context, ": source tensor ", name, " ", shape_to_string(source.at(name).shape), " maps to ",
                 *detail::map_name(name, prefix_map), ", which the module does not have");
  for (const auto& slot : slots) {
    if (std::ranges::find(plan.report.missing, slot.name) == plan.report.missing.end()) continue;
    const std::pair<const std::string, std::string>* best = nullptr;  // the longest destination prefix
    for (const auto& entry : prefix_map)
      if (slot.name.starts_with(entry.second) && (!best || entry.second.size() > best->second.size())) best = &entry;
    if (!best) continue;
    const std::string wanted = best->first + slot.name.substr(best->second.size());
    if (!only(wanted)) continue;
    detail::fail(context, ": module tensor ", slot.name, " ", shape_to_string(slot.shape),
                 " would come from source tensor ", wanted, ", which the source does not have");
  }
  plan.apply();
  return plan.report;
}

/// transfer_state_dict from a module: its state_dict().
template <HasNamedParameters M, HasNamedParameters Source>
LoadReport transfer_state_dict(M& module, Source& source, const std::map<std::string, std::string>& prefix_map,
                               const NameFilter& only = {}) {
  static_assert(std::same_as<typename M::Scalar, typename Source::Scalar>,
                "moe::transfer_state_dict: the source and the module must have the same Scalar");
  return transfer_state_dict(module, state_dict(source), prefix_map, only);
}

}  // namespace moe
