//! Charts drawn with plotters into an in-memory RGB buffer and saved as PNG
//! with `image`, with DejaVu Sans embedded so no system font is needed.

use anyhow::{Context, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

/// Registers the embedded font once per process.
pub fn init_fonts() {
    FONT.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ] {
            if plotters::style::register_font("sans-serif", style, bytes).is_err() {
                tracing::warn!("could not register the embedded DejaVu font");
            }
        }
    });
}

/// Series colours, readable on white and distinct in greyscale.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Saves an RGB buffer as PNG, creating the parent folder.
pub fn save_png(path: &Path, buf: Vec<u8>, w: u32, h: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("plot buffer has the wrong size")?;
    // Best compression: report PNGs are committed to docs/.
    let file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
    );
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        file,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    );
    img.write_with_encoder(enc)
        .with_context(|| format!("writing {}", path.display()))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws a `w` x `h` chart on white with `draw`, then saves it as PNG: the
/// set-up and tear-down every chart shares.
fn render(path: &Path, (w, h): (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    init_fonts();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    save_png(path, buf, w, h)
}

/// The legend box of every chart: white, framed, at `pos`.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    pos: SeriesLabelPosition,
    font: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", font))
        .draw()?;
    Ok(())
}

/// The axes most charts share: a light grid and both axes named.
fn axes<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
    font: u32,
) -> Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", font))
        .draw()?;
    Ok(())
}

/// The smallest and largest of `values`: (f64::MAX, f64::MIN) when there
/// are none, so `lo <= hi` tells whether there were any.
pub fn span(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)))
}

/// A value range around every finite value with `frac` of its span as
/// margin (at least 1e-3); (0, 1) when there is none.
fn padded(values: impl Iterator<Item = f64>, frac: f64) -> (f64, f64) {
    let (lo, hi) = span(values.filter(|v| v.is_finite()));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * frac).max(1e-3);
    (lo - pad, hi + pad)
}

/// A dashed line from `a` to `b`: every other of `steps` equal segments.
fn dashes(a: (f64, f64), b: (f64, f64), steps: usize) -> impl Iterator<Item = Vec<(f64, f64)>> {
    let at = move |i: usize| {
        let t = i as f64 / steps as f64;
        (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
    };
    (0..steps).step_by(2).map(move |i| vec![at(i), at(i + 1)])
}

/// A grouped bar chart: one group per class, one bar per series.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[&str],
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    bars(path, title, "class", y_label, categories, series)
}

/// A grouped bar chart: one group per category, one bar per series.
pub fn bars(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[&str],
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    render(path, (900u32, 500u32), |root| {
        let ymax = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            * 1.12;
        let n = categories.len();
        let k = series.len().max(1);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 26))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax.max(1.0))?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (*x - 0.5).round();
                if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                    categories[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                if ymax < 5.0 {
                    format!("{y:.2}")
                } else {
                    format!("{y:.0}")
                }
            })
            .y_desc(y_label)
            .x_desc(x_label)
            .label_style(("sans-serif", 16))
            .draw()?;
        let bar_w = 0.8 / k as f64;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x0 = i as f64 + 0.1 + s as f64 * bar_w;
                    Rectangle::new([(x0, 0.0), (x0 + bar_w * 0.95, v)], color.filled())
                }))?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, 16)?;
        Ok(())
    })
}

