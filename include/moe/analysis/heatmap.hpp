#pragma once
// Heatmap figures as PNG files, drawn with cairo: one matrix; panels stacked above one shared colour bar
// (the aux-loss-based layer above the aux-loss-free one, as DeepSeek-V3's Figure 10); and montages of
// such figures in a grid. Needs cairo (pkg-config cairo), which is why moe/moe.hpp does not include it.

#include <cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <locale>
#include <memory>
#include <numbers>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/atomic_file.hpp"

namespace moe {

/// How values map to colours between HeatmapOptions::min and max.
enum class ColourMap {
  yellow_red,     ///< sequential, min light yellow to max dark red (ColorBrewer YlOrRd), as Figure 10's load
  blue_white_red  ///< diverging, min blue, the middle white, max red (ColorBrewer RdBu): correlations in [-1, 1]
};

/// What a heatmap figure shows besides its values. The defaults suit any matrix; set labels and the
/// colour range to match a document's figure.
struct HeatmapOptions {
  /// Above the figure (above every panel of a stacked figure); none when empty.
  std::string title;
  /// One per row, top to bottom, written left of each panel; empty: 1, 2, ... as the documents number
  /// experts and layers.
  std::vector<std::string> row_labels;
  /// One per column, left to right, written below each panel; empty: 1, 2, ... Labels are turned upright
  /// when that lets more of them show, and thinned (every 4th, 8th, ...) when even so they would overlap.
  std::vector<std::string> column_labels;
  /// The values the two ends of the colour map stand for; values beyond are drawn in the end colours and
  /// the colour bar's end tick reads "≥ max" (or "≤ min"). NaN: the data's least (greatest) finite value,
  /// or for blue_white_red -m (m), m the largest finite |value|, so that 0 is white.
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
  ColourMap colours = ColourMap::yellow_red;
  /// Written along the colour bar (beside it, or above it when the bar is shorter than the text).
  std::string colour_bar_label;
  /// Writes each cell's value in the cell: for small tables such as 10 x 10 correlations.
  bool annotate = false;
  /// Digits after the point of annotations; unset: 0 when every value is a whole number or the largest
  /// |value| is at least 100, 1 when it is at least 10, else 2.
  std::optional<int> annotation_decimals;
  /// Cell size in pixels; 0: chosen from the number of columns and the annotations' width.
  int cell_width = 0;
  int cell_height = 0;
  /// Label only every n-th column (the n-th, 2n-th, ... and the first); unset: as many as fit.
  std::optional<int> column_label_every;
};

/// One matrix of a stacked figure and the title written above it.
struct HeatmapPanel {
  MatrixX<double> values;
  std::string title;
};

/// A rectangle of pixels: where a cell lands in a figure's image.
struct PixelBox {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

namespace detail::heatmap {

struct Rgb {
  double r = 0.0;
  double g = 0.0;
  double b = 0.0;
};

constexpr Rgb hex(unsigned value) {
  return {static_cast<double>((value >> 16) & 0xffu) / 255.0, static_cast<double>((value >> 8) & 0xffu) / 255.0,
          static_cast<double>(value & 0xffu) / 255.0};
}

inline constexpr Rgb ink = hex(0x202020);
inline constexpr Rgb missing_grey = hex(0xb0b0b0);  // NaN cells: in neither colour map

/// The colour at t in [0, 1] (clamped) along the map: linear between ColorBrewer's stops, so that t = 0
/// and t = 1 are exactly the end stops and, for blue_white_red, t = 0.5 exactly white.
inline Rgb colour_at(ColourMap map, double t) {
  static constexpr std::array yellow_red{hex(0xffffcc), hex(0xffeda0), hex(0xfed976), hex(0xfeb24c), hex(0xfd8d3c),
                                         hex(0xfc4e2a), hex(0xe31a1c), hex(0xbd0026), hex(0x800026)};
  static constexpr std::array blue_white_red{hex(0x2166ac), hex(0x67a9cf), hex(0xd1e5f0), hex(0xffffff),
                                             hex(0xfddbc7), hex(0xef8a62), hex(0xb2182b)};
  const Rgb* stops = map == ColourMap::yellow_red ? yellow_red.data() : blue_white_red.data();
  const std::size_t count = map == ColourMap::yellow_red ? yellow_red.size() : blue_white_red.size();
  const double position = std::clamp(t, 0.0, 1.0) * static_cast<double>(count - 1);
  const std::size_t i = std::min(static_cast<std::size_t>(position), count - 2);
  const double f = position - static_cast<double>(i);
  const Rgb& a = stops[i];
  const Rgb& b = stops[i + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

/// Dark text on light cells, white text on dark ones.
inline Rgb text_colour_on(const Rgb& background) {
  const double luminance = 0.2126 * background.r + 0.7152 * background.g + 0.0722 * background.b;
  return luminance < 0.5 ? hex(0xffffff) : ink;
}

/// Fixed-point text with a true minus sign, and no sign on a value that rounds to zero.
inline std::string format_fixed(double value, int decimals) {
  if (std::isinf(value)) return value > 0 ? "∞" : "−∞";
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << std::fixed << std::setprecision(decimals) << value;
  std::string text = out.str();
  if (text.front() == '-') {
    if (text.find_first_not_of("-0.") == std::string::npos) return text.substr(1);
    text.replace(0, 1, "−");
  }
  return text;
}

/// Up to four significant digits: the colour bar's end values, which need not be round.
inline std::string format_short(double value) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << std::setprecision(4) << value + 0.0;  // + 0.0 turns -0 into 0
  std::string text = out.str();
  if (text.front() == '-') text.replace(0, 1, "−");
  return text;
}

/// The smallest of 1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 200, ... not below n: label strides
/// that fall on round numbers and on the powers of two experts come in.
inline int nice_stride(int n) {
  static constexpr std::array strides{1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100};
  if (n > 100) return 100 * nice_stride((n + 99) / 100);
  return *std::lower_bound(strides.begin(), strides.end(), n);
}

/// The smallest of 1, 2, 5 times a power of ten not below `raw`: the colour bar's tick step.
inline double nice_step(double raw) {
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw * (1.0 - 1e-9)) return m * power;
  return 10.0 * power;
}

struct Font {
  double size = 13.0;
  bool bold = false;
};

inline constexpr Font title_font{17.0, true};
inline constexpr Font panel_title_font{15.0, true};
inline constexpr Font label_font{13.0, false};
inline constexpr Font tick_font{12.0, false};
inline constexpr Font annotation_font{12.0, false};

inline void select_font(cairo_t* cr, Font font) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                         font.bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, font.size);
}

struct SurfaceDeleter {
  void operator()(cairo_surface_t* surface) const { cairo_surface_destroy(surface); }
};
struct ContextDeleter {
  void operator()(cairo_t* cr) const { cairo_destroy(cr); }
};
using Surface = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
using Context = std::unique_ptr<cairo_t, ContextDeleter>;

/// Measures text in the fonts the figures are drawn in, on a scratch surface of one pixel.
class TextMeasure {
 public:
  TextMeasure() : surface_(cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1)), cr_(cairo_create(surface_.get())) {}

