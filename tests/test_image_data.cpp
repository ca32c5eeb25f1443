#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "moe/core/random.hpp"
#include "moe/data/cifar10.hpp"
#include "moe/data/file_bytes.hpp"
#include "moe/data/idx.hpp"
#include "moe/data/image_dataset.hpp"
#include "file_contents.hpp"
#include "temp_dir.hpp"

using moe::Compression;
using moe::ImageShape;
using moe::Index;
using moe::MatrixX;
using Bytes = std::vector<unsigned char>;

namespace {

using moe::test::read_bytes;
using moe::test::TempDir;
using moe::test::write_bytes;

/// `count` images of rows x columns with random byte values, as the reader returns them (byte / 255).
MatrixX<float> random_pixels(Index count, Index rows, Index columns, std::uint64_t seed) {
  moe::Rng rng(seed);
  MatrixX<float> pixels(count, rows * columns);
  for (Index i = 0; i < pixels.size(); ++i)
    pixels.data()[i] = static_cast<float>(moe::uniform_index(rng, 256)) / 255.0f;
  return pixels;
}

/// A CIFAR-10 record: the label, then pixel j = (seed + 7 j) mod 256.
void append_cifar_record(Bytes& out, unsigned char label, int seed) {
  out.push_back(label);
  for (int j = 0; j < 3072; ++j) out.push_back(static_cast<unsigned char>((seed + 7 * j) % 256));
}

moe::ImageDataset<double> dataset_with_labels(Index count, ImageShape shape) {
  moe::ImageDataset<double> data;
  data.shape = shape;
  data.images.resize(count, shape.size());
  for (Index i = 0; i < count; ++i) {
    data.images.row(i).setConstant(static_cast<double>(i));
    data.labels.push_back(i);
  }
  return data;
}

}  // namespace

TEST_CASE("IDX files survive a write and a read, raw and gzip", "[data][idx]") {
  TempDir dir;
  const MatrixX<float> pixels = random_pixels(7, 5, 4, 1);
  const std::vector<Index> labels{3, 1, 4, 1, 5, 9, 2};
  for (const Compression compression : {Compression::none, Compression::gzip}) {
    const bool gzip = compression == Compression::gzip;
    INFO((gzip ? "gzip" : "raw"));
    const std::string images_path = dir.file(gzip ? "images.gz" : "images"), labels_path = dir.file("labels");
    moe::write_idx_images(images_path, pixels, 5, 4, compression);
    moe::write_idx_labels(labels_path, labels, compression);

    const Bytes head = read_bytes<Bytes>(images_path);
    REQUIRE(head.size() > 4);
    if (gzip) {
      CHECK((head[0] == 0x1f && head[1] == 0x8b));
    } else {
      CHECK(head == [&] {
        Bytes expected{0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0, 4};
        for (Index i = 0; i < pixels.size(); ++i)
          expected.push_back(static_cast<unsigned char>(std::lround(pixels.data()[i] * 255.0f)));
        return expected;
      }());
    }

    const moe::IdxImages<float> images = moe::read_idx_images(images_path);
    CHECK(images.rows == 5);
    CHECK(images.columns == 4);
    CHECK(images.pixels == pixels);
    CHECK(moe::read_idx_images<double>(images_path).pixels ==
          (pixels.cast<double>() * 255.0).array().round().matrix() / 255.0);
    CHECK(moe::read_idx_labels(labels_path) == labels);

    const moe::ImageDataset<float> data = moe::read_idx_dataset(images_path, labels_path);
    CHECK(data.shape == ImageShape{1, 5, 4});
    CHECK(data.size() == 7);
    CHECK(data.images == pixels);
    CHECK(data.labels == labels);
  }
}