/// A confusion matrix as a heatmap: rows are true classes, normalised by
/// their support, with the share and the count written in each cell.
pub fn confusion(path: &Path, title: &str, classes: &[&str], counts: &[Vec<usize>]) -> Result<()> {
    let n = classes.len();
    render(path, (760u32, 700u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(0i32..n as i32, 0i32..n as i32)?;
        let label = |v: &i32| {
            // Row 0 at the top: the y axis runs upwards.
            classes
                .get(*v as usize)
                .map_or(String::new(), |c| c.to_string())
        };
        let ylabel = |v: &i32| {
            classes
                .get(n.wrapping_sub(1).wrapping_sub(*v as usize))
                .map_or(String::new(), |c| c.to_string())
        };
        chart
            .configure_mesh()
            .max_light_lines(1)
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&label)
            .y_label_formatter(&ylabel)
            .x_desc("predicted")
            .y_desc("true")
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, row) in counts.iter().enumerate().take(n) {
            let support: usize = row.iter().sum();
            for (j, &c) in row.iter().enumerate().take(n) {
                let share = if support > 0 {
                    c as f64 / support as f64
                } else {
                    0.0
                };
                let y = (n - 1 - i) as i32;
                let shade = (255.0 * (1.0 - share * 0.85)) as u8;
                let fill = RGBColor(shade, shade, 255);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(j as i32, y), (j as i32 + 1, y + 1)],
                    fill.filled(),
                )))?;
                let text_color = if share > 0.55 { WHITE } else { BLACK };
                // The cell's centre in pixels, for text.
                let (x0, y0) = chart.backend_coord(&(j as i32, y + 1));
                let (x1, y1) = chart.backend_coord(&(j as i32 + 1, y));
                let style = ("sans-serif", 14).into_font().color(&text_color);
                root.draw(&Text::new(
                    format!("{:.2}", share),
                    ((x0 + x1) / 2 - 14, (y0 + y1) / 2 - 12),
                    style.clone(),
                ))?;
                root.draw(&Text::new(
                    format!("{c}"),
                    ((x0 + x1) / 2 - 14, (y0 + y1) / 2 + 4),
                    style,
                ))?;
            }
        }
        Ok(())
    })
}

/// Learning curves: losses on the left panel, accuracies on the right.
pub fn curves(
    path: &Path,
    title: &str,
    epochs: &[f64],
    losses: &[(&str, Vec<f64>)],
    accs: &[(&str, Vec<f64>)],
) -> Result<()> {
    curves_marked(path, title, epochs, losses, accs, None)
}

/// As `curves`, with a dashed vertical line at `mark` (the selected epoch).
pub fn curves_marked(
    path: &Path,
    title: &str,
    epochs: &[f64],
    losses: &[(&str, Vec<f64>)],
    accs: &[(&str, Vec<f64>)],
    mark: Option<(f64, &str)>,
) -> Result<()> {
    render(path, (1100u32, 450u32), |root| {
        let root = root.titled(title, ("sans-serif", 22))?;
        let panels = root.split_evenly((1, 2));
        let x_max = epochs.iter().copied().fold(1.0f64, f64::max);
        for (panel, (name, series)) in panels.iter().zip([("loss", losses), ("accuracy", accs)]) {
            let (y0, y1) = padded(series.iter().flat_map(|(_, v)| v.iter().copied()), 0.08);
            let mut chart = ChartBuilder::on(panel)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..x_max, y0..y1)?;
            axes(&mut chart, "epoch", name, 14)?;
            for (s, (label, values)) in series.iter().enumerate() {
                let color = PALETTE[s % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(
                        epochs.iter().copied().zip(values.iter().copied()),
                        color.stroke_width(2),
                    ))?
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            if let Some((at, label)) = mark {
                let grey = RGBColor(90, 90, 90);
                chart
                    .draw_series(
                        dashes((at, y0), (at, y1), 24)
                            .map(|seg| PathElement::new(seg, grey.stroke_width(2))),
                    )?
                    .label(label.to_string())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
            }
            legend(&mut chart, SeriesLabelPosition::UpperRight, 14)?;
        }
        Ok(())
    })
}