  double width(const std::string& text, Font font) const {
    select_font(cr_.get(), font);
    cairo_text_extents_t extents;
    cairo_text_extents(cr_.get(), text.c_str(), &extents);
    return extents.x_advance;
  }

  /// Ascent and descent of the font: the height of a line of text.
  std::pair<double, double> ascent_descent(Font font) const {
    select_font(cr_.get(), font);
    cairo_font_extents_t extents;
    cairo_font_extents(cr_.get(), &extents);
    return {extents.ascent, extents.descent};
  }

  double height(Font font) const {
    const auto [ascent, descent] = ascent_descent(font);
    return ascent + descent;
  }

 private:
  Surface surface_;
  Context cr_;
};

/// A filled rectangle or a line of text, in a figure's own pixel coordinates.
struct Item {
  enum class Kind { fill, text, upright_text };
  Kind kind = Kind::fill;
  double x = 0.0;  // fill: left; text: left of the first character; upright text: its baseline
  double y = 0.0;  // fill: top; text: baseline; upright text: where the first character starts (its bottom)
  double width = 0.0;   // fill only
  double height = 0.0;  // fill only
  Rgb colour;
  std::string text;
  Font font;
};

/// A display list that knows its bounds: a figure is laid out once, measured, then drawn at any offset.
class Drawing {
 public:
  explicit Drawing(const TextMeasure& measure) : measure_(measure) {}

