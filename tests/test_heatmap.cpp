#include <catch2/catch.hpp>

#include <cairo.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "moe/analysis/heatmap.hpp"

using moe::HeatmapFigure;
using moe::HeatmapOptions;
using moe::HeatmapPanel;
using moe::MatrixX;

namespace {

namespace fs = std::filesystem;

constexpr double missing_value = std::numeric_limits<double>::quiet_NaN();

struct Rgb8 {
  int r, g, b;
};

// ColorBrewer's ends, written out rather than taken from the header.
constexpr Rgb8 light_yellow{255, 255, 204};
constexpr Rgb8 dark_red{128, 0, 38};
constexpr Rgb8 middle_orange{253, 141, 60};  // YlOrRd's middle stop: value 5 of [0, 10]
constexpr Rgb8 missing_grey{176, 176, 176};
constexpr Rgb8 white{255, 255, 255};
constexpr Rgb8 blue{33, 102, 172};
constexpr Rgb8 red{178, 24, 43};

bool near(const Rgb8& a, const Rgb8& b) {
  return std::abs(a.r - b.r) <= 1 && std::abs(a.g - b.g) <= 1 && std::abs(a.b - b.b) <= 1;
}

std::ostream& operator<<(std::ostream& out, const Rgb8& c) {
  return out << "(" << c.r << ", " << c.g << ", " << c.b << ")";
}

/// CHECK_THAT(pixel, IsColour(expected)): equal within 1 per channel, and says which colours when not.
class IsColour : public Catch::MatcherBase<Rgb8> {
 public:
  explicit IsColour(Rgb8 expected) : expected_(expected) {}
  bool match(const Rgb8& actual) const override { return near(actual, expected_); }
  std::string describe() const override { return Catch::Detail::stringify(expected_).insert(0, "is the colour "); }

 private:
  Rgb8 expected_;
};

/// A PNG read back with cairo: it must decode.
class Png {
 public:
  explicit Png(const fs::path& path) : surface_(cairo_image_surface_create_from_png(path.c_str())) {
    INFO(path.string());
    REQUIRE(cairo_surface_status(surface_.get()) == CAIRO_STATUS_SUCCESS);
    cairo_surface_flush(surface_.get());
  }

  int width() const { return cairo_image_surface_get_width(surface_.get()); }
  int height() const { return cairo_image_surface_get_height(surface_.get()); }

  Rgb8 pixel(int x, int y) const {
    REQUIRE(inside({x, y, 1, 1}));
    return at(x, y);
  }

  Rgb8 centre(const moe::PixelBox& box) const { return pixel(box.x + box.width / 2, box.y + box.height / 2); }

  /// Pixels of the box whose colour is not `colour`.
  int count_other(const moe::PixelBox& box, const Rgb8& colour) const {
    REQUIRE(inside(box));
    int count = 0;
    for (int y = box.y; y < box.y + box.height; ++y)
      for (int x = box.x; x < box.x + box.width; ++x) count += near(at(x, y), colour) ? 0 : 1;
    return count;
  }

 private:
  bool inside(const moe::PixelBox& box) const {
    return box.x >= 0 && box.y >= 0 && box.x + box.width <= width() && box.y + box.height <= height();
  }

  Rgb8 at(int x, int y) const {
    const unsigned char* row = cairo_image_surface_get_data(surface_.get()) +
                               static_cast<std::ptrdiff_t>(y) * cairo_image_surface_get_stride(surface_.get());
    std::uint32_t value = 0;  // RGB24 and ARGB32 both hold 0xAARRGGBB in native byte order
    std::memcpy(&value, row + 4 * x, sizeof value);
    return {static_cast<int>((value >> 16) & 0xffu), static_cast<int>((value >> 8) & 0xffu),
            static_cast<int>(value & 0xffu)};
  }

  struct Destroy {
    void operator()(cairo_surface_t* surface) const { cairo_surface_destroy(surface); }
  };
  std::unique_ptr<cairo_surface_t, Destroy> surface_;
};

fs::path temp_dir() {
  const fs::path dir = fs::temp_directory_path() / "moe_test_heatmap";
  fs::create_directories(dir);
  return dir;
}

MatrixX<double> matrix(Eigen::Index rows, Eigen::Index cols, std::initializer_list<double> values) {
  MatrixX<double> m(rows, cols);
  REQUIRE(static_cast<Eigen::Index>(values.size()) == rows * cols);
  std::copy(values.begin(), values.end(), m.data());
  return m;
}

}  // namespace

