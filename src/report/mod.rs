//! `fer report`: a Markdown report with PNGs, built from run folders alone
//! (plus the data set they name), or from model files, each first made a
//! run folder of its own evaluation (`train::adopt_model_file`, kept in the
//! cache under the file's hash). The same folders give the same report:
//! nothing depends on the clock, selections are sorted, and the two
//! measured-not-derived numbers (latency and robustness) are computed once
//! and kept in the run folder (`RunDir::latency`, `RunDir::robustness`).
//! `collect` reads and measures everything into a `ReportData`; `sections`
//! turns it into Markdown, one pure function per section; `charts` draws
//! the section's PNGs from the same data; `tradeoffs` holds what the
//! accuracy-against-cost views compare; `summary` writes the table's
//! values as `summary.json` beside the README.

mod across;
mod charts;
mod collect;
pub mod images;
mod sections;
pub mod summary;
mod tradeoffs;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What `fer report` reads, where it writes, and how much it measures.
pub struct ReportOptions {
    pub input: PathBuf,
    pub out: Option<PathBuf>,
    /// Data set folder, overriding the runs' `data.dir`.
    pub data: Option<PathBuf>,
    /// Test images for the robustness suite (a seeded sample).
    pub robustness_images: usize,
    /// The model the robustness suite's corruption errors are relative to.
    pub robustness_baseline: Option<PathBuf>,
    /// Sweep folders whose hyperparameter importance the report shows.
    pub importance: Vec<PathBuf>,
    /// A Markdown file of commentary, placed after the comparison.
    pub notes: Option<PathBuf>,
    /// Other data sets to score the fully reported models on.
    pub other_data: Vec<PathBuf>,
    /// Their class maps: none, one for all, or one each.
    pub class_maps: Vec<String>,
    /// Model-file inputs are scored with ten-crop TTA (a run folder's
    /// config says it for itself).
    pub tta: bool,
}

impl ReportOptions {
    /// The command that writes this report again to `out`: the options
    /// that add sections (`--importance`, `--notes`) and a non-default
    /// robustness sample are kept, so that running it loses nothing.
    pub fn command(&self, out: &Path) -> String {
        let mut cmd = format!(
            "fer report {} --out {}",
            self.input.display(),
            out.display()
        );
        if self.robustness_images != 1000 {
            cmd += &format!(" --robustness-images {}", self.robustness_images);
        }
        if let Some(b) = &self.robustness_baseline {
            cmd += &format!(" --robustness-baseline {}", b.display());
        }
        for sweep in &self.importance {
            cmd += &format!(" --importance {}", sweep.display());
        }
        if let Some(notes) = &self.notes {
            cmd += &format!(" --notes {}", notes.display());
        }
        for dir in &self.other_data {
            cmd += &format!(" --other-data {}", dir.display());
        }
        for map in &self.class_maps {
            cmd += &format!(" --class-map '{map}'");
        }
        if self.tta {
            cmd += " --tta";
        }
        cmd
    }
}

/// Writes the report; returns the README path.
pub fn generate(a: &ReportOptions) -> Result<PathBuf> {
    // Checked before minutes of measuring, not after.
    let named = collect::Named::read(a)?;
    let inputs = collect::discover(a)?;
    let name = report_name(&a.input);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| crate::layout::report_dir(&name));
    crate::layout::check_report_out(&out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if inputs.runs.is_empty() {
        bail!(
            "{}: the sweep has no finished trial to report",
            a.input.display()
        );
    }
    let d = collect::collect(inputs, a, named, name, &out)?;

    charts::data_set(&d, &out)?;
    charts::comparison(&d, &out)?;
    charts::per_model(&d, &out)?;
    charts::robustness(&d, &out)?;
    charts::interpretability(&d, &out)?;
    charts::tradeoffs(&d, &out)?;
    charts::sweep(&d, &out)?;
    charts::seeds(&d, &out)?;

    let md: String = [
        sections::header,
        sections::data_set,
        sections::comparison,
        sections::seeds,
        sections::across,
        sections::tradeoffs,
        sections::notes,
        sections::per_model,
        sections::robustness,
        sections::interpretability,
        sections::sweep,
        sections::reproducibility,
    ]
    .iter()
    .map(|section| section(&d))
    .collect();
    let summary = serde_json::to_vec_pretty(&summary::summary(&d))?;
    crate::layout::write_atomic(&out.join(summary::FILE), &summary)?;
    let readme = out.join(crate::layout::REPORT_README);
    crate::layout::write_atomic(&readme, md.as_bytes())?;
    Ok(readme)
}

/// The report's name: the input folder's, or for a timestamped sweep folder
/// `<experiment>-<stamp>`.
fn report_name(input: &Path) -> String {
    input
        .canonicalize()
        .ok()
        .and_then(|p| {
            let base = p.file_name()?.to_string_lossy().to_string();
            // A timestamped sweep folder is named after its experiment.
            match p.parent().and_then(|q| q.file_name()) {
                Some(parent) if base.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                    Some(format!("{}-{base}", parent.to_string_lossy()))
                }
                _ => Some(base),
            }
        })
        .unwrap_or_else(|| "report".into())
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// A label as a file-name prefix: lower-case alphanumeric words joined by `-`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The PNG file of one run's chart, named after the run's label, as both
/// the chart writer and the Markdown link spell it.
fn run_png(label: &str, chart: &str) -> String {
    format!("{}-{chart}.png", slug(label))
}

/// The PNG of a sweep's importance ranking (all trials or one family).
fn importance_png(sweep: &str, family: Option<&str>) -> String {
    match family {
        Some(f) => format!("importance-{}-{}.png", slug(sweep), slug(f)),
        None => format!("importance-{}.png", slug(sweep)),
    }
}

#[cfg(test)]
mod tests;