  void fill(double x, double y, double width, double height, Rgb colour) {
    items_.push_back({Item::Kind::fill, x, y, width, height, colour, {}, {}});
    grow(x, y, x + width, y + height);
  }

  /// A line of one pixel just outside the rectangle, so that it covers none of the cells inside.
  void frame(double x, double y, double width, double height) {
    const Rgb colour = hex(0x404040);
    fill(x - 1, y - 1, width + 2, 1, colour);
    fill(x - 1, y + height, width + 2, 1, colour);
    fill(x - 1, y, 1, height, colour);
    fill(x + width, y, 1, height, colour);
  }

  /// Horizontal text whose box starts at `top`; `align` 0 puts its left end at x, 0.5 its middle, 1 its
  /// right end.
  void text(const std::string& text, Font font, double x, double align, double top, Rgb colour = ink) {
    const double width = measure_.width(text, font);
    const auto [ascent, descent] = measure_.ascent_descent(font);
    const double left = x - align * width;
    items_.push_back({Item::Kind::text, left, top + ascent, 0.0, 0.0, colour, text, font});
    grow(left, top, left + width, top + ascent + descent);
  }

  /// Text turned to read upwards, centred on x, its last character at `top`.
  void upright_text(const std::string& text, Font font, double centre_x, double top) {
    const double width = measure_.width(text, font);
    const auto [ascent, descent] = measure_.ascent_descent(font);
    const double left = centre_x - (ascent + descent) / 2.0;
    items_.push_back({Item::Kind::upright_text, left + ascent, top + width, 0.0, 0.0, ink, text, font});
    grow(left, top, left + ascent + descent, top + width);
  }

  double left() const { return left_; }
  double top() const { return top_; }
  double right() const { return right_; }
  double bottom() const { return bottom_; }
  std::vector<Item> release() { return std::move(items_); }

 private:
  void grow(double left, double top, double right, double bottom) {
    left_ = std::min(left_, left);
    top_ = std::min(top_, top);
    right_ = std::max(right_, right);
    bottom_ = std::max(bottom_, bottom);
  }

  const TextMeasure& measure_;
  std::vector<Item> items_;
  double left_ = std::numeric_limits<double>::infinity();
  double top_ = std::numeric_limits<double>::infinity();
  double right_ = -std::numeric_limits<double>::infinity();
  double bottom_ = -std::numeric_limits<double>::infinity();
};

inline void draw_items(cairo_t* cr, const std::vector<Item>& items, double x, double y) {
  for (const Item& item : items) {
    cairo_set_source_rgb(cr, item.colour.r, item.colour.g, item.colour.b);
    switch (item.kind) {
      case Item::Kind::fill:
        cairo_rectangle(cr, x + item.x, y + item.y, item.width, item.height);
        cairo_fill(cr);
        break;
      case Item::Kind::text:
        select_font(cr, item.font);
        cairo_move_to(cr, x + item.x, y + item.y);
        cairo_show_text(cr, item.text.c_str());
        break;
      case Item::Kind::upright_text:
        select_font(cr, item.font);
        cairo_save(cr);
        cairo_translate(cr, x + item.x, y + item.y);
        cairo_rotate(cr, -std::numbers::pi / 2.0);
        cairo_move_to(cr, 0.0, 0.0);
        cairo_show_text(cr, item.text.c_str());
        cairo_restore(cr);
        break;
    }
  }
}