TEST_CASE("Heatmap cells: min light yellow, max dark red, NaN grey, at their centres", "[analysis][heatmap]") {
  const fs::path path = temp_dir() / "colours.png";
  const MatrixX<double> m = matrix(2, 3, {0.0, 5.0, 10.0, missing_value, 2.5, 7.5});
  HeatmapOptions options;
  options.title = "Relative expert load";
  options.row_labels = {"Github", "DM Mathematics"};
  options.min = 0.0;
  options.max = 10.0;
  options.colour_bar_label = "Relative expert load";
  moe::write_heatmap_png(path, m, options);
  const HeatmapFigure figure({{m, {}}}, options);
  const Png png(path);
  CHECK(png.width() == figure.width());
  CHECK(png.height() == figure.height());
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 0)), IsColour(light_yellow));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 1)), IsColour(middle_orange));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 2)), IsColour(dark_red));
  CHECK_THAT(png.centre(figure.cell_box(0, 1, 0)), IsColour(missing_grey));
  // Without annotations a cell is one colour, edge to edge.
  CHECK(png.count_other(figure.cell_box(0, 0, 2), dark_red) == 0);
  CHECK(png.count_other(figure.cell_box(0, 1, 0), missing_grey) == 0);
}

TEST_CASE("Heatmap values beyond min and max take the end colours", "[analysis][heatmap]") {
  const fs::path path = temp_dir() / "clamped.png";
  const double inf = std::numeric_limits<double>::infinity();
  const MatrixX<double> m = matrix(1, 4, {-3.0, 12.0, inf, 4.0});
  HeatmapOptions options;
  options.min = 0.0;
  options.max = 10.0;
  moe::write_heatmap_png(path, m, options);
  const HeatmapFigure figure({{m, {}}}, options);
  const Png png(path);
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 0)), IsColour(light_yellow));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 1)), IsColour(dark_red));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 2)), IsColour(dark_red));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 3)), !IsColour(light_yellow));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 3)), !IsColour(dark_red));
}

TEST_CASE("Heatmap automatic range: the data's, symmetric about 0 for blue_white_red", "[analysis][heatmap]") {
  const MatrixX<double> m = matrix(1, 3, {-0.5, 0.25, 2.0});
  const HeatmapFigure sequential({{m, {}}});
  CHECK(sequential.colour_min() == -0.5);
  CHECK(sequential.colour_max() == 2.0);
  HeatmapOptions diverging;
  diverging.colours = moe::ColourMap::blue_white_red;
  const HeatmapFigure symmetric({{m, {}}}, diverging);
  CHECK(symmetric.colour_min() == -2.0);
  CHECK(symmetric.colour_max() == 2.0);
  HeatmapOptions half = diverging;
  half.min = -1.0;
  const HeatmapFigure one_bound({{m, {}}}, half);
  CHECK(one_bound.colour_min() == -1.0);
  CHECK(one_bound.colour_max() == 2.0);
  const HeatmapFigure constant({{MatrixX<double>::Constant(2, 2, 3.0), {}}});
  CHECK(constant.colour_min() == 3.0);
  CHECK(constant.colour_max() == 4.0);
}

TEST_CASE("Heatmap blue_white_red: 0 is white, the ends blue and red", "[analysis][heatmap]") {
  const fs::path path = temp_dir() / "correlation.png";
  const MatrixX<double> m = matrix(2, 3, {-1.0, 0.0, 1.0, 0.0, 0.0, 0.0});
  HeatmapOptions options;
  options.colours = moe::ColourMap::blue_white_red;
  options.row_labels = {"plane", "truck"};
  options.column_labels = {"plane", "car", "truck"};
  moe::write_heatmap_png(path, m, options);
  const HeatmapFigure figure({{m, {}}}, options);
  const Png png(path);
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 0)), IsColour(blue));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 1)), IsColour(white));
  CHECK_THAT(png.centre(figure.cell_box(0, 0, 2)), IsColour(red));
  // An all-zero matrix (automatic range [-1, 1]) is white too.
  const fs::path zeros_path = temp_dir() / "zeros.png";
  const MatrixX<double> zeros = MatrixX<double>::Zero(2, 2);
  HeatmapOptions automatic;
  automatic.colours = moe::ColourMap::blue_white_red;
  moe::write_heatmap_png(zeros_path, zeros, automatic);
  const HeatmapFigure zeros_figure({{zeros, {}}}, automatic);
  CHECK(zeros_figure.colour_min() == -1.0);
  CHECK(zeros_figure.colour_max() == 1.0);
  CHECK_THAT(Png(zeros_path).centre(zeros_figure.cell_box(0, 1, 1)), IsColour(white));
}