TEST_CASE("IDX read errors name the file, the byte offset and what was expected", "[data][idx][errors]") {
  TempDir dir;
  const std::string images = dir.file("images"), labels = dir.file("labels"), bad = dir.file("bad");
  moe::write_idx_images(images, random_pixels(7, 5, 4, 2), 5, 4);
  moe::write_idx_labels(labels, {1, 2, 3, 4, 5, 6});
  const Bytes valid = read_bytes<Bytes>(images);
  REQUIRE(valid.size() == 16 + 7 * 20);
  const auto with_bytes = [&](const Bytes& bytes) {
    write_bytes(bad, bytes);
    return bad;
  };

  CHECK_THROWS_WITH(moe::read_idx_images(dir.file("missing")),
                    Catch::Contains("read_idx_images: " + dir.file("missing") + ": no such file"));
  CHECK_THROWS_WITH(moe::read_idx_images(with_bytes({})),
                    Catch::Contains(bad + ": file ends at byte 0, expected the magic number 0x00000803 at byte 0"));
  CHECK_THROWS_WITH(moe::read_idx_images(with_bytes({'P', '5', ' ', '2', '8', ' ', '2', '8'})),
                    Catch::Contains(bad + ": byte 0: magic number is 0x50352032, expected 0x00000803"));
  CHECK_THROWS_WITH(moe::read_idx_images(labels),
                    Catch::Contains(labels + ": byte 3: IDX file has 1 dimensions (magic number 0x00000801), "
                                             "expected 3 for images (magic number 0x00000803)"));
  CHECK_THROWS_WITH(moe::read_idx_labels(images),
                    Catch::Contains(images + ": byte 3: IDX file has 3 dimensions (magic number 0x00000803), "
                                             "expected 1 for labels (magic number 0x00000801)"));
  CHECK_THROWS_WITH(moe::read_idx_images(with_bytes(Bytes(valid.begin(), valid.begin() + 10))),
                    Catch::Contains(bad + ": file ends at byte 10, expected the number of rows at byte 8"));
  CHECK_THROWS_WITH(
      moe::read_idx_images(with_bytes(Bytes(valid.begin(), valid.end() - 5))),
      Catch::Contains(bad + ": file ends at byte 151, expected 7 images of 5x4 pixels (7 x 20 bytes from byte 16)"));
  Bytes longer = valid;
  longer.insert(longer.end(), {1, 2, 3});
  CHECK_THROWS_WITH(
      moe::read_idx_images(with_bytes(longer)),
      Catch::Contains(bad +
                      ": 3 unexpected bytes after 7 images of 5x4 pixels at byte 156, expected the end of the file"));
  Bytes no_rows = valid;
  no_rows[11] = 0;
  CHECK_THROWS_WITH(moe::read_idx_images(with_bytes(no_rows)),
                    Catch::Contains(bad + ": byte 8: images are 0x4, expected positive sizes"));
  const Bytes labels_bytes = read_bytes<Bytes>(labels);
  CHECK_THROWS_WITH(moe::read_idx_labels(with_bytes(Bytes(labels_bytes.begin(), labels_bytes.end() - 1))),
                    Catch::Contains(bad + ": file ends at byte 13, expected 6 labels (6 x 1 bytes from byte 8)"));
  CHECK_THROWS_WITH(moe::read_idx_dataset(images, labels),
                    Catch::Contains("read_idx_dataset: " + images + " has 7 images but " + labels + " has 6 labels"));

  SECTION("gzip files") {
    const std::string gz = dir.file("images.gz");
    moe::detail::write_file_bytes(gz, Bytes(valid.begin(), valid.end() - 20), Compression::gzip, "test");
    CHECK_THROWS_WITH(moe::read_idx_images(gz),
                      Catch::Contains(gz + ": file ends at byte 136 of the gunzipped data, expected 7 images"));
    const Bytes compressed = read_bytes<Bytes>(gz);
    CHECK_THROWS_WITH(moe::read_idx_images(with_bytes(Bytes(compressed.begin(), compressed.end() - 10))),
                      Catch::Contains(bad + ": gzip data ends at compressed byte " +
                                      std::to_string(compressed.size() - 10) + " before the end of its stream"));
    Bytes corrupt = compressed;
    std::fill(corrupt.begin() + 10, corrupt.end(), 0xff);
    CHECK_THROWS_WITH(moe::read_idx_images(with_bytes(corrupt)), Catch::Contains(bad + ": corrupt gzip data"));
  }
}

TEST_CASE("IDX writers reject values the format cannot hold", "[data][idx][errors]") {
  TempDir dir;
  MatrixX<float> pixels = MatrixX<float>::Zero(2, 6);
  pixels(1, 2) = 1.5f;
  CHECK_THROWS_WITH(moe::write_idx_images(dir.file("x"), pixels, 2, 3),
                    Catch::Contains("write_idx_images: pixel (1, 2) is 1.5, expected a value in [0, 1]"));
  CHECK_THROWS_WITH(moe::write_idx_images(dir.file("x"), pixels, 2, 2),
                    Catch::Contains("images of 2x2 need 4 columns, got 6"));
  CHECK_THROWS_WITH(moe::write_idx_labels(dir.file("y"), {0, 256}),
                    Catch::Contains("write_idx_labels: label 1 is 256, expected a value in [0, 255]"));
  CHECK_THROWS_WITH(moe::write_idx_labels(dir.file("no_such_dir/y"), {0}), Catch::Contains("cannot create file"));
}