/// Rejects what cannot be drawn; messages start with `context`, which names the function and the path.
inline void check_panels(const std::vector<HeatmapPanel>& panels, const HeatmapOptions& options,
                         const std::string& context) {
  require(!panels.empty(), context, ": no panels to draw");
  const Index rows = panels.front().values.rows();
  const Index cols = panels.front().values.cols();
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const auto& values = panels[p].values;
    const std::string which = panels.size() == 1 ? std::string("the matrix") : concat("panel ", p);
    require(values.rows() > 0 && values.cols() > 0, context, ": ", which, " is empty (", values.rows(), " x ",
            values.cols(), ")");
    require(values.rows() == rows && values.cols() == cols, context, ": ", which, " is ", values.rows(), " x ",
            values.cols(), ", panel 0 is ", rows, " x ", cols, "; stacked panels share their labels and their shape");
  }
  require(options.row_labels.empty() || static_cast<Index>(options.row_labels.size()) == rows, context,
          ": options.row_labels has ", options.row_labels.size(), " labels for ", rows, " rows");
  require(options.column_labels.empty() || static_cast<Index>(options.column_labels.size()) == cols, context,
          ": options.column_labels has ", options.column_labels.size(), " labels for ", cols, " columns");
  require(std::isnan(options.min) || std::isfinite(options.min), context, ": options.min must be finite or NaN (auto)");
  require(std::isnan(options.max) || std::isfinite(options.max), context, ": options.max must be finite or NaN (auto)");
  require(std::isnan(options.min) || std::isnan(options.max) || options.min < options.max, context, ": options.min (",
          options.min, ") must be less than options.max (", options.max, ")");
  require(options.cell_width >= 0 && options.cell_height >= 0, context,
          ": options.cell_width and cell_height must be positive or 0 (automatic), got ", options.cell_width, " and ",
          options.cell_height);
  require(!options.column_label_every || *options.column_label_every > 0, context,
          ": options.column_label_every must be positive, got ", options.column_label_every.value_or(0));
  require(!options.annotation_decimals || (*options.annotation_decimals >= 0 && *options.annotation_decimals <= 12),
          context, ": options.annotation_decimals must be in [0, 12], got ", options.annotation_decimals.value_or(0));
}

/// The values the colour map's ends stand for, and which cells fall outside them.
struct ColourRange {
  double min = 0.0;
  double max = 1.0;
  bool below = false;    // some value < min: drawn in the min colour
  bool above = false;    // some value > max
  bool missing = false;  // some value is NaN
};

inline ColourRange resolve_range(const std::vector<HeatmapPanel>& panels, const HeatmapOptions& options) {
  double least = std::numeric_limits<double>::infinity();
  double greatest = -least;
  ColourRange range;
  for (const HeatmapPanel& panel : panels)
    for (const double v : panel.values.reshaped()) {
      if (std::isnan(v)) range.missing = true;
      if (!std::isfinite(v)) continue;
      least = std::min(least, v);
      greatest = std::max(greatest, v);
    }
  const bool any = least <= greatest;
  if (options.colours == ColourMap::blue_white_red) {
    const double extent = any && std::max(-least, greatest) > 0.0 ? std::max(-least, greatest) : 1.0;
    range.min = std::isnan(options.min) ? -extent : options.min;
    range.max = std::isnan(options.max) ? extent : options.max;
  } else {
    range.min = std::isnan(options.min) ? (any ? least : 0.0) : options.min;
    range.max = std::isnan(options.max) ? (any ? greatest : 1.0) : options.max;
  }
  if (!(range.max > range.min)) {  // all values equal, or one bound given beyond the data: span one unit
    if (std::isnan(options.max))
      range.max = range.min + 1.0;
    else
      range.min = range.max - 1.0;
  }
  for (const HeatmapPanel& panel : panels)
    for (const double v : panel.values.reshaped()) {
      range.below = range.below || v < range.min;
      range.above = range.above || v > range.max;
    }
  return range;
}

inline int automatic_decimals(const std::vector<HeatmapPanel>& panels) {
  bool whole = true;
  double largest = 0.0;
  for (const HeatmapPanel& panel : panels)
    for (const double v : panel.values.reshaped()) {
      if (!std::isfinite(v)) continue;
      whole = whole && v == std::round(v);
      largest = std::max(largest, std::abs(v));
    }
  if (whole || largest >= 100.0) return 0;
  return largest >= 10.0 ? 1 : 2;
}

inline std::vector<std::string> labels_or_numbers(const std::vector<std::string>& labels, Index count) {
  if (!labels.empty()) return labels;
  std::vector<std::string> numbers;
  for (Index i = 1; i <= count; ++i) numbers.push_back(std::to_string(i));
  return numbers;
}

/// The positions that get a label when every `stride`-th is labelled: stride - 1, 2 stride - 1, ... and 0
/// when its label keeps `gap` pixels from the next one (labels `extent` pixels long, `pitch` apart).
inline std::vector<Index> labelled_positions(Index count, int stride, double pitch, double extent, double gap) {
  std::vector<Index> positions;
  if (stride == 1 || static_cast<double>(stride - 1) * pitch >= extent + gap) positions.push_back(0);
  for (Index i = stride - 1; i < count; i += stride)
    if (i > 0) positions.push_back(i);
  return positions;
}