TEST_CASE("Heatmap annotations write each value in its cell", "[analysis][heatmap]") {
  const fs::path plain_path = temp_dir() / "plain.png";
  const fs::path annotated_path = temp_dir() / "annotated.png";
  const MatrixX<double> m = matrix(2, 2, {0.0, 1.0, 0.25, missing_value});
  HeatmapOptions options;
  options.min = 0.0;
  options.max = 1.0;
  options.cell_width = 60;
  options.cell_height = 40;
  moe::write_heatmap_png(plain_path, m, options);
  options.annotate = true;
  moe::write_heatmap_png(annotated_path, m, options);
  const HeatmapFigure figure({{m, {}}}, options);
  const Png plain(plain_path);
  const Png annotated(annotated_path);
  const moe::PixelBox low = figure.cell_box(0, 0, 0);
  CHECK(low.width == 60);
  CHECK(low.height == 40);
  CHECK(plain.count_other(low, light_yellow) == 0);
  CHECK(annotated.count_other(low, light_yellow) > 20);     // dark text on the light cell
  CHECK(annotated.count_other(figure.cell_box(0, 0, 1), dark_red) > 20);  // light text on the dark cell
  CHECK(annotated.count_other(figure.cell_box(0, 1, 1), missing_grey) == 0);  // NaN: no text
  // Text stays inside its cell: the cell's edges keep its colour.
  CHECK(annotated.count_other({low.x, low.y, low.width, 1}, light_yellow) == 0);
  CHECK(annotated.count_other({low.x, low.y + low.height - 1, low.width, 1}, light_yellow) == 0);
}

TEST_CASE("Stacked heatmaps: panels one above the other, sharing one colour range", "[analysis][heatmap]") {
  const fs::path path = temp_dir() / "stacked.png";
  const MatrixX<double> based = MatrixX<double>::Constant(3, 64, 1.0);
  MatrixX<double> loss_free = MatrixX<double>::Constant(3, 64, 1.0);
  loss_free(1, 11) = 12.0;
  loss_free(2, 49) = 0.0;
  HeatmapOptions options;
  options.row_labels = {"Wikipedia (en)", "Github", "DM Mathematics"};
  options.min = 0.0;
  options.max = 10.0;
  options.colour_bar_label = "Relative expert load";
  const std::vector<HeatmapPanel> panels{{based, "Aux-Loss-Based Layer 9"}, {loss_free, "Aux-Loss-Free Layer 9"}};
  moe::write_stacked_heatmaps_png(path, panels, options);
  const HeatmapFigure figure(panels, options);
  const HeatmapFigure single({panels.front()}, options);
  const Png png(path);
  CHECK(png.width() == figure.width());
  CHECK(png.height() == figure.height());
  CHECK(figure.height() > single.height());
  const moe::PixelBox top = figure.cell_box(0, 2, 0);
  const moe::PixelBox bottom = figure.cell_box(1, 0, 0);
  CHECK(bottom.y > top.y + top.height);
  CHECK(bottom.x == top.x);
  CHECK_THAT(png.centre(figure.cell_box(1, 1, 11)), IsColour(dark_red));
  CHECK_THAT(png.centre(figure.cell_box(1, 2, 49)), IsColour(light_yellow));
  CHECK(png.centre(figure.cell_box(0, 1, 11)).r == png.centre(figure.cell_box(1, 0, 0)).r);  // 1.0 both
  CHECK_THROWS_WITH(figure.cell_box(2, 0, 0), Catch::Contains("panel 2, the figure has 2"));
  CHECK_THROWS_WITH(figure.cell_box(0, 3, 0), Catch::Contains("cell (3, 0) outside 3 x 64"));
}

TEST_CASE("Heatmap of integer counts, and no temporary file left behind", "[analysis][heatmap]") {
  const fs::path dir = temp_dir() / "counts";
  fs::remove_all(dir);
  fs::create_directories(dir);
  moe::IndexMatrix counts(10, 4);
  for (Eigen::Index i = 0; i < counts.size(); ++i) counts.data()[i] = i * 7 % 13;
  HeatmapOptions options;
  options.annotate = true;
  options.column_labels = {"Expert 1", "Expert 2", "Expert 3", "Expert 4"};
  moe::write_heatmap_png(dir / "routing.png", counts, options);
  const HeatmapFigure figure({{counts.cast<double>(), {}}}, options);
  const Png png(dir / "routing.png");
  CHECK(png.width() == figure.width());
  CHECK(png.height() == figure.height());
  CHECK(figure.colour_min() == 0.0);
  CHECK(figure.colour_max() == 12.0);
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
}