/// Lines over shared x positions with category labels (e.g. severities).
pub fn lines(
    path: &Path,
    title: &str,
    x_labels: &[&str],
    y_label: &str,
    series: &[(String, Vec<f64>)],
    y_range: (f64, f64),
    hline: Option<(f64, &str)>,
) -> Result<()> {
    render(path, (1000u32, 560u32), |root| {
        let n = x_labels.len();
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(-0.2f64..(n as f64 - 0.8), y_range.0..y_range.1)?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                    x_labels[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .label_style(("sans-serif", 15))
            .draw()?;
        if let Some((v, label)) = hline {
            // Dashed and black, so no series colour is mistaken for it.
            chart
                .draw_series(
                    dashes((-0.2, v), (n as f64 - 0.8, v), 40)
                        .map(|seg| PathElement::new(seg, BLACK.stroke_width(2))),
                )?
                .label(label.to_string())
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2))
                });
        }
        // Eleven distinct colours (tab10 plus olive-dark), none black.
        let many = [
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(44, 160, 44),
            RGBColor(214, 39, 40),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
            RGBColor(227, 119, 194),
            RGBColor(127, 127, 127),
            RGBColor(188, 189, 34),
            RGBColor(23, 190, 207),
            RGBColor(0, 70, 120),
        ];
        for (i, (label, values)) in series.iter().enumerate() {
            let color = many[i % many.len()];
            let pts: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(j, &v)| (j as f64, v))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft, 13)?;
        Ok(())
    })
}

/// A reliability diagram: accuracy against confidence per bin, with the
/// diagonal of perfect calibration and bin counts as bar shading.
pub fn reliability(path: &Path, title: &str, bins: &[(f64, f64, usize)]) -> Result<()> {
    render(path, (560u32, 520u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        axes(&mut chart, "confidence (max probability)", "accuracy", 14)?;
        let nb = bins.len().max(1) as f64;
        chart
            .draw_series(bins.iter().enumerate().filter(|(_, b)| b.2 > 0).map(
                |(i, &(_, acc, _))| {
                    let x0 = i as f64 / nb;
                    Rectangle::new(
                        [(x0 + 0.005, 0.0), (x0 + 1.0 / nb - 0.005, acc)],
                        PALETTE[0].mix(0.75).filled(),
                    )
                },
            ))?
            .label("accuracy per bin")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], PALETTE[0].filled()));
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                RGBColor(200, 0, 0).stroke_width(2),
            )))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RGBColor(200, 0, 0)));
        chart
            .draw_series(
                bins.iter()
                    .filter(|b| b.2 > 0)
                    .map(|&(conf, acc, _)| Circle::new((conf, acc), 4, BLACK.filled())),
            )?
            .label("(mean confidence, accuracy) per bin")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, BLACK.filled()));
        legend(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
        Ok(())
    })
}

/// Sweep history: each trial's objective (complete and pruned marked apart)
/// and the best so far.
pub fn history(
    path: &Path,
    title: &str,
    y_label: &str,
    complete: &[(f64, f64)],
    pruned: &[(f64, f64)],
    best: &[(f64, f64)],
) -> Result<()> {
    render(path, (900u32, 480u32), |root| {
        let all: Vec<(f64, f64)> = complete.iter().chain(pruned).chain(best).copied().collect();
        let xmax = all.iter().map(|p| p.0).fold(1.0f64, f64::max) + 0.5;
        let (y0, y1) = padded(all.iter().map(|p| p.1), 0.1);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(-0.5f64..xmax, y0..y1)?;
        axes(&mut chart, "trial", y_label, 14)?;
        chart
            .draw_series(LineSeries::new(best.to_vec(), PALETTE[2].stroke_width(3)))?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], PALETTE[2]));
        chart
            .draw_series(
                complete
                    .iter()
                    .map(|&p| Circle::new(p, 5, PALETTE[0].filled())),
            )?
            .label("complete")
            .legend(|(x, y)| Circle::new((x + 8, y), 5, PALETTE[0].filled()));
        chart
            .draw_series(
                pruned
                    .iter()
                    .map(|&p| Cross::new(p, 6, PALETTE[1].stroke_width(2))),
            )?
            .label("pruned (last reported value)")
            .legend(|(x, y)| Cross::new((x + 8, y), 6, PALETTE[1].stroke_width(2)));
        legend(&mut chart, SeriesLabelPosition::LowerRight, 14)?;
        Ok(())
    })
}