/// Surface, white background, draw, PNG: written atomically; errors start with `context`.
template <class Draw>
void write_png_image(const std::filesystem::path& path, const std::string& context, int width, int height,
                     Draw&& draw) {
  constexpr int largest = 32767;  // cairo's limit for an image surface's side
  require(width <= largest && height <= largest, context, ": the image would be ", width, " x ", height,
          " pixels, more than cairo's ", largest, " per side");
  Surface surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height));
  require(cairo_surface_status(surface.get()) == CAIRO_STATUS_SUCCESS, context, ": cannot create a ", width, " x ",
          height, " image: ", cairo_status_to_string(cairo_surface_status(surface.get())));
  {
    Context cr(cairo_create(surface.get()));
    cairo_set_source_rgb(cr.get(), 1.0, 1.0, 1.0);
    cairo_paint(cr.get());
    draw(cr.get());
    require(cairo_status(cr.get()) == CAIRO_STATUS_SUCCESS, context,
            ": drawing failed: ", cairo_status_to_string(cairo_status(cr.get())));
  }
  cairo_surface_flush(surface.get());
  write_file_atomically(path, context, [&](std::ostream& out) {
    const auto to_stream = [](void* closure, const unsigned char* data, unsigned int length) {
      auto& stream = *static_cast<std::ostream*>(closure);
      stream.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(length));
      return stream ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
    };
    const cairo_status_t status = cairo_surface_write_to_png_stream(surface.get(), to_stream, &out);
    require(status == CAIRO_STATUS_SUCCESS, context, ": cannot encode the PNG: ", cairo_status_to_string(status));
  });
}

}  // namespace detail::heatmap

/// A laid-out figure: panels of one shape stacked top to bottom, each with its title, row labels on the
/// left and column labels below, and one colour bar on the right spanning them all. Layout happens once,
/// here. write_stacked_heatmaps_png makes one and writes it; write_montage_png places several in one image.
class HeatmapFigure {
 public:
  explicit HeatmapFigure(const std::vector<HeatmapPanel>& panels, const HeatmapOptions& options = {}) {
    detail::heatmap::check_panels(panels, options, "HeatmapFigure");
    lay_out(panels, options);
  }

  int width() const { return width_; }
  int height() const { return height_; }
  /// The values the colour map's ends stand for, after filling in options.min and max left automatic.
  double colour_min() const { return colour_min_; }
  double colour_max() const { return colour_max_; }

  /// Where a cell lands in the figure's image.
  PixelBox cell_box(std::size_t panel, Index row, Index column) const {
    detail::require(panel < grid_origins_.size(), "HeatmapFigure::cell_box: panel ", panel, ", the figure has ",
                    grid_origins_.size());
    detail::require(row >= 0 && row < rows_ && column >= 0 && column < columns_, "HeatmapFigure::cell_box: cell (",
                    row, ", ", column, ") outside ", rows_, " x ", columns_);
    const auto [x, y] = grid_origins_[panel];
    return {x + static_cast<int>(column) * cell_width_, y + static_cast<int>(row) * cell_height_, cell_width_,
            cell_height_};
  }

  /// Draws the figure with its top-left corner at (x, y) of `cr` (integers keep the cells crisp).
  void draw(cairo_t* cr, double x, double y) const { detail::heatmap::draw_items(cr, items_, x, y); }

 private:
  static constexpr int margin = 14;