TEST_CASE("CIFAR-10 batches are read record by record in CHW order", "[data][cifar10]") {
  TempDir dir;
  Bytes first, second;
  append_cifar_record(first, 6, 0);
  append_cifar_record(first, 9, 1);
  append_cifar_record(first, 0, 2);
  append_cifar_record(second, 3, 3);
  write_bytes(dir.file("a.bin"), first);
  moe::detail::write_file_bytes(dir.file("b.bin.gz"), second, Compression::gzip, "test");

  const moe::ImageDataset<float> data = moe::read_cifar10_batches({dir.file("a.bin"), dir.file("b.bin.gz")});
  CHECK(data.shape == ImageShape{3, 32, 32});
  CHECK(data.size() == 4);
  CHECK(data.labels == std::vector<Index>{6, 9, 0, 3});
  for (Index r = 0; r < 4; ++r)
    for (const Index c : {0, 1, 2})
      for (const Index y : {0, 5, 31})
        for (const Index x : {0, 17, 31}) {
          const Index j = c * 1024 + y * 32 + x;  // red plane, then green, then blue; rows of 32
          CHECK(data.images(r, j) == static_cast<float>((r + 7 * j) % 256) / 255.0f);
        }
  CHECK(std::string(moe::cifar10_classes[0]) == "airplane");
  CHECK(std::string(moe::cifar10_classes[9]) == "truck");
}

TEST_CASE("read_cifar10 takes the five training batches and the test batch", "[data][cifar10]") {
  TempDir dir;
  for (int i = 1; i <= 5; ++i) {
    Bytes batch;
    append_cifar_record(batch, static_cast<unsigned char>(i), i);
    append_cifar_record(batch, static_cast<unsigned char>(i - 1), i);
    write_bytes(dir.file("data_batch_" + std::to_string(i) + ".bin"), batch);
  }
  CHECK_THROWS_WITH(moe::read_cifar10(dir.path()),
                    Catch::Contains("read_cifar10: " + dir.file("test_batch.bin") + ": no such file"));
  Bytes test;
  append_cifar_record(test, 7, 0);
  write_bytes(dir.file("test_batch.bin"), test);
  const moe::Cifar10<double> cifar = moe::read_cifar10<double>(dir.path());
  CHECK(cifar.train.size() == 10);
  CHECK(cifar.train.labels == std::vector<Index>{1, 0, 2, 1, 3, 2, 4, 3, 5, 4});
  CHECK(cifar.test.size() == 1);
  CHECK(cifar.test.labels == std::vector<Index>{7});
}

TEST_CASE("CIFAR-10 read errors name the file, the byte offset and what was expected", "[data][cifar10][errors]") {
  TempDir dir;
  const std::string bad = dir.file("bad.bin");
  Bytes two;
  append_cifar_record(two, 1, 0);
  append_cifar_record(two, 2, 0);

  Bytes cut = two;
  cut.resize(2 * 3073 + 100);
  append_cifar_record(cut, 0, 0);
  cut.resize(2 * 3073 + 100);
  write_bytes(bad, cut);
  CHECK_THROWS_WITH(moe::read_cifar10_batches({bad}),
                    Catch::Contains(bad + ": file ends at byte 6246 inside record 2, which starts at byte 6146; "
                                          "expected records of 3073 bytes"));
  Bytes wrong_label = two;
  wrong_label[3073] = 10;
  write_bytes(bad, wrong_label);
  CHECK_THROWS_WITH(moe::read_cifar10_batches({bad}),
                    Catch::Contains(bad + ": byte 3073: label of record 1 is 10, expected 0..9"));
  write_bytes(bad, {});
  CHECK_THROWS_WITH(moe::read_cifar10_batches({bad}), Catch::Contains(bad + ": file is empty"));
  CHECK_THROWS_WITH(moe::read_cifar10_batches({dir.file("missing.bin")}),
                    Catch::Contains(dir.file("missing.bin") + ": no such file"));
}

