// Writes the fuzz targets' seed corpora into tests/fuzz/seeds/<target>/ with the library's own writers:
// small valid inputs of every kind each reader takes, from which libFuzzer mutates. Run by
// scripts/fuzz.sh --seeds; the output is committed (a few KiB per target).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <nlohmann/json.hpp>

#include "moe/core/random.hpp"
#include "moe/data/gpt2_tokenizer.hpp"
#include "moe/data/idx.hpp"
#include "moe/data/vocabulary_map.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/nn/layer_norm.hpp"
#include "moe/nn/linear.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/train/checkpoint.hpp"

#include "../gpt2_toy_files.hpp"

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

/// The file `write(path)` makes, as bytes.
template <class Write>
std::string written(const fs::path& scratch, Write&& write) {
  write(scratch);
  std::string bytes = read_bytes(scratch);
  fs::remove(scratch);
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_fuzz_seeds SEEDS_DIR\n";
    return 2;
  }
  const fs::path seeds = argv[1];
  const fs::path scratch = fs::temp_directory_path() / "moe_make_fuzz_seeds.tmp";
  moe::Rng rng(18);
  moe::Linear<float> fc(3, 2, rng);
  moe::LayerNorm<float> norm(2);
  moe::ModelRef<float> model{{"fc", fc}, {"norm", norm}};

  // safetensors: F32 and F64, with and without metadata; and one tensor of each dtype read, by hand-free
  // means: the writer writes F32/F64 only.
  write_bytes(seeds / "safetensors/f32", written(scratch, [&](const fs::path& p) {
                moe::save_safetensors(p, moe::state_dict(model), {{"format", "pt"}});
              }));
  write_bytes(seeds / "safetensors/f64", written(scratch, [&](const fs::path& p) {
                moe::save_safetensors(p, moe::state_dict(model), {}, moe::DType::F64);
              }));
  write_bytes(seeds / "safetensors/empty", written(scratch, [&](const fs::path& p) {
                moe::save_safetensors(p, moe::StateDict<float>{});
              }));

  // The state-dict target: one option byte (bit 0 strict, bit 1 the prefix map "" -> "fc."), then a file.
  const std::string whole = read_bytes(seeds / "safetensors/f32");
  const std::string fc_alone = written(scratch, [&](const fs::path& p) { moe::save_module(p, fc); });
  write_bytes(seeds / "state_dict/strict", '\x01' + whole);
  write_bytes(seeds / "state_dict/loose", '\x00' + whole);
  write_bytes(seeds / "state_dict/prefixed", '\x02' + fc_alone);
  write_bytes(seeds / "state_dict/prefixed_strict", '\x03' + fc_alone);

  // Checkpoints: one byte for the optimizer (1 SGD, 0 Adam), then a file of either format, after a step.
  moe::Linear<float> small(2, 3, rng);
  moe::SGD<float> sgd(small.named_parameters(), {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  moe::Adam<float> adam(small.named_parameters());
  sgd.step();
  adam.step();
  for (const auto& named : {std::pair{"binary", moe::CheckpointFormat::Binary},
                            std::pair{"json", moe::CheckpointFormat::JSON}}) {
    const std::string name = named.first;
    const moe::CheckpointFormat format = named.second;  // a copy: clang 14 captures no structured binding
    write_bytes(seeds / "checkpoint" / (std::string("sgd_") + name), '\x01' + written(scratch, [&](const fs::path& p) {
                  moe::save_checkpoint(p, {.epoch = 1, .step = 3}, small, sgd, rng, format);
                }));
    write_bytes(seeds / "checkpoint" / (std::string("adam_") + name), '\x00' + written(scratch, [&](const fs::path& p) {
                  moe::save_checkpoint(p, {.epoch = 1, .step = 3}, small, adam, rng, format);
                }));
  }

  // The trainer's state as save_training writes it.
  moe::TrainerState state;
  state.step = 5;
  state.epoch = 2;
  state.batch = 1;
  state.dataset_size = 4;
  state.batch_size = 2;
  state.order = {2, 0, 3, 1};
  state.values = {{"accuracy", 0.5}};
  state.epoch_sums = {{"loss", 1.25}};
  {
    std::ostringstream out;
    {
      cereal::PortableBinaryOutputArchive archive(out);
      archive(std::string(moe::detail::trainer_state_magic), state);
    }
    write_bytes(seeds / "trainer_state/state", out.str());
  }

  // IDX images and labels, plain and gzip.
  const moe::MatrixX<float> pixels = moe::MatrixX<float>::Random(3, 16).cwiseAbs();
  for (const auto& kind : {std::pair{"", moe::Compression::none}, std::pair{".gz", moe::Compression::gzip}}) {
    const std::string suffix = kind.first;
    const moe::Compression compression = kind.second;
    write_bytes(seeds / "idx" / (std::string("images") + suffix), written(scratch, [&](const fs::path& p) {
                  moe::write_idx_images(p.string(), pixels, 4, 4, compression);
                }));
    write_bytes(seeds / "idx" / (std::string("labels") + suffix), written(scratch, [&](const fs::path& p) {
                  moe::write_idx_labels(p.string(), {1, 0, 9}, compression);
                }));
  }

  // CIFAR-10: records of a label byte and 3x32x32 pixel bytes (the library reads them, writes none); one
  // plain, two gzip (through the IDX writer's gzip, which writes bytes as given).
  std::vector<unsigned char> records;
  for (int r = 0; r < 2; ++r) {
    records.push_back(static_cast<unsigned char>(r * 7));
    for (int i = 0; i < 3072; ++i) records.push_back(static_cast<unsigned char>((i * 37 + r) % 251));
  }
  write_bytes(seeds / "cifar10/record", std::string(records.begin(), records.begin() + 3073));
  write_bytes(seeds / "cifar10/records.gz", written(scratch, [&](const fs::path& p) {
                moe::detail::write_file_bytes(p.string(), records, moe::Compression::gzip, "make_fuzz_seeds");
              }));

  // GPT-2's files: an encoder.json of the bytes and a few merges, and merges for the fixed encoder of the
  // vocab_bpe target.
  const moe::test::ToyFiles files =
      moe::test::toy_files({{"a", "b"}, {"ab", "c"}, {" ", "a"}, {"#", ","}, {",", "$"}, {"#", ",$"}});
  write_bytes(seeds / "encoder_json/bytes_and_merges", files.encoder);
  write_bytes(seeds / "encoder_json/small", R"({"!": 0, "\"": 1, "<|endoftext|>": 2})");
  write_bytes(seeds / "vocab_bpe/merges", files.vocab);
  write_bytes(seeds / "vocab_bpe/crlf", "#version: 0.2\r\na b\r\nab c\r\n");

  // Texts for the tokenizer: words, contractions, numbers, spaces, other scripts, invalid UTF-8.
  write_bytes(seeds / "tokenizer_encode/english", "It's the model's 2nd run; we'll see.\n  Indented   text\t\n");
  write_bytes(seeds / "tokenizer_encode/code", "for (int i = 0; i < n; ++i) { x[i] += 0x1F; }  // done\n");
  write_bytes(seeds / "tokenizer_encode/unicode", "Grüße, 東京! Ελληνικά ١٢٣ \xe2\x80\xa8 \xef\xbb\xbf end");
  write_bytes(seeds / "tokenizer_encode/invalid_utf8", "ok \xc3\x28 \xed\xa0\x80 \xff\xfe tail");
  write_bytes(seeds / "tokenizer_encode/letters", std::string(300, 'a') + "bcdefghij" + std::string(200, 'z'));

  // JSON: a safetensors header, and documents of every kind of value.
  const std::string header = whole.substr(8, static_cast<std::size_t>(static_cast<unsigned char>(whole[0])) |
                                                 static_cast<std::size_t>(static_cast<unsigned char>(whole[1])) << 8);
  write_bytes(seeds / "json/safetensors_header", header);
  write_bytes(seeds / "json/values", R"({"a": [1, -2.5e3, true, false, null], "b": {"c": "\u00e9\n\"x\""}, "d": []})");

  // VocabularyMap strings.
  const std::vector<moe::Index> corpus{5, 3, 5, 7, 5, 3, 0, 9};
  write_bytes(seeds / "vocabulary_map/map", moe::VocabularyMap::from_corpus(corpus, 10).to_string());
  write_bytes(seeds / "vocabulary_map/capped", moe::VocabularyMap::from_corpus(corpus, 10, 3).to_string());
  return 0;
}