/// One small scatter per parameter: its value against the objective.
/// A parameter's name, whether to plot it on a log scale, and its
/// (value, objective) points.
pub type ParamPoints = (String, bool, Vec<(f64, f64)>);

pub fn param_scatter(
    path: &Path,
    title: &str,
    y_label: &str,
    params: &[ParamPoints],
) -> Result<()> {
    let cols = params.len().clamp(1, 3);
    let rows = params.len().div_ceil(cols).max(1);
    render(path, (380 * cols as u32, 60 + 330 * rows as u32), |root| {
        let root = root.titled(title, ("sans-serif", 22))?;
        let panels = root.split_evenly((rows, cols));
        for (panel, (name, log, pts)) in panels.iter().zip(params) {
            let tx = |v: f64| if *log { v.max(1e-12).log10() } else { v };
            let (x0, x1) = span(pts.iter().map(|p| tx(p.0)));
            let (x0, x1) = if x0 < x1 {
                (x0, x1)
            } else {
                (x0 - 1.0, x0 + 1.0)
            };
            let (y0, y1) = span(pts.iter().map(|p| p.1));
            let (y0, y1) = if y0 < y1 {
                (y0, y1)
            } else {
                (y0 - 0.01, y0 + 0.01)
            };
            let (px, py) = ((x1 - x0) * 0.08, (y1 - y0) * 0.1);
            let mut chart = ChartBuilder::on(panel)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
            let xdesc = if *log {
                format!("log10({name})")
            } else {
                name.clone()
            };
            chart
                .configure_mesh()
                .max_light_lines(1)
                .x_desc(xdesc)
                .y_desc(y_label)
                .x_labels(5)
                .label_style(("sans-serif", 12))
                .draw()?;
            chart.draw_series(
                pts.iter()
                    .map(|p| Circle::new((tx(p.0), p.1), 4, PALETTE[0].filled())),
            )?;
        }
        Ok(())
    })
}

/// A two-objective trade-off: every trial a grey dot, the Pareto front in
/// colour, joined in order of `x`.
pub fn pareto(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    all: &[(f64, f64)],
    front: &[(f64, f64)],
) -> Result<()> {
    render(path, (760, 520), |root| {
        let root = root.titled(title, ("sans-serif", 22))?;
        let (x0, x1) = span(all.iter().map(|p| p.0));
        let (y0, y1) = span(all.iter().map(|p| p.1));
        let (x0, x1) = if x0 < x1 {
            (x0, x1)
        } else {
            (x0 - 1.0, x0 + 1.0)
        };
        let (y0, y1) = if y0 < y1 {
            (y0, y1)
        } else {
            (y0 - 0.01, y0 + 0.01)
        };
        let (px, py) = ((x1 - x0) * 0.08, (y1 - y0) * 0.1);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
        axes(&mut chart, x_label, y_label, 13)?;
        chart.draw_series(
            all.iter()
                .map(|p| Circle::new(*p, 4, RGBColor(150, 150, 150).filled())),
        )?;
        chart.draw_series(LineSeries::new(
            front.iter().copied(),
            PALETTE[0].stroke_width(2),
        ))?;
        chart.draw_series(
            front
                .iter()
                .map(|p| Circle::new(*p, 6, PALETTE[0].filled())),
        )?;
        Ok(())
    })
}