  void lay_out(const std::vector<HeatmapPanel>& panels, const HeatmapOptions& options) {
    using namespace detail::heatmap;
    rows_ = panels.front().values.rows();
    columns_ = panels.front().values.cols();
    const ColourRange range = resolve_range(panels, options);
    colour_min_ = range.min;
    colour_max_ = range.max;
    const TextMeasure measure;
    Drawing d(measure);
    const std::vector<std::string> row_labels = labels_or_numbers(options.row_labels, rows_);
    const std::vector<std::string> column_labels = labels_or_numbers(options.column_labels, columns_);
    const double label_height = measure.height(label_font);

    const int decimals = options.annotation_decimals.value_or(automatic_decimals(panels));
    double annotation_width = 0.0;
    if (options.annotate)
      for (const HeatmapPanel& panel : panels)
        for (const double v : panel.values.reshaped())
          annotation_width = std::max(annotation_width, measure.width(format_fixed(v, decimals), annotation_font));

    cell_width_ = options.cell_width;
    if (cell_width_ == 0)
      cell_width_ = options.annotate
                        ? std::max(static_cast<int>(std::ceil(annotation_width)) + 14, 40)
                        : std::clamp(static_cast<int>(std::lround(896.0 / static_cast<double>(columns_))), 14, 56);
    cell_height_ = options.cell_height;
    if (cell_height_ == 0)
      cell_height_ = std::clamp(cell_width_, static_cast<int>(std::ceil(label_height)) + 8, 56);
    const double grid_width = static_cast<double>(cell_width_ * columns_);
    const double grid_height = static_cast<double>(cell_height_ * rows_);

    // Column labels: level, every one of them or, thinned, 96 pixels apart at least (every 8th of 64
    // experts); upright instead when that lets every one show. Labels keep 6 pixels apart.
    constexpr double gap = 6.0;
    double widest_column_label = 0.0;
    for (const std::string& label : column_labels)
      widest_column_label = std::max(widest_column_label, measure.width(label, label_font));
    const auto stride_for = [&](double extent) {
      return nice_stride(static_cast<int>(std::ceil((extent + gap) / cell_width_)));
    };
    int column_stride = 0;
    bool upright = false;
    if (options.column_label_every) {
      column_stride = *options.column_label_every;
      upright = column_stride * cell_width_ < widest_column_label + gap;
    } else {
      int level = stride_for(widest_column_label);
      if (level > 1) level = std::max(level, stride_for(96.0 - gap));
      upright = level > 1 && stride_for(label_height) == 1;
      column_stride = upright ? 1 : level;
    }
    const double column_label_extent = upright ? label_height : widest_column_label;
    const std::vector<Index> labelled_columns =
        labelled_positions(columns_, column_stride, cell_width_, column_label_extent, gap);
    const int row_stride = nice_stride(static_cast<int>(std::ceil((label_height + 2.0) / cell_height_)));
    const std::vector<Index> labelled_rows = labelled_positions(rows_, row_stride, cell_height_, label_height, 2.0);
    const double tick_length = column_stride > 1 ? 4.0 : 0.0;

    double y = 0.0;
    std::vector<std::pair<double, double>> origins;
    for (std::size_t p = 0; p < panels.size(); ++p) {
      if (!panels[p].title.empty()) {
        d.text(panels[p].title, panel_title_font, grid_width / 2.0, 0.5, y);
        y += measure.height(panel_title_font) + 6.0;
      }
      const double top = std::ceil(y);
      origins.emplace_back(0.0, top);
      const MatrixX<double>& values = panels[p].values;
      for (Index r = 0; r < rows_; ++r)
        for (Index c = 0; c < columns_; ++c) {
          const double v = values(r, c);
          const Rgb colour = std::isnan(v) ? missing_grey
                                           : colour_at(options.colours, (v - range.min) / (range.max - range.min));
          const double left = static_cast<double>(c * cell_width_);
          const double cell_top = top + static_cast<double>(r * cell_height_);
          d.fill(left, cell_top, cell_width_, cell_height_, colour);
          if (options.annotate && !std::isnan(v))
            d.text(format_fixed(v, decimals), annotation_font, left + cell_width_ / 2.0, 0.5,
                   cell_top + (cell_height_ - measure.height(annotation_font)) / 2.0, text_colour_on(colour));
        }
      d.frame(0.0, top, grid_width, grid_height);
      for (const Index r : labelled_rows)
        d.text(row_labels[static_cast<std::size_t>(r)], label_font, -8.0, 1.0,
               top + (static_cast<double>(r) + 0.5) * cell_height_ - label_height / 2.0);
      const double labels_top = top + grid_height + 3.0 + tick_length;
      double labels_bottom = labels_top;
      for (const Index c : labelled_columns) {
        const double centre = (static_cast<double>(c) + 0.5) * cell_width_;
        const std::string& label = column_labels[static_cast<std::size_t>(c)];
        if (tick_length > 0.0) d.fill(std::floor(centre), top + grid_height + 1.0, 1.0, tick_length, ink);
        if (upright) {
          d.upright_text(label, label_font, centre, labels_top);
          labels_bottom = std::max(labels_bottom, labels_top + measure.width(label, label_font));
        } else {
          d.text(label, label_font, centre, 0.5, labels_top);
          labels_bottom = labels_top + label_height;
        }
      }
      y = labels_bottom + (p + 1 < panels.size() ? 18.0 : 0.0);
    }

    // The colour bar spans the first grid's top to the last grid's bottom.
    const double bar_left = grid_width + 22.0;
    const double bar_width = 16.0;
    const double bar_top = origins.front().second;
    const double bar_bottom = origins.back().second + grid_height;
    const double bar_height = bar_bottom - bar_top;
    for (int i = 0; i < static_cast<int>(bar_height); ++i)
      d.fill(bar_left, bar_top + i, bar_width, 1.0,
             colour_at(options.colours, 1.0 - (i + 0.5) / bar_height));
    d.frame(bar_left, bar_top, bar_width, bar_height);

    const double tick_height = measure.height(tick_font);
    const double span = range.max - range.min;
    const int most_ticks = 1 + std::max(1, static_cast<int>(bar_height / 36.0));
    const double step = nice_step(span / (most_ticks - 1));
    const int tick_decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
    const auto tick_y = [&](double v) { return bar_bottom - (v - range.min) / span * bar_height; };
    std::vector<std::pair<double, std::string>> ticks;  // value, label
    for (double v = std::ceil(range.min / step - 1e-9) * step; v <= range.max + step * 1e-9; v += step) {
      const bool crowds_top = range.above && tick_y(v) - bar_top < tick_height + 2.0;
      const bool crowds_bottom = range.below && bar_bottom - tick_y(v) < tick_height + 2.0;
      if (!crowds_top && !crowds_bottom) ticks.emplace_back(v, format_fixed(v, tick_decimals));
    }
    if (range.above) ticks.emplace_back(range.max, "≥ " + format_short(range.max));
    if (range.below) ticks.emplace_back(range.min, "≤ " + format_short(range.min));
    if (ticks.size() < 2)
      ticks = {{range.min, format_short(range.min)}, {range.max, format_short(range.max)}};
    const double tick_label_left = bar_left + bar_width + 7.0;
    double tick_label_right = tick_label_left;
    for (const auto& [value, label] : ticks) {
      const double row = std::clamp(std::round(tick_y(value) - 0.5), bar_top, bar_bottom - 1.0);
      d.fill(bar_left + bar_width, row, 4.0, 1.0, ink);
      d.text(label, tick_font, tick_label_left, 0.0, row + 0.5 - tick_height / 2.0);
      tick_label_right = std::max(tick_label_right, tick_label_left + measure.width(label, tick_font));
    }
    if (!options.colour_bar_label.empty()) {
      const double length = measure.width(options.colour_bar_label, label_font);
      if (length <= bar_height)
        d.upright_text(options.colour_bar_label, label_font, tick_label_right + 8.0 + label_height / 2.0,
                       bar_top + (bar_height - length) / 2.0);
      else
        d.text(options.colour_bar_label, label_font, bar_left, 0.0, bar_top - 8.0 - label_height);
    }
    if (range.missing) {
      const double swatch_top = bar_bottom + 10.0;
      d.fill(bar_left, swatch_top, bar_width, bar_width, missing_grey);
      d.frame(bar_left, swatch_top, bar_width, bar_width);
      d.text("NaN", tick_font, tick_label_left, 0.0, swatch_top + (bar_width - tick_height) / 2.0);
    }

    if (!options.title.empty())
      d.text(options.title, title_font, (d.left() + d.right()) / 2.0, 0.5,
             d.top() - 12.0 - measure.height(title_font));

    // Move everything so that the bounds start at the margin, by whole pixels.
    const double dx = margin - std::floor(d.left());
    const double dy = margin - std::floor(d.top());
    width_ = static_cast<int>(std::ceil(d.right()) - std::floor(d.left())) + 2 * margin;
    height_ = static_cast<int>(std::ceil(d.bottom()) - std::floor(d.top())) + 2 * margin;
    items_ = d.release();
    for (detail::heatmap::Item& item : items_) {
      item.x += dx;
      item.y += dy;
    }
    for (const auto& [x, top] : origins) grid_origins_.emplace_back(static_cast<int>(x + dx), static_cast<int>(top + dy));
  }

