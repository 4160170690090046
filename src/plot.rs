//! Charts drawn with plotters into an in-memory RGB buffer and saved as PNG
//! with `image`, with DejaVu Sans embedded so no system font is needed.

use anyhow::{Context, Result};
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
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// A grouped bar chart: one group per category, one bar per series.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[&str],
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    init_fonts();
    let (w, h) = (900u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let ymax = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            * 1.12;
        let n = categories.len();
        let k = series.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 26))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax.max(1.0))?;
        chart
            .configure_mesh()
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
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc(y_label)
            .x_desc("class")
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()?;
        root.present()?;
    }
    save_png(path, buf, w, h)
}

/// A confusion matrix as a heatmap: rows are true classes, normalised by
/// their support, with the share and the count written in each cell.
pub fn confusion(path: &Path, title: &str, classes: &[&str], counts: &[Vec<usize>]) -> Result<()> {
    init_fonts();
    let n = classes.len();
    let (w, h) = (760u32, 700u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
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
        root.present()?;
    }
    save_png(path, buf, w, h)
}

/// Learning curves: losses on the left panel, accuracies on the right.
pub fn curves(
    path: &Path,
    title: &str,
    epochs: &[f64],
    losses: &[(&str, Vec<f64>)],
    accs: &[(&str, Vec<f64>)],
) -> Result<()> {
    init_fonts();
    let (w, h) = (1100u32, 450u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let panels = root.split_evenly((1, 2));
        let x_max = epochs.iter().copied().fold(1.0f64, f64::max);
        for (panel, (name, series)) in panels.iter().zip([("loss", losses), ("accuracy", accs)]) {
            let finite = series
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(panel)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(name)
                .label_style(("sans-serif", 14))
                .draw()?;
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
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
    }
    save_png(path, buf, w, h)
}
