//! `fer report`: a Markdown report of a run, a folder of runs, or a sweep.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run folder, a folder of run folders (e.g. runs/zoo), a sweep
    /// folder, a model file, or a folder of model files (e.g. models/zoo).
    pub input: PathBuf,
    /// Output folder (default: reports/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Data set folder, overriding the runs' data.dir (default: that
    /// folder, else $FER2013_DIR where it is not on this machine).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test images in the robustness suite (a seeded sample).
    #[arg(long, default_value_t = 1000)]
    pub robustness_images: usize,
    /// A model file whose robustness suite, on the same images, the
    /// report's mean corruption errors are relative to (ImageNet-C's
    /// baseline).
    #[arg(long, value_name = "FILE")]
    pub robustness_baseline: Option<PathBuf>,
    /// A sweep folder that tuned these models (repeatable): the report
    /// ranks its hyperparameters by importance, with a chart.
    #[arg(long = "importance", value_name = "SWEEP_DIR")]
    pub importance: Vec<PathBuf>,
    /// A Markdown file of commentary, placed after the comparison.
    #[arg(long, value_name = "FILE")]
    pub notes: Option<PathBuf>,
    /// Another data set to score the fully reported models on, beside
    /// their own test split (repeatable; its test/ folder is used).
    #[arg(long = "other-data", value_name = "DIR")]
    pub other_data: Vec<PathBuf>,
    /// How an --other-data set's classes read as the models': `joy=happy,
    /// calm=-` or a file (as `fer eval --class-map`). Once for all of them,
    /// or once per --other-data in the same order.
    #[arg(long = "class-map", value_name = "MAP")]
    pub class_maps: Vec<String>,
    /// Score model files with ten-crop test-time augmentation (a model
    /// file does not say how it was evaluated; a run folder's config does,
    /// and this flag does not change it).
    #[arg(long)]
    pub tta: bool,
}

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let path = crate::report::generate(&crate::report::ReportOptions {
        input: a.input,
        out: a.out,
        data: a.data,
        robustness_images: a.robustness_images,
        robustness_baseline: a.robustness_baseline,
        importance: a.importance,
        notes: a.notes,
        other_data: a.other_data,
        class_maps: a.class_maps,
        tta: a.tta,
    })?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
