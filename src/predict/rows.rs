//! The rows `fer predict` writes: one per face per image or frame, and one
//! flagged row for an image or frame with no face, as CSV, a JSON array or
//! JSON lines. Rows stream into a temporary file that `finish` renames into
//! place, so a reader never sees half a table.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Json,
    Jsonl,
}

impl Format {
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Csv => "predictions.csv",
            Format::Json => "predictions.json",
            Format::Jsonl => "predictions.jsonl",
        }
    }
}

/// One face of one image or frame (or its absence).
#[derive(Clone, Debug)]
pub struct Row<'a> {
    pub input: &'a str,
    /// Frame index (0 for an image).
    pub frame: u64,
    /// Seconds from the start (frame / rate; 0 for an image).
    pub time: f64,
    /// Faces found in this image or frame.
    pub faces: usize,
    /// This face: index (largest first), box, label, confidence and the
    /// seven probabilities; None on a no-face row.
    pub face: Option<(usize, &'a crate::face::Face)>,
}

/// The fixed columns before the seven class probabilities.
pub const COLUMNS: [&str; 12] = [
    "input",
    "frame",
    "time_s",
    "faces",
    "face",
    "found",
    "x",
    "y",
    "w",
    "h",
    "label",
    "confidence",
];

pub struct Writer {
    format: Format,
    classes: Vec<String>,
    file: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    finished: bool,
    pub rows: u64,
}

impl Writer {
    pub fn create(dir: &Path, format: Format, classes: &[String]) -> Result<Writer> {
        let path = dir.join(format.file_name());
        let tmp = dir.join(format!(".{}.partial", format.file_name()));
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        let mut w = Writer {
            format,
            classes: classes.to_vec(),
            file: std::io::BufWriter::new(file),
            tmp,
            path,
            finished: false,
            rows: 0,
        };
        match format {
            Format::Csv => {
                let mut head: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
                head.extend(classes.iter().cloned());
                w.csv_line(&head)?;
            }
            Format::Json => w.file.write_all(b"[")?,
            Format::Jsonl => {}
        }
        Ok(w)
    }

    fn csv_line(&mut self, fields: &[String]) -> Result<()> {
        let mut c = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(&mut self.file);
        c.write_record(fields)?;
        c.flush()?;
        Ok(())
    }

    pub fn push(&mut self, r: &Row) -> Result<()> {
        let (x, y, w, h, label, conf, probs) = match r.face {
            Some((_, f)) => (
                Some(f.bbox[0]),
                Some(f.bbox[1]),
                Some(f.bbox[2]),
                Some(f.bbox[3]),
                Some(f.label.as_str()),
                Some(f.confidence),
                Some(&f.probs),
            ),
            None => (None, None, None, None, None, None, None),
        };
        let time = (r.time * 1e4).round() / 1e4;
        match self.format {
            Format::Csv => {
                let opt = |v: Option<String>| v.unwrap_or_default();
                let mut f = vec![
                    r.input.to_string(),
                    r.frame.to_string(),
                    time.to_string(),
                    r.faces.to_string(),
                    opt(r.face.map(|(i, _)| i.to_string())),
                    r.face.is_some().to_string(),
                    opt(x.map(|v| v.to_string())),
                    opt(y.map(|v| v.to_string())),
                    opt(w.map(|v| v.to_string())),
                    opt(h.map(|v| v.to_string())),
                    opt(label.map(str::to_string)),
                    opt(conf.map(|c| format!("{c:.5}"))),
                ];
                for k in 0..self.classes.len() {
                    f.push(opt(probs.map(|p| format!("{:.5}", p[k]))));
                }
                self.csv_line(&f)?;
            }
            Format::Json | Format::Jsonl => {
                let mut v = serde_json::json!({
                    "input": r.input, "frame": r.frame, "time_s": time, "faces": r.faces,
                    "face": r.face.map(|(i, _)| i), "found": r.face.is_some(),
                    "x": x, "y": y, "w": w, "h": h, "label": label, "confidence": conf,
                });
                for (k, c) in self.classes.iter().enumerate() {
                    v[c] = probs.map(|p| p[k]).into();
                }
                if self.format == Format::Json {
                    self.file
                        .write_all(if self.rows == 0 { b"\n" } else { b",\n" })?;
                    serde_json::to_writer(&mut self.file, &v)?;
                } else {
                    serde_json::to_writer(&mut self.file, &v)?;
                    self.file.write_all(b"\n")?;
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Closes the table and renames it into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.format == Format::Json {
            self.file.write_all(b"\n]\n")?;
        }
        self.file
            .flush()
            .with_context(|| format!("writing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A run that failed leaves no half table behind.
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::Face;

    fn face() -> Face {
        Face {
            bbox: [1, 2, 30, 40],
            label: "happy".into(),
            confidence: 0.9,
            probs: vec![0.0, 0.0, 0.0, 0.9, 0.05, 0.05, 0.0],
        }
    }

    fn classes() -> Vec<String> {
        crate::data::fer2013::classes()
    }

    #[test]
    fn csv_has_a_row_per_face_and_a_flagged_row_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), Format::Csv, &classes()).unwrap();
        let f = face();
        w.push(&Row {
            input: "a,b.jpg",
            frame: 0,
            time: 0.0,
            faces: 1,
            face: Some((0, &f)),
        })
        .unwrap();
        w.push(&Row {
            input: "v.mp4",
            frame: 3,
            time: 0.1,
            faces: 0,
            face: None,
        })
        .unwrap();
        assert!(
            !dir.path().join("predictions.csv").exists(),
            "not before finish"
        );
        let p = w.finish().unwrap();
        let mut r = csv::Reader::from_path(&p).unwrap();
        let head = r.headers().unwrap().clone();
        assert_eq!(head.len(), 19);
        assert_eq!(&head[18], "neutral");
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(&rows[0][0], "a,b.jpg");
        assert_eq!(&rows[0][10], "happy");
        assert_eq!(&rows[0][5], "true");
        assert_eq!(&rows[1][5], "false");
        assert_eq!(&rows[1][10], "");
        assert_eq!(&rows[1][2], "0.1");
    }

    #[test]
    fn json_is_one_array_and_jsonl_one_object_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = face();
        for fmt in [Format::Json, Format::Jsonl] {
            let mut w = Writer::create(dir.path(), fmt, &classes()).unwrap();
            for i in 0..2 {
                w.push(&Row {
                    input: "x.png",
                    frame: i,
                    time: 0.0,
                    faces: 1,
                    face: Some((0, &f)),
                })
                .unwrap();
            }
            let text = std::fs::read_to_string(w.finish().unwrap()).unwrap();
            let rows: Vec<serde_json::Value> = match fmt {
                Format::Json => serde_json::from_str(&text).unwrap(),
                _ => text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
            };
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[1]["frame"], 1);
            assert!((rows[0]["happy"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        }
    }
}
