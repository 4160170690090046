//! `fer eval`: a model file or run folder evaluated on test or its own validation split.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model file (.safetensors written by fer) or a run folder.
    pub model: PathBuf,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// `test` (each half and the union) or `val` (the model's own split).
    #[arg(long, default_value = "test", value_parser = ["test", "val"])]
    pub split: String,
    /// Read another data set's classes as the model's: `joy=happy,calm=-`
    /// (DATA_CLASS=MODEL_CLASS; `-` drops a class), or a file of such pairs.
    /// A data class not named maps to the model class of its name, or is
    /// dropped; what is dropped is counted.
    #[arg(long, value_name = "MAP")]
    pub class_map: Option<String>,
    /// Ten-crop plus flip test-time augmentation.
    #[arg(long)]
    pub tta: bool,
    /// Also run the robustness suite (accuracy under graded perturbations).
    #[arg(long)]
    pub robustness: bool,
    /// Robustness on a seeded random sample of N images of the split only.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// With --robustness: run the suite on this model file too, on the same
    /// images, and report the mean corruption error relative to it.
    #[arg(long, value_name = "FILE", requires = "robustness")]
    pub baseline: Option<PathBuf>,
    /// Write one CSV row per image: file, test half, true and predicted
    /// class, and every class probability (for paired tests elsewhere).
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Overwrite an existing --predictions file.
    #[arg(long, requires = "predictions")]
    pub replace: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    if let Some(out) = &args.predictions {
        // Checked before minutes of evaluation, not after.
        let model = crate::layout::model_file_of(&args.model);
        crate::layout::check_out_file(out, &[&model], "--predictions", args.replace)?;
    }
    let map = args
        .class_map
        .as_deref()
        .map(crate::data::classmap::ClassMap::parse)
        .transpose()?;
    let clf = crate::artifact::Classifier::load(&args.model, tch::Device::Cpu)?;
    let purpose = if args.split == "val" {
        crate::artifact::DataUse::Validation
    } else {
        crate::artifact::DataUse::Test
    };
    let crate::artifact::ModelData {
        loaded,
        split: tv,
        note,
        dir,
        mapped,
    } = clf
        .meta
        .load_data_mapped(args.data.as_deref(), purpose, map.as_ref())?;
    if let Some(n) = note {
        eprintln!("{n}");
    }
    if let Some(m) = &mapped {
        eprintln!("{}: {}", dir.display(), m.summary());
    }
    let set = if args.split == "val" {
        if tv.val.is_empty() {
            bail!(
                "{}: this model was trained on all of train (data.val_fraction 0, a refit), so it has no validation split; use --split test",
                args.model.display()
            );
        }
        loaded.data.train.select(&tv.val)
    } else {
        loaded.data.test.clone()
    };
    if set.is_empty() {
        bail!(
            "{}: the {} split has no images; nothing to evaluate",
            dir.display(),
            args.split
        );
    }
    let (mut report, probs) = crate::eval::evaluate_keeping(&clf, &set, &args.split, args.tta)?;
    report.data = Some(crate::eval::DataRecord {
        dir: dir.display().to_string(),
        digest: loaded.data.digest.clone(),
        class_map: mapped,
    });
    if let Some(out) = &args.predictions {
        crate::eval::write_predictions(out, &set, &probs, &clf.meta.classes)?;
        eprintln!("fer eval: {} predictions in {}", set.len(), out.display());
    }
    let robustness = match args.robustness {
        true => {
            let r = crate::eval::robust::run(&clf, &set, args.limit, 0)?;
            Some(match &args.baseline {
                Some(b) => {
                    let base = crate::artifact::Classifier::load(b, tch::Device::Cpu)?;
                    let br = crate::eval::robust::run(&base, &set, args.limit, 0)?;
                    r.with_baseline(&br, &b.display().to_string())?
                }
                None => r,
            })
        }
        false => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(r) = &robustness {
            v["robustness"] = serde_json::to_value(r)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({}): {} params, {} MACs",
            clf.meta.name,
            clf.meta.model.family(),
            clf.meta.params,
            crate::models::human(clf.meta.macs)
        );
        if let Some(q) = &clf.quant {
            println!("{}", q.summary());
        }
        print!("{}", report.render(&clf.meta.classes));
        if let Some(r) = &robustness {
            println!("\nrobustness ({} images)", r.images);
            print!("{}", r.markdown());
        }
    }
    Ok(ExitCode::SUCCESS)
}
