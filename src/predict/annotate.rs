//! Drawing a frame's answer onto it: a box per face in its emotion's colour,
//! the label with its confidence above the box, and the seven
//! probabilities as bars beside it. Sizes follow the frame's height so a
//! 320 px clip and a 4K photo both stay legible.

use crate::face::Face;
use anyhow::Result;
use plotters::prelude::*;

/// One colour per FER-2013 class, in its order (angry .. surprise).
pub const CLASS_COLORS: [RGBColor; 7] = [
    RGBColor(214, 39, 40),   // angry
    RGBColor(140, 86, 75),   // disgust
    RGBColor(148, 103, 189), // fear
    RGBColor(44, 160, 44),   // happy
    RGBColor(31, 119, 180),  // sad
    RGBColor(255, 127, 14),  // surprise
    RGBColor(127, 127, 127), // neutral
];

/// Colours for other class names, after the FER-2013 ones (tab10's rest).
const MORE_COLORS: [RGBColor; 3] = [
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One colour per class of a model: a FER-2013 emotion keeps its colour
/// whatever its index (a six-class model's `happy` is still green), any
/// other name takes the next colour no class of this model has.
pub fn class_colors(classes: &[String]) -> Vec<RGBColor> {
    let fer = |c: &String| {
        crate::data::fer2013::CLASSES
            .iter()
            .position(|f| f.eq_ignore_ascii_case(c))
    };
    let mut used: Vec<RGBColor> = classes
        .iter()
        .filter_map(fer)
        .map(|k| CLASS_COLORS[k])
        .collect();
    let mut free = MORE_COLORS.iter().chain(CLASS_COLORS.iter()).cycle();
    classes
        .iter()
        .map(|c| match fer(c) {
            Some(k) => CLASS_COLORS[k],
            None => {
                let pick = *free
                    .clone()
                    .take(CLASS_COLORS.len() + MORE_COLORS.len())
                    .find(|col| !used.contains(col))
                    .unwrap_or_else(|| free.next().expect("a cycle"));
                // Past the palette, colours repeat in order.
                while free.next() != Some(&pick) {}
                used.push(pick);
                pick
            }
        })
        .collect()
}

/// Draws `faces` onto `img` in place.
pub fn draw(img: &mut image::RgbImage, faces: &[Face], classes: &[String]) -> Result<()> {
    if faces.is_empty() {
        return Ok(());
    }
    crate::plot::init_fonts();
    let (w, h) = img.dimensions();
    let font = (h as f64 / 36.0).clamp(10.0, 40.0);
    let line = (h / 240).max(2) as i32;
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    let (wi, hi) = (w as i32, h as i32);
    let colors = class_colors(classes);
    for f in faces {
        let [x, y, bw, bh] = f.bbox.map(|v| v as i32);
        let c = classes
            .iter()
            .position(|c| *c == f.label)
            .map_or(RGBColor(255, 255, 0), |k| colors[k]);
        for k in 0..line {
            root.draw(&Rectangle::new(
                [(x - k, y - k), (x + bw + k, y + bh + k)],
                c.stroke_width(1),
            ))?;
        }
        // The label on a filled tab above the box (inside it at the top edge).
        let text = format!("{} {:.0}%", f.label, 100.0 * f.confidence);
        let th = (font * 1.3) as i32;
        let tw = (font * 0.62 * text.len() as f64) as i32 + 6;
        let ty = if y - th - line >= 0 {
            y - th - line
        } else {
            y + line
        };
        root.draw(&Rectangle::new(
            [(x - line, ty), (x - line + tw, ty + th)],
            c.filled(),
        ))?;
        root.draw(&Text::new(
            text,
            (x - line + 3, ty + (th - font as i32) / 2),
            ("sans-serif", font).into_font().color(&WHITE),
        ))?;
        // Seven bars beside the box: right of it if they fit, else left.
        let small = (font * 0.7).max(9.0);
        let row = (small * 1.25) as i32;
        let name_w = (small * 0.62 * 8.0) as i32;
        let bar_w = (small * 5.0) as i32;
        let panel = name_w + bar_w + 8;
        let px = if x + bw + line + panel < wi {
            x + bw + line + 4
        } else {
            (x - line - panel - 4).max(0)
        };
        let py = y.min(hi - row * classes.len() as i32).max(0);
        root.draw(&Rectangle::new(
            [(px, py), (px + panel, py + row * classes.len() as i32)],
            RGBColor(0, 0, 0).mix(0.55).filled(),
        ))?;
        for (k, (name, p)) in classes.iter().zip(&f.probs).enumerate() {
            let ry = py + k as i32 * row;
            root.draw(&Text::new(
                name.clone(),
                (px + 3, ry + 1),
                ("sans-serif", small).into_font().color(&WHITE),
            ))?;
            let len = ((bar_w - 4) as f32 * p.clamp(0.0, 1.0)) as i32;
            root.draw(&Rectangle::new(
                [
                    (px + name_w, ry + 2),
                    (px + name_w + len.max(1), ry + row - 2),
                ],
                colors[k].filled(),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_face_is_boxed_in_its_colour_and_the_rest_is_untouched() {
        let classes = crate::data::fer2013::classes();
        let mut img = image::RgbImage::from_pixel(320, 240, image::Rgb([10, 20, 30]));
        let face = Face {
            bbox: [100, 80, 60, 60],
            label: "happy".into(),
            confidence: 0.8,
            probs: vec![0.0, 0.0, 0.0, 0.8, 0.1, 0.1, 0.0],
        };
        draw(&mut img, &[face], &classes).unwrap();
        let happy = CLASS_COLORS[3];
        assert_eq!(
            img.get_pixel(130, 140).0,
            [happy.0, happy.1, happy.2],
            "bottom edge"
        );
        assert_eq!(img.get_pixel(130, 110).0, [10, 20, 30], "inside the box");
        assert_eq!(img.get_pixel(5, 230).0, [10, 20, 30], "far corner");
    }
}
