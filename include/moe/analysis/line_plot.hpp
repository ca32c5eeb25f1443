#pragma once
// Line plots as PNG files, drawn with cairo with the heatmaps' fonts, text layout and atomic PNG writer
// (moe/analysis/heatmap.hpp): panels in a grid, each with its own axes, the same series in every panel
// (one colour each, one legend above them all). For quantities logged over training steps, such as the
// load diagnostics of moe/train/load_diagnostics.hpp. Needs cairo, as the heatmaps do.

#include <cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "moe/analysis/heatmap.hpp"
#include "moe/core/error.hpp"

namespace moe {

/// One line: y over x, drawn through the points in order; a NaN or infinite y leaves a gap.
struct LineSeries {
  std::string label;
  std::vector<double> x;
  std::vector<double> y;
};

/// One panel: its title and its lines, the same series (by label, in order) as every other panel's.
struct LinePanel {
  std::string title;
  std::vector<LineSeries> series;
};

struct LinePlotOptions {
  std::string title;           // above the legend; none when empty
  std::string x_label = "step";  // below every panel's x axis
  int columns = 3;             // panels per row, filled row by row
  int plot_width = 320;        // each panel's plotting area, in pixels
  int plot_height = 180;
};

namespace detail::line_plot {

using heatmap::Rgb;

/// Series colours: Tableau 10 (categorical) for up to 10 series; viridis from dark violet to yellow for
/// more, so that layer 1..L of a deep model reads as an ordered sequence.
inline Rgb series_colour(std::size_t i, std::size_t count) {
  static constexpr std::array tableau{heatmap::hex(0x4e79a7), heatmap::hex(0xf28e2b), heatmap::hex(0xe15759),
                                      heatmap::hex(0x76b7b2), heatmap::hex(0x59a14f), heatmap::hex(0xedc948),
                                      heatmap::hex(0xb07aa1), heatmap::hex(0xff9da7), heatmap::hex(0x9c755f),
                                      heatmap::hex(0xbab0ac)};
  if (count <= tableau.size()) return tableau[i];
  static constexpr std::array viridis{heatmap::hex(0x440154), heatmap::hex(0x3b528b), heatmap::hex(0x21918c),
                                      heatmap::hex(0x5ec962), heatmap::hex(0xd8c51a)};  // last stop darkened for white
  const double position = static_cast<double>(i) / static_cast<double>(count - 1) * (viridis.size() - 1);
  const std::size_t s = std::min(static_cast<std::size_t>(position), viridis.size() - 2);
  const double f = position - static_cast<double>(s);
  const Rgb& a = viridis[s];
  const Rgb& b = viridis[s + 1];
  return {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
}

/// An axis: the range drawn and its ticks at multiples of a 1-2-5 step.
struct Axis {
  double min = 0;
  double max = 1;
  std::vector<double> ticks;
  int decimals = 0;

  double fraction(double v) const { return (v - min) / (max - min); }
};

/// The axis over [least, greatest] (finite, least <= greatest; none: [0, 1]), widened by `pad` of the span
/// on each side, so that lines clear the frame; a single value c gets the span [0, 1] (c = 0) or c +- 10%
/// first. `whole` ticks: at whole numbers only (steps).
inline Axis make_axis(double least, double greatest, double pad, bool whole = false) {
  Axis axis;
  if (!(least <= greatest)) {
    least = 0;
    greatest = 1;
  } else if (least == greatest) {
    const double c = least;
    least = c == 0 ? 0 : c - std::abs(c) * 0.1;
    greatest = c == 0 ? 1 : c + std::abs(c) * 0.1;
  }
  const double span = greatest - least;
  least -= pad * span;
  greatest += pad * span;
  axis.min = least;
  axis.max = greatest;
  double step = heatmap::nice_step((greatest - least) / 6.0);  // 2 to 7 ticks
  if (whole) step = std::max(step, 1.0);
  axis.decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  for (double v = std::ceil(least / step - 1e-9) * step; v <= greatest + step * 1e-9; v += step)
    axis.ticks.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return axis;
}

inline void check_panels(const std::vector<LinePanel>& panels, const LinePlotOptions& options,
                         const std::string& context) {
  require(!panels.empty(), context, ": no panels to draw");
  require(options.columns > 0, context, ": options.columns must be positive, got ", options.columns);
  require(options.plot_width >= 40 && options.plot_height >= 40, context,
          ": options.plot_width and plot_height must be at least 40 pixels, got ", options.plot_width, " and ",
          options.plot_height);
  const auto& first = panels.front().series;
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const auto& series = panels[p].series;
    require(series.size() == first.size(), context, ": panel ", p, " has ", series.size(), " series, panel 0 has ",
            first.size(), "; every panel shows the same series");
    for (std::size_t s = 0; s < series.size(); ++s) {
      require(series[s].label == first[s].label, context, ": series ", s, " of panel ", p, " is '", series[s].label,
              "', of panel 0 '", first[s].label, "'; every panel shows the same series in the same order");
      require(series[s].x.size() == series[s].y.size(), context, ": series '", series[s].label, "' of panel ", p,
              " has ", series[s].x.size(), " x and ", series[s].y.size(), " y values");
      for (const double x : series[s].x)
        require(std::isfinite(x), context, ": series '", series[s].label, "' of panel ", p, " has an x of ", x);
    }
  }
}

}  // namespace detail::line_plot

/// Panels of line plots in a grid of options.columns columns, with one legend of the series above them
/// and options.title above that. Written atomically; a moe::Error names `path` and the argument at fault.
inline void write_line_plots_png(const std::filesystem::path& path, const std::vector<LinePanel>& panels,
                                 const LinePlotOptions& options = {}) {
  using namespace detail::heatmap;
  using detail::line_plot::Axis;
  const std::string context = detail::concat("write_line_plots_png: '", path.string(), "'");
  detail::line_plot::check_panels(panels, options, context);

  constexpr double margin = 16, gap = 28, tick = 4;
  const TextMeasure measure;
  Drawing d(measure);
  const double tick_height = measure.height(tick_font);
  const double label_height = measure.height(label_font);
  const double panel_title_height = measure.height(panel_title_font);
  const std::size_t series_count = panels.front().series.size();

  // Axes first: the widest y tick label sets the room left of every plot.
  std::vector<Axis> x_axes, y_axes;
  double gutter = 0;
  for (const LinePanel& panel : panels) {
    double x_least = std::numeric_limits<double>::infinity(), x_greatest = -x_least;
    double y_least = x_least, y_greatest = -x_least;
    bool whole = true;
    for (const LineSeries& s : panel.series)
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        x_least = std::min(x_least, s.x[i]);
        x_greatest = std::max(x_greatest, s.x[i]);
        whole = whole && s.x[i] == std::round(s.x[i]);
        if (!std::isfinite(s.y[i])) continue;
        y_least = std::min(y_least, s.y[i]);
        y_greatest = std::max(y_greatest, s.y[i]);
      }
    x_axes.push_back(detail::line_plot::make_axis(x_least, x_greatest, 0.0, whole));
    y_axes.push_back(detail::line_plot::make_axis(y_least, y_greatest, 0.05));
    for (const double v : y_axes.back().ticks)
      gutter = std::max(gutter, measure.width(format_fixed(v, y_axes.back().decimals), tick_font));
  }
  gutter += tick + 6;