TEST_CASE("Montage: the image grows with the number of figures", "[analysis][heatmap]") {
  std::vector<HeatmapFigure> figures;
  for (int layer = 1; layer <= 5; ++layer) {
    HeatmapOptions options;
    options.title = "Layer " + std::to_string(layer);
    options.min = 0.0;
    options.max = 10.0;
    const MatrixX<double> load = MatrixX<double>::Constant(3, 8, static_cast<double>(layer));
    figures.emplace_back(std::vector<HeatmapPanel>{{load, "Aux-Loss-Based"}, {load, "Aux-Loss-Free"}}, options);
  }
  std::vector<int> widths;
  std::vector<int> heights;
  for (std::size_t n = 1; n <= figures.size(); ++n) {
    const fs::path path = temp_dir() / ("montage" + std::to_string(n) + ".png");
    moe::write_montage_png(path, std::vector<HeatmapFigure>(figures.begin(), figures.begin() + n), 2);
    const Png png(path);
    widths.push_back(png.width());
    heights.push_back(png.height());
  }
  CHECK(widths[0] >= figures[0].width());
  CHECK(widths[1] > widths[0] + figures[0].width());  // two side by side, with a gap
  CHECK(widths[2] == widths[1]);                      // two columns at most
  CHECK(widths[4] == widths[1]);
  CHECK(heights[1] == heights[0]);
  CHECK(heights[2] > heights[1] + figures[0].height());
  CHECK(heights[3] == heights[2]);
  CHECK(heights[4] > heights[3] + figures[0].height());
  const fs::path titled = temp_dir() / "montage_titled.png";
  moe::write_montage_png(titled, figures, 2, "Figure 10");
  CHECK(Png(titled).height() > heights[4]);
  CHECK(Png(titled).width() == widths[4]);
}

TEST_CASE("Heatmap errors name the path and the argument", "[analysis][heatmap][errors]") {
  const fs::path path = temp_dir() / "bad.png";
  fs::remove(path);
  const std::string where = "write_heatmap_png: '" + path.string() + "': ";
  const MatrixX<double> m = MatrixX<double>::Ones(3, 4);

  CHECK_THROWS_WITH(moe::write_heatmap_png(path, MatrixX<double>(0, 4)),
                    Catch::Contains(where + "the matrix is empty (0 x 4)"));
  HeatmapOptions rows;
  rows.row_labels = {"a", "b"};
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, rows),
                    Catch::Contains(where + "options.row_labels has 2 labels for 3 rows"));
  HeatmapOptions columns;
  columns.column_labels = {"a", "b", "c", "d", "e"};
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, columns),
                    Catch::Contains(where + "options.column_labels has 5 labels for 4 columns"));
  HeatmapOptions range;
  range.min = 5.0;
  range.max = 5.0;
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, range),
                    Catch::Contains(where + "options.min (5) must be less than options.max (5)"));
  HeatmapOptions infinite;
  infinite.max = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, infinite),
                    Catch::Contains(where + "options.max must be finite or NaN (auto)"));
  HeatmapOptions cells;
  cells.cell_width = -1;
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, cells), Catch::Contains(where + "options.cell_width"));
  HeatmapOptions every;
  every.column_label_every = 0;
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, every),
                    Catch::Contains(where + "options.column_label_every must be positive, got 0"));
  HeatmapOptions decimals;
  decimals.annotation_decimals = 13;
  CHECK_THROWS_WITH(moe::write_heatmap_png(path, m, decimals),
                    Catch::Contains(where + "options.annotation_decimals must be in [0, 12], got 13"));
  CHECK_FALSE(fs::exists(path));

  const fs::path missing = temp_dir() / "no_such_directory" / "figure.png";
  CHECK_THROWS_WITH(moe::write_heatmap_png(missing, m),
                    Catch::Contains("write_heatmap_png: '" + missing.string() + "': cannot create the temporary file"));

  const std::string stacked = "write_stacked_heatmaps_png: '" + path.string() + "': ";
  CHECK_THROWS_WITH(moe::write_stacked_heatmaps_png(path, {}), Catch::Contains(stacked + "no panels to draw"));
  CHECK_THROWS_WITH(moe::write_stacked_heatmaps_png(path, {{m, "a"}, {MatrixX<double>::Ones(2, 4), "b"}}),
                    Catch::Contains(stacked + "panel 1 is 2 x 4, panel 0 is 3 x 4"));
  CHECK_THROWS_WITH(HeatmapFigure({{m, {}}}, rows), Catch::Contains("HeatmapFigure: options.row_labels has 2 labels"));

  const std::string montage = "write_montage_png: '" + path.string() + "': ";
  CHECK_THROWS_WITH(moe::write_montage_png(path, {}, 2), Catch::Contains(montage + "no figures"));
  CHECK_THROWS_WITH(moe::write_montage_png(path, {HeatmapFigure({{m, {}}})}, 0),
                    Catch::Contains(montage + "columns must be positive, got 0"));
  CHECK_FALSE(fs::exists(path));
}