  std::vector<detail::heatmap::Item> items_;
  std::vector<std::pair<int, int>> grid_origins_;
  Index rows_ = 0;
  Index columns_ = 0;
  int cell_width_ = 0;
  int cell_height_ = 0;
  int width_ = 0;
  int height_ = 0;
  double colour_min_ = 0.0;
  double colour_max_ = 1.0;
};

/// Panels of one shape stacked top to bottom above one colour bar, as Figure 10 puts a layer's
/// aux-loss-based load above its aux-loss-free load; options.title goes above them all. Written
/// atomically; a moe::Error names `path` and the argument at fault.
inline void write_stacked_heatmaps_png(const std::filesystem::path& path, const std::vector<HeatmapPanel>& panels,
                                       const HeatmapOptions& options = {}) {
  const std::string context = detail::concat("write_stacked_heatmaps_png: '", path.string(), "'");
  detail::heatmap::check_panels(panels, options, context);  // first, so that errors name the path
  const HeatmapFigure figure(panels, options);
  detail::heatmap::write_png_image(path, context, figure.width(), figure.height(),
                                   [&](cairo_t* cr) { figure.draw(cr, 0.0, 0.0); });
}

/// One matrix as a heatmap, titled options.title. Written atomically; a moe::Error names `path` and the
/// argument at fault.
template <class Derived>
void write_heatmap_png(const std::filesystem::path& path, const Eigen::DenseBase<Derived>& matrix,
                       const HeatmapOptions& options = {}) {
  const std::string context = detail::concat("write_heatmap_png: '", path.string(), "'");
  const std::vector<HeatmapPanel> panels{{matrix.derived().template cast<double>(), {}}};
  detail::heatmap::check_panels(panels, options, context);  // first, so that errors name the path
  const HeatmapFigure figure(panels, options);
  detail::heatmap::write_png_image(path, context, figure.width(), figure.height(),
                                   [&](cairo_t* cr) { figure.draw(cr, 0.0, 0.0); });
}