  const double pw = options.plot_width, ph = options.plot_height;
  const double cell_width = gutter + pw + gap;
  const double cell_height = panel_title_height + 6 + ph + tick + 3 + tick_height + 4 + label_height + gap;
  const int columns = std::min<int>(options.columns, static_cast<int>(panels.size()));
  const int rows = (static_cast<int>(panels.size()) + columns - 1) / columns;
  const double width = std::ceil(2 * margin + columns * cell_width - gap);

  double y = margin;
  if (!options.title.empty()) {
    d.text(options.title, title_font, width / 2, 0.5, y);
    y += measure.height(title_font) + 10;
  }
  // The legend: a short line in the series' colour and its label, wrapped to the image's width.
  if (series_count > 0) {
    double x = margin;
    for (std::size_t s = 0; s < series_count; ++s) {
      const std::string& label = panels.front().series[s].label;
      const double item = 22 + measure.width(label, label_font) + 16;
      if (x > margin && x + item > width - margin) {
        x = margin;
        y += label_height + 6;
      }
      d.fill(x, y + label_height / 2 - 1.5, 18, 3, detail::line_plot::series_colour(s, series_count));
      d.text(label, label_font, x + 22, 0.0, y);
      x += item;
    }
    y += label_height + 14;
  }

  struct Line {
    Rgb colour;
    std::vector<std::pair<double, double>> points;  // pixels; a NaN y ends a run
  };
  std::vector<std::pair<PixelBox, std::vector<Line>>> plots;
  const Rgb grid = hex(0xe4e4e4);
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const double left = margin + static_cast<double>(p % columns) * cell_width + gutter;
    const double top = y + static_cast<double>(p / columns) * cell_height;
    const double plot_top = top + panel_title_height + 6;
    const Axis& xa = x_axes[p];
    const Axis& ya = y_axes[p];
    d.text(panels[p].title, panel_title_font, left + pw / 2, 0.5, top);
    for (const double v : ya.ticks) {
      const double py = std::round(plot_top + ph - ya.fraction(v) * ph - 0.5);
      d.fill(left, py, pw, 1, grid);
      d.fill(left - tick - 1, py, tick, 1, ink);
      d.text(format_fixed(v, ya.decimals), tick_font, left - tick - 4, 1.0, py + 0.5 - tick_height / 2);
    }
    for (const double v : xa.ticks) {
      const double px = std::round(left + xa.fraction(v) * pw - 0.5);
      d.fill(px, plot_top + ph + 1, 1, tick, ink);
      d.text(format_fixed(v, xa.decimals), tick_font, px + 0.5, 0.5, plot_top + ph + tick + 3);
    }
    d.text(options.x_label, label_font, left + pw / 2, 0.5, plot_top + ph + tick + 3 + tick_height + 4);
    d.frame(left, plot_top, pw, ph);