/// Values over time, one coloured line per series; a `None` breaks the
/// line (a video frame without a face).
pub fn timeline(
    path: &Path,
    title: &str,
    times: &[f64],
    series: &[(String, Vec<Option<f64>>)],
    colors: &[RGBColor],
) -> Result<()> {
    let end = times.last().copied().unwrap_or(0.0).max(1e-3);
    render(path, (1200u32, 520u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..1f64)?;
        axes(&mut chart, "seconds", "probability", 15)?;
        for (i, (label, values)) in series.iter().enumerate() {
            let color = colors[i % colors.len()];
            // Runs of consecutive frames with a value, each its own line.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for (t, v) in times.iter().zip(values) {
                match v {
                    Some(v) => runs.last_mut().expect("one run").push((*t, *v)),
                    None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
                    None => {}
                }
            }
            let mut first = true;
            for run in runs.into_iter().filter(|r| !r.is_empty()) {
                let s = if run.len() == 1 {
                    chart.draw_series(run.into_iter().map(|p| Circle::new(p, 2, color.filled())))?
                } else {
                    chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?
                };
                if first {
                    s.label(label.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                    first = false;
                }
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
        Ok(())
    })
}

/// One line per series over a shared numeric x axis, e.g. validation
/// accuracy against training hours.
pub fn xy_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let all = || series.iter().flat_map(|(_, v)| v.iter().copied());
    let (x0, x1) = span(all().map(|p| p.0));
    let (x0, x1) = if x0 < x1 {
        (x0, x1)
    } else {
        (x0.min(1.0) * 0.5, x0.max(1.0) * 2.0)
    };
    let (y0, y1) = padded(all().map(|p| p.1), 0.08);
    render(path, (1000u32, 560u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        axes(&mut chart, x_label, y_label, 15)?;
        for (s, (label, pts)) in series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 14)?;
        Ok(())
    })
}

/// Accuracy (y) against a cost (x, log scale): every model a labelled dot,
/// the ones on the Pareto front (`front[i]`) in colour and joined in order
/// of cost, over the shaded region they dominate.
pub fn tradeoff(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(String, f64, f64)],
    front: &[bool],
) -> Result<()> {
    let pts: Vec<(usize, f64, f64)> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.1 > 0.0 && p.1.is_finite() && p.2.is_finite())
        .map(|(i, p)| (i, p.1, p.2))
        .collect();
    let (x0, x1) = span(pts.iter().map(|p| p.1));
    // Whole decades, so the log axis has labelled ticks.
    let (x0, x1) = if x0 <= x1 {
        (
            10f64.powf((x0 / 1.5).log10().floor()),
            10f64.powf((x1 * 1.5).log10().ceil()),
        )
    } else {
        (0.1, 10.0)
    };
    let (y0, y1) = padded(pts.iter().map(|p| p.2), 0.12);
    render(path, (900u32, 560u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
        axes(&mut chart, x_label, y_label, 15)?;
        let mut on: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| front.get(p.0).copied().unwrap_or(false))
            .map(|p| (p.1, p.2))
            .collect();
        on.sort_by(|a, b| a.0.total_cmp(&b.0));
        // The region the front dominates (costlier and less accurate than
        // some front model), shaded as a staircase.
        if let (Some(first), Some(last)) = (on.first(), on.last()) {
            let floor = y0;
            let mut stairs = vec![(first.0, floor)];
            for (k, p) in on.iter().enumerate() {
                if k > 0 {
                    stairs.push((p.0, on[k - 1].1));
                }
                stairs.push(*p);
            }
            stairs.extend([(x1, last.1), (x1, floor)]);
            chart.draw_series(std::iter::once(Polygon::new(
                stairs,
                PALETTE[0].mix(0.12).filled(),
            )))?;
        }
        chart
            .draw_series(LineSeries::new(on, PALETTE[0].stroke_width(2)))?
            .label("Pareto front")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], PALETTE[0].stroke_width(2))
            });
        let grey = RGBColor(150, 150, 150);
        for &(i, x, y) in &pts {
            let color = if front.get(i).copied().unwrap_or(false) {
                PALETTE[0]
            } else {
                grey
            };
            chart.draw_series(std::iter::once(Circle::new((x, y), 6, color.filled())))?;
            chart.draw_series(std::iter::once(Text::new(
                points[i].0.clone(),
                (x, y),
                ("sans-serif", 15).into_font().color(&BLACK),
            )))?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 14)?;
        Ok(())
    })
}

