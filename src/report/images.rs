//! Face grids: Grad-CAM overlays and error galleries, composed as RGB
//! buffers with captions drawn by plotters.

use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

/// One tile: a grayscale image in [0, 1] (`side x side`), an optional
/// saliency map in [0, 1], and a caption.
pub struct Tile {
    pub side: usize,
    pub gray: Vec<f32>,
    pub heat: Option<Vec<f32>>,
    pub caption: String,
    /// Caption colour: green for right, red for wrong.
    pub ok: bool,
}

/// A perceptual blue-to-yellow ramp (close to viridis) for saliency.
fn heat_color(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = t.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

/// Scales an image to [0, 1] by its own min and max.
pub fn normalise(v: &[f32]) -> Vec<f32> {
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let span = (hi - lo).max(1e-6);
    v.iter().map(|x| (x - lo) / span).collect()
}

/// Draws `rows` of tiles, each row with a label on the left, into a PNG.
pub fn grid(
    path: &Path,
    title: &str,
    rows: &[(String, Vec<Tile>)],
    cols: usize,
    scale: usize,
) -> Result<()> {
    crate::plot::init_fonts();
    let side = rows
        .iter()
        .flat_map(|r| r.1.iter())
        .map(|t| t.side)
        .max()
        .unwrap_or(48);
    let cell = side * scale;
    let (label_w, cap_h, gap, top) = (110usize, 18usize, 6usize, 44usize);
    let w = label_w + cols * (cell + gap) + gap;
    let h = top + rows.len() * (cell + cap_h + gap) + gap;
    let mut buf = vec![255u8; w * h * 3];
    for (r, (_, tiles)) in rows.iter().enumerate() {
        for (c, t) in tiles.iter().enumerate().take(cols) {
            let x0 = label_w + c * (cell + gap);
            let y0 = top + r * (cell + cap_h + gap);
            for y in 0..cell {
                for x in 0..cell {
                    let (sx, sy) = (x * t.side / cell, y * t.side / cell);
                    let g = t.gray[sy * t.side + sx].clamp(0.0, 1.0) * 255.0;
                    let rgb = match &t.heat {
                        Some(hm) => {
                            let hc = heat_color(hm[sy * t.side + sx]);
                            [
                                0.5 * g + 0.5 * hc[0],
                                0.5 * g + 0.5 * hc[1],
                                0.5 * g + 0.5 * hc[2],
                            ]
                        }
                        None => [g, g, g],
                    };
                    let o = ((y0 + y) * w + x0 + x) * 3;
                    for k in 0..3 {
                        buf[o + k] = rgb[k].round() as u8;
                    }
                }
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        root.draw(&Text::new(
            title.to_string(),
            (10, 10),
            ("sans-serif", 22).into_font().color(&BLACK),
        ))?;
        for (r, (label, tiles)) in rows.iter().enumerate() {
            let y0 = (top + r * (cell + cap_h + gap)) as i32;
            root.draw(&Text::new(
                label.clone(),
                (8, y0 + cell as i32 / 2 - 8),
                ("sans-serif", 16).into_font().color(&BLACK),
            ))?;
            for (c, t) in tiles.iter().enumerate().take(cols) {
                let x0 = (label_w + c * (cell + gap)) as i32;
                let color = if t.ok {
                    RGBColor(0, 120, 0)
                } else {
                    RGBColor(190, 0, 0)
                };
                root.draw(&Text::new(
                    t.caption.clone(),
                    (x0, y0 + cell as i32 + 2),
                    ("sans-serif", 13).into_font().color(&color),
                ))?;
            }
        }
        root.present()?;
    }
    crate::plot::save_png(path, buf, w as u32, h as u32)
}