    std::vector<Line> lines;
    for (std::size_t s = 0; s < series_count; ++s) {
      const LineSeries& series = panels[p].series[s];
      Line line{detail::line_plot::series_colour(s, series_count), {}};
      for (std::size_t i = 0; i < series.x.size(); ++i)
        line.points.emplace_back(left + xa.fraction(series.x[i]) * pw,
                                 std::isfinite(series.y[i]) ? plot_top + ph - ya.fraction(series.y[i]) * ph
                                                            : std::numeric_limits<double>::quiet_NaN());
      lines.push_back(std::move(line));
    }
    plots.emplace_back(PixelBox{static_cast<int>(left), static_cast<int>(plot_top), options.plot_width,
                                options.plot_height},
                       std::move(lines));
  }
  const double height = std::ceil(y + rows * cell_height - gap + margin);
  const std::vector<Item> items = d.release();

  write_png_image(path, context, static_cast<int>(width), static_cast<int>(height), [&](cairo_t* cr) {
    draw_items(cr, items, 0.0, 0.0);
    cairo_set_line_width(cr, 1.5);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (const auto& [box, lines] : plots) {
      cairo_save(cr);
      cairo_rectangle(cr, box.x, box.y, box.width, box.height);
      cairo_clip(cr);
      for (const Line& line : lines) {
        cairo_set_source_rgb(cr, line.colour.r, line.colour.g, line.colour.b);
        const auto& pts = line.points;
        const auto drawn = [&](std::size_t i) { return i < pts.size() && !std::isnan(pts[i].second); };
        for (std::size_t i = 0; i < pts.size(); ++i) {
          if (!drawn(i)) continue;
          if (i > 0 && drawn(i - 1))
            cairo_line_to(cr, pts[i].first, pts[i].second);
          else
            cairo_move_to(cr, pts[i].first, pts[i].second);
        }
        cairo_stroke(cr);
        for (std::size_t i = 0; i < pts.size(); ++i)  // a point with no drawn neighbour: a dot, so that it shows
          if (drawn(i) && !(i > 0 && drawn(i - 1)) && !drawn(i + 1)) {
            cairo_arc(cr, pts[i].first, pts[i].second, 2.5, 0, 2 * std::numbers::pi);
            cairo_fill(cr);
          }
      }
      cairo_restore(cr);
    }
  });
}

}  // namespace moe