/// One horizontal bar: label, value, and an optional (low, high) interval.
pub type Bar = (String, f64, Option<(f64, f64)>);

/// Horizontal bars, one per label, longest first as given (e.g. the
/// importance of each hyperparameter), values as percentages, each with an
/// optional interval drawn as a whisker; `note`, when given, is written
/// across the chart (e.g. that the ranking is not to be read as one).
pub fn hbars(
    path: &Path,
    title: &str,
    x_label: &str,
    bars: &[Bar],
    note: Option<&str>,
) -> Result<()> {
    let n = bars.len().max(1);
    let h = (140 + 34 * n).max(240) as u32;
    let xmax = bars
        .iter()
        .map(|b| b.2.map_or(b.1, |(_, hi)| hi.max(b.1)))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    render(path, (900u32, h), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(250)
            .build_cartesian_2d(0f64..xmax, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .disable_y_mesh()
            .y_labels(n * 2 + 1)
            .y_label_formatter(&|y| {
                // Bar i is drawn from the top: centre at n - i - 0.5.
                let i = n as f64 - 0.5 - *y;
                let r = i.round();
                if (i - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < bars.len() {
                    bars[r as usize].0.clone()
                } else {
                    String::new()
                }
            })
            .x_desc(x_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        // Bars are pale when the note says not to read them as a ranking.
        let fill = if note.is_some() {
            PALETTE[0].mix(0.35).filled()
        } else {
            PALETTE[0].filled()
        };
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, _))| {
            let top = n as f64 - i as f64 - 0.15;
            Rectangle::new([(0.0, top - 0.7), (*v, top)], fill)
        }))?;
        for (i, (_, _, iv)) in bars.iter().enumerate() {
            if let Some((lo, hi)) = iv {
                let y = n as f64 - i as f64 - 0.5;
                let style = BLACK.stroke_width(2);
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*lo, y), (*hi, y)],
                    style,
                )))?;
                for x in [*lo, *hi] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, y - 0.15), (x, y + 0.15)],
                        style,
                    )))?;
                }
            }
        }
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, iv))| {
            let x = iv.map_or(*v, |(_, hi)| hi.max(*v));
            Text::new(
                format!("{v:.1}%"),
                (x + xmax * 0.01, n as f64 - i as f64 - 0.65),
                ("sans-serif", 13).into_font(),
            )
        }))?;
        if let Some(note) = note {
            root.draw(&Text::new(
                note.to_string(),
                (270, 46),
                ("sans-serif", 16).into_font().color(&RED),
            ))?;
        }
        Ok(())
    })
}

/// One learning curve across seeds: its label and, per epoch, the mean with
/// the band's lower and upper edge.
pub type Band = (String, Vec<(f64, f64, f64, f64)>);

/// Learning curves across seeds: each series' mean as a line over a shaded
/// band (the reader's "mean ± one standard deviation").
pub fn bands(path: &Path, title: &str, y_label: &str, series: &[Band]) -> Result<()> {
    render(path, (900u32, 480u32), |root| {
        let pts = series.iter().flat_map(|(_, v)| v.iter());
        let xmax = pts.clone().map(|p| p.0).fold(1.0f64, f64::max);
        let (y0, y1) = padded(pts.flat_map(|p| [p.2, p.3]), 0.05);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(0.5f64..xmax + 0.5, y0..y1)?;
        axes(&mut chart, "epoch", y_label, 14)?;
        for (s, (label, v)) in series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            let outline: Vec<(f64, f64)> = v
                .iter()
                .map(|p| (p.0, p.3))
                .chain(v.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.2).filled(),
            )))?;
            chart
                .draw_series(LineSeries::new(
                    v.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 14)?;
        Ok(())
    })
}