/// Figures in a grid of `columns` columns, filled row by row, each in a slot as large as the largest
/// figure, with `title` above: all layers of Figure 10 in one image. Written atomically; a moe::Error
/// names `path` and the argument at fault.
inline void write_montage_png(const std::filesystem::path& path, const std::vector<HeatmapFigure>& figures,
                              int columns, const std::string& title = {}) {
  using namespace detail::heatmap;
  const std::string context = detail::concat("write_montage_png: '", path.string(), "'");
  detail::require(!figures.empty(), context, ": no figures");
  detail::require(columns > 0, context, ": columns must be positive, got ", columns);
  constexpr int margin = 16;
  constexpr int gap = 24;
  int slot_width = 0;
  int slot_height = 0;
  for (const HeatmapFigure& figure : figures) {
    slot_width = std::max(slot_width, figure.width());
    slot_height = std::max(slot_height, figure.height());
  }
  const int count = static_cast<int>(figures.size());
  const int grid_columns = std::min(columns, count);
  const int grid_rows = (count + grid_columns - 1) / grid_columns;
  const TextMeasure measure;
  Drawing heading(measure);
  const int width = 2 * margin + grid_columns * slot_width + (grid_columns - 1) * gap;
  int top = margin;
  if (!title.empty()) {
    heading.text(title, title_font, width / 2.0, 0.5, top);
    top += static_cast<int>(std::ceil(measure.height(title_font))) + gap;
  }
  const int height = top + grid_rows * slot_height + (grid_rows - 1) * gap + margin;
  const std::vector<Item> heading_items = heading.release();
  write_png_image(path, context, width, height, [&](cairo_t* cr) {
    draw_items(cr, heading_items, 0.0, 0.0);
    for (int i = 0; i < count; ++i)
      figures[static_cast<std::size_t>(i)].draw(cr, margin + (i % grid_columns) * (slot_width + gap),
                                                 top + (i / grid_columns) * (slot_height + gap));
  });
}

}  // namespace moe