TEST_CASE("Channel statistics and normalisation", "[data][normalize]") {
  SECTION("hand-computed statistics; the test split takes the training statistics") {
    // 3 images of 2 channels of 2x2: channel 0 holds 1..12, channel 1 twice that.
    moe::ImageDataset<double> train;
    train.shape = {2, 2, 2};
    train.images.resize(3, 8);
    for (Index i = 0; i < 3; ++i)
      for (Index p = 0; p < 4; ++p) {
        train.images(i, p) = static_cast<double>(4 * i + p + 1);
        train.images(i, 4 + p) = 2.0 * static_cast<double>(4 * i + p + 1);
      }
    train.labels = {0, 1, 2};
    const moe::ChannelStatistics stats = moe::channel_statistics(train);
    const double stddev = std::sqrt(143.0 / 12.0);  // population variance of 1..12 is (12^2 - 1) / 12
    REQUIRE(stats.mean.size() == 2);
    CHECK(stats.mean[0] == Approx(6.5));
    CHECK(stats.mean[1] == Approx(13.0));
    CHECK(stats.stddev[0] == Approx(stddev));
    CHECK(stats.stddev[1] == Approx(2.0 * stddev));

    moe::ImageDataset<double> test = train;
    test.images.row(0) << 6.5, 6.5 + stddev, 0, 0, 13.0, 13.0 - 2.0 * stddev, 0, 0;
    moe::normalize(train, stats);
    moe::normalize(test, stats);
    const moe::ChannelStatistics after = moe::channel_statistics(train);
    for (std::size_t c = 0; c < 2; ++c) {
      CHECK(std::abs(after.mean[c]) < 1e-12);
      CHECK(after.stddev[c] == Approx(1.0));
    }
    CHECK(test.images(0, 0) == Approx(0.0).margin(1e-12));
    CHECK(test.images(0, 1) == Approx(1.0));
    CHECK(test.images(0, 4) == Approx(0.0).margin(1e-12));
    CHECK(test.images(0, 5) == Approx(-1.0));
  }
  SECTION("float images of three channels come out with mean 0 and standard deviation 1") {
    moe::ImageDataset<float> data;
    data.shape = {3, 4, 4};
    data.images = random_pixels(50, 6, 8, 3);  // 48 = 3 * 4 * 4 columns
    data.images.middleCols(16, 16).array() *= 0.25f;
    data.labels.assign(50, 0);
    moe::normalize(data, moe::channel_statistics(data));
    const moe::ChannelStatistics after = moe::channel_statistics(data);
    for (std::size_t c = 0; c < 3; ++c) {
      CHECK(std::abs(after.mean[c]) < 1e-5);
      CHECK(after.stddev[c] == Approx(1.0).epsilon(1e-5));
    }
  }
  SECTION("errors") {
    moe::ImageDataset<double> data = dataset_with_labels(3, {2, 1, 2});
    data.images.middleCols(2, 2).setConstant(5.0);
    CHECK_THROWS_WITH(moe::normalize(data, moe::channel_statistics(data)),
                      Catch::Contains("normalize: channel 1 has standard deviation 0, expected a positive value"));
    CHECK_THROWS_WITH(moe::normalize(data, moe::ChannelStatistics{{0.0}, {1.0}}),
                      Catch::Contains("normalize: statistics for 1 channels, the images have 2"));
    data.labels.pop_back();
    CHECK_THROWS_WITH(moe::channel_statistics(data), Catch::Contains("channel_statistics: 3 images but 2 labels"));
  }
}

TEST_CASE("The train/validation split is disjoint, complete and fixed by the seed", "[data][split]") {
  const moe::ImageDataset<double> data = dataset_with_labels(50, {1, 2, 2});
  const auto split = moe::split_train_validation(data, 5, 42);
  CHECK(split.train.size() == 45);
  CHECK(split.validation.size() == 5);
  CHECK(split.train.shape == data.shape);
  std::vector<Index> all = split.train.labels;
  all.insert(all.end(), split.validation.labels.begin(), split.validation.labels.end());
  std::sort(all.begin(), all.end());
  for (Index i = 0; i < 50; ++i) CHECK(all[static_cast<std::size_t>(i)] == i);
  CHECK(std::is_sorted(split.train.labels.begin(), split.train.labels.end()));
  CHECK(std::is_sorted(split.validation.labels.begin(), split.validation.labels.end()));
  for (Index i = 0; i < split.train.size(); ++i)  // each image travels with its label
    CHECK(split.train.images(i, 3) == static_cast<double>(split.train.labels[static_cast<std::size_t>(i)]));

  CHECK(moe::split_train_validation(data, 5, 42).validation.labels == split.validation.labels);
  CHECK(moe::split_train_validation(data, 5, 43).validation.labels != split.validation.labels);

  SECTION("CIFAR-10's 49,000 / 1,000") {
    const auto cifar = moe::split_train_validation(dataset_with_labels(50000, {1, 1, 1}), 1000, 0);
    CHECK(cifar.train.size() == 49000);
    CHECK(cifar.validation.size() == 1000);
  }
  SECTION("errors") {
    CHECK_THROWS_WITH(moe::split_train_validation(data, 51, 0),
                      Catch::Contains("validation_size must be in [0, 50], got 51"));
    CHECK_THROWS_WITH(moe::select(data, {0, 50}), Catch::Contains("select: index 50 at position 1 is outside [0, 50)"));
  }
}
